"""`fairclick preview`: the message one recipient would get, storing and sending nothing."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage

import asyncpg

from mailer.compose import Recipient
from mailer.queries import SQL
from mailer.sending import prepare_composer
from tracker.errors import NotFound
from tracker.settings import Settings

# Tokens in a preview name this message id, which no outbox row has: a click on a previewed
# link (the marketer's own) is neither redirected nor recorded against the recipient.
PREVIEW_MESSAGE_ID = 0


@dataclass(frozen=True)
class Preview:
    message: EmailMessage
    # Why its tracked URLs do not redirect, or None when it has none.
    note: str | None


async def preview_message(
    conn: asyncpg.Connection, settings: Settings, name: str, email: str
) -> Preview:
    # Links not yet registered get a placeholder id too: a preview must not write.
    composer = await prepare_composer(conn, settings, name, create_links=False)
    record = await conn.fetchrow(SQL.recipient_by_email, email)
    if record is None:
        raise NotFound(f"no recipient with the address {email!r}")
    message = await composer.compose(conn, Recipient.from_record(record), PREVIEW_MESSAGE_ID)
    note = None
    if f"{composer.base_url}/c/" in message.as_string():
        note = (
            "tracked links in a preview carry placeholder tokens: they record nothing and "
            "do not redirect; in the messages `fairclick send` sends, they work"
        )
    return Preview(message, note)
