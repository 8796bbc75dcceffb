"""Link scanners and prefetchers change nothing (issue 11: scanner safety).

Mail security gateways (Microsoft Safe Links, Barracuda, Proofpoint, Mimecast …) and
browsers' prefetch GET or HEAD every link of a message, often many times. 10,000 such
requests, concurrent over loopback, on the preference page, the one-click unsubscribe URL
of List-Unsubscribe and the mailed one-time links must leave the database exactly as it
was: compared row by row. The mailed links still work afterwards (a scanner does not use
them up).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections import Counter

import aiohttp
import pytest
from mailed_links import follow, mailed_link, page_url, press

REQUESTS = 10_000
CONCURRENCY = 64
PEOPLE = (
    "email,name,format,tracking_consent\n"
    "ann@example.com,Ann,html,yes\n"
    "bob@example.com,Bob,text,no\n"
    "cy@example.com,Cy,html,no\n"
)
TABLES = (
    "recipients",
    "consent_events",
    "outbox",
    "mailbox_links",
    "suppressions",
    "clicks",
    "opens",
    "message_links",
)
AGENTS = (
    # Microsoft Defender Safe Links detonates links in a browser-like agent.
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
    "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; Trident/6.0; BingPreview/1.0b)",
    "Barracuda Sentinel (EE)",
    "Mozilla/5.0 (compatible; Barracuda Email Security Service)",
    "Mozilla/5.0 (compatible; Proofpoint URL Defense; +https://www.proofpoint.com)",
    "Mimecast-Url-Protect/1.0",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "python-requests/2.31.0",
    "curl/8.5.0",
    "",
)
HEADERS = (
    {},
    {"Purpose": "prefetch"},
    {"Sec-Purpose": "prefetch"},
    {"Sec-Purpose": "prefetch;prerender"},
    {"X-Moz": "prefetch"},
    {"X-Purpose": "preview"},
    {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "none", "Sec-Fetch-Dest": "document"},
)
# What a GET or HEAD may answer: the page, "not valid", "method not allowed", "gone".
HARMLESS = {200, 404, 405, 410}


@pytest.fixture
async def urls(pool, add_recipients, make_campaign, deliver, tracker, http, settings, mailbox):
    """Every URL of a recipient's that a scanner can reach, taken from the real mail."""
    await add_recipients(PEOPLE)
    html = '<p>Hi</p><a href="https://example.com/a">a</a><a href="{{ preferences_url }}">p</a>'
    await make_campaign(html, name="spring", text="Hi {{ preferences_url }}")
    await deliver("spring")
    ids = {r["email"]: r["id"] for r in await pool.fetch("SELECT id, email FROM recipients")}
    found = set()
    for message in mailbox.messages():
        found.add(re.fullmatch(r"<(.+)>", message["List-Unsubscribe"])[1])  # one-click
    for rid in ids.values():
        found |= {page_url(settings, rid), page_url(settings, rid) + "?saved=1"}
        found |= {page_url(settings, rid, "/data"), page_url(settings, rid, "/erase")}
    # Mailed links: unused ones of Ann and Bob, one used, one expired.
    links = {
        (who, action): await mailed_link(http, pool, settings, mailbox, ids[who], action)
        for who in ("ann@example.com", "bob@example.com")
        for action in ("download", "erase")
    }
    used = await mailed_link(http, pool, settings, mailbox, ids["cy@example.com"], "download")
    assert (await follow(http, used, settings))[0] == 200
    expired = await mailed_link(http, pool, settings, mailbox, ids["cy@example.com"], "erase")
    await pool.execute(
        "UPDATE mailbox_links SET expires_at = now() - interval '1 minute'"
        " WHERE id = (SELECT max(id) FROM mailbox_links)"
    )
    found |= {*links.values(), used, expired, f"{settings.base_url}/erased"}
    return sorted(found), links, ids


async def dump(pool) -> dict[str, list[str]]:
    return {
        table: [
            r[0] for r in await pool.fetch(f"SELECT to_jsonb(t)::text FROM {table} t ORDER BY 1")
        ]
        for table in TABLES
    }


@pytest.mark.timeout(120)
async def test_ten_thousand_scanner_requests_change_nothing(urls, pool, settings, http):
    targets, links, ids = urls
    assert len(targets) == 19  # 4 per person (the page is also the one-click URL), 6 links, /erased
    before = await dump(pool)
    plan = list(
        itertools.islice(
            zip(
                itertools.cycle(targets),
                itertools.cycle(("GET", "HEAD", "GET")),
                itertools.cycle(AGENTS),
                itertools.cycle(HEADERS),
                strict=False,
            ),
            REQUESTS,
        )
    )
    answers: Counter = Counter()
    statuses_of: dict[str, set[int]] = {}
    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)

    async def scanner(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            url, method, agent, headers = queue.get_nowait()
            async with session.request(
                method,
                url,
                headers={"User-Agent": agent, **headers},
                allow_redirects=False,
            ) as resp:
                await resp.read()
                answers[resp.status] += 1
                statuses_of.setdefault(url, set()).add(resp.status)

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    # No cookies kept, as a gateway's fetcher (and the default of most of them).
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent",)
    ) as session:
        await asyncio.gather(*(scanner(session) for _ in range(CONCURRENCY)))

    assert sum(answers.values()) == REQUESTS
    assert set(answers) <= HARMLESS, answers
    assert await dump(pool) == before
    # The unused mailed links and the pages still show what they showed; nothing was used up.
    for link in links.values():
        assert statuses_of[link] == {200}, link
    for rid in ids.values():
        assert statuses_of[page_url(settings, rid)] == {200}
    status, _, body = await follow(http, links["ann@example.com", "download"], settings)
    assert status == 200 and json.loads(body)["recipient"]["email"] == "ann@example.com"
    # And the page's buttons still mail links (the rate limit was not spent by GETs).
    assert (await press(http, settings, ids["bob@example.com"], "download"))[0] == 200
