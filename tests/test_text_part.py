"""The text part made once per layout is, byte for byte, what html_to_text makes of each message."""

from email import message_from_bytes, policy
from pathlib import Path

import pytest
from helpers import EMAIL_TEMPLATES, ROOT

from mailer import message
from mailer.message import MAX_LINE, body_transfer, build_message, parse_from_address, wire_bytes
from mailer.rewrite import find_links, rewrite_links
from mailer.templates import CampaignTemplates, html_to_text
from mailer.text_part import Message

PREFERENCES = "https://fc.example/p/"
SKIP = (PREFERENCES,)
PLAIN_NAMES = ["Ada Lovelace", "Zoë Ünal-Smith", "Grace", ""]
AWKWARD_NAMES = [
    "O'Brien & Sons",
    "  spaced  out ",
    "12. Main",
    "- dash",
    "a\u00a0b",
    "x[y](z)",
    "<b>bold</b>",
    "back\\slash",
    "{brace}",
    "zero\x00byte",
    "icon \ue001 glyph \uf8ff",  # private-use characters, as icon fonts use
    "https://fc.example/p/tok",
    "line\nbreak",
    "a" * 120,
]


def context(name: str, member: bool, n: int, campaign: str = "autumn 2025 & more") -> dict:
    return {
        "recipient": {
            "email": f"r{n}@example.net",
            "name": name,
            "attributes": {"city": name or "Oslo", "member": member},
        },
        "campaign": {"name": campaign},
        "preferences_url": f"{PREFERENCES}tok{n}",
        "share_url": f"https://share.example/{n}",
    }


def compile_html(path: Path) -> CampaignTemplates:
    return CampaignTemplates(
        subject="s", html=path.read_text(encoding="utf-8"), html_filename=path.name
    )


def tracked_html(html: str, n: int):
    spots = find_links(html, skip_prefixes=SKIP)
    urls = {
        spot.start: f"https://click.example.com/c/Tk{n}x{i}.AbC-_9" for i, spot in enumerate(spots)
    }
    return (
        spots,
        (lambda spot: urls[spot.start]),
        rewrite_links(html, spots, lambda s: urls[s.start]),
    )


def assert_text_is_converted(templates: CampaignTemplates, rendered, n: int, why=()) -> None:
    """The message's text part, plain and with tracked links, is what html_to_text makes."""
    message = Message(rendered.html, rendered.layout)
    assert templates.text_part.text(message) == html_to_text(rendered.html), why
    spots, tracked, rewritten = tracked_html(rendered.html, n)
    assert templates.text_part.text(
        message, links=(spots, tracked), rewritten_html=rewritten, skip_prefixes=SKIP
    ) == html_to_text(rewritten), (*why, "tracked")


def refuse(html: str) -> str:
    raise AssertionError("html_to_text ran on the message: the per-layout text was not used")


@pytest.mark.parametrize("path", EMAIL_TEMPLATES, ids=lambda p: p.stem)
def test_text_is_html_to_texts_for_every_recipient(path: Path) -> None:
    templates = compile_html(path)
    for n, name in enumerate(PLAIN_NAMES + AWKWARD_NAMES):
        for member in (True, False):
            rendered = templates.render(context(name, member, n))
            assert_text_is_converted(templates, rendered, n, (name, member))


@pytest.mark.parametrize("path", EMAIL_TEMPLATES[:2], ids=lambda p: p.stem)
def test_plain_values_need_no_conversion_per_message(path: Path) -> None:
    """The example and the benchmark's layout: derived once, then only filled in."""
    templates = compile_html(path)
    part = templates.text_part
    expected = {}
    for n, name in enumerate(PLAIN_NAMES):
        for member in (True, False):
            rendered = templates.render(context(name, member, n, "autumn"))
            spots, _, rewritten = tracked_html(rendered.html, n)
            expected[(n, member)] = (html_to_text(rendered.html), html_to_text(rewritten))
    part.html_to_text = refuse
    for n, name in enumerate(PLAIN_NAMES):
        for member in (True, False):
            rendered = templates.render(context(name, member, n, "autumn"))
            message = Message(rendered.html, rendered.layout)
            spots, tracked, rewritten = tracked_html(rendered.html, n)
            plain, with_links = expected[(n, member)]
            assert part.text(message) == plain
            got = part.text(
                message, links=(spots, tracked), rewritten_html=rewritten, skip_prefixes=SKIP
            )
            assert got == with_links
            if spots:
                assert "https://click.example.com/c/" in got


