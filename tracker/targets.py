"""Link targets, cached in the process: a link's URL never changes once stored."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

import asyncpg
import idna

from tracker import metrics
from tracker.database import UNREACHABLE
from tracker.queries import SQL

MAX_CACHED = 200_000


class TargetsUnavailable(Exception):
    """The link is not cached and the database cannot be asked."""


# Characters kept as they are in a Location header; everything else (spaces,
# non-ASCII, CR/LF) is percent-encoded, so a stored URL can never split the header.
# "%" is kept: an escape already in the URL is not escaped twice.
_LOCATION_SAFE = "!#$%&'()*+,-./:;=?@[]_~"
_AUTHORITY = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)([^/?#]*)(.*)", re.DOTALL)


def idna_location(url: str) -> str:
    """The URL as it goes into a Location header: ASCII, its host in IDNA (RFC 3986 §3.2.2).

    A host like 例え.jp becomes xn--r8jz45g.jp: clients that do not speak IRIs cannot
    follow a percent-encoded host. IDNA 2008 with UTS 46 mapping (the `idna` package), as
    browsers resolve it: Python's own codec is IDNA 2003, which turns faß.de into fass.de,
    another domain. Path, query and fragment are percent-encoded as UTF-8; userinfo and port
    stay. Raises ValueError for a host that has no IDNA form (☃.net, an empty label).
    """
    match = _AUTHORITY.fullmatch(url)
    if match is None:
        return quote(url, safe=_LOCATION_SAFE)
    scheme, authority, rest = match.groups()
    userinfo, at, hostport = authority.rpartition("@")
    # An IPv6 literal ("[::1]:8080") is ASCII and kept whole, port and all.
    host, colon, port = ("", "", hostport) if hostport.startswith("[") else hostport.partition(":")
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"its host {host!r} has no IDNA form ({exc})") from None
    authority = userinfo + at + host + colon + port
    return scheme + quote(authority, safe=_LOCATION_SAFE) + quote(rest, safe=_LOCATION_SAFE)


def location_of(url: str) -> str:
    """idna_location(url); a URL stored before hosts were checked at send time keeps
    redirecting as it always did (host percent-encoded), never a 500 at click time."""
    try:
        return idna_location(url)
    except ValueError:
        return quote(url, safe=_LOCATION_SAFE)


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    campaign_id: int
    honeypot: bool
    location: str  # the url as it goes into the Location header, encoded once


class TargetCache:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool
        self._targets: dict[int, Target] = {}

    async def get(self, link_id: int) -> Target | None:
        target = self._targets.get(link_id)
        if target is not None:
            metrics.LINK_CACHE_HIT.inc()
            return target
        metrics.LINK_CACHE_MISS.inc()
        try:
            async with self.pool.acquire(timeout=2) as conn:
                row = await conn.fetchrow(SQL.link_target, link_id, timeout=2)
        except UNREACHABLE as exc:
            raise TargetsUnavailable from exc
        if row is None:
            return None  # not cached: a link id can be created later by a send
        if len(self._targets) >= MAX_CACHED:
            self._targets.clear()
        target = Target(row["url"], row["campaign_id"], row["honeypot"], location_of(row["url"]))
        self._targets[link_id] = target
        return target
