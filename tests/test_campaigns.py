"""Campaign templates: errors say file, line and for whom, and nothing is stored."""

from __future__ import annotations

import pytest

from mailer.campaigns import create_campaign
from mailer.sending import send_campaign
from tracker.errors import FairclickError, TemplateProblem


@pytest.mark.parametrize(
    ("html", "text", "subject", "expected"),
    [
        ("<p>ok</p>\n<p>{% if %}</p>", None, "Hi", "c.html:2: syntax error"),
        ("<p>ok</p>", "line one\n{{ recipient.name }\n", "Hi", "c.txt:2: syntax error"),
        ("<p>ok</p>", None, "Hi {{ recipient.name ", "subject:1: syntax error"),
        ("<p>\n\n{{ nobody.knows }}</p>", None, "Hi", "c.html:3: UndefinedError"),
    ],
)
async def test_template_errors_name_file_and_line(
    make_campaign, pool, write_file, html, text, subject, expected
):
    with pytest.raises(TemplateProblem) as error:
        await make_campaign(html, subject=subject, text=text)
    assert expected in str(error.value)
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


async def test_missing_attribute_lists_the_recipients_it_fails_for(
    make_campaign, pool, write_file, add_recipients
):
    await add_recipients("email,city\na@example.com,Oslo\nb@example.com,\n")
    await add_recipients("email\nc@example.com\n", name="no-city.csv")
    html = "<p>\n{{ recipient.attributes.city }}</p>"
    with pytest.raises(TemplateProblem) as error:
        await make_campaign(html)
    message = str(error.value)
    assert "c.html:2" in message and "c@example.com" in message
    assert "a@example.com" not in message and "b@example.com" not in message
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


async def test_send_checks_everyone_before_queueing(
    make_campaign, pool, settings, mailbox, write_file, add_recipients
):
    """Someone imported after the campaign was created, whom the template fails for."""
    await add_recipients("email,city\na@example.com,Oslo\n")
    await make_campaign("<p>{{ recipient.attributes.city }}</p>")
    await add_recipients("email\nlate@example.com\n", name="late.csv")
    with pytest.raises(TemplateProblem, match=r"late@example\.com"):
        await send_campaign(pool, settings, "c")
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert mailbox.messages() == []


async def test_html_is_autoescaped_and_text_is_not(
    make_campaign, pool, settings, mailbox, write_file, add_recipients
):
    await add_recipients('email,name\nx@example.com,"<b>Tom & Jerry</b>"\n')
    await make_campaign("<p>{{ recipient.name }}</p>", text="{{ recipient.name }}\n")
    await send_campaign(pool, settings, "c")
    (message,) = mailbox.messages()
    assert "<p>&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</p>" in message.get_body(("html",)).get_content()
    assert message.get_body(("plain",)).get_content().strip() == "<b>Tom & Jerry</b>"


async def test_text_part_is_generated_from_html(
    make_campaign, pool, settings, mailbox, write_file, add_recipients
):
    await add_recipients("email\nx@example.com\n")
    html = (
        "<table><tr><td><h1>Big news</h1>"
        '<a href="https://example.com/read">Read it</a></td></tr></table>'
    )
    await make_campaign(html)
    await send_campaign(pool, settings, "c")
    (message,) = mailbox.messages()
    text = message.get_body(("plain",)).get_content()
    assert "Big news" in text and "https://example.com/read" in text and "<td>" not in text


@pytest.mark.parametrize(
    "sender",
    [
        "not an address",
        "a@example.com, b@example.com",
        "",
        # RFC 2047 encoded-words that decode to CR/LF or another control character.
        "=?utf-8?q?a=0D=0Ab?= <news@example.com>",
        "=?utf-8?b?QQ0KQmNjOiB4QGV4YW1wbGUubmV0?= <news@example.com>",
        "=?utf-8?q?a=1Bb?= <news@example.com>",
    ],
)
async def test_bad_from_address_is_refused(pool, write_file, sender):
    async with pool.acquire() as conn:
        with pytest.raises(FairclickError, match="--from"):
            await create_campaign(
                conn,
                "c",
                subject="Hi",
                from_address=sender,
                html_path=write_file("m.html", "<p>x</p>"),
            )


async def test_duplicate_campaign_name_keeps_the_first(make_campaign, pool, write_file):
    await make_campaign("<p>first</p>")
    with pytest.raises(FairclickError, match="already exists"):
        await make_campaign("<p>second</p>")
    assert await pool.fetchval("SELECT html_template FROM campaigns") == "<p>first</p>"
