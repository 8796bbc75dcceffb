"""The JSON API under /api/v1: the numbers the console pages show, for scripts.

Every answer under /api/ is JSON, errors included, in one shape (api_errors):
{"error": {"code": "not_found", "message": "…"}}. The document describing it is
console/openapi.py, served at /api/openapi.json; tests/test_openapi.py keeps the two in step.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

from aiohttp import web

from console.auth import log_action, require_operator
from console.keys import PRINCIPAL
from console.openapi import MAX_LIMIT, MAX_OFFSET, document
from console.recipients import recipient_detail, search_recipients
from mailer.campaigns import set_status
from mailer.link_check import check_links
from tracker.consent import change_choices
from tracker.database import UNREACHABLE
from tracker.errors import Conflict, FairclickError, NotFound
from tracker.keys import POOL, SETTINGS
from tracker.logs import route_of
from tracker.queries import load_queries
from tracker.reports import (
    BUCKETS,
    campaign_failures,
    campaign_list,
    campaign_report,
    campaign_series,
)
from tracker.wordings import operator_proof

log = logging.getLogger(__name__)
SQL = load_queries("console", "api.sql")
routes = web.RouteTableDef()

PREFIX = "/api/"
DEFAULT_LIMIT = 50
DEFAULT_FAILURES = 100
RETRY_AFTER_SECONDS = 30
# A series' start and end: no campaign is older or newer (and date arithmetic stays in range).
EARLIEST_YEAR, LATEST_YEAR = 1970, 9000
# The longest address there can be (RFC 5321): a longer lookup matches nobody.
MAX_ADDRESS = 254
# What the error codes mean, by HTTP status (a status not here is "error").
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    500: "internal",
    503: "unavailable",
}
# A whole number as scripts write one: ASCII digits only (int() would take " 1", "+1",
# "1_0" and other scripts' digits), not so many that the database could not hold it.
_NUMBER = re.compile(r"[0-9]{1,18}")


class ApiError(Exception):
    """An answer other than 2xx, in the API's error shape."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, headers=None) -> web.Response:
    code = ERROR_CODES.get(status, "error")
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


# Headers of aiohttp's own errors worth keeping (405's Allow, 401's challenge).
_KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


