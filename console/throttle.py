"""Failed logins slow down further tries: per account and per client address, in the database.

From the FREE_FAILURES-th failure of one account on (FREE_FAILURES_PER_ADDRESS from one
address), each failure blocks that subject for twice as long as the one before: 1 s, 2 s,
4 s … up to MAX_BLOCK_SECONDS. A block refuses logins without checking the password, for
existing and unknown accounts alike. Counts are kept in PostgreSQL so every process and
host agrees; failures further apart than WINDOW_SECONDS start the count again, and a
successful login clears its account's count (not its address's: one valid account must not
reset the guessing of others from that address).
"""

from __future__ import annotations

import hashlib

import asyncpg

from tracker.queries import load_queries

SQL = load_queries("console")

FREE_FAILURES = 5
FREE_FAILURES_PER_ADDRESS = 20
MAX_BLOCK_SECONDS = 15 * 60
WINDOW_SECONDS = 60 * 60


def account(email: str) -> bytes:
    return hashlib.sha256(b"account:" + email.strip().lower().encode("utf-8", "replace")).digest()


def address(ip: str | None) -> bytes:
    return hashlib.sha256(b"address:" + (ip or "unknown").encode("utf-8", "replace")).digest()


def block_seconds(failures: int, free: int) -> int:
    """How long the subject is blocked after its n-th failure in a row."""
    if failures < free:
        return 0
    return min(2 ** (failures - free), MAX_BLOCK_SECONDS)


async def blocked_for(conn: asyncpg.Connection, email: str, ip: str | None) -> float | None:
    """Seconds until a login for this account from this address may be tried; None: now."""
    return await conn.fetchval(SQL.login_blocked_for, [account(email), address(ip)])


async def record_failure(conn: asyncpg.Connection, email: str, ip: str | None) -> None:
    async with conn.transaction():
        await conn.execute(SQL.forget_old_login_failures, WINDOW_SECONDS)
        subjects = ((account(email), FREE_FAILURES), (address(ip), FREE_FAILURES_PER_ADDRESS))
        for subject, free in subjects:
            failures = await conn.fetchval(SQL.record_login_failure, subject, WINDOW_SECONDS)
            if seconds := block_seconds(failures, free):
                await conn.execute(SQL.block_login, subject, seconds)


async def record_success(conn: asyncpg.Connection, email: str) -> None:
    await conn.execute(SQL.forget_login_failures, account(email))
