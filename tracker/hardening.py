"""What every tracker response carries and how much a request may send: one place for both."""

from __future__ import annotations

from aiohttp import web, web_response

from tracker.logs import SERVER_LOG, PrivateAccessLogger

# aiohttp names itself and Python with their versions on every response ("Python/3.11
# aiohttp/3.x"), which only tells an attacker which advisories to try. It sets the header
# from this module value, also on its own 400s for requests it cannot parse, which no
# middleware or signal sees: so the value itself is replaced, once, for the process.
SERVER_NAME = "fairclick"
web_response.SERVER_SOFTWARE = SERVER_NAME

MAX_HEADERS = 64  # header fields per request; aiohttp's parser answers 400 past it
MAX_FIELD_SIZE = 8190  # bytes per header field (aiohttp's default, kept explicit)
# All header fields together, like nginx's default (4 buffers of 8 KB): 431 past it.
# Generous, because a click must not be refused for the cookies of a parent domain.
MAX_HEADER_BYTES = 32 * 1024


@web.middleware
async def header_limit(request: web.Request, handler):
    """431 for a request whose header fields add up to more than MAX_HEADER_BYTES."""
    size = sum(len(name) + len(value) + 4 for name, value in request.raw_headers)  # ": ", CRLF
    if size > MAX_HEADER_BYTES:
        return web.Response(
            status=431, text=f"Request header fields too large (over {MAX_HEADER_BYTES} bytes).\n"
        )
    return await handler(request)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    # A browser must never guess another type than the one sent (an HTML page, a JSON
    # download, a 1x1 GIF): a guessed type is how a harmless body becomes a script.
    response.headers["X-Content-Type-Options"] = "nosniff"


def hardened_app(middlewares=()) -> web.Application:
    """An application with the header limits and the headers every response carries."""
    app = web.Application(
        middlewares=[header_limit, *middlewares],
        handler_args={
            "max_headers": MAX_HEADERS,
            "max_field_size": MAX_FIELD_SIZE,
            # aiohttp's own access and error lines name the peer (and quote a malformed
            # request's header bytes): these hold nothing about a person (tracker/logs.py).
            "access_log_class": PrivateAccessLogger,
            "logger": SERVER_LOG,
        },
    )
    app.on_response_prepare.append(_security_headers)
    return app
