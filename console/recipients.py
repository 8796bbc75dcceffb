"""Recipients for the console and its API: search by address, and one person in full.

Both return plain JSON-ready values (timestamps as ISO 8601 text), so a page and an API
answer show the same thing. Bad arguments raise FairclickError (a 400 for either caller).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from tracker.errors import FairclickError
from tracker.personal_data import person_fields
from tracker.queries import load_queries

SQL = load_queries("console", "recipients.sql")

# The longest address there can be (RFC 5321): a longer search matches nobody.
MAX_SEARCH = 254
MAX_PAGE = 200
# How many of one person's messages and clicks are listed (latest first); totals are exact.
LISTED = 200


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def check_page(limit: int, offset: int) -> None:
    """A FairclickError unless 1 <= limit <= MAX_PAGE and offset >= 0."""
    if not 1 <= limit <= MAX_PAGE:
        raise FairclickError(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    if offset < 0:
        raise FairclickError(f"offset must be 0 or more, not {offset}")


async def search_recipients(
    conn: asyncpg.Connection, query: str, *, limit: int = 50, offset: int = 0
) -> dict:
    """Recipients whose address contains query (case-insensitive), those starting with it
    first: {"recipients": [...], "total": N}. An empty query lists everyone."""
    check_page(limit, offset)
    query = query.strip().lower()
    if len(query) > MAX_SEARCH:
        raise FairclickError(
            f"the search is {len(query)} characters long; an address has at most {MAX_SEARCH}"
        )
    if "\x00" in query:
        raise FairclickError("the search holds a NUL character, which no address has")
    rows = await conn.fetch(SQL.search_recipients, query, limit, offset)
    # Past the last page no row carries the total: count it apart (rare).
    total = rows[0]["total"] if rows else await conn.fetchval(SQL.count_recipients_matching, query)
    return {
        "recipients": [
            {
                "id": r["id"],
                "email": r["email"],
                "name": r["name"],
                "format": r["format"],
                "tracking_consent": r["tracking_consent"],
                "subscribed": r["subscribed"],
                "created_at": _when(r["created_at"]),
            }
            for r in rows
        ],
        "total": total,
    }


async def recipient_detail(conn: asyncpg.Connection, recipient_id: int) -> dict | None:
    """One person: choices, consent history, messages and identified clicks; None if not held."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        person = await conn.fetchrow(SQL.recipient_by_id, recipient_id)
        if person is None:
            return None
        events = await conn.fetch(SQL.recipient_consent_events, recipient_id)
        messages = await conn.fetch(SQL.recipient_messages, recipient_id, LISTED)
        message_count = await conn.fetchval(SQL.recipient_message_count, recipient_id)
        clicks = await conn.fetch(SQL.recipient_clicks, recipient_id, LISTED)
        click_count = await conn.fetchval(SQL.recipient_click_count, recipient_id)
    return {
        "id": person["id"],
        **person_fields(person),
        "consent_events": [
            {
                "kind": e["kind"],
                "value": e["value"],
                "source": e["source"],
                "at": _when(e["created_at"]),
                # Consent proof (issue 11): full wordings are in `fairclick recipients history`.
                "channel": e["channel"],
                "recorded_by": e["actor"],
                "wording": None
                if e["wording_version"] is None
                else f"v{e['wording_version']} of {e['wording_purpose']}",
                "policy_version": e["policy_version"],
            }
            for e in events
        ],
        "messages": [
            {
                "campaign": m["campaign"],
                "status": m["status"],
                "format": m["format"],
                "attempts": m["attempts"],
                "queued_at": _when(m["queued_at"]),
                "sent_at": _when(m["sent_at"]),
                "smtp_reply": m["smtp_reply"],
            }
            for m in messages
        ],
        "message_count": message_count,
        # Only clicks the person consented to at the time are held against them (see the SQL).
        "clicks": [
            {
                "at": _when(c["clicked_at"]),
                "campaign": c["campaign"],
                "link_name": c["link_name"],
                "url": c["url"],
                "kind": c["kind"],
                "bot_reason": c["bot_reason"],
                "user_agent": c["user_agent"],
            }
            for c in clicks
        ],
        "click_count": click_count,
    }
