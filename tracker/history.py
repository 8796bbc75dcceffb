"""`fairclick recipients history EMAIL`: a person's consent events with their proof."""

from __future__ import annotations

import json

import asyncpg

from tracker.control_chars import visible
from tracker.errors import NotFound
from tracker.exports import cli_actor, log_export
from tracker.personal_data import consent_event
from tracker.queries import SQL


async def consent_history(
    conn: asyncpg.Connection, email: str, *, actor: str | None = None
) -> dict:
    """{"email", "events"} of the person with this address; NotFound if nobody is held.

    It names a person, so it is an export: logged (tracker.exports) for actor (the CLI's
    user by default) in the same transaction that reads it.
    """
    async with conn.transaction(isolation="repeatable_read"):
        recipient_id = await conn.fetchval(SQL.find_recipient_by_email, email.strip())
        if recipient_id is None:
            raise NotFound(f"nobody with the address {email.strip()!r} is held")
        events = await conn.fetch(SQL.consent_history, recipient_id)
        await log_export(conn, actor or cli_actor(), "recipient history", recipient_id)
    return {"email": email.strip(), "events": [consent_event(e) for e in events]}


def history_as_json(history: dict) -> str:
    return json.dumps(history, indent=2, ensure_ascii=False) + "\n"


def history_as_table(history: dict) -> str:
    """One block per event; every stored text through visible(): nothing acts on the terminal."""
    lines = [f"Consent history of {visible(history['email'])}"]
    if not history["events"]:
        lines.append("  (no events)")
    for e in history["events"]:
        lines.append(
            f"  {e['at']}  {e['what']}: {visible(e['value'])}  "
            f"via {e['channel'] or '(not recorded)'} ({visible(e['source'])})"
            + (f" by {visible(e['recorded_by'])}" if e["recorded_by"] else "")
        )
        w = e["wording"]
        lines.append(
            f"      wording: v{w['version']} of {visible(w['shown_for'])}, sha256 {w['sha256']}"
            if w
            else "      wording: not recorded (an event from before consent proof was kept)"
        )
        policy = e["privacy_policy"]
        lines.append(
            f"      privacy policy: {visible(policy['version'] or '(no version set)')} "
            f"at {visible(policy['url'] or '(no URL set)')}"
        )
    return "\n".join(lines) + "\n"
