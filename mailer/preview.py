"""`fairclick preview`: the message one recipient would get, storing and sending nothing."""

from __future__ import annotations

from dataclasses import dataclass, replace
from email.message import EmailMessage

import asyncpg

from mailer.compose import Recipient
from mailer.queries import SQL
from mailer.sending import prepare_composer
from tracker.errors import NotFound
from tracker.settings import Settings
from tracker.tokens import PLACEHOLDER_ID

# Tokens in a preview name these ids, which no outbox row and no recipient have: a click on
# a previewed link or preference link (the marketer's own) records, shows and changes nothing.
PREVIEW_MESSAGE_ID = PLACEHOLDER_ID
PREVIEW_RECIPIENT_ID = PLACEHOLDER_ID


@dataclass(frozen=True)
class Preview:
    message: EmailMessage
    # Why its tracker URLs do nothing, or None when it has none.
    note: str | None


async def preview_message(
    conn: asyncpg.Connection, settings: Settings, name: str, email: str
) -> Preview:
    # Links not yet registered get a placeholder id too: a preview must not write.
    composer = await prepare_composer(conn, settings, name, create_links=False)
    record = await conn.fetchrow(SQL.recipient_by_email, email)
    if record is None:
        raise NotFound(f"no recipient with the address {email!r}")
    # The recipient's real preference token would open their data, their erasure and their
    # consent (logged as their own choice) to whoever clicks in the preview.
    recipient = replace(Recipient.from_record(record), id=PREVIEW_RECIPIENT_ID)
    message = await composer.compose(conn, recipient, PREVIEW_MESSAGE_ID)
    parts = [part for part in message.walk() if part.get_content_maintype() == "text"]
    bodies = [part.get_content() for part in parts]  # decoded: no quoted-printable breaks
    note = None
    if any(f"{composer.base_url}/" in body for body in bodies):
        note = (
            "the tracked links and the preference link in a preview carry placeholder tokens: "
            "they record nothing, show nothing and change nothing; in the messages "
            "`fairclick send` sends, they work"
        )
    return Preview(message, note)
