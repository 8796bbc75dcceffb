"""Hostile bytes on the click path: one bad request never costs another person's click.

aiohttp's client will not send undecodable header bytes, so the bad requests here go
over a raw socket, byte for byte as `curl -H $'User-Agent: ...\\xff'` sends them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestServer
from helpers import pixels, tracked_links
from prometheus_client import REGISTRY

from tracker.app import create_app
from tracker.clients import MAX_USER_AGENT, storable_text
from tracker.opens import PIXEL
from tracker.recorder import Click, Open, Outcome, Recorder
from tracker.settings import parse_networks
from tracker.spool import Spool
from tracker.tokens import PLACEHOLDER_ID, Tokens

BAD_AGENTS = {
    "undecodable byte": (b"Mozilla/5.0 \xff", "Mozilla/5.0 \ufffd"),
    "Latin-1": (
        "Mozilla/5.0 (Macintosh) café".encode("latin-1"),
        "Mozilla/5.0 (Macintosh) caf\ufffd",
    ),
    "huge": (b"Mozilla/5.0 " + b"x" * 7000, ("Mozilla/5.0 " + "x" * 7000)[:MAX_USER_AGENT]),
}


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("Mozilla/5.0 \udcff", "Mozilla/5.0 \ufffd"),  # an undecodable byte, as aiohttp gives it
        ("a\x00b", "a\ufffdb"),  # PostgreSQL text refuses NUL
        ("a\x1b[2J\r\nb\tc", "a\ufffd[2J\ufffd\ufffdb\tc"),  # nothing for a terminal to obey
        ("x" * 9000, "x" * MAX_USER_AGENT),
        (None, None),
    ],
)
def test_agents_are_made_storable(value, kept):
    """aiohttp's own parser refuses most control characters; these are cleaned anyway."""
    assert storable_text(value, MAX_USER_AGENT) == kept
    if kept is not None:
        kept.encode("utf-8")  # and PostgreSQL takes it


async def raw_get(url: str, agent: bytes, extra: bytes = b"") -> tuple[int, bytes]:
    """GET url with exactly these User-Agent bytes (and extra header lines); status, body."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(
            b"GET " + parts.path.encode() + b" HTTP/1.1\r\nHost: " + parts.netloc.encode()
            + b"\r\nUser-Agent: " + agent + b"\r\n" + extra + b"Connection: close\r\n\r\n"
        )  # fmt: skip
        await writer.drain()
        head, _, body = (await reader.read()).partition(b"\r\n\r\n")
    finally:
        writer.close()
        await writer.wait_closed()
    return int(head.split()[1]), body


@pytest.fixture
async def sent(pool, mailbox, add_recipients, make_campaign, deliver):
    """Campaign 'c' sent to yes@ (consent) and no@ (none): address -> HTML body."""
    await add_recipients("email,tracking_consent\nyes@example.com,yes\nno@example.com,no\n")
    await make_campaign('<html><body><a href="https://example.com/a">a</a></body></html>')
    await deliver("c")
    return {
        m["To"].addresses[0].addr_spec: m.get_body(("html",)).get_content()
        for m in mailbox.messages()
    }


@pytest.mark.parametrize("kind", BAD_AGENTS)
async def test_a_bad_agent_is_stored_cleaned_for_a_click_and_an_open(pool, tracker, sent, kind):
    raw, cleaned = BAD_AGENTS[kind]
    html = sent["yes@example.com"]
    status, _ = await raw_get(tracked_links(html)[0], raw)
    assert status == 302
    (pixel,) = pixels(html)
    assert await raw_get(pixel, raw) == (200, PIXEL)
    assert await pool.fetchval("SELECT user_agent FROM clicks") == cleaned
    assert await pool.fetchval("SELECT user_agent FROM opens") == cleaned


@pytest.mark.parametrize(
    ("forwarded", "stored"),
    [
        (b"203.0.113.77\xff", None),
        (b"203.0.113.77, caf\xe9", None),
        (b"x" * 6000, None),
        (b"203.0.113.77", "203.0.113.0"),
    ],
)
async def test_a_bad_forwarded_for_from_a_trusted_proxy_is_no_address(
    pool, settings, sent, tracker_port, forwarded, stored
):
    app = create_app(replace(settings, trusted_proxies=parse_networks("127.0.0.1")), pool=pool)
    server = TestServer(app, host="127.0.0.1", port=tracker_port)
    await server.start_server()
    try:
        link = tracked_links(sent["yes@example.com"])[0]
        extra = b"X-Forwarded-For: " + forwarded + b"\r\n"
        assert (await raw_get(link, b"Mozilla/5.0", extra))[0] == 302
    finally:
        await server.close()
    assert await pool.fetchval("SELECT host(ip) FROM clicks") == stored


async def test_one_bad_agent_among_concurrent_clicks_costs_nobody_a_click(
    pool, tracker, http, sent
):
    """The issue's numbers: 200 genuine clicks, 40 at a time, batched with bad ones."""
    yes, no = (tracked_links(sent[a])[0] for a in ("yes@example.com", "no@example.com"))
    (pixel,) = pixels(sent["yes@example.com"])
    numbers = iter(range(200))

    async def person() -> list[int]:
        statuses = []
        for n in numbers:
            headers = {"User-Agent": f"Mozilla/5.0 person-{n}"}
            async with http.get(yes if n % 2 else no, headers=headers, allow_redirects=False) as r:
                statuses.append(r.status)
        return statuses

    async def attacker() -> list[int]:
        statuses = []
        for _ in range(10):
            statuses.append((await raw_get(yes, b"Mozilla/5.0 \xff"))[0])
            statuses.append((await raw_get(pixel, b"Mozilla/5.0 caf\xe9"))[0])
        return statuses

    *people, bad = await asyncio.gather(*(person() for _ in range(40)), attacker())
    assert [s for statuses in people for s in statuses] == [302] * 200
    assert bad == [302, 200] * 10
    assert await pool.fetchval("SELECT count(*) FROM clicks") == 210
    # Consenting people's clicks carry their agent: written by the database, not spooled.
    agents = {r[0] for r in await pool.fetch("SELECT user_agent FROM clicks")}
    assert {f"Mozilla/5.0 person-{n}" for n in range(1, 200, 2)} | {"Mozilla/5.0 \ufffd"} == (
        agents - {None}
    )
    assert await pool.fetchval("SELECT count(*) FROM opens") == 10


