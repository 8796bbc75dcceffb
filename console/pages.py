"""The console's HTML pages: campaigns, one campaign, its link check and preview, recipients.

Server-rendered from templates/console with autoescaping, no script anywhere. GET shows,
POST changes: only an operator's POST (require_operator) pauses, resumes, cancels or erases,
and each such action, and each export naming people, goes to the log of actions.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from math import ceil
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from console.auth import log_action, page_context, require_operator
from console.charts import series_chart
from console.keys import CONSOLE_PAGES, PRINCIPAL
from console.recipients import MAX_SEARCH, recipient_detail, search_recipients
from console.recipients import SQL as RECIPIENTS_SQL
from mailer.campaigns import set_status
from mailer.link_check import check_links
from mailer.preview import preview_message
from tracker.consent import change_choices, erase_recipient
from tracker.errors import ErasureBusy, FairclickError, NotFound
from tracker.keys import POOL, SETTINGS
from tracker.reports import (
    as_csv,
    campaign_failures,
    campaign_list,
    campaign_report,
    campaign_series,
    failures_as_csv,
)
from tracker.wordings import operator_proof

routes = web.RouteTableDef()

PAGE_SIZE = 50
# Past this a page number is a mistake (and its offset would overflow a bigint).
MAX_PAGE_NUMBER = 1_000_000
BUCKETS = ("hour", "day")
ACTIONS = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}
# The preview's own policy: nothing fetched (no tracking pixel, no remote image), no script,
# no form, and a sandbox even if opened outside the console's iframe.
PREVIEW_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"


class BadQuery(FairclickError):
    """A query value a page cannot take: answered with a 400 page saying which and why."""


def render(request: web.Request, template: str, *, status: int = 200, **context) -> web.Response:
    env = request.app[CONSOLE_PAGES]
    html = env.get_template(template).render(**page_context(request), **context)
    return web.Response(text=html, status=status, content_type="text/html")


def _problem(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return render(request, "error.html", status=status, title=title, message=message)


def page(handler):
    """A page handler whose mistakes become pages: 404 unknown, 400 bad value, 403 viewer."""

    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except NotFound as exc:
            return _problem(request, 404, "Not found", str(exc))
        except ErasureBusy as exc:  # nothing was erased; a moment later it will be
            return _problem(request, 503, "Try again shortly", str(exc))
        except FairclickError as exc:
            return _problem(request, 400, "Cannot show that", str(exc))
        except web.HTTPForbidden as exc:
            return _problem(request, 403, "Not allowed", exc.text or "")

    return answer


def _text(value: str, what: str) -> str:
    """A path or query value PostgreSQL can hold (no NUL, no lone surrogate), else a 400."""
    if "\x00" in value:
        raise BadQuery(f"{what} holds a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadQuery(f"{what} is not valid UTF-8") from None
    return value


async def _form(request: web.Request):
    """The POSTed form; a body that is no form (a broken multipart, bad bytes) is a 400."""
    try:
        return await request.post()
    except (ValueError, LookupError, HttpProcessingError):
        raise BadQuery("the form could not be read; send it again from the page") from None


def _campaign_name(request: web.Request) -> str:
    try:
        return _text(request.match_info["name"], "the campaign name")
    except BadQuery:
        raise NotFound("no such campaign") from None


def _page_number(request: web.Request, key: str = "page") -> int:
    raw = request.query.get(key, "1")
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_NUMBER:
        raise BadQuery(
            f"?{key}= must be a page number from 1 to {MAX_PAGE_NUMBER}, not {raw[:40]!r}"
        )
    return int(raw)


def _pages(total: int, number: int) -> dict:
    return {"number": number, "count": max(1, ceil(total / PAGE_SIZE)), "total": total}


def campaign_path(name: str, suffix: str = "") -> str:
    """/campaigns/NAME…: the name percent-encoded whole ("/" too; aiohttp decodes it back)."""
    return "/campaigns/" + quote(name, safe="") + suffix


def with_query(path: str, **params) -> str:
    return path + "?" + urlencode({k: v for k, v in params.items() if v is not None})


def _attachment(text: str, filename: str) -> web.Response:
    return web.Response(
        text=text,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _file_stem(name: str) -> str:
    """A campaign name made safe for a download's file name (ASCII letters, digits, - _ .)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60] or "campaign"


