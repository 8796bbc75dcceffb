"""The click path: GET /c/TOKEN records the click durably, as consent allows now, then redirects."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from tracker import metrics
from tracker.bots import classify_request
from tracker.clients import client_ip, truncated_ip
from tracker.database import UNREACHABLE
from tracker.keys import DETECTOR, PAGES, POOL, RECORDER, SETTINGS, TARGETS, TOKENS
from tracker.pages import render_page
from tracker.queries import SQL
from tracker.recorder import Click, Outcome, now
from tracker.targets import TargetsUnavailable

log = logging.getLogger(__name__)

REDIRECT_HEADERS = {
    "Cache-Control": "no-store",
    # The target site must not learn the token through the Referer header.
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}
RETRY_AFTER_SECONDS = 30


def not_found(request: web.Request) -> web.Response:
    return render_page(request.app[PAGES], "not_found.html", status=404)


def unavailable(request: web.Request) -> web.Response:
    response = render_page(request.app[PAGES], "unavailable.html", status=503)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


async def follow_link(request: web.Request) -> web.Response:
    started = time.perf_counter()
    app = request.app
    ids = app[TOKENS].click.decode(request.match_info["token"])
    if ids is None:
        return not_found(request)
    message_id, link_id = ids
    try:
        target = await app[TARGETS].get(link_id)
    except TargetsUnavailable:
        return unavailable(request)
    if target is None:
        return not_found(request)
    location = target.location
    if target.per_message:
        try:
            location = await app[TARGETS].message_location(message_id, link_id, target)
        except TargetsUnavailable:
            return unavailable(request)

    user_agent = request.headers.get("User-Agent")
    verdict = app[DETECTOR].judge(message_id, link_id, honeypot=target.honeypot)
    reason = classify_request(request.method, user_agent) or verdict.reason
    click = Click(
        message_id=message_id,
        link_id=link_id,
        at=now(),
        kind="bot" if reason else "human",
        reason=reason,
        ip=truncated_ip(client_ip(request, app[SETTINGS].trusted_proxies)),
        user_agent=user_agent,
    )
    result = await app[RECORDER].record(click)
    if result.outcome is Outcome.INVALID:
        return not_found(request)
    verdict.seen.key = result.key
    if verdict.earlier:
        # Only a machine waits for this: the clicks before it in the burst are re-marked.
        await _mark_bots(app, verdict.earlier, verdict.earlier_reason)
    metrics.click_counter(click.kind, result.outcome.value).inc()
    metrics.REDIRECT_SECONDS.observe(time.perf_counter() - started)
    if location is None:
        # A link made for one person, whose data is erased, and whose template wrote no site
        # to fall back on: counted (anonymously), but it leads nowhere.
        return render_page(app[PAGES], "link_erased.html", status=410)
    return web.Response(status=302, headers={"Location": location, **REDIRECT_HEADERS})


async def _mark_bots(app: web.Application, earlier: list, reason: str) -> None:
    """Re-mark earlier clicks of a message once a later one shows it is being scanned."""
    keys = [seen.key for seen in earlier if seen.key is not None]
    if not keys:
        return
    try:
        await app[POOL].execute(
            SQL.mark_clicks_bot, [k[0] for k in keys], [k[1] for k in keys], reason
        )
    except UNREACHABLE as exc:
        log.warning("could not re-mark %d clicks as bot: %s", len(keys), exc)
