"""The click path: GET /c/TOKEN records the click durably, as consent allows now, then redirects."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from tracker import metrics
from tracker.bots import classify_request
from tracker.clients import client
from tracker.keys import DETECTOR, PAGES, RECORDER, SETTINGS, TARGETS, TOKENS
from tracker.pages import render_page
from tracker.recorder import Click, Outcome, now
from tracker.targets import TargetsUnavailable
from tracker.tokens import PLACEHOLDER_ID

log = logging.getLogger(__name__)

REDIRECT_HEADERS = {
    "Cache-Control": "no-store",
    # The target site must not learn the token through the Referer header.
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}
RETRY_AFTER_SECONDS = 30


def not_found(request: web.Request, *, status: int = 404) -> web.Response:
    return render_page(request.app[PAGES], "not_found.html", status=status)


def unavailable(request: web.Request) -> web.Response:
    response = render_page(request.app[PAGES], "unavailable.html", status=503)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


async def follow_link(request: web.Request) -> web.Response:
    started = time.perf_counter()
    app = request.app
    who = client(request, app[SETTINGS].trusted_proxies)
    machine = classify_request(request.method, who.user_agent)
    ids = app[TOKENS].click.decode(request.match_info["token"])
    if ids is None or PLACEHOLDER_ID in ids:
        # A preview's placeholder never redirects, whatever state the database is in: a
        # spooled click is not checked against the outbox until it is replayed.
        return _counted(not_found(request), machine, "invalid")
    message_id, link_id = ids
    try:
        target = await app[TARGETS].get(link_id)
    except TargetsUnavailable:
        return _counted(unavailable(request), machine, "unavailable")
    if target is None:
        return _counted(not_found(request), machine, "invalid")
    location = target.location
    if target.per_message:
        try:
            location = await app[TARGETS].message_location(message_id, link_id, target)
        except TargetsUnavailable:
            return _counted(unavailable(request), machine, "unavailable")

    # Its timing (a burst, a honeypot's neighbourhood, too soon after delivery) is judged
    # where the click is written, against every process's clicks (tracker/bots.py).
    click = Click(
        message_id=message_id,
        link_id=link_id,
        at=now(),
        kind="bot" if machine else "human",
        reason=machine,
        ip=who.ip,
        user_agent=who.user_agent,
        seen=app[DETECTOR].seen(),
    )
    result = await app[RECORDER].record(click)
    if result.outcome is Outcome.INVALID:
        return _counted(not_found(request), machine, "invalid")
    if result.outcome is Outcome.REFUSED:
        return _counted(not_found(request, status=400), machine, "refused")
    bot = machine or result.bot_reason
    metrics.click_counter("bot" if bot else "human", result.outcome.value).inc()
    metrics.REDIRECT_SECONDS.observe(time.perf_counter() - started)
    if location is None:
        # A link made for one person, whose data is erased, and whose template wrote no site
        # to fall back on: counted (anonymously), but it leads nowhere.
        return render_page(app[PAGES], "link_erased.html", status=410)
    return web.Response(status=302, headers={"Location": location, **REDIRECT_HEADERS})


def _counted(response: web.Response, machine: str | None, outcome: str) -> web.Response:
    """Clicks that do not redirect count too: a rise in invalid tokens shows a key mismatch."""
    metrics.click_counter("bot" if machine else "human", outcome).inc()
    return response
