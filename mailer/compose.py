"""One recipient's message: render, rewrite links as their choices allow, build MIME."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, replace
from email.headerregistry import Address
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from mailer.message import parse_from_address
from mailer.outgoing import OutgoingMessage, build_outgoing
from mailer.queries import SQL
from mailer.rewrite import LinkSpot, rewrite_links
from mailer.template_links import LinkKey, LinkMatcher, TemplateLinks
from mailer.templates import CampaignTemplates
from mailer.text_links import find_text_links, replace_text_links
from mailer.text_part import Message
from tracker.organisation import NO_ORGANISATION, Organisation
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


def body_start(html: str) -> int:
    """Where the body begins: right after the <body> tag, or without one where the parser
    opens the body (after doctype, <html> and head; never before the doctype, which would
    put browsers in quirks mode)."""
    at = _BEFORE_BODY.match(html).end()
    if body := _BODY_START.match(html, at):
        at = body.end()
    return at


class _BodyStarts:
    """body_start, remembering the last HTML's text up to the end of its <body> tag.

    The two regular expressions read a newsletter's whole head (~45 µs), and a campaign's
    messages mostly share it. HTML that begins with that text has its body start at the
    same place: what the expressions read to find it (up to and including the <body> tag)
    is the same.
    """

    def __init__(self):
        self._through_body_tag: str | None = None

    def __call__(self, html: str) -> int:
        known = self._through_body_tag
        if known is not None and html.startswith(known):
            return len(known)
        at = _BEFORE_BODY.match(html).end()
        if body := _BODY_START.match(html, at):
            at = body.end()
            self._through_body_tag = html[:at]
        return at


_body_starts = _BodyStarts()


def insert_at_body_start(html: str, snippet: str) -> str:
    """html with snippet where the body begins (body_start). Nothing else changes."""
    at = _body_starts(html)
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


def template_context(
    recipient: Recipient,
    campaign_name: str,
    preferences_url: str,
    organisation: Organisation = NO_ORGANISATION,
) -> dict:
    """What campaign templates see."""
    return {
        "recipient": {
            "email": recipient.email,
            "name": recipient.name,
            "attributes": recipient.attributes,
        },
        "campaign": {"name": campaign_name},
        "preferences_url": preferences_url,
        "organisation": organisation.template_values,
    }


class LinkRegistry:
    """The campaign's links (mailer/template_links.py's LinkKey) → id, created in the database on
    first use.

    Redirect targets come only from this table (and, for a link that is the message's, from
    message_links), so every URL we rewrite is stored first.
    """

    def __init__(self, campaign_id: int, *, create: bool = True):
        self.campaign_id = campaign_id
        self.create = create
        self._ids: dict[LinkKey, int] = {}
        # The links that are the same for everyone, by (url, name): most links of most messages.
        self._fixed: dict[tuple[str, str], int] = {}
        self._storing: dict[LinkKey, asyncio.Future] = {}  # links being stored right now

    async def load(self, conn: Queries) -> None:
        for row in await conn.fetch(SQL.link_ids, self.campaign_id):
            key = LinkKey(row["url"], row["name"], row["per_message"], row["occurrence"])
            self._remember(key, row["id"])

    def _remember(self, key: LinkKey, link_id: int) -> None:
        self._ids[key] = link_id
        if not key.per_message:
            self._fixed[(key.url, key.name)] = link_id

    def known(self, url: str, name: str) -> int | None:
        """The id of a stored link the same for everyone (no await: most links of most messages).

        A rendered URL found here is not the message's: it is one the campaign's row holds.
        """
        return self._fixed.get((url, name))

    async def id_for(self, conn: Queries, url: str, name: str, *, purpose: str = "content") -> int:
        return await self.id_of(conn, LinkKey(url, name), purpose=purpose)

    async def id_of(self, conn: Queries, key: LinkKey, *, purpose: str = "content") -> int:
        if key not in self._ids:
            if not self.create:
                return 0  # preview: a placeholder that no redirect will accept
            # Senders composing their first messages at once ask for the same links: one
            # statement each, not one per sender (4 connections stored each link 4 times).
            if (storing := self._storing.get(key)) is not None:
                return await asyncio.shield(storing)
            storing = self._storing[key] = asyncio.get_running_loop().create_future()
            try:
                link_id = await conn.fetchval(
                    SQL.upsert_link,
                    self.campaign_id,
                    key.url,
                    key.name,
                    purpose,
                    key.per_message,
                    key.occurrence,
                )
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):
                    storing.cancel()
                else:
                    storing.set_exception(exc)
                    storing.exception()  # retrieved: nobody else may be waiting for it
                raise
            finally:
                del self._storing[key]
            self._remember(key, link_id)
            storing.set_result(link_id)
        return self._ids[key]


@dataclass
class Composer:
    """Everything needed to turn (recipient, message id) into the MIME message they receive."""

    campaign: asyncpg.Record
    templates: CampaignTemplates
    tokens: Tokens
    base_url: str
    links: LinkRegistry
    organisation: Organisation = NO_ORGANISATION  # who sends it (settings), for the templates

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

    @cached_property
    def _html_links(self) -> TemplateLinks:
        return TemplateLinks.of_html(self.campaign["html_template"])

    @cached_property
    def _text_links(self) -> TemplateLinks:
        return TemplateLinks.of_text(self.campaign["text_template"])

    async def _link_id(
        self,
        conn: Queries,
        matcher: LinkMatcher,
        url: str,
        name: str,
        personal: dict[int, str],
    ) -> int:
        """The links row of a rendered link the registry does not know by its URL: the
        template's link it renders from; a URL that is the message's goes into personal."""
        key = matcher.key(url, name)
        link_id = await self.links.id_of(conn, key)
        while key.per_message and link_id and personal.get(link_id, url) != url:
            # The other part of this message rendered this written link to another URL (the
            # text template's loop is not the HTML's): the token must tell them apart.
            key = replace(key, occurrence=key.occurrence + 1)
            link_id = await self.links.id_of(conn, key)
        if key.per_message:
            personal[link_id] = url
        return link_id

    async def _tracked_urls(
        self,
        conn: Queries,
        spots: list[LinkSpot],
        message_id: int,
        personal: dict[int, str] | None = None,
    ) -> dict[int, str]:
        """spot.start -> tracked URL; the template's links are consulted only for links the
        registry does not know by URL (those of the template's links that differ per recipient,
        or not stored yet). The message's own URLs (link id -> URL) are added to personal."""
        known = self.links.known
        encode = self.tokens.click.encode
        prefix = f"{self.base_url}/c/"
        personal = {} if personal is None else personal
        matcher = None
        tracked = {}
        for spot in spots:
            link_id = known(spot.url, spot.name or "")
            if link_id is None:
                matcher = matcher or self._html_links.matcher()
                link_id = await self._link_id(conn, matcher, spot.url, spot.name or "", personal)
            tracked[spot.start] = prefix + encode(message_id, link_id)
        return tracked

    async def _track_text(
        self, conn: Queries, text: str, message_id: int, personal: dict[int, str]
    ) -> str:
        links = [
            link
            for link in find_text_links(text)
            if not link[2].startswith(self._preferences_prefix)
        ]
        matcher = self._text_links.matcher()
        # A URL the HTML part made for this message is the same link in the text part.
        made_for_message = {url: link_id for link_id, url in personal.items()}
        tracked = {}
        for _, _, url in links:
            if url in tracked:
                continue
            link_id = self.links.known(url, "") or made_for_message.get(url)
            if link_id is None:
                link_id = await self._link_id(conn, matcher, url, "", personal)
            tracked[url] = f"{self.base_url}/c/{self.tokens.click.encode(message_id, link_id)}"
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

    async def compose(
        self, conn: Queries, recipient: Recipient, message_id: int
    ) -> OutgoingMessage:
        preferences_url = self.preferences_url(recipient.id)
        rendered = self.templates.render(
            template_context(recipient, self.campaign["name"], preferences_url, self.organisation)
        )
        html = None
        # A text-only recipient gets the text with its original links: nothing trackable.
        # (The preference link in it is signed for them, but visiting it records nothing.)
        text = rendered.text
        personal: dict[int, str] = {}  # link id -> the URL rendered for this message alone
        if recipient.format == "html":
            spots = self.templates.find_links(rendered, (self._preferences_prefix,))
            tracked = await self._tracked_urls(conn, spots, message_id, personal)
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
                    else await self._track_text(conn, text, message_id, personal)
                )
            html = await self._add_machine_markers(conn, html, recipient, message_id)
            if personal and self.links.create:
                # Before the message leaves: a click on it must find where it goes.
                await conn.execute(
                    SQL.save_message_links, message_id, list(personal), list(personal.values())
                )
        if text is None:
            text = self.templates.text_part.text(Message(rendered.html, rendered.layout))
        return build_outgoing(
            sender=self.sender,
            to_email=recipient.email,
            to_name=recipient.name,
            subject=rendered.subject,
            text=text,
            html=html,
            domain=self.domain,
            unsubscribe_url=preferences_url,
        )