def test_the_twin_renders_the_templates_html() -> None:
    source = (ROOT / "bench/mailer_sample.html").read_text(encoding="utf-8")
    with_twin = CampaignTemplates(subject="s", html=source, html_filename="a.html")
    without = CampaignTemplates(subject="s", html=source, html_filename="a.html", text="t")
    assert with_twin.text_part.twin is not None and without.text_part is None
    for n, name in enumerate(PLAIN_NAMES + AWKWARD_NAMES):
        ctx = context(name, n % 2 == 0, n)
        assert with_twin.render(ctx).html == without.render(ctx).html


@pytest.mark.parametrize(
    "source",
    [
        # Statements the twin does not follow: html_to_text on every message.
        "{% macro b(x) %}<b>{{ x }}</b>{% endmacro %}<p>Hi {{ b(recipient.name) }}</p>",
        "{% set greeting %}Hi {{ recipient.name }}{% endset %}<p>{{ greeting }}</p>",
        "<p>{% filter upper %}Hi {{ recipient.name }}{% endfilter %}</p>",
        # Values where the converter decides on them: the layout is given up.
        "<p><a href='{{ preferences_url }}'>{{ preferences_url }}</a></p>",
        "<ol start='{{ recipient.attributes.city }}'><li>{{ recipient.name }}</li></ol>",
        "<p><a href={{ preferences_url }}>x</a> <{{ recipient.name }}>y</p>",
        "<p>&{{ recipient.name }}; and {{ recipient.name }}</p>",
        "<p>&co{{ recipient.name }}</p><a href='https://x.example/?a&co{{ recipient.name }}'>x</a>",
        # A literal label that one recipient's href equals (written as the URL alone).
        "<p><a href='https://x.example/{{ recipient.attributes.city }}'>https://x.example/Oslo</a>"
        " <a href='https://x.example/{{ recipient.attributes.city }}/'>x.example/Oslo</a></p>",
        "<p><a href='{{ recipient.attributes.city }}'>Oslo</a></p>",
        # Values in what the converter reads: hiding, numbering.
        "<p style='{{ recipient.attributes.city }}'>x</p><ol start='{{ recipient.name }}'></ol>",
        # Loops: one layout per number of items.
        "<ul>{% for c in recipient.name %}<li>{{ c }}</li>{% endfor %}</ul>",
    ],
)
def test_awkward_templates_still_get_html_to_texts_text(source: str) -> None:
    templates = CampaignTemplates(subject="s", html=source, html_filename="t.html")
    for n, name in enumerate(PLAIN_NAMES + AWKWARD_NAMES):
        rendered = templates.render(context(name, True, n))
        assert_text_is_converted(templates, rendered, n, (name,))


def sent_bytes(
    *,
    text: str,
    html: str | None,
    sender: str = "News <news@example.com>",
    to_name: str = "Zoë",
    subject: str = "s",
) -> bytes:
    """A message's bytes as a sender writes them, checked equal to the email package's own."""
    message = build_message(
        sender=parse_from_address(sender),
        to_email="zoe@example.net",
        to_name=to_name,
        subject=subject,
        text=text,
        html=html,
        domain="fc.example",
        unsubscribe_url="https://fc.example/p/tok",
    )
    data = wire_bytes(message)
    assert data == message.as_bytes(policy=policy.SMTP)
    return data


def canonical(text: str) -> bytes:
    """A text body as it decodes: lines split at CR and LF only (as set_content does, with
    bytes.splitlines) and ending in CRLF, and no line break added at the end."""
    encoded = text.encode()
    end = b"\r\n" if encoded.endswith((b"\n", b"\r")) else b""
    return b"\r\n".join(encoded.splitlines()) + end


