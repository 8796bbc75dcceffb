"""build_outgoing writes, byte for byte, what the email package and aiosmtplib put on the wire.

The old path: mailer/message.py's build_message (an EmailMessage, with the SMTP policy's
header parsing, folding and RFC 2047 encoding), flattened by the email package, then
aiosmtplib's own DATA preparation (its regular expressions for line ends and dot-stuffing).
The new one: mailer/outgoing.py's bytes, then mailer/smtp_data.py's smtp_data. They must be
the same bytes for every input, awkward ones above all; where the old path refuses an input,
the new one refuses it with the same error.
"""

from __future__ import annotations

import email
import itertools
from email import policy
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer import outgoing
from mailer.message import _BOUNDARY, build_message, parse_from_address, wire_bytes
from mailer.outgoing import OutgoingMessage, build_outgoing
from mailer.smtp_data import smtp_data

DATE = 1_800_000_000

SENDERS = [
    "News <news@example.com>",
    "Ünïcode Néws <news@example.com>",
    '"Quoted, Name" <q@example.com>',
    "news@example.com",
    "A very long sender display name that takes most of a header line <s@example.com>",
]
NAMES = [
    "",
    "Ada Lovelace",
    "Ada  Lovelace",
    "Zoë",
    "O'Brien",
    "J. R. R. Tolkien",
    'Zoë, "the" reader',
    "Ada (Lovelace)",
    "back\\slash",
    "=?utf-8?q?Zo=C3=AB?=",
    "  spaced  out ",
    "Zoë\r\nBcc: all@example.net",
    "tab\there",
    "a" * 60,
    "a" * 80,
    "Ünïcode " * 12,
    "🎉 Party",
    "x@y",
    "<b>",
    "-",
    "'",
    "Ада Лавлейс",
    "李小龍",
    "a\u00a0b",
    "x;y",
    "Dr.",
    "trailing ",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z a b c d e f g h i j k",
]
ADDRESSES = [
    "ada@example.net",
    "first.last+tag@sub.example.co.uk",
    "o'brien@example.net",
    "UPPER@EXAMPLE.NET",
    "a" * 64 + "@example.net",
    "x@" + "d" * 63 + ".example",
    "zoë@example.net",
    "李@example.net",
    '"quoted local"@example.net',
    "a..b@example.net",
    ".a@example.net",
    "not an address",
    "a@b@c.example",
    "no-domain@",
    "",
]
SUBJECTS = [
    "",
    "Hello",
    "Ada, autumn has arrived in Oslo",
    "Ada, autumn has arrived in Kraków",
    "x" * 69,
    "x" * 70,
    "x" * 71,
    "word " * 20,
    "Grüße " * 15,
    "=?utf-8?q?x?=",
    "a=?b",
    " leading",
    "trailing ",
    "double  space",
    "tab\tinside",
    "Hi\r\nBcc: all@example.net",
    "emoji 🎉",
    '100% off: [sale] (today) <now>; "quoted" \\ back',
    "é" * 200,
    "a" * 200,
    "Ünïcode",
]
BODIES = [
    "hello\n",
    "",
    "\n",
    "no newline at the end",
    ".\n",
    "..\n",
    ".starts with a dot\n..two\n. \n",
    "line\n.\nafter a lone dot\n",
    "From the start of a line\nFrom \n",
    "Hello\nFrom the editor\n",
    "Hello\rFrom the editor, after a lone CR\n",
    "lone\rcarriage return\r\nand CRLF\n\rmixed",
    "x" * 998 + "\n" + "y" * 999 + "\n",
    "z" * 76 + "\n" + "w" * 77 + " \n",
    "trailing spaces   \ntrailing tab\t\n",
    "=equals= and a=b\n",
    "Grüße, Zoë – “quotes” and emoji 🎉\n",
    "é" * 300,
    "trailing space at the very end ",
    # b2a_qp breaks a line ending in white space at the end of the data, not before a break.
    "x" * 74 + " ",
    "é\n" + "x" * 74 + " ",
    "é\n" + "x" * 75 + "\t",
    f"--{_BOUNDARY}\n",
    "a\x00nul and a form feed\x0c\n",
    '<p>Hi</p>\n<a href="https://click.example.com/c/Tk.AbC">x</a>\n',
]
HTMLS = [None, *BODIES]
# Message-IDs that fit on the first line, on the next, on neither.
DOMAINS = [
    "fc.example",
    "click.example.com",
    *("d" * n + ".example" for n in (16, 22, 26, 28, 30, 60)),
]
UNSUBSCRIBE = [
    "https://fc.example/p/tok",
    None,
    "https://click.example.com/p/" + "t" * 23,
    "https://fc.example/p/" + "t" * 50,
    "https://fc.example/p/" + "t" * 56,
    "https://fc.example/p/" + "t" * 100,
    "https://fc.example/p/a b",
    "https://fc.example/p/ü",
]


