"""MIME messages built with the email package's SMTP policy, so no value can inject a header."""

from __future__ import annotations

from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from tracker.errors import FairclickError


def parse_from_address(value: str) -> Address:
    """One address, with optional display name, e.g. 'News <news@example.com>'."""
    header = SMTP.header_factory("From", value)
    addresses = getattr(header, "addresses", ())
    if len(addresses) != 1 or header.defects or not addresses[0].domain:
        raise FairclickError(
            f"--from {value!r} is not one email address: use e.g. --from 'News <news@example.com>'"
        )
    return addresses[0]


def build_message(
    *,
    sender: Address,
    to_email: str,
    to_name: str,
    subject: str,
    text: str,
    html: str | None,
    domain: str,
    unsubscribe_url: str,
) -> EmailMessage:
    """text/plain alone when html is None, else multipart/alternative (text, then HTML)."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = Address(display_name=to_name, addr_spec=to_email)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=domain)
    msg["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text, subtype="plain", charset="utf-8")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8")
    return msg
