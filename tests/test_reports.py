"""Report forms: JSON exact; the table and CSV safe for a terminal and a spreadsheet."""

from __future__ import annotations

import csv
import io
import json

from helpers import honeypot_links, tracked_links

from tracker.bots import HEAD, HONEYPOT, KNOWN_AGENT
from tracker.recorder import TOO_SOON_REASON
from tracker.reports import as_csv, as_json, as_table, campaign_report

# Names and URLs as a campaign author (or whoever can write templates) may set them:
# spreadsheet formulas, terminal escape sequences (raw: HTML decodes no &#27;), a bidi
# override and a line break.
HOSTILE = """<html><body>
<a href="https://example.com/a" data-fairclick-name="=HYPERLINK(&quot;https://evil.example/&quot;)">a</a>
<a href="https://example.com/b" data-fairclick-name="@SUM(1+1)">b</a>
<a href="https://example.com/c" data-fairclick-name="-2+3">c</a>
<a href="https://example.com/d" data-fairclick-name="+cmd|' /C calc'!A0">d</a>
<a href="https://example.com/e?x=\x1b[2J" data-fairclick-name="red \x1b]0;pwned\x07 &#x202E;exe.txt">e</a>
<a href="https://example.com/f" data-fairclick-name="two&#10;lines">f</a>
</body></html>"""  # noqa: E501


CAMPAIGN = "=1+1 \x1b[2J"


def html_of(message) -> str:
    return message.get_body(("html",)).get_content()


async def hostile_report(pool, mailbox, add_recipients, make_campaign, deliver) -> dict:
    await add_recipients("email,tracking_consent\nann@example.com,yes\n")
    await make_campaign(HOSTILE, name=CAMPAIGN)
    await deliver(CAMPAIGN)
    async with pool.acquire() as conn:
        return await campaign_report(conn, CAMPAIGN)


async def test_csv_cells_never_start_a_formula(
    pool, mailbox, add_recipients, make_campaign, deliver
):
    report = await hostile_report(pool, mailbox, add_recipients, make_campaign, deliver)
    rows = list(csv.reader(io.StringIO(as_csv(report))))
    names = {row[0]: row[1] for row in rows[1:]}
    assert names["https://example.com/a"] == '\'=HYPERLINK("https://evil.example/")'
    assert names["https://example.com/b"] == "'@SUM(1+1)"
    assert names["https://example.com/c"] == "'-2+3"
    assert names["https://example.com/d"] == "'+cmd|' /C calc'!A0"
    for row in rows:
        assert not row[0].startswith(("=", "+", "-", "@", "\t", "\r"))
        assert not row[1].startswith(("=", "+", "-", "@", "\t", "\r"))
    # The counts stay numbers.
    assert all(cell.isdigit() for row in rows[1:] for cell in row[2:])


async def test_control_escape_and_bidi_characters_never_reach_the_terminal(
    pool, mailbox, add_recipients, make_campaign, deliver
):
    report = await hostile_report(pool, mailbox, add_recipients, make_campaign, deliver)
    for text in (as_table(report), as_csv(report)):
        assert not any(
            (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F or 0x202A <= ord(c) <= 0x202E
            for c in text
        ), text
        assert "https://example.com/e?x=\\x1b[2J" in text
        assert "red \\x1b]0;pwned\\x07 \\u202eexe.txt" in text
        assert "two\\x0alines" in text
    table = as_table(report)
    assert table.startswith("Campaign =1+1 \\x1b[2J\n")
    # One line per link, plus the header: a line break in a name does not make a row.
    assert len(list(csv.reader(io.StringIO(as_csv(report))))) == 7
    # JSON is the API: exact values, escaped by JSON itself.
    names = {link["name"] for link in json.loads(as_json(report))["links"]}
    assert "red \x1b]0;pwned\x07 \u202eexe.txt" in names and "two\nlines" in names
    assert "\x1b" not in as_json(report)


async def test_the_default_table_form(pool, tracker, http, mailbox, add_recipients, make_campaign,
                                      deliver):  # fmt: skip
    await add_recipients("email,tracking_consent\nann@example.com,yes\n")
    await make_campaign('<p><a href="https://example.com/x" data-fairclick-name="x">x</a></p>')
    await deliver("c")
    (link,) = tracked_links(html_of(mailbox.messages()[0]))
    async with http.get(link, allow_redirects=False) as response:
        assert response.status == 302
    async with pool.acquire() as conn:
        table = as_table(await campaign_report(conn, "c"))
    lines = table.splitlines()
    assert lines[0] == "Campaign c"
    assert "clicks: 1 total, 1 unique recipients, 1 identified, 0 anonymous, 0 bot" in table
    assert lines[-2].split() == ["link", "total", "unique", "identified", "anonymous", "bot"]
    assert lines[-1].split() == ["https://example.com/x", "[x]", "1", "1", "1", "0", "0"]


async def test_bot_clicks_by_reason(pool, tracker, http, mailbox, add_recipients, make_campaign,
                                    deliver):  # fmt: skip
    """Real clicks through the tracker, one message each, so no reason borrows another's."""
    await add_recipients(
        "email,tracking_consent\n"
        + "".join(f"{who}@example.com,yes\n" for who in ("curl", "head", "soon", "pot", "ann"))
    )
    await make_campaign('<html><body><a href="https://example.com/x">x</a></body></html>')
    await deliver("c")
    html = {m["To"].addresses[0].username: html_of(m) for m in mailbox.messages()}
    link = {who: tracked_links(page)[0] for who, page in html.items()}

    async def status(method, url, **headers):
        async with http.request(method, url, allow_redirects=False, headers=headers) as response:
            return response.status

    assert await status("GET", link["curl"], **{"User-Agent": "curl/8.5.0"}) == 302
    assert await status("HEAD", link["head"]) == 302
    await pool.execute(
        "UPDATE outbox SET sent_at = now() WHERE recipient_id ="
        " (SELECT id FROM recipients WHERE email = 'soon@example.com')"
    )
    assert await status("GET", link["soon"]) == 302
    assert await status("GET", honeypot_links(html["pot"])[0]) == 302
    assert await status("GET", link["ann"]) == 302  # a person, later, in a browser

    async with pool.acquire() as conn:
        report = await campaign_report(conn, "c")
    assert report["bot_reasons"] == {
        HEAD: 1,
        HONEYPOT: 1,
        KNOWN_AGENT: 1,
        TOO_SOON_REASON: 1,
    }
    assert report["clicks"]["bot"] == 4 and report["clicks"]["total"] == 1
    assert json.loads(as_json(report))["bot_reasons"] == report["bot_reasons"]
    assert (
        "  bot clicks by reason: 1 HEAD request, 1 honeypot link, "
        "1 known scanner or crawler agent, 1 within 10s of delivery\n"
    ) in as_table(report)
