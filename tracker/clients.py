"""Who is asking: the client's address (behind trusted proxies only) and how much of it we keep."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

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


_V4_MASK = ~0xFF  # keep /24
_V6_MASK = ~((1 << 80) - 1)  # keep /48


@lru_cache(maxsize=65536)
def truncated_ip(address: str | None) -> str | None:
    """The network, not the host: /24 for IPv4, /48 for IPv6 (cached: it is on every click)."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.version == 4:
        return str(ipaddress.IPv4Address(int(ip) & _V4_MASK))
    return str(ipaddress.IPv6Address(int(ip) & _V6_MASK))
