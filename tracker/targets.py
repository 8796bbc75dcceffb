"""Link targets, cached in the process: a link's URL never changes once stored."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import asyncpg

from tracker import metrics
from tracker.database import UNREACHABLE
from tracker.queries import SQL

MAX_CACHED = 200_000


class TargetsUnavailable(Exception):
    """The link is not cached and the database cannot be asked."""


# Characters kept as they are in a Location header; everything else (spaces,
# non-ASCII, CR/LF) is percent-encoded, so a stored URL can never split the header.
_LOCATION_SAFE = "!#$%&'()*+,-./:;=?@[]_~"


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
        target = Target(
            row["url"], row["campaign_id"], row["honeypot"], quote(row["url"], safe=_LOCATION_SAFE)
        )
        self._targets[link_id] = target
        return target
