"""Queueing and delivery: once per recipient, skips the unsubscribed, keeps SMTP replies."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from mailer.capture import SaveToFolder, start_capture_server
from mailer.preview import PREVIEW_MESSAGE_ID, PREVIEW_RECIPIENT_ID, preview_message
from mailer.sending import send_campaign
from tracker.consent import change_choices
from tracker.settings import SmtpTarget
from tracker.tokens import Tokens

HTML = '<p>Hi {{ recipient.name }}</p><a href="https://example.com/x">x</a>'


@pytest.fixture
def campaign(make_campaign):
    async def create(subject="Hello {{ recipient.name }}"):
        return await make_campaign(
            HTML, name="news", subject=subject, sender="Ünïcode Néws <news@example.com>"
        )

    return create


async def outbox_statuses(pool) -> dict[str, str]:
    rows = await pool.fetch(
        "SELECT r.email, m.status FROM outbox m JOIN recipients r ON r.id = m.recipient_id"
    )
    return {r["email"]: r["status"] for r in rows}


async def test_running_send_again_sends_nobody_twice(
    pool, settings, mailbox, add_recipients, campaign
):
    await add_recipients("email\na@example.com\nb@example.com\n")
    await campaign()
    first = await send_campaign(pool, settings, "news")
    second = await send_campaign(pool, settings, "news")
    assert first.counts["sent"] == 2
    assert second.counts["sent"] == 0 and second.total == 0
    assert len(mailbox.messages()) == 2
    # Someone added later gets exactly their one message on the next run.
    await add_recipients("email\nc@example.com\n", name="more.csv")
    third = await send_campaign(pool, settings, "news")
    assert third.counts["sent"] == 1
    assert sorted(m["To"].addresses[0].addr_spec for m in mailbox.messages()) == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
    ]


async def test_unsubscribed_recipients_are_not_mailed(
    pool, settings, mailbox, add_recipients, campaign
):
    await add_recipients("email\nstay@example.com\ngone@example.com\n")
    gone = await pool.fetchval("SELECT id FROM recipients WHERE email = 'gone@example.com'")
    async with pool.acquire() as conn:
        await change_choices(conn, gone, subscribed=False, source="test")
    await campaign()
    await send_campaign(pool, settings, "news")
    assert [m["To"].addresses[0].addr_spec for m in mailbox.messages()] == ["stay@example.com"]


class PickyServer(SaveToFolder):
    """A real SMTP server that refuses some recipients the way real ones do."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 <nobody@example.com>: no such user"
        if address.startswith("busy@"):
            return "451 4.3.0 temporary local problem, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def test_smtp_refusals_are_kept_per_recipient(
    pool, settings, tmp_path, add_recipients, campaign
):
    controller = start_capture_server(tmp_path / "picky", handler=PickyServer)
    try:
        picky = replace(settings, smtp=SmtpTarget("127.0.0.1", controller.port, use_tls=False))
        await add_recipients("email\nok@example.com\nnobody@example.com\nbusy@example.com\n")
        await campaign()
        progress = await send_campaign(pool, picky, "news")
    finally:
        controller.stop()
    assert (progress.counts["sent"], progress.counts["failed"], progress.counts["deferred"]) == (
        1,
        1,
        1,
    )
    assert await outbox_statuses(pool) == {
        "ok@example.com": "sent",
        "nobody@example.com": "failed",
        "busy@example.com": "deferred",
    }
    replies = dict(
        await pool.fetch(
            "SELECT r.email, m.smtp_reply FROM outbox m JOIN recipients r ON r.id = m.recipient_id"
        )
    )
    assert "5.1.1" in replies["nobody@example.com"]
    assert "4.3.0" in replies["busy@example.com"]
    retry_at = await pool.fetchval("SELECT retry_at > now() FROM outbox WHERE status = 'deferred'")
    assert retry_at is True


async def test_headers_cannot_be_injected_and_unicode_is_encoded(
    pool, settings, mailbox, add_recipients, campaign
):
    await add_recipients('email,name\nzoe@example.com,"Zoë ""Bcc: evil@example.net"""\n')
    await campaign(subject="Grüße {{ recipient.name }}\nBcc: evil@example.net")
    await send_campaign(pool, settings, "news")
    raw = next(mailbox.folder.glob("*.eml")).read_bytes()
    headers = raw.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in raw else raw.split(b"\n\n", 1)[0]
    assert all(not line.lower().startswith(b"bcc:") for line in headers.splitlines())
    assert max(map(len, headers.splitlines())) <= 998
    headers.decode("ascii")  # RFC 2047 keeps headers ASCII
    (message,) = mailbox.messages()
    assert message["Subject"] == 'Grüße Zoë "Bcc: evil@example.net" Bcc: evil@example.net'
    assert message["From"].addresses[0].display_name == "Ünïcode Néws"


async def test_preview_stores_and_sends_nothing(pool, settings, mailbox, add_recipients, campaign):
    await add_recipients("email,name\nann@example.com,Ann\n")
    await campaign()
    async with pool.acquire() as conn:
        preview = await preview_message(conn, settings, "news", "ann@example.com")
    message = preview.message
    assert message["Subject"] == "Hello Ann"
    assert f"{settings.base_url}/c/" in message.get_body(("html",)).get_content()
    assert "placeholder tokens" in preview.note
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert await pool.fetchval("SELECT count(*) FROM links") == 0
    assert mailbox.messages() == []


async def test_previewed_links_never_name_a_real_message_or_person(
    pool, settings, mailbox, add_recipients, campaign
):
    """A marketer clicking in a preview must not be recorded as the recipient, nor see or
    change the recipient's data and choices."""
    await add_recipients("email,name,tracking_consent\nann@example.com,Ann,yes\n")
    await campaign()
    await send_campaign(pool, settings, "news")  # Ann has a real message and real links now
    async with pool.acquire() as conn:
        preview = await preview_message(conn, settings, "news", "ann@example.com")
    text = "".join(
        p.get_content() for p in preview.message.walk() if p.get_content_maintype() == "text"
    )
    base = re.escape(settings.base_url)
    clicks = re.findall(rf"{base}/c/([\w.-]+)", text)
    preferences = re.findall(rf"{base}/p/([\w.-]+)", text + preview.message["List-Unsubscribe"])
    assert clicks and preferences
    tokens = Tokens(settings.secret_keys)
    real_links = {r["id"] for r in await pool.fetch("SELECT id FROM links")}
    for token in clicks:
        message_id, link_id = tokens.click.decode(token)
        assert message_id == PREVIEW_MESSAGE_ID and link_id in real_links
    assert {tokens.preferences.decode(t) for t in preferences} == {(PREVIEW_RECIPIENT_ID,)}
    assert not await pool.fetchval("SELECT count(*) FROM outbox WHERE id = $1", PREVIEW_MESSAGE_ID)
    assert not await pool.fetchval("SELECT count(*) FROM recipients WHERE id = 0")
    assert "preference link" in preview.note


async def test_preview_of_a_text_only_recipient_has_no_tracked_link(
    pool, settings, mailbox, add_recipients, campaign
):
    await add_recipients("email,name,format\nbob@example.com,Bob,text\n")
    await campaign()
    async with pool.acquire() as conn:
        preview = await preview_message(conn, settings, "news", "bob@example.com")
    assert "/c/" not in preview.message.as_string() and preview.note is None
    # One-click unsubscribe from a previewed message unsubscribes nobody.
    token = preview.message["List-Unsubscribe"].split("/p/")[1].rstrip(">")
    assert Tokens(settings.secret_keys).preferences.decode(token) == (PREVIEW_RECIPIENT_ID,)
