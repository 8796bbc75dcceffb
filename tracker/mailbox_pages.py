"""/p/confirm/ACTION/TOKEN: the one-time link mailed for a download or an erasure.

GET shows what the link will do and a button; it never acts (mail scanners and prefetchers
GET every link of a message). POST acts, once: the link's row is marked used in the same
transaction as the download or the erasure. A link that was altered, made for another
action or another purpose answers 404; one used, expired or whose person was erased, 410.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from tracker.consent import erase_recipient
from tracker.errors import ErasureBusy
from tracker.exports import log_export
from tracker.keys import PAGES, POOL, SETTINGS, TOKENS
from tracker.mailbox_links import LINK_MINUTES, LinkState, link_state, use_link
from tracker.pages import render_page
from tracker.personal_data import as_json, content_disposition, download_filename, personal_data
from tracker.preferences import _form, _other_origin, _same_origin
from tracker.tokens import MAILBOX_ACTIONS

ERASE_CONFIRMATION = "I understand this cannot be undone"


def _link(request: web.Request) -> tuple[str, int, int] | None:
    """(action, link id, recipient id) of a genuine token for the action in the path."""
    action = request.match_info["action"]
    if action not in MAILBOX_ACTIONS:
        return None
    ids = request.app[TOKENS].mailbox[action].decode(request.match_info["token"])
    return (action, *ids) if ids else None


def _not_valid(request: web.Request) -> web.Response:
    return render_page(request.app[PAGES], "not_found.html", status=404)


def _dead(request: web.Request, action: str, state: LinkState) -> web.Response:
    """A used, expired or erased link: says which, changes nothing (410 Gone)."""
    return render_page(
        request.app[PAGES],
        "mailbox_link_dead.html",
        status=410,
        action=action,
        state=state.state,
        link_minutes=LINK_MINUTES,
    )


def _confirm_page(
    request: web.Request, action: str, state: LinkState, *, status: int = 200, problem=None
) -> web.Response:
    return render_page(
        request.app[PAGES],
        "mailbox_confirm.html",
        status=status,
        action=action,
        email=state.email,
        expires_at=state.expires_at,
        form_action=request.path,
        erase_confirmation=ERASE_CONFIRMATION,
        problem=problem,
    )


async def show_confirmation(request: web.Request) -> web.Response:
    """GET (and HEAD): what the link does, and the button that does it. Changes nothing."""
    link = _link(request)
    if link is None:
        return _not_valid(request)
    action, link_id, recipient_id = link
    async with request.app[POOL].acquire() as conn:
        state = await link_state(conn, action, link_id, recipient_id)
    if state is None:
        return _not_valid(request)
    if state.state != "usable":
        return _dead(request, action, state)
    return _confirm_page(request, action, state)


async def confirm(request: web.Request) -> web.Response:
    """POST: download or erase, if the link is still usable; it is then used up."""
    link = _link(request)
    if link is None:
        return _not_valid(request)
    if not _same_origin(request):
        return _other_origin()
    action, link_id, recipient_id = link
    pool = request.app[POOL]
    async with pool.acquire() as conn:
        state = await link_state(conn, action, link_id, recipient_id)
        if state is None:
            return _not_valid(request)
        if state.state != "usable":
            return _dead(request, action, state)
        if action == "erase":
            form, unreadable = await _form(request)
            if unreadable or form.get("confirm") != "yes":
                why = unreadable or f"Tick “{ERASE_CONFIRMATION}” to erase your data."
                return _confirm_page(
                    request, action, state, status=400, problem=f"Nothing was erased. {why}"
                )
            return await _erase(request, conn, link_id, recipient_id)
        return await _download(request, conn, link_id, recipient_id)


async def _after_a_race(request, conn, action: str, link_id: int, recipient_id: int):
    """The link was usable when read but not when used (a second POST, or it just expired)."""
    state = await link_state(conn, action, link_id, recipient_id)
    return _not_valid(request) if state is None else _dead(request, action, state)


async def _download(request: web.Request, conn, link_id: int, recipient_id: int) -> web.Response:
    # One snapshot for the data (personal_data's own transaction nests in this one) and the
    # link used up with it: if reading fails, the link still works.
    try:
        async with conn.transaction(isolation="repeatable_read"):
            if not await use_link(conn, "download", link_id, recipient_id):
                data = None
            else:
                data = await personal_data(conn, recipient_id)
                if data is not None:  # onward transfer (policy section 5): every export logged
                    await log_export(conn, "recipient", "download personal data", recipient_id)
    except asyncpg.SerializationError:
        # Another request used the link (or erased the person) since this snapshot began.
        data = None
    if data is None:
        return await _after_a_race(request, conn, "download", link_id, recipient_id)
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


async def _erase(request: web.Request, conn, link_id: int, recipient_id: int) -> web.Response:
    try:
        # The erasure's transaction nests in this one: used up and erased together, or neither.
        async with conn.transaction():
            erased = await use_link(conn, "erase", link_id, recipient_id) and (
                await erase_recipient(conn, recipient_id, reason="request")
            )
    except ErasureBusy:
        response = render_page(request.app[PAGES], "erase_later.html", status=503)
        response.headers["Retry-After"] = "60"
        return response
    if not erased:
        return await _after_a_race(request, conn, "erase", link_id, recipient_id)
    # Post/redirect/get, as the page's erasure did.
    raise web.HTTPSeeOther("/erased", headers={"Cache-Control": "no-store"})