def when(moment) -> str:
    """A timestamp (ISO text or datetime) as 'YYYY-MM-DD HH:MM UTC'; '' for none."""
    if moment is None:
        return ""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def add_filters(env: jinja2.Environment) -> None:
    env.filters.update(campaign_path=campaign_path, with_query=with_query, when=when)


@routes.get("/", name="home")
async def home(request: web.Request) -> web.Response:
    raise web.HTTPFound("/campaigns")


@routes.get("/campaigns", name="campaigns")
@page
async def campaigns(request: web.Request) -> web.Response:
    number = _page_number(request)
    async with request.app[POOL].acquire() as conn:
        listed = await campaign_list(conn, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE)
    return render(
        request, "campaigns.html", campaigns=listed["campaigns"],
        pages=_pages(listed["total"], number),
    )  # fmt: skip


@routes.get("/campaigns/{name:[^/]+}", name="campaign")
@page
async def campaign(request: web.Request) -> web.Response:
    name = _campaign_name(request)
    bucket = request.query.get("bucket", "hour")
    if bucket not in BUCKETS:
        raise BadQuery(f"?bucket= must be hour or day, not {bucket[:40]!r}")
    failures_page = _page_number(request, "failures")
    async with request.app[POOL].acquire() as conn:
        report = await campaign_report(conn, name)
        series = await campaign_series(conn, name, bucket=bucket)
        failures = await campaign_failures(
            conn, name, limit=PAGE_SIZE, offset=(failures_page - 1) * PAGE_SIZE
        )
    chart = series_chart(series, bucket=bucket, title=f"Clicks and opens per {bucket}: {name}")
    changed = request.query.get("changed")
    return render(
        request,
        "campaign.html",
        report=report,
        series=series,
        chart=chart,
        bucket=bucket,
        failures=failures,
        failure_pages=_pages(failures["total"], failures_page),
        changed=ACTIONS.get(changed or ""),
    )


