"""The preference page /p/TOKEN: GET shows the choices, POST changes them (and RFC 8058).

/p/TOKEN/data and /p/TOKEN/erase (POST, same origin only) download or erase nothing: the
page is a bearer link, so they mail the address a one-time link that does
(tracker/mailbox_links.py, tracker/mailbox_pages.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import asyncpg
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from tracker.consent import change_choices, current_choices
from tracker.keys import PAGES, POOL, SETTINGS, TOKENS
from tracker.mailbox_links import LINK_MINUTES, Requested, request_link
from tracker.pages import render_page
from tracker.queries import SQL
from tracker.tokens import PLACEHOLDER_ID
from tracker.wordings import PAGE, one_click_proof, page_proof

ONE_CLICK_BODY = b"List-Unsubscribe=One-Click"
_YES_NO = {"yes": True, "no": False}


def _recipient_id(request: web.Request) -> int | None:
    ids = request.app[TOKENS].preferences.decode(request.match_info["token"])
    return ids[0] if ids else None


def _url(request: web.Request, route: str) -> str:
    """The path of one of this token's pages (the page, its data, its erasure)."""
    return str(request.app.router[route].url_for(token=request.match_info["token"]))


async def _page(request: web.Request, recipient_id: int, *, status=200, **extra) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        choices = await current_choices(conn, recipient_id)
    if choices is None:
        return await _gone(request)
    return render_page(
        request.app[PAGES],
        "preferences.html",
        status=status,
        email=choices["email"],
        format=choices["format"],
        tracking_consent=choices["tracking_consent"],
        subscribed=choices["subscribed"],
        action=_url(request, "preferences"),
        data_url=_url(request, "personal_data"),
        erase_url=_url(request, "erase"),
        wording=PAGE,  # the questions' texts, kept as proof of what was shown (wordings.py)
        link_minutes=LINK_MINUTES,
        saved=extra.pop("saved", False),
        problems=extra.pop("problems", []),
    )


async def _gone(request: web.Request, conn: asyncpg.Connection | None = None) -> web.Response:
    """The answer of a link that names nobody: a person since erased, or not one of ours.

    conn: the connection the handler holds, if any (a second one could wait on a full pool).
    """
    recipient_id = _recipient_id(request)
    if recipient_id is not None and recipient_id != PLACEHOLDER_ID:  # not forged, no preview's
        queries = conn or request.app[POOL]
        if await queries.fetchval(SQL.recipient_id_issued, recipient_id):
            # A token we signed for someone who is no longer held: only erasure removes one.
            return render_page(request.app[PAGES], "data_erased.html", status=410)
    return render_page(request.app[PAGES], "not_found.html", status=404)


async def show_preferences(request: web.Request) -> web.Response:
    recipient_id = _recipient_id(request)
    if recipient_id is None:
        return await _gone(request)
    return await _page(request, recipient_id, saved=request.query.get("saved") == "1")


async def _form(request: web.Request) -> tuple[Mapping, str | None]:
    """The posted form, or an empty one and why it could not be read."""
    try:
        return await request.post(), None
    except LookupError:
        # A charset Python does not know (`charset=bogus`), in the request or in a part.
        return {}, "The form arrived in a character set we cannot read; send it again."
    except (ValueError, HttpProcessingError):
        return {}, "The form arrived broken; send it again."


def _same_origin(request: web.Request) -> bool:
    """Whether the browser says this POST comes from one of our own pages.

    Origin decides when sent. Without it (older browsers, some privacy settings) the
    browser's Sec-Fetch-Site decides, else the Referer's origin (our pages send it:
    Referrer-Policy same-origin). A POST showing none of them is refused: another site's
    page must not be able to change or erase someone's data by posting our forms.
    """
    base = request.app[SETTINGS].base_url
    ours = URL(base).origin() if base else request.url.origin()
    origin = request.headers.get("Origin")
    if origin is not None:
        return _origin_of(origin) == ours
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site == "same-origin"  # never same-site: a sibling host is not us
    referer = request.headers.get("Referer")
    return referer is not None and _origin_of(referer) == ours


