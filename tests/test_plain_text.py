"""The text part is plain text, not Markdown: on every template of the corpus, for every kind
of recipient (tests/text_corpus/ holds the awkward cases, each beside the text it must give)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import EMAIL_TEMPLATES
from test_text_part import AWKWARD_NAMES, PLAIN_NAMES, SKIP, context, tracked_html
from text_checks import longest_line, markdown_findings, visible_link_urls

from mailer.plain_text import WIDTH, html_to_text
from mailer.sending import send_campaign
from mailer.templates import CampaignTemplates
from mailer.text_part import Message

TEXT_CORPUS = sorted((Path(__file__).parent / "text_corpus").glob("*.html"))
ALL_TEMPLATES = [*EMAIL_TEMPLATES, *TEXT_CORPUS]


def test_the_text_corpus_is_there() -> None:
    assert len(TEXT_CORPUS) >= 4
    assert all(path.with_suffix(".txt").is_file() for path in TEXT_CORPUS)


@pytest.mark.parametrize("path", TEXT_CORPUS, ids=lambda p: p.stem)
def test_awkward_html_gives_the_text_beside_it(path: Path) -> None:
    """Nested and numbered lists, tables of links, image links, links whose label is their
    URL, headings with links, *, _, #, [ and \\ in real text, code, quotes, hidden text."""
    got = html_to_text(path.read_text(encoding="utf-8"))
    assert got == path.with_suffix(".txt").read_text(encoding="utf-8")


def texts_of(path: Path):
    """(HTML, text part) of a few recipients' messages, plain and with tracked links."""
    templates = CampaignTemplates(
        subject="s", html=path.read_text(encoding="utf-8"), html_filename=path.name
    )
    for n, name in enumerate(PLAIN_NAMES[:2] + AWKWARD_NAMES[:3]):
        rendered = templates.render(context(name, n % 2 == 0, n))
        message = Message(rendered.html, rendered.layout)
        yield rendered.html, templates.text_part.text(message), None
        spots, tracked, rewritten = tracked_html(rendered.html, n)
        text = templates.text_part.text(
            message, links=(spots, tracked), rewritten_html=rewritten, skip_prefixes=SKIP
        )
        yield rewritten, text, [tracked(spot) for spot in spots]


@pytest.mark.parametrize("path", ALL_TEMPLATES, ids=lambda p: p.stem)
def test_no_markdown_in_any_text_part(path: Path) -> None:
    for html, text, _ in texts_of(path):
        assert markdown_findings(text, html) == [], text
        assert longest_line(text) <= WIDTH, text
        assert not any(line != line.rstrip() for line in text.splitlines())


@pytest.mark.parametrize("path", ALL_TEMPLATES, ids=lambda p: p.stem)
def test_every_links_url_is_in_the_text(path: Path) -> None:
    for html, text, tracked in texts_of(path):
        urls = visible_link_urls(html)
        missing = [url for url in urls if url not in text]
        assert missing == [], text
        if tracked:  # the tracked message's text carries the tracked URLs, in reading order
            at = 0
            for url in tracked:
                if url in urls:
                    at = text.index(url, at)


LINKS = (Path(__file__).parent / "text_corpus/links.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ('<p><a href="https://a.example/x">Read it</a></p>', "Read it: https://a.example/x"),
        ('<p><a href="https://a.example/x">https://a.example/x</a></p>', "https://a.example/x"),
        ('<p><a href="https://a.example/">a.example</a></p>', "https://a.example/"),
        ('<a href="https://a.example/i"><img src="i.png" alt="Logo"></a>', "https://a.example/i"),
        ('<a href="https://a.example/e"> </a>', "https://a.example/e"),
        ('<a href="mailto:x@a.example">x@a.example</a>', "x@a.example"),
        ('<a href="#top">Top</a> <a href="javascript:go()">Go</a>', "Top Go"),
        ("<h1>Big <em>news</em></h1><p>More</p>", "Big news\n\nMore"),
        ("<ul><li>one<li>two<ol><li>deep</ol></ul>", "  - one\n  - two\n      1. deep"),
        ("<p>*a* _b_ #c [d](e) \\f</p>", "*a* _b_ #c [d](e) \\f"),
        ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "a | b\nc"),
        ('<div style="display:none">pre</div><p>body</p>', "body"),
    ],
)
def test_each_rule(html: str, expected: str) -> None:
    assert html_to_text(html) == expected + "\n"


async def test_text_only_mail_of_a_campaign_without_text_template(
    pool, settings, mailbox, add_recipients, make_campaign
) -> None:
    """Text-only recipients get the HTML made plain with original URLs and nothing trackable;
    HTML recipients' text part is the same text, with tracked URLs only with consent."""
    await add_recipients(
        "email,format,tracking_consent\n"
        "text@example.com,text,yes\nhtml@example.com,html,yes\nplain@example.com,html,no\n"
    )
    await make_campaign(LINKS)
    await send_campaign(pool, settings, "c")
    base = settings.base_url
    text_only = mailbox.for_address("text@example.com")[0]
    assert text_only.get_content_type() == "text/plain"
    text = text_only.get_content().replace("\r\n", "\n")  # lines end in CRLF on the wire
    assert markdown_findings(text, LINKS) == []
    assert "News from the shop: https://shop.example/news\n" in text
    assert "Coat: https://shop.example/p/1 | £199\n" in text
    assert f"{base}/c/" not in text and f"{base}/o/" not in text
    assert text == html_to_text(LINKS)
    without = mailbox.for_address("plain@example.com")[0].get_body(("plain",)).get_content()
    assert without.replace("\r\n", "\n") == text
    tracked = mailbox.for_address("html@example.com")[0].get_body(("plain",)).get_content()
    tracked = tracked.replace("\r\n", "\n")
    assert markdown_findings(tracked, LINKS) == []
    assert re.search(rf"^News from the shop: {re.escape(base)}/c/\S+$", tracked, re.M)
    assert "https://shop.example/news" not in tracked


@pytest.mark.timeout(60)
def test_hostile_nesting_neither_hangs_nor_makes_a_staircase() -> None:
    """A template's markup cannot stop the sender: unmatched end tags, items far from their
    list and deep nesting convert in one pass, and indentation stops growing."""
    assert html_to_text("<div>" * 100_000 + "</span>" * 100_000 + "x") == "x\n"
    items = html_to_text("<ul>" + "<div>" * 20_000 + "<li>x" * 20_000)
    assert items.count("- x") == 20_000
    nested = html_to_text("<ul>" + "<li>x<ul>" * 5_000).splitlines()
    assert len(nested) == 5_000 and max(map(len, nested)) <= 30
