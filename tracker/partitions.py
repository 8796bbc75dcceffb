"""Monthly partitions of clicks and opens, created ahead of time."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

import asyncpg

log = logging.getLogger(__name__)

PARTITIONED = ("clicks", "opens")
MONTHS_AHEAD = 3


def month_start(d: date, offset: int = 0) -> date:
    """The first day of d's month, moved by offset months."""
    index = d.year * 12 + d.month - 1 + offset
    return date(index // 12, index % 12 + 1, 1)


async def ensure_partitions(
    conn: asyncpg.Connection, *, today: date | None = None, months_ahead: int = MONTHS_AHEAD
) -> list[str]:
    """Create this month's partition and the next ones; returns those created."""
    today = today or datetime.now(UTC).date()
    created = []
    for offset in range(0, months_ahead + 1):
        start, end = month_start(today, offset), month_start(today, offset + 1)
        for table in PARTITIONED:
            name = f"{table}_{start:%Y_%m}"
            exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
            if exists:
                continue
            # DDL takes no parameters; every piece here comes from a date, never from input.
            try:
                await conn.execute(
                    f"CREATE TABLE {name} PARTITION OF {table} "
                    f"FOR VALUES FROM ('{start.isoformat()} 00:00+00') "
                    f"TO ('{end.isoformat()} 00:00+00')"
                )
            except asyncpg.PostgresError as exc:
                # Rows for that month already in the default partition; they stay counted
                # there, and ops see this once a day until they move them.
                log.warning("cannot create partition %s: %s", name, exc)
                continue
            created.append(name)
    return created
