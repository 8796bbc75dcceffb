"""What the tracker's logs may hold: method, route, status, timing and the class of an error.

Never a person's IP address, user agent, email address or token (a token names a
message, so a person): logs are kept and shipped far from the consent that governs
the database. aiohttp's own access log and error lines name the peer (and a malformed
request's header bytes), so the app hands aiohttp these two instead (create_app's
handler_args), whichever way it is served.
"""

from __future__ import annotations

import logging
import traceback

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, StreamResponse

WITHHELD = "(withheld)"


def route_of(request: BaseRequest) -> str:
    """The route as declared (/c/{token}), not the path the client sent."""
    try:
        match_info = getattr(request, "match_info", None)
    except AssertionError:  # aiohttp asserts it is set: a request it could not parse has none
        match_info = None
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else "(no route)"


class PrivateAccessLogger(AbstractAccessLogger):
    """One line per request: method, route, status and seconds; nothing about who asked."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info("%s %s %d %.3fs", request.method, route_of(request), response.status, time)


class _WithoutPersonalData(logging.Filter):
    """aiohttp's server lines, with their arguments (the peer) withheld and an error shown by
    its class and where it happened, never its text: a malformed request's error quotes the
    header bytes, a database error the statement's arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            try:
                record.msg = str(record.msg) % tuple(WITHHELD for _ in args)
            except (TypeError, ValueError):  # a %d, or a mapping: the bare words then
                record.msg = str(record.msg)
            record.args = ()
        if record.exc_info and record.exc_info[1] is not None:
            _, exc, tb = record.exc_info
            record.msg = f"{record.msg}: {type(exc).__name__}"
            record.exc_info = None
            record.exc_text = None
            if isinstance(exc, HttpProcessingError):
                # A request that is not HTTP (a scanner's, mostly): the client's mistake,
                # not ours, so neither an error nor a traceback.
                record.levelno, record.levelname = logging.INFO, "INFO"
                return SERVER_LOG.isEnabledFor(logging.INFO)
            record.msg += "\n" + "".join(traceback.format_tb(tb)).rstrip()
        return True


# The logger aiohttp's request handlers write their errors to (aiohttp.server otherwise).
SERVER_LOG = logging.getLogger("tracker.http")
SERVER_LOG.addFilter(_WithoutPersonalData())
