"""The click path: GET /c/TOKEN records the click as consent allows now, then redirects."""

from __future__ import annotations

import ipaddress
from urllib.parse import quote

from aiohttp import web

from tracker.keys import PAGES, POOL, TOKENS
from tracker.pages import render_page
from tracker.queries import SQL

# Characters kept as they are in a Location header; everything else (spaces,
# non-ASCII, CR/LF) is percent-encoded, so a stored URL can never split the header.
_LOCATION_SAFE = "!#$%&'()*+,-./:;=?@[]_~"

REDIRECT_HEADERS = {
    "Cache-Control": "no-store",
    # The target site must not learn the token through the Referer header.
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}


def truncated_ip(remote: str | None) -> str | None:
    """The network, not the host: /24 for IPv4, /48 for IPv6."""
    if not remote:
        return None
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return None
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def not_found(request: web.Request) -> web.Response:
    return render_page(request.app[PAGES], "not_found.html", status=404)


async def follow_link(request: web.Request) -> web.Response:
    ids = request.app[TOKENS].click.decode(request.match_info["token"])
    if ids is None:
        return not_found(request)
    message_id, link_id = ids
    # Link checkers send HEAD; people's browsers never do.
    kind, reason = ("bot", "head request") if request.method == "HEAD" else ("human", None)
    url = await request.app[POOL].fetchval(
        SQL.record_click,
        message_id,
        link_id,
        truncated_ip(request.remote),
        request.headers.get("User-Agent"),
        kind,
        reason,
    )
    if url is None:
        return not_found(request)
    return web.Response(
        status=302, headers={"Location": quote(url, safe=_LOCATION_SAFE), **REDIRECT_HEADERS}
    )
