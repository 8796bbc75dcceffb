"""The open pixel: GET /o/TOKEN.gif always answers a 1×1 GIF; opens recorded as consent allows."""

from __future__ import annotations

import base64

from aiohttp import web

from tracker import metrics
from tracker.bots import classify_request
from tracker.clients import client
from tracker.keys import RECORDER, SETTINGS, TOKENS
from tracker.recorder import Open, now
from tracker.tokens import PLACEHOLDER_ID

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PIXEL_HEADERS = {"Cache-Control": "no-store, private", "X-Robots-Tag": "noindex"}

# Mail privacy proxies fetch every image when the message arrives, whether or not
# anyone reads it: an "open" through them says nothing about a person.
PRIVACY_PROXY_MARKERS = ("GoogleImageProxy", "YahooMailProxy", "ggpht.com")
APPLE_MAIL_PRIVACY_AGENT = "Mozilla/5.0"  # Apple Mail Privacy Protection sends exactly this


def machine_open_reason(request: web.Request, user_agent: str | None) -> str | None:
    """Why this fetch of the pixel is not a person opening the mail, or None."""
    purpose = request.headers.get("Sec-Purpose") or request.headers.get("Purpose") or ""
    if "prefetch" in purpose.lower():
        return "prefetch"
    user_agent = user_agent or ""
    if user_agent.strip() == APPLE_MAIL_PRIVACY_AGENT:
        return "mail privacy proxy (Apple)"
    if any(marker in user_agent for marker in PRIVACY_PROXY_MARKERS):
        return "mail privacy proxy"
    return classify_request(request.method, user_agent)


async def open_pixel(request: web.Request) -> web.Response:
    response = web.Response(body=PIXEL, content_type="image/gif", headers=PIXEL_HEADERS)
    ids = request.app[TOKENS].opens.decode(request.match_info["token"])
    if ids is None or ids[0] == PLACEHOLDER_ID:
        return response  # a broken image would show; the pixel answers the same either way
    who = client(request, request.app[SETTINGS].trusted_proxies)
    reason = machine_open_reason(request, who.user_agent)
    event = Open(
        message_id=ids[0],
        at=now(),
        kind="bot" if reason else "human",
        reason=reason,
        ip=who.ip,
        user_agent=who.user_agent,
    )
    try:
        await request.app[RECORDER].record(event)
    except Exception:  # the image must always load; the error is logged where it happened
        return response
    metrics.OPENS.labels(event.kind).inc()
    return response
