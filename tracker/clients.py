"""Who is asking: the client's address (behind trusted proxies only), its agent, and how much
of them we keep.

Everything a click or an open takes from the request passes through client() before it is
queued, so no value a client chose can fail the statement that writes a batch of other
people's clicks.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

from aiohttp import web

# Longer than any browser's or mail client's agent; the rest of a longer one says nothing.
MAX_USER_AGENT = 512
# aiohttp hands undecodable header bytes over as lone surrogates (surrogateescape), which
# UTF-8 cannot encode; PostgreSQL text refuses NUL. Other control characters are stored
# fine but would reach terminals and CSV exports raw: none of them belongs in an agent.
_UNSTORABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
REPLACEMENT = "\ufffd"


@dataclass(frozen=True, slots=True)
class Client:
    """What is kept of the requester, already storable: a network and a cleaned agent."""

    ip: str | None
    user_agent: str | None


def client(request: web.Request, trusted: tuple) -> Client:
    agent = request.headers.get("User-Agent")
    return Client(truncated_ip(client_ip(request, trusted)), storable_text(agent, MAX_USER_AGENT))


def storable_text(value: str | None, limit: int) -> str | None:
    """value cut to limit characters, every undecodable byte and control character replaced."""
    if value is None:
        return None
    return _UNSTORABLE.sub(REPLACEMENT, value[:limit])


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
