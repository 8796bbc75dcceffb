"""One-time links mailed to prove the person owns the mailbox, before a download or an erasure.

The preference page is a bearer link (anyone a message was forwarded to can open it), so
its *Download my data* and *Erase my data* buttons only queue a message to the address
with a link of its own: /p/confirm/ACTION/TOKEN, TOKEN signed for that action alone and
naming (mailbox link id, recipient id). The link is valid LINK_MINUTES and acts once: its
row's used_at is set in the transaction that downloads or erases.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from tracker.queries import load_queries
from tracker.tokens import Tokens

SQL = load_queries("tracker", "mailbox.sql")
LINK_MINUTES = 30
# Links one person may have mailed in an hour: enough to ask again when one is lost, too
# few to fill their inbox for someone who found a forwarded page.
LINKS_PER_HOUR = 3
RATE_WINDOW = timedelta(hours=1)


def link_path(tokens: Tokens, action: str, link_id: int, recipient_id: int) -> str:
    """The path of a mailed link (the mailer puts the tracker's base URL before it)."""
    return f"/p/confirm/{action}/{tokens.mailbox[action].encode(link_id, recipient_id)}"


def mask_address(email: str) -> str:
    """a…@example.com: enough for the person to recognise the address, not to learn it."""
    local, at, domain = email.rpartition("@")
    if not at or not local:
        return "…"
    return f"{local[0]}…@{domain}"


@dataclass(frozen=True)
class Requested:
    """A link was queued: masked address, and until when it works."""

    masked: str
    expires_at: datetime


@dataclass(frozen=True)
class TooMany:
    """LINKS_PER_HOUR were already sent: when the last went, and when to ask again."""

    masked: str
    last_sent_at: datetime
    try_after: datetime


async def request_link(
    conn: asyncpg.Connection, recipient_id: int, action: str
) -> Requested | TooMany | None:
    """Queue a link for the person and action (None: no such person); nothing when rate-limited."""
    async with conn.transaction():
        email = await conn.fetchval(SQL.lock_person, recipient_id)
        if email is None:
            return None
        recent = [r["created_at"] for r in await conn.fetch(SQL.recent_links, recipient_id)]
        if len(recent) >= LINKS_PER_HOUR:
            # Newest first: one more may go once the oldest that counts is an hour old.
            oldest_counted = recent[LINKS_PER_HOUR - 1]
            return TooMany(mask_address(email), recent[0], oldest_counted + RATE_WINDOW)
        link = await conn.fetchrow(SQL.insert_link, recipient_id, action, LINK_MINUTES)
        await conn.execute(SQL.queue_link_message, recipient_id, link["id"])
    return Requested(mask_address(email), link["expires_at"])


@dataclass(frozen=True)
class LinkState:
    """What a decoded link leads to: usable, or why not (used, expired, erased)."""

    state: str  # "usable", "used", "expired", "erased"
    email: str | None
    expires_at: datetime


async def link_state(
    conn: asyncpg.Connection, action: str, link_id: int, recipient_id: int
) -> LinkState | None:
    """The state of a genuine token's link; None if it names no link of this action and person."""
    row = await conn.fetchrow(SQL.link_state, link_id)
    if row is None or row["action"] != action:
        return None
    if row["recipient_id"] is None:
        return LinkState("erased", None, row["expires_at"])
    if row["recipient_id"] != recipient_id:
        return None
    if row["used_at"] is not None:
        state = "used"
    elif row["expired"]:
        state = "expired"
    else:
        state = "usable"
    return LinkState(state, row["email"], row["expires_at"])


async def use_link(conn: asyncpg.Connection, action: str, link_id: int, recipient_id: int) -> bool:
    """Mark the link used, if it still may be (call inside the action's transaction)."""
    return await conn.fetchval(SQL.use_link, link_id, recipient_id, action) is not None
