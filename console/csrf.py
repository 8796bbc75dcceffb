"""Cross-site request forgery: every change made with a session cookie carries its token.

A POST, PUT, PATCH or DELETE authenticated by the session cookie must send the session's
CSRF token (form field `csrf`, or the `X-CSRF-Token` header for scripts); requests with a
bearer token need none, since browsers never add one on their own. In depth, every
change not made with a bearer token (the login form too) is refused when the browser says
it comes from another site (Origin, else Sec-Fetch-Site); SameSite=Strict cookies are the
third layer.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from console.auth import csrf_token
from console.keys import CONSOLE_PAGES, PRINCIPAL
from console.sessions import csrf_token_matches, session_id_of
from tracker.keys import SETTINGS

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
FORM_FIELD = "csrf"
HEADER = "X-CSRF-Token"
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def _origin_of(value: str) -> URL | None:
    try:
        origin = URL(value).origin()
    except ValueError:  # "null", a relative or malformed URL
        return None
    return origin


def from_another_site(request: web.Request) -> bool:
    """Whether the browser says this request was sent by another site's page.

    Ours: the console's URL (FAIRCLICK_CONSOLE_URL, as a proxy in front shows it) or the
    address the request was sent to (its Host, as an ssh tunnel or localhost shows it).
    Requests without Origin or Sec-Fetch-Site (scripts, old browsers) are not judged here:
    the CSRF token and SameSite decide.
    """
    origin = request.headers.get("Origin")
    if origin is not None:
        sent = _origin_of(origin)
        if sent is None:
            return True
        ours = {f"{scheme}://{request.host}" for scheme in ("http", "https")}
        console = request.app[SETTINGS].console_address()
        if console:
            ours.add(str(URL(console).origin()))
        return str(sent) not in ours
    # "none": the user typed or bookmarked it; same-site would let a sibling host in.
    return request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


async def _sent_token(request: web.Request) -> str | None:
    token = request.headers.get(HEADER)
    if token is None and request.content_type in _FORMS:
        try:
            token = (await request.post()).get(FORM_FIELD)
        # A broken form (a bad multipart header is an HttpProcessingError) or an unknown charset.
        except (ValueError, LookupError, HttpProcessingError):
            return None
    return token if isinstance(token, str) else None


def refused(request: web.Request, why: str) -> web.Response:
    """403 with a page (or the API's JSON error) saying why and what to do."""
    if request.path.startswith("/api/"):
        return web.json_response(
            {"error": {"code": "forbidden", "message": why}},
            status=403,
        )
    env = request.app[CONSOLE_PAGES]
    principal = request.get(PRINCIPAL)
    page = env.get_template("refused.html").render(
        principal=principal,
        csrf_token=csrf_token(request) if principal and principal.kind == "session" else "",
        why=why,
    )
    return web.Response(status=403, text=page, content_type="text/html")


OTHER_SITE = "This request came from another site's page; nothing was changed."
STALE_FORM = (
    "This form was sent without its security token, or with one from another session "
    "(an old page, from before a login or logout). Nothing was changed: reload the page "
    "and send it again."
)


@web.middleware
async def check_csrf(request: web.Request, handler):
    """403 for a change sent by another site, or with a session but without its token."""
    if request.method in SAFE_METHODS or request.match_info.http_exception is not None:
        return await handler(request)
    principal = request.get(PRINCIPAL)  # set by the login check before this
    if principal is not None and principal.kind == "token":
        return await handler(request)
    if from_another_site(request):
        return refused(request, OTHER_SITE)
    if principal is not None and principal.kind == "session":
        session_id = session_id_of(request, request.app[SETTINGS])
        if session_id is None or not csrf_token_matches(session_id, await _sent_token(request)):
            return refused(request, STALE_FORM)
    return await handler(request)
