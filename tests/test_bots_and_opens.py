"""Scanners and prefetchers are counted apart from people; the pixel records what consent allows."""

from __future__ import annotations

import time

import pytest
from helpers import honeypot_links, pixels, tracked_links

from tracker.bots import (
    AFTER_HONEYPOT,
    BURST,
    HONEYPOT,
    KNOWN_AGENT,
    REMEMBERED_CLICKS,
)
from tracker.opens import PIXEL
from tracker.recorder import TOO_SOON_REASON, Click, now, write_events
from tracker.reports import campaign_report

HTML = """<html><body><p>Hi</p>
<a href="https://example.com/1">1</a> <a href="https://example.com/2">2</a>
<a href="https://example.com/3">3</a>
</body></html>"""


@pytest.fixture
def detector_clock():
    """The real clock: these tests are about timing."""
    return time.monotonic


@pytest.fixture
async def messages(pool, mailbox, add_recipients, make_campaign, deliver):
    await add_recipients(
        "email,format,tracking_consent\n"
        "yes@example.com,html,yes\nno@example.com,html,no\ntext@example.com,text,yes\n"
    )
    await make_campaign(HTML)
    await deliver("c")
    return {m["To"].addresses[0].addr_spec: m for m in mailbox.messages()}


def html_of(message) -> str:
    return message.get_body(("html",)).get_content()


async def get(http, url, **headers):
    async with http.get(url, allow_redirects=False, headers=headers) as response:
        return response.status, await response.read()


async def click_rows(pool):
    return await pool.fetch("SELECT link_id, kind, bot_reason FROM clicks ORDER BY clicked_at")


async def test_every_html_message_has_one_hidden_honeypot_and_text_has_none(messages):
    for address in ("yes@example.com", "no@example.com"):
        html = html_of(messages[address])
        assert len(honeypot_links(html)) == 1
        assert len(tracked_links(html)) == 3
    text = messages["text@example.com"].get_content()
    assert "/c/" not in text and "/o/" not in text


async def test_honeypot_hit_marks_the_clicks_around_it(pool, tracker, http, messages):
    html = html_of(messages["yes@example.com"])
    first, second, _ = tracked_links(html)
    assert (await get(http, first))[0] == 302
    assert (await get(http, honeypot_links(html)[0]))[0] == 302  # bots are still redirected
    assert (await get(http, second))[0] == 302
    reasons = [r["bot_reason"] for r in await click_rows(pool)]
    assert reasons == [AFTER_HONEYPOT, HONEYPOT, AFTER_HONEYPOT]
    async with pool.acquire() as conn:
        report = await campaign_report(conn, "c")
    assert report["clicks"]["bot"] == 3 and report["clicks"]["total"] == 0
    assert all(link["url"].startswith("https://example.com/") for link in report["links"])


async def test_many_links_at_once_is_a_scanner_even_anonymous(pool, tracker, http, messages):
    for link in tracked_links(html_of(messages["no@example.com"])):
        assert (await get(http, link))[0] == 302
    rows = await click_rows(pool)
    assert [r["kind"] for r in rows] == ["bot", "bot", "bot"]
    assert {r["bot_reason"] for r in rows} == {BURST}
    # Recognised without storing anything that links the anonymous clicks together.
    assert await pool.fetchval("SELECT count(*) FROM clicks WHERE message_id IS NOT NULL") == 0


async def test_one_click_by_a_person_stays_human(pool, tracker, http, messages):
    assert (await get(http, tracked_links(html_of(messages["yes@example.com"]))[0]))[0] == 302
    assert [(r["kind"], r["bot_reason"]) for r in await click_rows(pool)] == [("human", None)]


async def test_known_scanner_agent_is_a_bot(pool, tracker, http, messages):
    link = tracked_links(html_of(messages["yes@example.com"]))[0]
    agent = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    assert (await get(http, link, **{"User-Agent": agent}))[0] == 302
    assert [r["bot_reason"] for r in await click_rows(pool)] == [KNOWN_AGENT]


async def test_a_click_seconds_after_delivery_is_a_scanner(pool, tracker, http, messages):
    await pool.execute("UPDATE outbox SET sent_at = now()")
    assert (await get(http, tracked_links(html_of(messages["yes@example.com"]))[0]))[0] == 302
    assert [r["bot_reason"] for r in await click_rows(pool)] == [TOO_SOON_REASON]


