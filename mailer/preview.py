"""`fairclick preview`: the message one recipient would get, storing and sending nothing."""

from __future__ import annotations

from email.message import EmailMessage

import asyncpg

from mailer.compose import Recipient
from mailer.queries import SQL
from mailer.sending import prepare_composer
from tracker.errors import NotFound
from tracker.settings import Settings


async def preview_message(
    conn: asyncpg.Connection, settings: Settings, name: str, email: str
) -> EmailMessage:
    # Links not yet registered get a placeholder id (and so a token no redirect accepts),
    # because a preview must not write to the database.
    composer = await prepare_composer(conn, settings, name, create_links=False)
    record = await conn.fetchrow(SQL.recipient_by_email, email)
    if record is None:
        raise NotFound(f"no recipient with the address {email!r}")
    message_id = await conn.fetchval(SQL.message_of, composer.campaign["id"], record["id"]) or 0
    return await composer.compose(conn, Recipient.from_record(record), message_id)
