"""The suppression list: addresses never to be mailed again, kept as keyed hashes only.

An entry is HMAC-SHA256 of the normalised address under this deployment's suppression
key (both defined in tracker/migrations/0004_suppression_hashes.sql, where the hash is
computed: one implementation, used by every statement). It tells whether an address we
are given is suppressed; it cannot be turned back into the address.

Entries come from erasure (tracker.consent; reason "minor" for a child's, `erase --minor`),
5.1.1 bounces (mailer.delivery), and `fairclick suppression add` (a complaint, or an
operator's decision). There is no feedback-loop (ARF) reader yet: a complaint is recorded
with `add --reason complained`. Only `fairclick suppression remove`, after the person
opted in again, lifts one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from tracker.errors import FairclickError
from tracker.queries import SQL

REASONS = ("erased", "bounced", "complained", "operator", "minor")
# What `suppression add` may record; erasure and bounces record themselves.
ADDABLE = ("complained", "operator")


@dataclass(frozen=True)
class Suppression:
    reason: str
    since: datetime


def check_address(email: str) -> str:
    """The address as given, or FairclickError saying in one line why it cannot be one."""
    address = email.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise FairclickError(f"not an email address: {email!r}")
    if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in address):
        raise FairclickError(f"control characters in the address {email!r}")
    if any(0xD800 <= ord(c) < 0xE000 for c in address):  # undecodable bytes on the command line
        raise FairclickError(f"the address {email!a} is not valid UTF-8")
    if not domain.isascii():
        # Imports accept only ASCII domains, so that is the form the list was hashed in.
        raise FairclickError(
            f"write the domain of {email!r} in its ASCII (xn--) form, as recipient lists have it"
        )
    return address


async def suppression_of(conn: asyncpg.Connection, email: str) -> Suppression | None:
    row = await conn.fetchrow(SQL.suppression_of, email)
    return Suppression(row["reason"], row["created_at"]) if row else None


async def suppress(conn: asyncpg.Connection, email: str, reason: str) -> Suppression | None:
    """Add the address; returns the entry that was already there (kept as is), or None."""
    if reason not in REASONS:
        raise ValueError(f"unknown suppression reason {reason!r}")
    async with conn.transaction():
        if await conn.fetchval(SQL.suppress_address, email, reason):
            return None
        return await suppression_of(conn, email)


async def lift(conn: asyncpg.Connection, email: str) -> Suppression | None:
    """Remove the address from the list; the entry removed, or None if it was not there."""
    row = await conn.fetchrow(SQL.lift_suppression, email)
    return Suppression(row["reason"], row["created_at"]) if row else None


async def suppressed_positions(conn: asyncpg.Connection, emails: list[str]) -> set[int]:
    """Which of these addresses (0-based positions) are suppressed, in one statement."""
    return set(await conn.fetchval(SQL.suppressed_positions, emails))