@routes.post("/campaigns/{name:[^/]+}/status", name="campaign_status")
@page
async def change_status(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    require_operator(request, principal)
    name = _campaign_name(request)
    form = await _form(request)
    action = form.get("action")
    if action not in ACTIONS:
        raise BadQuery("choose pause, resume or cancel")
    if action == "cancel" and form.get("confirm") != "yes":
        raise BadQuery("to cancel, tick the box that says the rest will never be sent")
    async with request.app[POOL].acquire() as conn:
        await set_status(conn, name, action)
        await log_action(conn, principal, f"campaign {action}", f"campaign {name}")
    raise web.HTTPSeeOther(with_query(campaign_path(name), changed=action))


@routes.get("/campaigns/{name:[^/]+}/links.csv", name="campaign_links_csv")
@page
async def links_csv(request: web.Request) -> web.Response:
    name = _campaign_name(request)
    async with request.app[POOL].acquire() as conn:
        report = await campaign_report(conn, name)
    return _attachment(as_csv(report), f"{_file_stem(name)}-links.csv")


@routes.get("/campaigns/{name:[^/]+}/failures.csv", name="campaign_failures_csv")
@page
async def failures_csv(request: web.Request) -> web.Response:
    name = _campaign_name(request)
    async with request.app[POOL].acquire() as conn:
        total = (await campaign_failures(conn, name, limit=0))["total"]
        failures = await campaign_failures(conn, name, limit=total)
        # The file names the people whose mail failed: who took it is on record.
        await log_action(conn, request[PRINCIPAL], "export failures csv", f"campaign {name}")
    return _attachment(failures_as_csv(failures), f"{_file_stem(name)}-failures.csv")


@routes.get("/campaigns/{name:[^/]+}/links", name="campaign_link_check")
@page
async def link_check(request: web.Request) -> web.Response:
    """Every link of the templates as written, tracked or why not; and one recipient's mail."""
    name = _campaign_name(request)
    email = _text(request.query.get("email", "").strip(), "the address")
    if len(email) > MAX_SEARCH:
        raise BadQuery(f"an address has at most {MAX_SEARCH} characters")
    async with request.app[POOL].acquire() as conn:
        links = await check_links(conn, name, base_url=request.app[SETTINGS].base_url)
        known = bool(email) and await conn.fetchval(RECIPIENTS_SQL.recipient_id_by_email, email)
    preview_src = with_query(campaign_path(name, "/preview"), email=email) if known else None
    return render(
        request, "links.html", name=name, links=links, email=email,
        preview_src=preview_src, unknown_email=bool(email) and not known,
    )  # fmt: skip


@routes.get("/campaigns/{name:[^/]+}/preview", name="campaign_preview")
@page
async def preview(request: web.Request) -> web.Response:
    """One recipient's message as HTML, for the link check page's sandboxed iframe."""
    name = _campaign_name(request)
    email = _text(request.query.get("email", ""), "the address")
    if not email or len(email) > MAX_SEARCH:
        raise BadQuery("give the address of a recipient (?email=)")
    async with request.app[POOL].acquire() as conn:
        shown = await preview_message(conn, request.app[SETTINGS], name, email)
    html = shown.message.get_body(("html",))
    if html is not None:
        body = html.get_content()
    else:
        text = shown.message.get_body(("plain",)).get_content()
        body = request.app[CONSOLE_PAGES].get_template("preview_text.html").render(text=text)
    return web.Response(
        text=body,
        content_type="text/html",
        headers={"Content-Security-Policy": PREVIEW_CSP, "X-Robots-Tag": "noindex"},
    )


@routes.get("/recipients", name="recipients")
@page
async def recipients(request: web.Request) -> web.Response:
    query = _text(request.query.get("q", ""), "the search")
    number = _page_number(request)
    erased = request.query.get("erased", "")
    async with request.app[POOL].acquire() as conn:
        found = await search_recipients(
            conn, query, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE
        )
        # Say "erased" only of someone who is in fact no longer held.
        if erased.isascii() and erased.isdigit() and len(erased) < 19:
            if await recipient_detail(conn, int(erased)) is not None:
                erased = ""
        else:
            erased = ""
    return render(
        request, "recipients.html", query=query, found=found["recipients"],
        pages=_pages(found["total"], number), erased=erased,
    )  # fmt: skip


def _recipient_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound("no such recipient")
    return int(raw)


@routes.get("/recipients/{id}", name="recipient")
@page
async def recipient(request: web.Request) -> web.Response:
    recipient_id = _recipient_id(request)
    async with request.app[POOL].acquire() as conn:
        person = await recipient_detail(conn, recipient_id)
    if person is None:
        raise NotFound(f"no recipient #{recipient_id} (never held, or erased)")
    return render(request, "recipient.html", person=person)


@routes.post("/recipients/{id}/erase", name="recipient_erase")
@page
async def erase(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    require_operator(request, principal)
    recipient_id = _recipient_id(request)
    form = await _form(request)
    if form.get("confirm") != "yes":
        raise BadQuery("to erase, tick the box that says it cannot be undone")
    async with request.app[POOL].acquire() as conn:
        if not await erase_recipient(conn, recipient_id):
            raise NotFound(f"no recipient #{recipient_id} (never held, or erased already)")
        # The log names the person by number only: it must not keep what was just erased.
        await log_action(conn, principal, "erase", f"recipient #{recipient_id}")
    raise web.HTTPSeeOther(with_query("/recipients", erased=recipient_id))


# --- consent proof (issue 11): an operator records an unsubscribe asked for elsewhere ---
@routes.post("/recipients/{id}/unsubscribe", name="recipient_unsubscribe")
@page
async def unsubscribe(request: web.Request) -> web.Response:
    """The person asked us (a reply, a letter, a call): a consent event with channel
    'operator', the operator as actor, and the fixed wording for it (tracker/wordings.py)."""
    principal = request[PRINCIPAL]
    require_operator(request, principal)
    recipient_id = _recipient_id(request)
    form = await _form(request)
    if form.get("confirm") != "yes":
        raise BadQuery("to unsubscribe them, tick the box that says the person asked for it")
    proof = operator_proof(request.app[SETTINGS], actor=principal.actor)
    async with request.app[POOL].acquire() as conn:
        await change_choices(
            conn, recipient_id, subscribed=False, source="console", proof=proof
        )  # NotFound (a 404 page) when nobody has this id
        await log_action(conn, principal, "unsubscribe", f"recipient #{recipient_id}")
    raise web.HTTPSeeOther(f"/recipients/{recipient_id}")