async def test_pixel_only_for_consent_and_open_recorded_as_consent_stands(
    pool, tracker, http, messages
):
    assert pixels(html_of(messages["no@example.com"])) == []
    (pixel,) = pixels(html_of(messages["yes@example.com"]))
    async with http.get(pixel) as response:
        assert response.status == 200 and response.content_type == "image/gif"
        assert response.headers["Cache-Control"].startswith("no-store")
        assert await response.read() == PIXEL
    row = await pool.fetchrow("SELECT message_id, kind, host(ip) AS ip FROM opens")
    assert row["message_id"] is not None and (row["kind"], row["ip"]) == ("human", "127.0.0.0")

    # After withdrawal, the same pixel still loads but records nothing about the person.
    await pool.execute("UPDATE recipients SET tracking_consent = false")
    assert (await get(http, pixel))[1] == PIXEL
    rows = await pool.fetch("SELECT message_id, ip, user_agent FROM opens ORDER BY opened_at")
    assert tuple(rows[1].values()) == (None, None, None)
    async with pool.acquire() as conn:
        opens = (await campaign_report(conn, "c"))["opens"]
    assert opens == {"total": 2, "unique": 1, "identified": 1, "anonymous": 1, "bot": 0}


@pytest.mark.parametrize(
    ("agent", "reason"),
    [
        ("Mozilla/5.0", "mail privacy proxy (Apple)"),
        (
            "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0"
            " (via ggpht.com GoogleImageProxy)",
            "mail privacy proxy",
        ),
    ],
)
async def test_machine_opens_are_flagged(pool, tracker, http, messages, agent, reason):
    (pixel,) = pixels(html_of(messages["yes@example.com"]))
    assert (await get(http, pixel, **{"User-Agent": agent}))[1] == PIXEL
    assert await pool.fetchval("SELECT bot_reason FROM opens") == reason


@pytest.mark.parametrize(
    "headers", [{"Sec-Purpose": "prefetch"}, {"Purpose": "prefetch"}, {"Sec-Purpose": "Prefetch"}]
)
async def test_a_prefetched_pixel_is_no_human_open(pool, tracker, http, messages, headers):
    """A browser or mail client fetching ahead of time is not a person reading the mail."""
    (pixel,) = pixels(html_of(messages["yes@example.com"]))
    assert (await get(http, pixel, **headers))[1] == PIXEL
    assert tuple(await pool.fetchrow("SELECT kind, bot_reason FROM opens")) == ("bot", "prefetch")
    async with pool.acquire() as conn:
        assert (await campaign_report(conn, "c"))["opens"]["total"] == 0


async def test_a_bad_pixel_token_still_answers_the_image(pool, settings, tracker, http):
    status, body = await get(http, f"{settings.base_url}/o/nonsense.gif")
    assert (status, body) == (200, PIXEL)
    assert await pool.fetchval("SELECT count(*) FROM opens") == 0


async def test_one_token_requested_over_and_over_keeps_the_window_bounded(pool, messages):
    """A flood of one link keeps REMEMBERED_CLICKS of it (the shared window does not grow
    with it); a honeypot hit after it re-marks those, and a burst is still seen."""
    flooded, other = await pool.fetch("SELECT id FROM outbox WHERE format = 'html' ORDER BY id")
    content = [r["id"] for r in await pool.fetch(
        "SELECT id FROM links WHERE purpose = 'content' ORDER BY id")]  # fmt: skip
    honeypot = await pool.fetchval("SELECT id FROM links WHERE purpose = 'honeypot'")
    seen = 1000.0

    def click(message, link):
        nonlocal seen
        seen += 0.001
        return Click(message["id"], link, now(), "human", None, None, None, seen=seen)

    async with pool.acquire() as conn:
        for _ in range(REMEMBERED_CLICKS + 40):
            (result,) = await write_events(conn, [click(flooded, content[0])])
            assert result.bot_reason is None  # one link: not a burst
        assert (
            await conn.fetchval(
                "SELECT cardinality(ids) FROM scan_window WHERE message_id = $1", flooded["id"]
            )
            == REMEMBERED_CLICKS
        )
        (result,) = await write_events(conn, [click(flooded, honeypot)])
        assert result.bot_reason == HONEYPOT
        reasons = await conn.fetch("SELECT bot_reason, count(*) FROM clicks GROUP BY 1")
        # The newest clicks, as many as the window keeps beside the hit, are re-marked.
        assert dict(map(tuple, reasons)) == {
            None: 41,
            AFTER_HONEYPOT: REMEMBERED_CLICKS - 1,
            HONEYPOT: 1,
        }
        verdicts = [(await write_events(conn, [click(other, link)]))[0].bot_reason
                    for link in content]  # fmt: skip
        assert verdicts == [None, None, BURST]
