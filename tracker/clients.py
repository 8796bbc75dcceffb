"""Who is asking: the client's address (behind trusted proxies only) and how much of it we keep."""

from __future__ import annotations

import ipaddress

from aiohttp import web


def client_ip(request: web.Request, trusted: tuple) -> str | None:
    """The peer, or — if the peer is a trusted proxy — the last untrusted X-Forwarded-For hop.

    Anyone can send X-Forwarded-For; believing it from an untrusted peer would let
    a client choose the address we record.
    """
    peer = request.remote
    if not trusted or not peer or not _is_trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _is_trusted(hop, trusted):
            return hop
    return peer


def _is_trusted(address: str, trusted: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def truncated_ip(address: str | None) -> str | None:
    """The network, not the host: /24 for IPv4, /48 for IPv6."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)
