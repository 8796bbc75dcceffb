"""Headers prepared once and reused: the bytes are the email package's own, memory is bounded."""

from __future__ import annotations

import email
import time
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from types import SimpleNamespace

from mailer import message as message_module
from mailer.message import build_message, parse_from_address, wire_bytes

LONG_SUBJECT = "Grüße aus Köln – " + "the autumn collection has landed, " * 4


def build(subject: str, sender: str = "Ünïcode Néws <news@example.com>") -> EmailMessage:
    return build_message(
        sender=parse_from_address(sender),
        to_email="zoe@example.net",
        to_name="Zoë",
        subject=subject,
        text="hello\n",
        html=None,
        domain="fc.example",
        unsubscribe_url="https://fc.example/p/tok",
    )


def header_block(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def freshly_folded(name: str, value) -> bytes:
    """The header as the email package writes it when parsed for this message alone."""
    fresh = EmailMessage(policy=policy.SMTP)
    fresh[name] = value
    return header_block(fresh.as_bytes())


def test_reused_subject_and_from_are_written_as_parsed_alone():
    first, second = wire_bytes(build(LONG_SUBJECT)), wire_bytes(build(LONG_SUBJECT))
    for data in (first, second):
        assert freshly_folded("Subject", LONG_SUBJECT) in header_block(data)
        assert freshly_folded("From", "Ünïcode Néws <news@example.com>") in header_block(data)
        parsed = email.message_from_bytes(data, policy=policy.default)
        assert parsed["Subject"] == LONG_SUBJECT
        assert parsed["Date"].datetime is not None
    assert header_block(first).count(b"\r\nSubject: ") == 1


def date_of(data: bytes):
    return email.message_from_bytes(data, policy=policy.default)["Date"]


def test_date_is_the_current_second_in_rfc_5322_form():
    before = int(time.time())
    data = wire_bytes(build("s"))
    after = time.time()
    date = date_of(data)
    assert date.datetime.utcoffset().total_seconds() == 0
    assert before <= date.datetime.timestamp() <= after
    assert b"\r\nDate: " + format_datetime(date.datetime).encode() + b"\r\n" in data


def test_date_moves_on_with_the_clock(monkeypatch):
    """The Date kept for one second's messages is not the Date of the next second's."""
    now = [1_800_000_000.25]
    monkeypatch.setattr(message_module, "time", SimpleNamespace(time=lambda: now[0]))
    dates = []
    for step in (0, 0.5, 1, 3600):
        now[0] = 1_800_000_000.25 + step
        dates.append(date_of(wire_bytes(build("s"))).datetime.timestamp())
    assert dates == [1_800_000_000, 1_800_000_000, 1_800_000_001, 1_800_003_600]


def test_per_recipient_subjects_keep_memory_bounded(monkeypatch):
    prepared = message_module._PREPARED
    monkeypatch.setattr(prepared, "RECURRING_LIMIT", 50)
    kept_before = len(prepared._folded)
    for i in range(500):
        data = wire_bytes(build(f"Hello person {i}"))
        assert f"Subject: Hello person {i}\r\n".encode() in data
    assert len(prepared._recurring) <= 50
    # Forgotten headers leave the folded table too: it holds at most the constant ones,
    # those kept before, and the recurring ones now kept.
    assert len(prepared._folded) <= kept_before + 50


def test_a_name_or_subject_with_line_breaks_stays_on_one_header_line():
    """The importer refuses such names; one written to the database another way is made safe."""
    message = build_message(
        sender=parse_from_address("News <news@example.com>"),
        to_email="zoe@example.net",
        to_name="Zoë\r\nBcc: all@example.net",
        subject="Hi Zoë\r\nBcc: all@example.net",
        text="hello\n",
        html=None,
        domain="fc.example",
        unsubscribe_url="https://fc.example/p/tok",
    )
    parsed = email.message_from_bytes(wire_bytes(message), policy=policy.SMTP)
    assert parsed["Bcc"] is None
    assert str(parsed["To"]) == '"Zoë Bcc: all@example.net" <zoe@example.net>'
    assert str(parsed["Subject"]) == "Hi Zoë Bcc: all@example.net"
