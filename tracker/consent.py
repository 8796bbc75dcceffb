"""A recipient's choices: read them, change them (each change logged), erase the person."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import asyncpg

from tracker.errors import ErasureBusy, NotFound
from tracker.queries import SQL
from tracker.wordings import Proof, remember


@dataclass(frozen=True)
class Choices:
    format: str
    tracking_consent: bool
    subscribed: bool


async def current_choices(conn: asyncpg.Connection, recipient_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(SQL.recipient_choices, recipient_id)


async def change_choices(
    conn: asyncpg.Connection,
    recipient_id: int,
    *,
    format: str | None = None,
    tracking_consent: bool | None = None,
    subscribed: bool | None = None,
    source: str,
    proof: Proof | None = None,
) -> list[str]:
    """Apply the given choices and log one consent event per actual change; returns the changes.

    proof (tracker.wordings) says what the person was shown, under which privacy policy and
    through which channel; every caller in fairclick gives one (tests may not).
    """
    changes = []
    async with conn.transaction():
        now = await conn.fetchrow(SQL.lock_recipient, recipient_id)
        if now is None:
            raise NotFound("this recipient no longer exists")
        if format is not None and format != now["format"]:
            await conn.execute(SQL.set_format, recipient_id, format)
            await log_event(conn, recipient_id, "format", format, source, proof)
            changes.append(f"format: {format}")
        if tracking_consent is not None and tracking_consent != now["tracking_consent"]:
            value = "granted" if tracking_consent else "withdrawn"
            await conn.execute(SQL.set_tracking_consent, recipient_id, tracking_consent)
            await log_event(conn, recipient_id, "tracking", value, source, proof)
            changes.append(f"tracking: {value}")
        if subscribed is not None and subscribed != now["subscribed"]:
            value = "subscribed" if subscribed else "unsubscribed"
            await conn.execute(SQL.set_subscribed, recipient_id, subscribed)
            await log_event(conn, recipient_id, "subscription", value, source, proof)
            changes.append(value)
    return changes


async def log_event(
    conn: asyncpg.Connection,
    recipient_id: int,
    kind: str,
    value: str,
    source: str,
    proof: Proof | None,
) -> None:
    """One consent event, with its proof: the wording shown for this kind of choice (stored
    once, tracker/wordings.py), the privacy policy in force, the channel and the actor."""
    if proof is None:
        await conn.execute(SQL.log_consent_event, recipient_id, kind, value, source)
        return
    wording = proof.wordings.get(kind)
    digest = await remember(conn, wording, proof.known) if wording is not None else None
    await conn.execute(
        SQL.log_consent_event_with_proof, recipient_id, kind, value, source, proof.channel,
        digest, proof.policy_url, proof.policy_version, proof.actor,
    )  # fmt: skip


# Why an erasure happened (erasure_counts): the person asked on their page, an operator
# erased them, or they turned out to be a child (privacy policy section 7).
ERASURE_REASONS = ("request", "operator", "minor")


async def erase(conn: asyncpg.Connection, email: str, *, reason: str = "operator") -> bool:
    """Erase the person with this address (the `fairclick erase` command); False if none."""
    recipient_id = await conn.fetchval(SQL.find_recipient_by_email, email.strip())
    return recipient_id is not None and await erase_recipient(conn, recipient_id, reason=reason)


# While erasure queues for its lock on clicks and opens, PostgreSQL queues every click and
# open write behind it: so it queues 250 ms at most (erasure_lock_timeout), lets them
# through, and tries again, this many times in all (about 6 s).
ERASURE_ATTEMPTS = 8


async def erase_recipient(
    conn: asyncpg.Connection,
    recipient_id: int,
    *,
    attempts: int | None = None,
    reason: str = "operator",
) -> bool:
    """Remove everything about the person; their clicks stay only as anonymous counts.

    False if they are not (or no longer) held. ErasureBusy (nothing erased) if other
    writes to clicks and opens (a retention run, a spool replay, a vacuum) held their
    tables throughout all attempts. reason (ERASURE_REASONS) is counted, nothing more;
    "minor" also marks the suppression entry.
    """
    if reason not in ERASURE_REASONS:
        raise ValueError(f"unknown erasure reason {reason!r}")
    attempts = ERASURE_ATTEMPTS if attempts is None else attempts
    for attempt in range(attempts):
        try:
            return await _erase_once(conn, recipient_id, reason)
        except asyncpg.LockNotAvailableError:
            if attempt == attempts - 1:
                raise ErasureBusy(
                    "could not erase now: clicks are being written in a long transaction "
                    "(retention, spool replay or vacuum); nothing was erased, try again shortly"
                ) from None
            jitter = random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not security
            await asyncio.sleep(min(2.0, 0.05 * 2**attempt) * jitter)
    return False  # attempts < 1


async def _erase_once(conn: asyncpg.Connection, recipient_id: int, reason: str) -> bool:
    async with conn.transaction():
        await conn.execute(SQL.erasure_lock_timeout)
        email = await conn.fetchval(SQL.lock_recipient_for_erasure, recipient_id)
        if email is None:
            return False
        # A click read the person's consent before this began but commits after: without
        # this it would stay identified (message, IP network, user agent) for good.
        await conn.execute(SQL.hold_click_writes)
        await conn.execute(SQL.anonymise_clicks_of, recipient_id)
        await conn.execute(SQL.anonymise_opens_of, recipient_id)
        await conn.execute(SQL.forget_scan_window_of, recipient_id)
        await conn.execute(SQL.forget_message_links_of, recipient_id)  # before the messages
        await conn.execute(SQL.forget_messages_of, recipient_id)
        # A keyed hash: never mailed again.
        await conn.execute(SQL.suppress_erased, email, "minor" if reason == "minor" else "erased")
        await conn.execute(SQL.delete_recipient, recipient_id)  # consent events cascade
        await conn.execute(SQL.count_erasure, reason)
    return True
