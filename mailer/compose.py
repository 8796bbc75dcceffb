"""One recipient's message: render, rewrite links as their choices allow, build MIME."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from mailer.message import build_message, parse_from_address
from mailer.queries import SQL
from mailer.rewrite import LinkSpot, rewrite_links
from mailer.templates import CampaignTemplates
from mailer.text_links import find_text_links, replace_text_links
from mailer.text_part import Message
from tracker.tokens import Tokens

# A connection, or a pool (which takes one only while a query runs).
Queries = asyncpg.Connection | asyncpg.Pool
HONEYPOT_NAME = "fairclick-honeypot"
# Invisible and unreachable for people (no text, hidden, out of the tab order and of
# screen readers); link scanners follow every href, so a hit on it marks a machine.
HONEYPOT_HTML = (
    '<a href="{url}" style="display:none !important" aria-hidden="true" tabindex="-1"></a>'
)
PIXEL_HTML = (
    '<img src="{url}" width="1" height="1" alt="" '
    'style="display:block;width:1px;height:1px;border:0" />'
)
_ATTRIBUTES = r"""(?:[^>"']|"[^"]*"|'[^']*')*"""  # a '>' in a quoted value ends no tag
_BODY_START = re.compile(rf"<body\b{_ATTRIBUTES}>", re.IGNORECASE)
# What the HTML parser reads before the body: white space, comments, the doctype, <html>,
# the head (with or without its tags: a <title>, <style> … straight after <html> is head).
_BEFORE_BODY = re.compile(
    rf"""(?:\s+|<!--.*?-->|<\?.*?>|<!doctype\b[^>]*>|<html\b{_ATTRIBUTES}>
    |<head\b{_ATTRIBUTES}>.*?</head\s*>|<(?:meta|link|base)\b{_ATTRIBUTES}>
    |<(title|style|script|noscript)\b{_ATTRIBUTES}>.*?</\1\s*>)*""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)


def insert_at_body_start(html: str, snippet: str) -> str:
    """html with snippet where the body begins: right after the <body> tag, or without one
    where the parser opens the body (after doctype, <html> and head; never before the
    doctype, which would put browsers in quirks mode). Nothing else changes."""
    at = _BEFORE_BODY.match(html).end()
    if body := _BODY_START.match(html, at):
        at = body.end()
    return html[:at] + snippet + html[at:]


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

    async def load(self, conn: Queries) -> None:
        for row in await conn.fetch(SQL.link_ids, self.campaign_id):
            self._ids[(row["url"], row["name"])] = row["id"]

    def known(self, url: str, name: str) -> int | None:
        """The link's id if it is stored already (no await: most links of most messages)."""
        return self._ids.get((url, name))

    async def id_for(self, conn: Queries, url: str, name: str, *, purpose: str = "content") -> int:
        key = (url, name)
        if key not in self._ids:
            if not self.create:
                return 0  # preview: a placeholder that no redirect will accept
            self._ids[key] = await conn.fetchval(
                SQL.upsert_link, self.campaign_id, url, name, purpose
            )
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

    @cached_property
    def sender(self) -> Address:
        """The From address, parsed once per campaign rather than per message."""
        return parse_from_address(self.campaign["from_address"])

    @property
    def _preferences_prefix(self) -> str:
        return f"{self.base_url}/p/"

    async def _tracked_url(self, conn: Queries, message_id: int, url: str, name: str) -> str:
        link_id = await self.links.id_for(conn, url, name)
        return f"{self.base_url}/c/{self.tokens.click.encode(message_id, link_id)}"

    async def _tracked_urls(
        self, conn: Queries, spots: list[LinkSpot], message_id: int
    ) -> dict[int, str]:
        """spot.start -> tracked URL; the registry is awaited only for links it does not know."""
        known = self.links.known
        encode = self.tokens.click.encode
        prefix = f"{self.base_url}/c/"
        tracked = {}
        for spot in spots:
            link_id = known(spot.url, spot.name or "")
            if link_id is None:
                link_id = await self.links.id_for(conn, spot.url, spot.name or "")
            tracked[spot.start] = prefix + encode(message_id, link_id)
        return tracked

    async def _track_text(self, conn: Queries, text: str, message_id: int) -> str:
        links = [
            link
            for link in find_text_links(text)
            if not link[2].startswith(self._preferences_prefix)
        ]
        tracked = {url: await self._tracked_url(conn, message_id, url, "") for _, _, url in links}
        return replace_text_links(text, links, tracked.get)

    async def _add_machine_markers(
        self, conn: Queries, html: str, recipient: Recipient, message_id: int
    ) -> str:
        """The honeypot link (for every HTML message) and the open pixel (with consent only)."""
        honeypot_id = await self.links.id_for(
            conn, f"{self.base_url}/", HONEYPOT_NAME, purpose="honeypot"
        )
        markers = HONEYPOT_HTML.format(
            url=f"{self.base_url}/c/{self.tokens.click.encode(message_id, honeypot_id)}"
        )
        if recipient.tracking_consent:
            markers += PIXEL_HTML.format(
                url=f"{self.base_url}/o/{self.tokens.opens.encode(message_id)}.gif"
            )
        return insert_at_body_start(html, markers)

    def preferences_url(self, recipient_id: int) -> str:
        return f"{self.base_url}/p/{self.tokens.preferences.encode(recipient_id)}"

    async def compose(self, conn: Queries, recipient: Recipient, message_id: int) -> EmailMessage:
        preferences_url = self.preferences_url(recipient.id)
        rendered = self.templates.render(
            template_context(recipient, self.campaign["name"], preferences_url)
        )
        html = None
        # A text-only recipient gets the text with its original links: nothing trackable.
        # (The preference link in it is signed for them, but visiting it records nothing.)
        text = rendered.text
        if recipient.format == "html":
            spots = self.templates.find_links(rendered, (self._preferences_prefix,))
            tracked = await self._tracked_urls(conn, spots, message_id)
            html = rewrite_links(rendered.html, spots, lambda spot: tracked[spot.start])
            if recipient.tracking_consent:
                # Who agreed to tracking has the text part's links tracked as well.
                text = (
                    self.templates.text_part.text(
                        Message(rendered.html, rendered.layout),
                        links=(spots, lambda spot: tracked[spot.start]),
                        rewritten_html=html,
                        skip_prefixes=(self._preferences_prefix,),
                    )
                    if text is None
                    else await self._track_text(conn, text, message_id)
                )
            html = await self._add_machine_markers(conn, html, recipient, message_id)
        if text is None:
            text = self.templates.text_part.text(Message(rendered.html, rendered.layout))
        return build_message(
            sender=self.sender,
            to_email=recipient.email,
            to_name=recipient.name,
            subject=rendered.subject,
            text=text,
            html=html,
            domain=self.domain,
            unsubscribe_url=preferences_url,
        )
