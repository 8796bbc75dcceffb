"""Failed logins slow down further tries: per account and per client address, in the database.

Every try is counted before its password is checked, and a successful one is taken back
(so many tries sent at once cannot all pass before the first failure is written). From the
FREE_FAILURES-th try of one account on (FREE_FAILURES_PER_ADDRESS from one address), each
try blocks that subject for twice as long as the one before: 1 s, 2 s, 4 s … up to
MAX_BLOCK_SECONDS. A block refuses logins without checking the password, for existing and
unknown accounts alike, and does not count. Counts are kept in PostgreSQL so every process
and host agrees; tries further apart than WINDOW_SECONDS start the count again, and a
successful login clears its account's count (its address keeps the failures: one valid
account must not reset the guessing of others from there).
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


class _Blocked(Exception):
    def __init__(self, wait: float):
        self.wait = wait


async def count_attempt(conn: asyncpg.Connection, email: str, ip: str | None) -> float | None:
    """Count a try for this account from this address; seconds to wait if a block refuses it."""
    subjects = ((account(email), FREE_FAILURES), (address(ip), FREE_FAILURES_PER_ADDRESS))
    try:
        async with conn.transaction():
            await conn.execute(SQL.forget_old_login_failures, WINDOW_SECONDS)
            counted = []
            for subject, free in subjects:  # always in this order: no deadlock between tries
                row = await conn.fetchrow(SQL.count_login_attempt, subject, WINDOW_SECONDS)
                if row["wait"] > 0:
                    raise _Blocked(row["wait"])  # rolls back: a refused try counts nowhere
                counted.append((subject, block_seconds(row["failures"], free)))
            for subject, seconds in counted:
                if seconds:
                    await conn.execute(SQL.block_login, subject, seconds)
    except _Blocked as blocked:
        return blocked.wait
    return None


async def record_success(conn: asyncpg.Connection, email: str, ip: str | None) -> None:
    """Take the try back: the account starts afresh, the address loses this one try."""
    async with conn.transaction():
        await conn.execute(SQL.forget_login_failures, account(email))
        await conn.execute(SQL.uncount_login_attempt, address(ip))