def arguments(i: int) -> dict:
    """The i-th mix: each list walked at its own pace, so over all i most pairs meet."""

    def pick(values, stride):
        return values[(i * stride + i // len(values)) % len(values)]

    domain = pick(DOMAINS, 1)
    return {
        "sender": parse_from_address(pick(SENDERS, 1)),
        "to_email": pick(ADDRESSES, 1),
        "to_name": pick(NAMES, 3),
        "subject": pick(SUBJECTS, 5),
        "text": pick(BODIES, 7),
        "html": pick(HTMLS, 11),
        "domain": domain,
        "unsubscribe_url": pick(UNSUBSCRIBE, 13),
        "message_id": make_msgid(domain=domain),
        "date": DATE + i,
    }


def outcome(build, **kwargs) -> tuple[str, object]:
    try:
        return "built", build(**kwargs)
    except Exception as exc:
        return "refused", f"{type(exc).__name__}: {exc}"


def old_wire(**kwargs) -> tuple[str, object]:
    """The email package's bytes, then aiosmtplib's DATA preparation."""
    kind, message = outcome(build_message, **kwargs)
    if kind == "refused":
        return kind, message
    flat = message.as_bytes(policy=policy.SMTPUTF8 if message.policy.utf8 else policy.SMTP)
    assert flat == wire_bytes(message)
    return kind, PERIOD_REGEX.sub(b"..", normalize_message_line_endings(flat)) + b".\r\n"


def new_wire(**kwargs) -> tuple[str, object]:
    kind, message = outcome(build_outgoing, **kwargs)
    if kind == "refused":
        return kind, message
    data = smtp_data(message.data, crlf=True)
    # crlf=True is true: normalising its line ends would change nothing.
    assert data == smtp_data(message.data)
    return kind, data


MIXES = len(NAMES) * len(SUBJECTS) * 3


def test_the_same_bytes_as_the_email_package_and_aiosmtplib():
    seen = {"built": 0, "refused": 0}
    for i in range(MIXES):
        kwargs = arguments(i)
        old, new = old_wire(**kwargs), new_wire(**kwargs)
        assert new == old, kwargs
        seen[old[0]] += 1
    assert seen["built"] > 1000 and seen["refused"] > 50  # both kinds were tried


def test_every_value_of_each_list_is_tried_with_every_body_kind():
    """Each name, subject, address and body alone, in a text-only and an HTML message."""
    base = arguments(0) | {"to_email": "ada@example.net"}
    for field, values in (
        ("to_name", NAMES),
        ("subject", SUBJECTS),
        ("to_email", ADDRESSES),
        ("text", BODIES),
        ("html", HTMLS),
        ("unsubscribe_url", UNSUBSCRIBE),
        ("domain", DOMAINS),
    ):
        for value, html in itertools.product(values, (None, "<p>x</p>\n")):
            kwargs = base | {"html": html, field: value}
            if field == "domain":
                kwargs["message_id"] = make_msgid(domain=value)
            assert new_wire(**kwargs) == old_wire(**kwargs), (field, value)


texts = st.text(st.characters(codec="utf-8"), max_size=120)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=texts,
    subject=texts,
    text=texts,
    html=st.none() | texts,
    local=st.from_regex(r"[a-zA-Z0-9.'+_-]{1,40}", fullmatch=True),
    unsubscribe=st.from_regex(r"https://[a-z.]{1,30}/p/[A-Za-z0-9._-]{0,80}", fullmatch=True),
)
def test_the_same_bytes_for_any_text(name, subject, text, html, local, unsubscribe):
    kwargs = arguments(0) | {
        "to_email": f"{local}@example.net",
        "to_name": name,
        "subject": subject,
        "text": text,
        "html": html,
        "unsubscribe_url": unsubscribe,
    }
    assert new_wire(**kwargs) == old_wire(**kwargs)


def test_quoted_printable_lines_kept_across_messages_give_the_same_bytes(monkeypatch):
    """Lines encoded once and reused (and the store emptied when full) change nothing."""
    monkeypatch.setattr(outgoing._QuotedPrintableLines, "LIMIT", 40)
    body = "".join(f"line {n} = naïve {'x' * (n % 90)}\n" for n in range(30))
    for i in range(20):
        kwargs = arguments(i) | {
            "to_email": "ada@example.net",
            "text": body + f"only in message {i} é\n",
            "html": f"<p>{i}</p>\n" + body,
        }
        assert new_wire(**kwargs) == old_wire(**kwargs)
    assert len(outgoing._QUOTED_PRINTABLE_LINES._lines) <= 40


def test_a_line_break_in_a_name_or_subject_injects_no_header():
    message = build_outgoing(
        **arguments(0)
        | {
            "to_email": "zoe@example.net",
            "to_name": "Zoë\r\nBcc: all@example.net",
            "subject": "Hi\nBcc: all@example.net",
        }
    )
    parsed = email.message_from_bytes(message.data, policy=policy.SMTP)
    assert parsed["Bcc"] is None
    assert str(parsed["To"]) == '"Zoë Bcc: all@example.net" <zoe@example.net>'
    assert str(parsed["Subject"]) == "Hi Bcc: all@example.net"


def test_a_sender_reads_it_as_an_email_message():
    kwargs = arguments(1) | {"to_email": "ada@example.net", "html": "<p>Hi</p>\n"}
    message = build_outgoing(**kwargs)
    assert isinstance(message, OutgoingMessage)
    assert message["From"].addresses[0].addr_spec == kwargs["sender"].addr_spec
    assert message["Message-ID"] == kwargs["message_id"]
    assert message["Subject"] == kwargs["subject"]
    assert message.get_body(("html",)).get_content() == "<p>Hi</p>\n"
    assert wire_bytes(message) == message.data == wire_bytes(message.email)
    with pytest.raises(AttributeError):
        message.set_content("x")  # not an EmailMessage to change: only to read


def test_without_a_date_or_message_id_it_makes_them():
    kwargs = arguments(2) | {"to_email": "ada@example.net"}
    del kwargs["date"], kwargs["message_id"]
    first, second = build_outgoing(**kwargs), build_outgoing(**kwargs)
    assert first.message_id != second.message_id
    assert first.message_id.endswith(f"@{kwargs['domain']}>")
    parsed = email.message_from_bytes(first.data, policy=policy.default)
    assert parsed["Message-ID"] == first.message_id
    assert parsed["Date"].datetime is not None


@pytest.mark.parametrize("length", [10, 50, 56, 57, 100, 500])
def test_a_long_unsubscribe_url_stays_a_url(length):
    """The email package writes a URL too long for a line of its own as RFC 2047 encoded
    words, which mail clients do not read as a URL in List-Unsubscribe: both paths write it
    on the line after the name instead; up to that length, as the email package does."""
    url = "https://fc.example/p/" + "t" * length
    kwargs = arguments(0) | {"to_email": "ada@example.net", "unsubscribe_url": url}
    data = build_outgoing(**kwargs).data
    assert data == wire_bytes(build_message(**kwargs))
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert parsed["List-Unsubscribe"].strip() == f"<{url}>"  # unfolded: a space may lead
    headers = data.split(b"\r\n\r\n", 1)[0]
    line = headers.split(b"List-Unsubscribe:", 1)[1].split(b"\r\nList-Unsubscribe-Post")[0]
    stock = EmailMessage(policy=policy.SMTP)
    stock["List-Unsubscribe"] = f"<{url}>"
    if len(f" <{url}>") <= 78:
        assert b"List-Unsubscribe:" + line + b"\r\n" == stock.as_bytes().removesuffix(b"\r\n")
    else:
        assert b"=?utf-8?q?" in stock.as_bytes()  # what it would have been
        assert line == f"\r\n <{url}>".encode()
