"""The report rollups (migration 0006): kept exact by triggers, rebuilt here on demand."""

from __future__ import annotations

import asyncpg


async def rebuild_rollups(conn: asyncpg.Connection) -> None:
    """Recount every rollup from the clicks, opens and outbox rows, in one transaction (the
    writers of those tables wait for it): what migration 0006 did for the data it found."""
    async with conn.transaction():
        await conn.execute("SELECT rebuild_rollups()")