@web.middleware
async def api_errors(request: web.Request, handler):
    """Every error under /api/ as JSON in one shape, the router's 404 and 405 included; the
    database away is a 503 saying so; an unexpected error a logged 500, still JSON."""
    if not request.path.startswith(PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: exc.headers[k] for k in _KEPT_HEADERS if k in exc.headers}
        message = (exc.text or "").strip()
        if not message or message.startswith(f"{exc.status}:"):  # aiohttp's "404: Not Found"
            message = exc.reason
        return error_response(exc.status, message, headers)
    except NotFound as exc:
        return error_response(404, str(exc))
    except Conflict as exc:
        return error_response(409, str(exc))
    except FairclickError as exc:  # a value a report or lookup cannot take (BadArgument …)
        return error_response(400, str(exc))
    except UNREACHABLE as exc:
        # The route as declared: a path may hold a name with line breaks or an address.
        log.warning("%s %s: database unreachable (%s)", request.method, route_of(request), exc)
        return error_response(
            503,
            "the database is unreachable; try again shortly",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    except Exception:
        log.exception("%s %s failed", request.method, route_of(request))
        return error_response(500, "an unexpected error; it was logged")


def _number(request: web.Request, key: str, default: int, least: int, most: int) -> int:
    text = request.query.get(key)
    if text is None:
        return default
    if not _NUMBER.fullmatch(text) or not least <= int(text) <= most:
        raise ApiError(400, f"{key} must be a whole number from {least} to {most}")
    return int(text)


def _page(request: web.Request, prefix: str = "", default: int = DEFAULT_LIMIT) -> tuple[int, int]:
    """(limit, offset) of a list, from the query (?limit=&offset=)."""
    limit = _number(request, f"{prefix}limit", default, 1, MAX_LIMIT)
    offset = _number(request, f"{prefix}offset", 0, 0, MAX_OFFSET)
    return limit, offset


def _text(value: str, what: str) -> str:
    """value, if PostgreSQL can hold it (no NUL, nothing that is not Unicode text)."""
    if "\x00" in value:
        raise ApiError(400, f"the {what} holds a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"the {what} is not Unicode text") from None
    return value


def _campaign_name(request: web.Request) -> str:
    """The {name} of the path: a name no campaign can have is a 404, like any unknown one."""
    name = request.match_info["name"]
    try:
        return _text(name, "campaign name")
    except ApiError:
        raise NotFound(f"no campaign named {name!r}") from None


def _moment(request: web.Request, key: str) -> datetime | None:
    text = request.query.get(key)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        raise ApiError(
            400,
            f"{key} must be a date and time from {EARLIEST_YEAR} to {LATEST_YEAR}, "
            "such as 2026-10-01T00:00:00Z",
        )
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _paged(items: list, total: int, limit: int, offset: int) -> dict:
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@routes.get("/api/openapi.json", name="openapi")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API (public: it describes no data)."""
    return web.json_response(document())


@routes.get("/api/v1/me", name="api_me")
async def me(request: web.Request) -> web.Response:
    """Who the request is authenticated as, and what they may do."""
    principal = request[PRINCIPAL]
    return web.json_response(
        {"name": principal.name, "kind": principal.kind, "role": principal.role}
    )


@routes.get("/api/v1/campaigns", name="api_campaigns")
async def campaigns(request: web.Request) -> web.Response:
    limit, offset = _page(request)
    async with request.app[POOL].acquire() as conn:
        page = await campaign_list(conn, limit=limit, offset=offset)
    return web.json_response(_paged(page["campaigns"], page["total"], limit, offset))


def summary_of(report: dict) -> dict:
    """One campaign at a glance, as an item of the campaign list shows it."""
    keys = ("status", "created_at", "queued", "sent", "failed", "unknown", "pending")
    clicks = report["clicks"]
    return {
        "name": report["campaign"],
        **{k: report[k] for k in keys},
        "recipients": report["recipients"],
        "clicks": {"human": clicks["total"], "unique": clicks["unique"], "bot": clicks["bot"]},
        "rates": report["rates"],
    }


@routes.get("/api/v1/campaigns/{name}", name="api_campaign")
async def campaign(request: web.Request) -> web.Response:
    name = _campaign_name(request)
    async with request.app[POOL].acquire() as conn:
        report = await campaign_report(conn, name)
    return web.json_response(summary_of(report))


@routes.get("/api/v1/campaigns/{name}/report", name="api_campaign_report")
async def report(request: web.Request) -> web.Response:
    """`fairclick report --format json`, with the time series and the failures."""
    name = _campaign_name(request)
    bucket = request.query.get("bucket", "hour")
    if bucket not in BUCKETS:
        raise ApiError(400, f"bucket must be one of: {', '.join(BUCKETS)}")
    start, end = _moment(request, "start"), _moment(request, "end")
    limit, offset = _page(request, "failures_", DEFAULT_FAILURES)
    async with request.app[POOL].acquire() as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            result = await campaign_report(conn, name)
            result["series"] = {
                "bucket": bucket,
                "points": await campaign_series(conn, name, bucket=bucket, start=start, end=end),
            }
            result["failures"] = await campaign_failures(conn, name, limit=limit, offset=offset)
        if any(r["email"] is not None for r in result["failures"]["recipients"]):
            # Onward transfer (policy section 5): an answer naming people is logged.
            await log_action(conn, request[PRINCIPAL], "export report failures", f"campaign {name}")
    return web.json_response(result)


@routes.get("/api/v1/campaigns/{name}/links", name="api_campaign_links")
async def links(request: web.Request) -> web.Response:
    """The link check: every link of the templates as written, tracked or why not."""
    name = _campaign_name(request)
    base_url = request.app[SETTINGS].base_url
    async with request.app[POOL].acquire() as conn:
        checked = await check_links(conn, name, base_url=base_url)
    return web.json_response({"campaign": name, "links": checked})


async def _change_status(request: web.Request, action: str) -> web.Response:
    principal = request[PRINCIPAL]
    require_operator(request, principal)
    name = _campaign_name(request)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        status = await set_status(conn, name, action)
        await log_action(conn, principal, f"campaign {action}", f"campaign {name}")
    return web.json_response({"campaign": name, "status": status})


@routes.post("/api/v1/campaigns/{name}/pause", name="api_campaign_pause")
async def pause(request: web.Request) -> web.Response:
    """Stop delivering (operator): workers claim nothing of a paused campaign."""
    return await _change_status(request, "pause")


@routes.post("/api/v1/campaigns/{name}/resume", name="api_campaign_resume")
async def resume(request: web.Request) -> web.Response:
    return await _change_status(request, "resume")


@routes.post("/api/v1/campaigns/{name}/cancel", name="api_campaign_cancel")
async def cancel(request: web.Request) -> web.Response:
    """Never deliver the rest (operator): queued and deferred messages are cancelled."""
    return await _change_status(request, "cancel")


@routes.get("/api/v1/recipients", name="api_recipients")
async def recipients(request: web.Request) -> web.Response:
    """?email=: the one person with that address (case-insensitive), or nobody;
    ?q=: addresses containing the text, as the console's search box finds them."""
    email, query = request.query.get("email"), request.query.get("q")
    if (email is None) == (query is None):
        raise ApiError(400, "give either email= (one address) or q= (a search)")
    limit, offset = _page(request)
    async with request.app[POOL].acquire() as conn:
        if query is not None:
            query = _text(query, "search")
            found = await search_recipients(conn, query, limit=limit, offset=offset)
            await _log_recipients(conn, request, "export recipient search", found["recipients"])
            return web.json_response(_paged(found["recipients"], found["total"], limit, offset))
        email = _text(email, "address").strip()
        rows = [] if len(email) > MAX_ADDRESS else await conn.fetch(SQL.recipient_by_address, email)
        shown = rows[offset : offset + limit]
        await _log_recipients(conn, request, "export recipient lookup", shown)
    items = [
        {**dict(r), "created_at": r["created_at"].isoformat() if r["created_at"] else None}
        for r in rows
    ]
    return web.json_response(_paged(items[offset : offset + limit], len(items), limit, offset))


@routes.get("/api/v1/recipients/{id}", name="api_recipient")
async def recipient(request: web.Request) -> web.Response:
    """One person: choices, consent history, messages, identified clicks."""
    text = request.match_info["id"]
    if not text.isascii() or not text.isdigit():
        raise ApiError(400, "a recipient's id is a whole number")
    if not _NUMBER.fullmatch(text):  # more digits than any id
        raise NotFound(f"no recipient with id {text}")
    async with request.app[POOL].acquire() as conn:
        detail = await recipient_detail(conn, int(text))
        if detail is not None:
            await log_action(conn, request[PRINCIPAL], "export recipient", f"recipient #{text}")
    if detail is None:
        raise NotFound(f"no recipient with id {text}")
    return web.json_response(detail)


@routes.post("/api/v1/recipients/{id}/unsubscribe", name="api_recipient_unsubscribe")
async def unsubscribe(request: web.Request) -> web.Response:
    """Record an unsubscribe the person asked for elsewhere (operator): a consent event with
    channel 'api', the token as actor and the API's wording (tracker/wordings.py)."""
    principal = request[PRINCIPAL]
    require_operator(request, principal)
    text = request.match_info["id"]
    if not text.isascii() or not text.isdigit():
        raise ApiError(400, "a recipient's id is a whole number")
    if not _NUMBER.fullmatch(text):
        raise NotFound(f"no recipient with id {text}")
    proof = operator_proof(request.app[SETTINGS], actor=principal.actor, channel="api")
    async with request.app[POOL].acquire() as conn, conn.transaction():
        try:
            changes = await change_choices(
                conn, int(text), subscribed=False, source="api", proof=proof
            )
        except NotFound:
            raise NotFound(f"no recipient with id {text}") from None
        await log_action(conn, principal, "unsubscribe", f"recipient #{text}")
    return web.json_response({"id": int(text), "subscribed": False, "changed": bool(changes)})


async def _log_recipients(conn, request: web.Request, action: str, people) -> None:
    """Onward transfer (privacy policy section 5): an answer that names people is logged,
    naming them by number only; an answer naming nobody is not an export."""
    if people:
        subject = "recipients " + ", ".join(f"#{p['id']}" for p in people)
        await log_action(conn, request[PRINCIPAL], action, subject)