@pytest.fixture
async def message_and_link(pool, sent):
    row = await pool.fetchrow(
        "SELECT m.id, l.id FROM outbox m JOIN recipients r ON r.id = m.recipient_id"
        " JOIN links l ON l.campaign_id = m.campaign_id AND l.purpose = 'content'"
        " WHERE r.email = 'yes@example.com'"
    )
    return tuple(row)


async def test_a_batch_that_fails_on_one_events_data_stores_every_other_event(
    pool, tmp_path, message_and_link, caplog
):
    """Should a value slip past the cleaning, the batch is written again without it."""
    message_id, link_id = message_and_link
    at = datetime.now(UTC)
    good = [
        Click(message_id, link_id, at, "human", None, "192.0.2.0", f"good-{n}") for n in range(20)
    ]
    bad = Click(message_id, link_id, at, "human", None, "192.0.2.0", "Mozilla \udcff \x00")
    opened = Open(message_id, at, "human", None, "192.0.2.0", "good-open")
    recorder = Recorder(pool, Spool(tmp_path / "spool"))
    await recorder.start()
    try:
        # Queued together before the flusher looks: one batch.
        results = await asyncio.gather(
            *(recorder.record(e) for e in [*good[:10], bad, opened, *good[10:]])
        )
    finally:
        await recorder.stop()
    assert [r.outcome for r in results] == [Outcome.STORED] * 22
    assert not recorder.degraded and not list((tmp_path / "spool").glob("*"))
    rows = await pool.fetch("SELECT user_agent FROM clicks WHERE message_id IS NOT NULL")
    assert sorted(r[0] for r in rows if r[0]) == sorted(e.user_agent for e in good)
    assert len(rows) == 21  # the bad one too, without the value it could not store
    assert await pool.fetchval("SELECT user_agent FROM opens") == "good-open"
    logged = caplog.text
    assert "good-" not in logged and "192.0.2" not in logged and "Mozilla" not in logged


async def test_logs_hold_no_address_and_no_agent(pool, tracker, http, sent, caplog):
    """Access lines, a request aiohttp cannot parse, a click with bytes it cannot decode."""
    link = tracked_links(sent["yes@example.com"])[0]
    with caplog.at_level(logging.DEBUG):
        assert (await raw_get(link, b"Mozilla/5.0 secret-\xff"))[0] == 302
        assert (await raw_get(link, b"Mozilla/5.0 secret-\x00nul"))[0] == 400
        agent = {"User-Agent": "Mozilla/5.0 secret-ok"}
        async with http.get(link, headers=agent, allow_redirects=False) as response:
            assert response.status == 302
    ours = [r for r in caplog.records if r.name.startswith(("aiohttp", "tracker"))]
    text = "\n".join(f"{r.name}: {r.getMessage()} {r.exc_text or ''}" for r in ours)
    assert "GET /c/{token} 302" in text  # the access log still says what happened
    assert "secret" not in text and "127.0.0.1" not in text
    assert link.rsplit("/", 1)[1] not in text  # nor the token, which names a message


def click_count(kind: str, outcome: str) -> float:
    labels = {"kind": kind, "outcome": outcome}
    return REGISTRY.get_sample_value("fairclick_clicks_total", labels) or 0.0


async def test_invalid_tokens_are_counted(settings, tracker, http, sent):
    tokens = Tokens(settings.secret_keys)
    before = click_count("human", "invalid"), click_count("bot", "invalid")
    bad = [
        "nonsense",  # does not verify
        tokens.click.encode(1, 10**9),  # verifies, names no link
        tokens.click.encode(PLACEHOLDER_ID, PLACEHOLDER_ID),  # a preview's
    ]
    for token in bad:
        async with http.get(f"{settings.base_url}/c/{token}", allow_redirects=False) as r:
            assert r.status == 404
    async with http.head(f"{settings.base_url}/c/nonsense", allow_redirects=False) as r:
        assert r.status == 404
    after = click_count("human", "invalid"), click_count("bot", "invalid")
    assert (after[0] - before[0], after[1] - before[1]) == (3, 1)


async def test_preview_placeholders_never_redirect_nor_record(pool, settings, tracker, http, sent):
    """A preview names message 0 and registered links (or link 0): nothing happens."""
    tokens = Tokens(settings.secret_keys)
    link_id = await pool.fetchval("SELECT min(id) FROM links WHERE purpose = 'content'")
    for ids in ((PLACEHOLDER_ID, link_id), (PLACEHOLDER_ID, PLACEHOLDER_ID)):
        url = f"{settings.base_url}/c/{tokens.click.encode(*ids)}"
        async with http.get(url, allow_redirects=False) as response:
            assert response.status == 404
    pixel = f"{settings.base_url}/o/{tokens.opens.encode(PLACEHOLDER_ID)}.gif"
    async with http.get(pixel) as response:
        assert await response.read() == PIXEL
    assert (
        await pool.fetchval("SELECT (SELECT count(*) FROM clicks) + (SELECT count(*) FROM opens)")
        == 0
    )
