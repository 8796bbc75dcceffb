"""The report rollups (tracker/migrations/0006_rollups.sql): kept exact by triggers, rebuilt here."""

from __future__ import annotations

import asyncpg


async def rebuild_rollups(conn: asyncpg.Connection) -> None:
    """Recount every rollup from the clicks, opens and outbox rows, in one transaction (the
    writers of those tables wait for it): what migration 0006 did for the data it found."""
    async with conn.transaction():
        await conn.execute("SELECT rebuild_rollups()")
