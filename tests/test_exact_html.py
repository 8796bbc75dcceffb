"""What a recipient receives is the template's output, with nothing added but the honeypot
link and (with consent) the open pixel, both where the body begins.

Checked on real sends through the SMTP capture: each part's decoded body, line breaks read
as CRLF (the canonical form of text), is exactly what was rendered: no final line break
added, nothing moved before the doctype (which would put browsers in quirks mode).
"""

from __future__ import annotations

import itertools
import re

import pytest
from helpers import ROOT, honeypot_links, pixels, tracked_links

from mailer.compose import body_start, insert_at_body_start

PEOPLE = (
    "email,format,tracking_consent\n"
    "yes@example.com,html,yes\nno@example.com,html,no\ntext@example.com,text,no\n"
)
HEAD = (
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    "<title>News</title>\n</head>\n"
)
CONTENT = '<table><tr><td><a href="https://example.com/a">Read</a></td></tr></table>\n</html>'
_MARKERS = re.compile(r'<a href="[^"]+" style="display:none[^>]*></a>(<img src="[^"]+"[^>]*/>)?')


def decoded(message, subtype: str) -> bytes:
    return message.get_body((subtype,)).get_payload(decode=True)


def canonical(text: str) -> bytes:
    """text as a text part carries it: UTF-8, lines ending in CRLF."""
    return text.replace("\n", "\r\n").encode()


async def send(add_recipients, make_campaign, deliver, mailbox, html: str, text: str | None):
    await add_recipients(PEOPLE)
    await make_campaign(html, text=text)
    await deliver("c")
    return {m["To"].addresses[0].addr_spec: m for m in mailbox.messages()}


@pytest.mark.parametrize(
    ("before_body", "content"),
    [
        # A doctype and a head but no <body> tag: the body begins after </head>.
        (HEAD, CONTENT),
        # With a <body> tag (and a '>' in a quoted attribute): right after it.
        (HEAD + '<body style="a>b">', "\n" + CONTENT),
        # Head elements without <head> tags, after a comment: the body begins at the table.
        ("<!doctype html><html><!-- x --><title>t</title><style>p{}</style>", CONTENT),
    ],
)
async def test_markers_where_the_body_begins_and_nothing_else_added(
    add_recipients, make_campaign, deliver, mailbox, before_body, content
):
    html = before_body + content
    assert not html.endswith("\n")
    messages = await send(add_recipients, make_campaign, deliver, mailbox, html, None)
    for address in ("yes@example.com", "no@example.com"):
        received = decoded(messages[address], "html").decode()
        (honeypot,) = honeypot_links(received)
        start = canonical(before_body).decode() + f'<a href="{honeypot}"'
        assert received.startswith(start), address
        assert len(pixels(received)) == (address == "yes@example.com")
        (link,) = tracked_links(received)
        # Without the markers and with the link as written, the template's bytes, CRLF lines.
        restored = _MARKERS.sub("", received, count=1).replace(link, "https://example.com/a")
        assert restored.encode() == canonical(html), address
        assert received.encode().endswith(b"</html>")  # no line break added


async def test_text_parts_are_exact_too(add_recipients, make_campaign, deliver, mailbox):
    """A text template without a final line break, in an HTML message and alone."""
    text = "Hello {{ recipient.email }}\r\n\nNo line break at the end:  "
    messages = await send(add_recipients, make_campaign, deliver, mailbox, HEAD + CONTENT, text)
    for address in ("no@example.com", "text@example.com"):
        expected = f"Hello {address}\n\nNo line break at the end:  "
        assert decoded(messages[address], "plain") == canonical(expected), address
    assert messages["text@example.com"].get_body(("html",)) is None


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<p>no head at all</p>", "@<p>no head at all</p>"),
        ("\n  <p>x</p>", "\n  @<p>x</p>"),
        ('<?xml version="1.0"?><!DOCTYPE html><p>x', '<?xml version="1.0"?><!DOCTYPE html>@<p>x'),
        ("<HTML><HEAD><TITLE>t</TITLE></HEAD><BODY BGCOLOR=#fff>x",
         "<HTML><HEAD><TITLE>t</TITLE></HEAD><BODY BGCOLOR=#fff>@x"),
        # Text before <body> opens the body there (the parser ignores the later tag).
        ("<html><head></head>hi<body>x", "<html><head></head>@hi<body>x"),
        ("<!DOCTYPE html><html><head><!-- <body> --></head><body>x",
         "<!DOCTYPE html><html><head><!-- <body> --></head><body>@x"),
        ("", "@"),
    ],
)  # fmt: skip
def test_where_the_body_begins(html: str, expected: str) -> None:
    assert insert_at_body_start(html, "@") == expected


def test_a_remembered_head_puts_the_markers_where_the_regexes_do() -> None:
    """insert_at_body_start remembers the last head read; in any order of messages that
    share it, or share part of it, the markers land where body_start finds the body."""
    sample = (ROOT / "bench" / "mailer_sample.html").read_text(encoding="utf-8")
    variants = [
        sample,
        sample.replace("<body", "<body data-x='1'", 1),
        sample.replace("<title>", "<title>Ada ", 1),
        sample.replace("<body", "<!-- moved --><body", 1),
        sample.replace("<body", "text first<body", 1),
        "<html><head></head><body>x",
        "<html><head></head><body>y and more",
        "<html><head></head><body",
        "<html><head></head><bodyx>x",
        "<html><head></head>",
        "<html><head></head><body id='a>b'>x",
        "<html><head></head><body id='a>",
        "",
    ]
    assert body_start(sample) > 0
    for first, second in itertools.product(variants, repeat=2):
        for html in (first, second):
            assert insert_at_body_start(html, "@") == (
                html[: body_start(html)] + "@" + html[body_start(html) :]
            ), (first[:80], html[:80])