def _origin_of(value: str) -> URL | None:
    try:
        return URL(value).origin()
    except ValueError:  # "null", a relative or malformed URL
        return None


def _other_origin() -> web.Response:
    return web.Response(status=403, text="This form can only be sent from its own page.\n")


async def change_preferences(request: web.Request) -> web.Response:
    recipient_id = _recipient_id(request)
    if recipient_id is None:
        return await _gone(request)
    pool = request.app[POOL]
    form, unreadable = await _form(request)
    if (
        form.get("List-Unsubscribe") == "One-Click"
        or (await request.read()).strip() == ONE_CLICK_BODY
    ):
        # RFC 8058: a mail provider's one-click unsubscribe (urlencoded or multipart); no
        # cookies, no Origin, no page.
        async with pool.acquire() as conn:
            if await current_choices(conn, recipient_id) is None:
                return await _gone(request, conn)
            await change_choices(
                conn, recipient_id, subscribed=False, source="one-click unsubscribe",
                proof=one_click_proof(request.app[SETTINGS]),
            )  # fmt: skip
        sender = request.app[SETTINGS].organisation_name or "these emails"
        return web.Response(
            text=f"You are unsubscribed from {sender}.\n", headers={"Cache-Control": "no-store"}
        )
    if not _same_origin(request):
        return _other_origin()
    if unreadable:
        return await _page(request, recipient_id, status=400, problems=[unreadable])
    choices, problems = {}, []
    fmt = form.get("format")
    if fmt not in ("html", "text"):
        problems.append("Choose HTML or text-only email.")
    else:
        choices["format"] = fmt
    for field, key, what in (
        ("tracking", "tracking_consent", "whether we may record your clicks"),
        ("subscribed", "subscribed", "whether to stay subscribed"),
    ):
        value = form.get(field)
        if value not in _YES_NO:
            problems.append(f"Choose {what}.")
        else:
            choices[key] = _YES_NO[value]
    if problems:
        return await _page(request, recipient_id, status=400, problems=problems)
    async with pool.acquire() as conn:
        if await current_choices(conn, recipient_id) is None:
            return await _gone(request, conn)
        await change_choices(
            conn, recipient_id, source="preference page",
            proof=page_proof(request.app[SETTINGS]), **choices,
        )  # fmt: skip
    # Post/redirect/get: reloading the page never posts the form again.
    raise web.HTTPSeeOther(request.path + "?saved=1", headers={"Cache-Control": "no-store"})


async def download_data(request: web.Request) -> web.Response:
    """POST /p/TOKEN/data: mail the address a one-time link to the download; nothing more."""
    return await _mail_a_link(request, "download")


async def erase_data(request: web.Request) -> web.Response:
    """POST /p/TOKEN/erase: mail the address a one-time link to the erasure; nothing more."""
    return await _mail_a_link(request, "erase")


async def _mail_a_link(request: web.Request, action: str) -> web.Response:
    """Queue the link (the worker mails it) and say where it went, or that enough went already.

    Who gets it comes from the signed token only. Same origin only: another site must not
    make us mail people.
    """
    recipient_id = _recipient_id(request)
    if recipient_id is None:
        return await _gone(request)
    if not _same_origin(request):
        return _other_origin()
    async with request.app[POOL].acquire() as conn:
        outcome = await request_link(conn, recipient_id, action)
        if outcome is None:
            return await _gone(request, conn)
    sent = isinstance(outcome, Requested)
    response = render_page(
        request.app[PAGES],
        "link_sent.html",
        status=200 if sent else 429,
        action=action,
        outcome=outcome,
        sent=sent,
        link_minutes=LINK_MINUTES,
        page_url=_url(request, "preferences"),
    )
    if not sent:
        wait = (outcome.try_after - datetime.now(UTC)).total_seconds()
        response.headers["Retry-After"] = str(max(1, int(wait)))
    return response


async def show_erased(request: web.Request) -> web.Response:
    """GET /erased: what a person sees after erasing their data (it names nobody)."""
    return render_page(request.app[PAGES], "erased.html")
