"""Link targets, cached in the process: a link's URL never changes once stored.

A link that is the message's (its href reads the recipient: mailer/template_links.py) leads
where its message's rendering went (message_links), read per click, never cached: erasure
deletes that URL, and the next click must no longer find it.
"""

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


# The literal origin of a URL as a template wrote it: scheme and host, written out before
# any Jinja ("https://shop.example/?who={{ … }}" has one, "https://{{ … }}/" none).
_WRITTEN_ORIGIN = re.compile(r"(https?)://([^/?#{}\s]+)[/?#]", re.IGNORECASE)


def erased_location(written: str) -> str | None:
    """Where a link that was the message's leads once its rendering is erased: the origin the
    template wrote (a page of the campaign's site, naming nobody), or None (nowhere)."""
    match = _WRITTEN_ORIGIN.match(written)
    return location_of(f"{match[1]}://{match[2]}/") if match else None


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    campaign_id: int
    honeypot: bool
    # The url as it goes into the Location header, encoded once; for a per-message link, where
    # it leads when its message's URL is gone (erased_location).
    location: str | None
    per_message: bool = False


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
        per_message = row["per_message"]
        location = erased_location(row["url"]) if per_message else location_of(row["url"])
        target = Target(row["url"], row["campaign_id"], row["honeypot"], location, per_message)
        self._targets[link_id] = target
        return target

    async def message_location(self, message_id: int, link_id: int, target: Target) -> str | None:
        """Where a per-message link leads for this message: its rendered URL (one indexed
        read), or, once erased (or for a message that never had it), target.location."""
        try:
            async with self.pool.acquire(timeout=2) as conn:
                url = await conn.fetchval(SQL.message_link_url, message_id, link_id, timeout=2)
        except UNREACHABLE as exc:
            raise TargetsUnavailable from exc
        return location_of(url) if url is not None else target.location
