"""Retention: de-identify clicks and opens after some months, and delete them after more.

Cut-offs fall on month boundaries (UTC), the partitions' own: de-identifying touches
only the months concerned, and deleting drops whole monthly partitions (no vacuum
debt), with a plain DELETE for rows that sit in the default partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import asyncpg

from tracker.errors import FairclickError
from tracker.partitions import PARTITIONED, month_start
from tracker.queries import SQL


@dataclass
class RetentionResult:
    deidentified_before: date
    deleted_before: date | None
    deidentified: dict[str, int] = field(default_factory=dict)  # rows per table
    dropped: list[str] = field(default_factory=list)  # partitions dropped whole
    deleted: dict[str, int] = field(default_factory=dict)  # rows deleted one by one


_DEIDENTIFY = {"clicks": SQL.deidentify_clicks_before, "opens": SQL.deidentify_opens_before}
_DELETE = {"clicks": SQL.delete_clicks_before, "opens": SQL.delete_opens_before}


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _rows(status: str) -> int:
    """The row count of an UPDATE/DELETE command tag ('UPDATE 12')."""
    return int(status.rsplit(" ", 1)[-1])


async def apply_retention(
    conn: asyncpg.Connection,
    *,
    deidentify_after: int,
    delete_after: int | None = None,
    today: date | None = None,
) -> RetentionResult:
    """Anonymise what is older than `deidentify_after` whole months; delete past `delete_after`."""
    if deidentify_after < 1:
        raise FairclickError("--de-identify-after must be at least 1 month")
    if delete_after is not None and delete_after <= deidentify_after:
        raise FairclickError(
            f"--delete-after ({delete_after}) must be more months than "
            f"--de-identify-after ({deidentify_after})"
        )
    today = today or datetime.now(UTC).date()
    # "After 3 months" keeps this month and the 3 before it whole.
    deidentify_cutoff = month_start(today, -deidentify_after)
    delete_cutoff = month_start(today, -delete_after) if delete_after else None
    result = RetentionResult(deidentify_cutoff, delete_cutoff)
    async with conn.transaction():
        for table in PARTITIONED:
            status = await conn.execute(_DEIDENTIFY[table], _midnight(deidentify_cutoff))
            result.deidentified[table] = _rows(status)
    if delete_cutoff is not None:
        # Each step on its own: dropping a partition locks its parent table, and clicks
        # wait on that lock only for the moment of the DROP itself. Every step can be
        # run again, so a run cut short is finished by the next one.
        for table in PARTITIONED:
            for part in await conn.fetch(SQL.monthly_partitions, table):
                if month_start(part["month"], 1) <= delete_cutoff:
                    async with conn.transaction():
                        # A DROP fires no trigger: its rows leave the report rollups first,
                        # with the partition held so that none is added in between. DDL
                        # takes no parameters; the name comes from the catalogue.
                        await conn.execute(f'LOCK TABLE "{part["name"]}" IN SHARE MODE')
                        await conn.execute(SQL.uncount_partition, part["name"])
                        await conn.execute(f'DROP TABLE "{part["name"]}"')
                    result.dropped.append(part["name"])
            status = await conn.execute(_DELETE[table], _midnight(delete_cutoff))
            result.deleted[table] = _rows(status)
    return result
