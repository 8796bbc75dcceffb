"""The one-time links of download and erasure, as a recipient gets them: press the page's
button, let the real delivery mail it through the SMTP capture server, read the link out of
the captured message, open it."""

from __future__ import annotations

import re
from email.message import EmailMessage

from mailer.delivery import Delivery
from mailer.mailbox_mail import SUBJECTS
from tracker.tokens import Tokens

ENDPOINTS = {"download": "/data", "erase": "/erase"}
_LINK = re.compile(r"http://127\.0\.0\.1:\d+/p/confirm/(download|erase)/[^\s\"<>]+")


def page_url(settings, recipient_id: int, endpoint: str = "") -> str:
    token = Tokens(settings.secret_keys).preferences.encode(recipient_id)
    return f"{settings.base_url}/p/{token}{endpoint}"


async def press(http, settings, recipient_id: int, action: str) -> tuple[int, str]:
    """Press Download or Erase on the person's page (a POST from the page): status, HTML."""
    url = page_url(settings, recipient_id, ENDPOINTS[action])
    async with http.post(url, headers={"Origin": settings.base_url}) as resp:
        return resp.status, await resp.text()


async def deliver_queued(pool, settings):
    """What `fairclick worker` does, until nothing is due: deliver the queued messages."""
    return await Delivery(pool, settings).run()


def link_messages(mailbox, email: str) -> list[EmailMessage]:
    return [m for m in mailbox.for_address(email) if m["Subject"] in SUBJECTS.values()]


def link_in(message: EmailMessage) -> str:
    """The one link in a mailbox-link message (its text part; the HTML part has the same)."""
    text = message.get_body(("plain",)).get_content()
    (link,) = {m[0] for m in _LINK.finditer(text)}
    return link


async def mailed_link(http, pool, settings, mailbox, recipient_id: int, action: str) -> str:
    """Press the button, deliver, and return the link from the newest captured message."""
    email = await pool.fetchval("SELECT email FROM recipients WHERE id = $1", recipient_id)
    before = len(link_messages(mailbox, email))
    status, html = await press(http, settings, recipient_id, action)
    assert status == 200, html
    await deliver_queued(pool, settings)
    messages = link_messages(mailbox, email)
    assert len(messages) == before + 1
    link = link_in(messages[-1])
    assert f"/p/confirm/{action}/" in link
    return link


async def follow(http, link: str, settings, form=None, origin: str | None = "ours"):
    """POST the confirmation form at the link (as its page does): status, headers, body."""
    headers = (
        {} if origin is None else {"Origin": settings.base_url if origin == "ours" else origin}
    )
    async with http.post(link, data=form or {}, headers=headers, allow_redirects=False) as resp:
        return resp.status, resp.headers, await resp.read()


async def download_through_link(http, pool, settings, mailbox, recipient_id: int) -> bytes:
    """The person's data file, fetched as they would: button, mailed link, confirm."""
    link = await mailed_link(http, pool, settings, mailbox, recipient_id, "download")
    status, _headers, body = await follow(http, link, settings)
    assert status == 200, body[:300]
    return body
