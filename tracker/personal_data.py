"""Everything held about one recipient, as the file they download from their preference page.

What is in it is what `tracker.consent.erase_recipient` removes or unlinks: the
recipient row, the consent events, the messages and the links in them made for the
person alone, the identified clicks and opens. It also says whether the address is on
the suppression list (looked up by the keyed hash of the address, all that erasure
leaves behind). Anonymous clicks and opens name no message, hence no person, and are
not in it.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, date, datetime
from urllib.parse import quote

import asyncpg

from tracker.queries import SQL
from tracker.settings import Settings

NOT_INCLUDED = (
    "Clicks and opens recorded without your tracking consent are stored anonymously "
    "(the link or campaign and the time only), are not linked to you and so are not "
    "in this file."
)
KIND_NOTE = (
    'kind "bot" marks a click or open we judged to be a mail scanner, proxy or prefetch, '
    "not you, and kept out of the human counts of our reports."
)
SUPPRESSION_NOTE = (
    "a keyed hash (HMAC-SHA256) of your address, never the address itself: it lets us "
    "recognise the address so we never mail it again, and cannot be turned back into it."
)
IP_NOTE = (
    "ip is the network only, never your full address: the first three numbers of an "
    "IPv4 address (the last is 0), the first 48 bits of an IPv6 address."
)


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def person_fields(person: asyncpg.Record) -> dict:
    """A recipients row as the download and the console show it: choices, in JSON values."""
    return {
        "email": person["email"],
        "name": person["name"],
        "attributes": json.loads(person["attributes"]),
        "format": person["format"],
        "tracking_consent": person["tracking_consent"],
        "subscribed": person["unsubscribed_at"] is None,
        "unsubscribed_at": _when(person["unsubscribed_at"]),
        "created_at": _when(person["created_at"]),
    }


def consent_event(e: asyncpg.Record) -> dict:
    """A consent event (SQL.consent_history) with its proof: the full wording the person was
    shown, its version and SHA-256, the privacy policy in force, the channel and actor."""
    digest = e["wording_sha256"]
    return {
        "what": e["kind"],
        "value": e["value"],
        "source": e["source"],
        "channel": e["channel"],
        "at": _when(e["created_at"]),
        "recorded_by": e["actor"],
        "wording": None
        if digest is None
        else {
            "shown_for": e["wording_purpose"],
            "version": e["wording_version"],
            "sha256": digest.hex(),
            "text": e["wording_text"],
        },
        "privacy_policy": {"url": e["policy_url"], "version": e["policy_version"]},
    }


def _event(row: asyncpg.Record, at: str, **about) -> dict:
    """A click or an open as the person sees it (about: what only clicks have)."""
    return {
        "at": _when(row[at]),
        "campaign": row["campaign"],
        **about,
        "kind": row["kind"],
        "bot_reason": row["bot_reason"],
        "ip": row["ip"],
        "user_agent": row["user_agent"],
    }


async def personal_data(conn: asyncpg.Connection, recipient_id: int) -> dict | None:
    """The person's data, or None if they are not (or no longer) held."""
    # One snapshot: a click or a change of choices arriving meanwhile is in all of it or none.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        person = await conn.fetchrow(SQL.personal_recipient, recipient_id)
        if person is None:
            return None
        events = await conn.fetch(SQL.consent_history, recipient_id)
        messages = await conn.fetch(SQL.personal_messages, recipient_id)
        links = await conn.fetch(SQL.personal_message_links, recipient_id)
        clicks = await conn.fetch(SQL.personal_clicks, recipient_id)
        opens = await conn.fetch(SQL.personal_opens, recipient_id)
        suppression = await conn.fetchrow(SQL.personal_suppression, recipient_id)
    return {
        "about": "Everything fairclick holds about you, as it stood when this file was made.",
        "generated_at": datetime.now(UTC).isoformat(),
        "recipient": person_fields(person),
        "consent_events": [consent_event(e) for e in events],
        "messages": [
            {
                "campaign": m["campaign"],
                "sender": m["sender"],
                "status": m["status"],
                "format": m["format"],
                "attempts": m["attempts"],
                "queued_at": _when(m["queued_at"]),
                "sent_at": _when(m["sent_at"]),
                "mail_server_reply": m["smtp_reply"],
                "message_id": m["message_id"],
            }
            for m in messages
        ],
        # Links whose address the template made from your data ("…?who=your address").
        "links_made_for_you": [
            {
                "campaign": link["campaign"],
                "url": link["url"],
                "as_written_in_the_template": link["written"],
                "link_name": link["link_name"],
            }
            for link in links
        ],
        "clicks": [_event(c, "clicked_at", url=c["url"], link_name=c["link_name"]) for c in clicks],
        "opens": [_event(o, "opened_at") for o in opens],
        "suppression": {
            "suppressed": suppression is not None,
            "reason": suppression["reason"] if suppression else None,
            "since": _when(suppression["created_at"]) if suppression else None,
            "kept_as": SUPPRESSION_NOTE,
        },
        "notes": [IP_NOTE, KIND_NOTE, NOT_INCLUDED],
    }


MAX_NAME_CHARS = 60
_HYPHENS = re.compile(r"-+")


def _name_part(text: str) -> str:
    """Letters, marks and digits of any script, lower case, the rest one hyphen: nothing a
    file system or a shell treats specially (no dot, slash, quote or space)."""
    kept = "".join(
        c if unicodedata.category(c)[0] in "LMN" else "-"
        for c in unicodedata.normalize("NFC", text).casefold()
    )
    return _HYPHENS.sub("-", kept).strip("-")[:MAX_NAME_CHARS].rstrip("-")


def download_filename(settings: Settings, today: date) -> str:
    """The data download's file name: the organisation and the date, e.g.
    example-corp-data-2026-12-02.json (personal-data-… when no organisation is set)."""
    name = _name_part(settings.organisation_name or "") or "personal"
    return f"{name}-data-{today.isoformat()}.json"


def content_disposition(filename: str) -> str:
    """An attachment header for a download_filename every browser reads: the name itself when
    it is ASCII, else an ASCII stand-in plus filename* with the UTF-8 name (RFC 6266, 8187)."""
    if filename.isascii():
        return f'attachment; filename="{filename}"'
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    ascii_name = _HYPHENS.sub("-", re.sub(r"[^A-Za-z0-9.-]", "", ascii_name)).strip("-")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def as_json(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
