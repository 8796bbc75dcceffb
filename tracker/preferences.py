"""The preference page /p/TOKEN: GET shows the choices, POST changes them (and RFC 8058).

/p/TOKEN/data downloads everything held about the person (POST from the page, read-only:
a link scanner or prefetcher that follows links from the page must not fetch it);
/p/TOKEN/erase erases it (POST, confirmed, same origin only).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import asyncpg
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from tracker.consent import change_choices, current_choices, erase_recipient
from tracker.errors import ErasureBusy
from tracker.keys import PAGES, POOL, SETTINGS, TOKENS
from tracker.pages import render_page
from tracker.personal_data import (
    as_json,
    content_disposition,
    download_filename,
    personal_data,
)
from tracker.queries import SQL
from tracker.tokens import PLACEHOLDER_ID

ONE_CLICK_BODY = b"List-Unsubscribe=One-Click"
_YES_NO = {"yes": True, "no": False}
ERASE_CONFIRMATION = "I understand this cannot be undone"


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
        erase_confirmation=ERASE_CONFIRMATION,
        saved=extra.pop("saved", False),
        problems=extra.pop("problems", []),
        erase_problem=extra.pop("erase_problem", None),
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
                conn, recipient_id, subscribed=False, source="one-click unsubscribe"
            )
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
        await change_choices(conn, recipient_id, source="preference page", **choices)
    # Post/redirect/get: reloading the page never posts the form again.
    raise web.HTTPSeeOther(request.path + "?saved=1", headers={"Cache-Control": "no-store"})


async def download_data(request: web.Request) -> web.Response:
    """POST /p/TOKEN/data: a JSON file of everything held about the person; changes nothing.

    A form button, not a link: mail security gateways and prefetchers fetch the links of
    the pages they open, and would take the person's data with them.
    """
    recipient_id = _recipient_id(request)
    if recipient_id is None:
        return await _gone(request)
    if not _same_origin(request):
        return _other_origin()
    async with request.app[POOL].acquire() as conn:
        data = await personal_data(conn, recipient_id)
    if data is None:
        return await _gone(request)
    return web.Response(
        text=as_json(data),
        content_type="application/json",
        headers={
            "Content-Disposition": content_disposition(
                download_filename(request.app[SETTINGS], datetime.now(UTC).date())
            ),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "X-Robots-Tag": "noindex",
            "Referrer-Policy": "same-origin",
        },
    )


async def erase_data(request: web.Request) -> web.Response:
    """POST /p/TOKEN/erase: erase the person the token names, once they confirmed it.

    Who is erased comes from the signed token only, never from the form.
    """
    recipient_id = _recipient_id(request)
    if recipient_id is None:
        return await _gone(request)
    if not _same_origin(request):
        return _other_origin()
    form, unreadable = await _form(request)
    if unreadable or form.get("confirm") != "yes":
        why = unreadable or f"Tick “{ERASE_CONFIRMATION}” to erase your data."
        return await _page(
            request, recipient_id, status=400, erase_problem=f"Nothing was erased. {why}"
        )
    try:
        async with request.app[POOL].acquire() as conn:
            erased = await erase_recipient(conn, recipient_id)
    except ErasureBusy:
        response = render_page(request.app[PAGES], "erase_later.html", status=503)
        response.headers["Retry-After"] = "60"
        return response
    if not erased:
        return await _gone(request)
    # Post/redirect/get: reloading the answer shows it again instead of re-posting to a
    # link that names nobody any more.
    raise web.HTTPSeeOther("/erased", headers={"Cache-Control": "no-store"})


async def show_erased(request: web.Request) -> web.Response:
    """GET /erased: what a person sees after erasing their data (it names nobody)."""
    return render_page(request.app[PAGES], "erased.html")
