"""The message carrying a mailbox link (tracker/mailbox_links.py): the person asked for it.

Transactional, not a campaign's: nothing in it is tracked (its link is not rewritten, no
honeypot, no pixel), it carries no List-Unsubscribe, and a text-only recipient gets text.
Its wording is templates/email/mailbox/link.txt and link.html.
"""

from __future__ import annotations

from email.message import EmailMessage
from urllib.parse import urlsplit

import asyncpg
import jinja2

from mailer.compose import Recipient
from mailer.message import build_message, parse_from_address
from mailer.queries import SQL
from tracker.mailbox_links import LINK_MINUTES, link_path
from tracker.pages import templates_dir
from tracker.tokens import Tokens

SUBJECTS = {
    "download": "Your link to download your data",
    "erase": "Confirm that you want your data erased",
}
WHAT = {"download": "download your data", "erase": "erase your data"}


class MailboxMail:
    """Builds the message of a queued mailbox link, at delivery (like campaign messages)."""

    def __init__(self, tokens: Tokens, base_url: str):
        self.tokens = tokens
        self.base_url = base_url
        self.domain = urlsplit(base_url).hostname or "localhost"
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir() / "email" / "mailbox"),
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
        )
        self.text = env.get_template("link.txt")
        self.html = env.get_template("link.html")

    async def compose(
        self, conn: asyncpg.Connection | asyncpg.Pool, recipient: Recipient, link_id: int
    ) -> EmailMessage | None:
        """The message, or None if the link expired or was used before it could go."""
        link = await conn.fetchrow(SQL.mailbox_link_mail, link_id)
        if link is None or link["dead"]:
            return None
        action = link["action"]
        context = {
            "action": action,
            "what": WHAT[action],
            "subject": SUBJECTS[action],
            "url": self.base_url + link_path(self.tokens, action, link_id, recipient.id),
            "minutes": LINK_MINUTES,
            "expires_at": link["expires_at"],
        }
        sender = link["sender"] or f"noreply@{self.domain}"
        return build_message(
            sender=parse_from_address(sender),
            to_email=recipient.email,
            to_name=recipient.name,
            subject=SUBJECTS[action],
            text=self.text.render(context),
            html=self.html.render(context) if recipient.format == "html" else None,
            domain=self.domain,
            unsubscribe_url=None,
        )