AWKWARD_BODY = (
    "Grüße, Zoë – “quotes” and emoji 🎉\n"
    ".\n"
    ".starts with a dot\n"
    "=starts with equals, and a=b in the middle\n"
    "trailing spaces   \n"
    "trailing tab\t\n"
    "From the start of a line\n" + "x" * 200 + "\n" + "é" * 100 + "\r\nwindows line\rold mac line\n"
    "no newline at the end"
)


@pytest.mark.parametrize("html", [None, "<p>" + AWKWARD_BODY + "</p>"])
def test_bodies_decode_to_what_was_put_in(html: str | None) -> None:
    data = sent_bytes(
        text=AWKWARD_BODY,
        html=html,
        sender="Ünïcode News <news@example.com>",
        to_name='Zoë, "the" reader',
        subject="Grüße" + " long" * 30,
    )
    assert all(len(line) <= 78 for line in data.split(b"\r\n"))
    assert all(byte < 128 for byte in data)
    assert b"\n" not in data.replace(b"\r\n", b"")
    parsed = message_from_bytes(data, policy=policy.default)
    for part, text in (("plain", AWKWARD_BODY), ("html", html)):
        if text is not None:
            assert parsed.get_body((part,)).get_payload(decode=True) == canonical(text), part
    assert parsed["To"].addresses[0].display_name == 'Zoë, "the" reader'
    assert parsed["Subject"] == "Grüße" + " long" * 30


def test_quoted_printable_escapes_a_lone_dot_and_trailing_whitespace() -> None:
    (_, encoding), encoded = body_transfer(".\nend  \nnaïve\n")
    assert str(encoding) == "quoted-printable"
    assert encoded.splitlines() == ["=2E", "end =20", "na=C3=AFve"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<p>Plain ASCII</p>\r\n<p>\ttabs, = signs, trailing spaces  </p>", "7bit"),
        ("x" * MAX_LINE, "7bit"),
        ("x" * (MAX_LINE + 1), "quoted-printable"),
        ("caf\u00e9", "quoted-printable"),
        ("a\x00nul", "quoted-printable"),
        ("a form feed\x0c", "quoted-printable"),
        ("From the editor", "quoted-printable"),
        ("Hello\nFrom the editor", "quoted-printable"),
        (f"--{message._BOUNDARY}\n", "quoted-printable"),  # never taken for the boundary
    ],
)
def test_plain_ascii_in_short_lines_travels_as_it_is(text: str, expected: str) -> None:
    (_, encoding), _ = body_transfer(text)
    assert str(encoding) == expected
    data = sent_bytes(text=text, html=text)
    assert all(len(line) <= MAX_LINE for line in data.split(b"\r\n"))
    parsed = message_from_bytes(data, policy=policy.default)
    for part in ("plain", "html"):
        body = parsed.get_body((part,))
        assert body["Content-Transfer-Encoding"] == expected
        assert body.get_payload(decode=True) == canonical(text)


@pytest.mark.parametrize(
    ("source", "values"),
    [
        # Whether a tag is tracked can depend on a value (its href, its data-fairclick):
        # the second message has the same URLs as the first, on other tags.
        (
            '<p><a href="{{ recipient.attributes.account }}">Your account</a> <a'
            ' href="https://shop.example/account"'
            ' data-fairclick="{{ recipient.attributes.tracking }}">Shop account</a></p>',
            [("none", "on"), ("https://shop.example/account", "off")],
        ),
        # A value in a style the converter reads: it hides the paragraph for one of them.
        (
            '<p style="{{ recipient.attributes.account }}">Hi</p><p>there</p>',
            [("color:red", ""), ("display:none", "")],
        ),
        # html2text wrote a strike-through mark differently after a '~' (kept from then).
        ("<p>Hi {{ recipient.attributes.account }}<s>old</s> new</p>", [("Grace", ""), ("a~", "")]),
    ],
)
def test_values_that_change_more_than_their_words(source: str, values: list) -> None:
    """Found by review: each message of the layout still gets html_to_text's own text."""
    templates = CampaignTemplates(subject="s", html=source, html_filename="t.html")
    for n, (account, tracking) in enumerate(values):
        ctx = context("Ada", True, n)
        ctx["recipient"]["attributes"] |= {"account": account, "tracking": tracking}
        rendered = templates.render(ctx)
        assert_text_is_converted(templates, rendered, n, (account, tracking))
