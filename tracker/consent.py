"""A recipient's choices: read them, change them (each change logged), erase the person."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from tracker.errors import NotFound
from tracker.queries import SQL


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
) -> list[str]:
    """Apply the given choices and log one consent event per actual change; returns the changes."""
    changes = []
    async with conn.transaction():
        now = await conn.fetchrow(SQL.lock_recipient, recipient_id)
        if now is None:
            raise NotFound("this recipient no longer exists")
        if format is not None and format != now["format"]:
            await conn.execute(SQL.set_format, recipient_id, format)
            await conn.execute(SQL.log_consent_event, recipient_id, "format", format, source)
            changes.append(f"format: {format}")
        if tracking_consent is not None and tracking_consent != now["tracking_consent"]:
            value = "granted" if tracking_consent else "withdrawn"
            await conn.execute(SQL.set_tracking_consent, recipient_id, tracking_consent)
            await conn.execute(SQL.log_consent_event, recipient_id, "tracking", value, source)
            changes.append(f"tracking: {value}")
        if subscribed is not None and subscribed != now["subscribed"]:
            value = "subscribed" if subscribed else "unsubscribed"
            await conn.execute(SQL.set_subscribed, recipient_id, subscribed)
            await conn.execute(SQL.log_consent_event, recipient_id, "subscription", value, source)
            changes.append(value)
    return changes


async def erase(conn: asyncpg.Connection, email: str) -> bool:
    """Erase the person with this address (the `fairclick erase` command); False if none."""
    recipient_id = await conn.fetchval(SQL.find_recipient_by_email, email.strip())
    return recipient_id is not None and await erase_recipient(conn, recipient_id)


async def erase_recipient(conn: asyncpg.Connection, recipient_id: int) -> bool:
    """Remove everything about the person; their clicks stay only as anonymous counts.

    False if they are not (or no longer) held.
    """
    async with conn.transaction():
        email = await conn.fetchval(SQL.lock_recipient_for_erasure, recipient_id)
        if email is None:
            return False
        # A click read the person's consent before this began but commits after: without
        # this it would stay identified (message, IP network, user agent) for good.
        await conn.execute(SQL.hold_click_writes)
        await conn.execute(SQL.anonymise_clicks_of, recipient_id)
        await conn.execute(SQL.anonymise_opens_of, recipient_id)
        await conn.execute(SQL.forget_messages_of, recipient_id)
        await conn.execute(SQL.forget_suppression, email)
        await conn.execute(SQL.delete_recipient, recipient_id)  # consent events cascade
    return True
