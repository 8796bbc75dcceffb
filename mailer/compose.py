"""One recipient's message: render, rewrite links as their choices allow, build MIME."""

from __future__ import annotations

import json
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from mailer.message import build_message, parse_from_address
from mailer.queries import SQL
from mailer.rewrite import find_links, rewrite_links
from mailer.templates import CampaignTemplates
from tracker.tokens import Tokens


@dataclass(frozen=True)
class Recipient:
    id: int
    email: str
    name: str
    format: str
    tracking_consent: bool
    attributes: dict[str, Any]

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> Recipient:
        attributes = r["attributes"]
        if isinstance(attributes, str):
            attributes = json.loads(attributes)
        return cls(r["id"], r["email"], r["name"], r["format"], r["tracking_consent"], attributes)


def template_context(recipient: Recipient, campaign_name: str, preferences_url: str) -> dict:
    """What campaign templates see."""
    return {
        "recipient": {
            "email": recipient.email,
            "name": recipient.name,
            "attributes": recipient.attributes,
        },
        "campaign": {"name": campaign_name},
        "preferences_url": preferences_url,
    }


class LinkRegistry:
    """The campaign's links (url, name) → id, created in the database on first use.

    Redirect targets come only from this table, so every URL we rewrite is stored first.
    """

    def __init__(self, campaign_id: int, *, create: bool = True):
        self.campaign_id = campaign_id
        self.create = create
        self._ids: dict[tuple[str, str], int] = {}

    async def load(self, conn: asyncpg.Connection) -> None:
        for row in await conn.fetch(SQL.link_ids, self.campaign_id):
            self._ids[(row["url"], row["name"])] = row["id"]

    async def id_for(self, conn: asyncpg.Connection, url: str, name: str) -> int:
        key = (url, name)
        if key not in self._ids:
            if not self.create:
                return 0  # preview: a placeholder that no redirect will accept
            self._ids[key] = await conn.fetchval(SQL.upsert_link, self.campaign_id, url, name)
        return self._ids[key]


@dataclass
class Composer:
    """Everything needed to turn (recipient, message id) into the MIME message they receive."""

    campaign: asyncpg.Record
    templates: CampaignTemplates
    tokens: Tokens
    base_url: str
    links: LinkRegistry

    @property
    def domain(self) -> str:
        return urlsplit(self.base_url).hostname or "localhost"

    def preferences_url(self, recipient_id: int) -> str:
        return f"{self.base_url}/p/{self.tokens.preferences.encode(recipient_id)}"

    async def compose(
        self, conn: asyncpg.Connection, recipient: Recipient, message_id: int
    ) -> EmailMessage:
        preferences_url = self.preferences_url(recipient.id)
        rendered = self.templates.render(
            template_context(recipient, self.campaign["name"], preferences_url)
        )
        html = None
        if recipient.format == "html":
            spots = find_links(rendered.html, skip_prefixes=(f"{self.base_url}/p/",))
            tracked = {}
            for spot in spots:
                link_id = await self.links.id_for(conn, spot.url, spot.name or "")
                tracked[spot.start] = (
                    f"{self.base_url}/c/{self.tokens.click.encode(message_id, link_id)}"
                )
            html = rewrite_links(rendered.html, spots, lambda spot: tracked[spot.start])
        # A text-only recipient gets the text with its original links: nothing trackable.
        return build_message(
            sender=parse_from_address(self.campaign["from_address"]),
            to_email=recipient.email,
            to_name=recipient.name,
            subject=rendered.subject,
            text=rendered.text,
            html=html,
            domain=self.domain,
            unsubscribe_url=preferences_url,
        )
