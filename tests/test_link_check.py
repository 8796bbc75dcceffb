"""The link check says of each written link what send then does with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import EMAIL_TEMPLATES, ROOT

from mailer.link_check import (
    ANCHOR,
    MAILTO,
    NOT_WEB,
    OFF,
    PERSONAL,
    PREFERENCES,
    TEL,
    check_links,
    check_template_links,
)
from mailer.rewrite import find_links, written_link_tags
from mailer.template_links import WrittenLink
from mailer.text_links import find_text_links
from tracker.tokens import Tokens

RECIPIENTS = """\
email,name,format,tracking_consent,homepage,city,member
ada@example.com,Ada,html,yes,https://ada.example/,London,yes
grace@example.com,Grace,html,no,https://grace.example/,Arlington,
linus@example.org,Linus,text,no,https://linus.example/,Helsinki,yes
"""

TEXT = """\
Dear {{ recipient.name }},

Our news: https://example.com/news?c={{ campaign.name | urlencode }}.
Your page: {{ recipient.attributes.homepage }}
Write to us: mailto:hello@example.com
Reply for {{ campaign.name }}.
Your choices: {{ preferences_url }}
"""


def source_of(path: Path) -> str:
    source = path.read_text(encoding="utf-8")
    # The corpus's one variable the campaign context lacks: a per-recipient link instead.
    return source.replace("{{ share_url }}", "https://share.example/{{ recipient.email }}")


def parts(message) -> tuple[str | None, str]:
    html = message.get_body(("html",))
    return (html.get_content() if html else None), message.get_body(("plain",)).get_content()


async def rendered_targets(pool, settings, links: list[str]) -> list[tuple[str, str]]:
    """(URL, name) each tracked link of a message leads to, as the tracker would redirect."""
    codec = Tokens(settings.secret_keys).click
    found = []
    for link in links:
        message_id, link_id = codec.decode(link.rsplit("/", 1)[1])
        row = await pool.fetchrow(
            "SELECT coalesce(m.url, l.url) AS url, l.name, l.purpose FROM links l "
            "LEFT JOIN message_links m ON m.link_id = l.id AND m.message_id = $2 WHERE l.id = $1",
            link_id,
            message_id,
        )
        if row["purpose"] == "content":
            found.append((row["url"], row["name"]))
    return found


def agree(checked: list[dict], targets: list[tuple[str, str]]) -> None:
    """The tracked links of the check, in order, are the ones rewritten, in order."""
    tracked = [link for link in checked if link["tracked"]]
    assert len(tracked) == len(targets), (
        [(link["url"], link["name"]) for link in tracked],
        targets,
    )
    for link, (url, name) in zip(tracked, targets, strict=True):
        assert WrittenLink.of(link["url"], link["name"]).matches(url, name), (link, url, name)


@pytest.mark.parametrize("path", EMAIL_TEMPLATES, ids=lambda p: p.stem)
async def test_the_check_calls_tracked_exactly_what_send_rewrites(
    path, pool, settings, mailbox, add_recipients, make_campaign, deliver
):
    await add_recipients(RECIPIENTS)
    await make_campaign(source_of(path), name="check", text=TEXT)
    await deliver("check")
    async with pool.acquire() as conn:
        checked = await check_links(conn, "check", base_url=settings.base_url)
    html_links = [link for link in checked if link["part"] == "html"]
    text_links = [link for link in checked if link["part"] == "text"]
    assert [link["position"] for link in html_links] == list(range(1, len(html_links) + 1))
    tracked_prefix = f"{settings.base_url}/c/"

    for address in ("ada@example.com", "grace@example.com"):
        html, text = parts(mailbox.for_address(address)[0])
        rewritten = [s.url for s in find_links(html) if s.url.startswith(tracked_prefix)]
        agree(html_links, await rendered_targets(pool, settings, rewritten))
        # What the check leaves alone is in the message as written.
        for link in html_links:
            if not link["tracked"] and link["reason"] != PREFERENCES and "{" not in link["url"]:
                assert link["url"] in {href for href, _, _ in written_link_tags(html)}

    # Text parts: tracked for the HTML recipient who consented, as the check lists them.
    _, ada_text = parts(mailbox.for_address("ada@example.com")[0])
    tracked_text = [u for _, _, u in find_text_links(ada_text) if u.startswith(tracked_prefix)]
    agree(text_links, await rendered_targets(pool, settings, tracked_text))
    for address in ("grace@example.com", "linus@example.org"):
        _, text = parts(mailbox.for_address(address)[0])
        assert tracked_prefix not in text


def by_url(links: list[dict]) -> dict[str, dict]:
    return {link["url"]: link for link in links}


def test_why_a_link_is_not_tracked():
    html = """<html><head><link href="https://head.example/style.css">
    <a href="https://head.example/never-shown">x</a></head><body>
    <a href="https://example.com/a" data-fairclick-name="cta">a</a>
    <a href="HTTPS://EXAMPLE.COM/UPPER">b</a>
    <a href="  https://example.com/spaced  ">c</a>
    <a href="mailto:hi@example.com">m</a> <a href="MAILTO:HI@EXAMPLE.COM">M</a>
    <a href="tel:+15550100">t</a> <a href="#top">top</a>
    <a href="https://example.com/off" data-fairclick="off">off</a>
    <a href="javascript:alert(1)">js</a> <a href="/relative">rel</a> <a href="">empty</a>
    <a href="ftp://example.com/file">ftp</a>
    <a href="{{ preferences_url }}">prefs</a>
    <a href="http://t.example/p/literal">prefs again</a>
    <a href="https://example.com/?who={{ recipient.email|urlencode }}">personal</a>
    <a href="https://example.com/{{ campaign.name }}">campaign-wide</a>
    <a href="mailto:{{ recipient.email }}">mailto me</a>
    <!-- <a href="https://example.com/commented">no</a> -->
    <textarea><a href="https://example.com/in-textarea">no</a></textarea>
    </body></html>"""
    links = by_url(check_template_links(html, base_url="http://t.example"))
    assert "https://head.example/never-shown" not in links
    assert "https://example.com/commented" not in links
    assert "https://example.com/in-textarea" not in links
    assert links["https://example.com/a"]["name"] == "cta"
    for url in ("https://example.com/a", "HTTPS://EXAMPLE.COM/UPPER", "https://example.com/spaced"):
        assert links[url]["tracked"] and links[url]["reason"] is None
    expected = {
        "mailto:hi@example.com": MAILTO,
        "MAILTO:HI@EXAMPLE.COM": MAILTO,
        "tel:+15550100": TEL,
        "#top": ANCHOR,
        "https://example.com/off": OFF,
        "javascript:alert(1)": NOT_WEB,
        "/relative": NOT_WEB,
        "": NOT_WEB,
        "ftp://example.com/file": NOT_WEB,
        "{{ preferences_url }}": PREFERENCES,
        "http://t.example/p/literal": PREFERENCES,
        "mailto:{{ recipient.email }}": MAILTO,
    }
    for url, reason in expected.items():
        assert (links[url]["tracked"], links[url]["reason"]) == (False, reason), url
    personal = links["https://example.com/?who={{ recipient.email|urlencode }}"]
    assert personal["tracked"] and personal["personal"] and PERSONAL in personal["note"]
    wide = links["https://example.com/{{ campaign.name }}"]
    assert wide["tracked"] and not wide["personal"]


def test_text_words_are_not_links_but_expressions_that_render_to_urls_are():
    links = check_template_links("<p>no links</p>", TEXT)
    assert [(link["url"], link["tracked"]) for link in links] == [
        ("https://example.com/news?c={{ campaign.name | urlencode }}", True),
        ("{{ recipient.attributes.homepage }}", True),
        ("{{ preferences_url }}", False),
    ]


async def test_the_command_shows_the_check_safely(
    pool, settings, db_url, tmp_path, add_recipients, make_campaign
):
    await add_recipients(RECIPIENTS)
    html = (ROOT / "templates/email/example/welcome.html").read_text(encoding="utf-8")
    html = html.replace(
        "https://example.com/privacy", "https://example.com/privacy?\x1b[31mred\u202e"
    )
    await make_campaign(html, name="welcome \x1b]0;pwned\x07")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FAIRCLICK_")},
        "PYTHONPATH": str(ROOT),
        "FAIRCLICK_DATABASE_URL": db_url,
        "FAIRCLICK_OPS_LISTEN": "off",
        "FAIRCLICK_DATA_DIR": str(tmp_path / "data"),
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "fairclick.cli", "campaign", "links", *args],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    table = run("welcome \x1b]0;pwned\x07")
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout and "\u202e" not in table.stdout
    assert "welcome \\x1b]0;pwned\\x07" in table.stdout
    assert "privacy?\\x1b[31mred\\u202e" in table.stdout
    assert "mailto" in table.stdout and "preference link" in table.stdout

    as_json = run("welcome \x1b]0;pwned\x07", "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    async with pool.acquire() as conn:
        assert json.loads(as_json.stdout)["links"] == await check_links(
            conn, "welcome \x1b]0;pwned\x07"
        )

    missing = run("nope")
    assert missing.returncode == 2
    assert missing.stderr.startswith("fairclick: no campaign named 'nope'")
    assert "Traceback" not in missing.stderr
