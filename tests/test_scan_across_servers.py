"""Scan detection shared by tracker servers on one database (issue 12).

Two real tracker servers, each with its own pool, recorder and detector, listen on two
ports and write to the same database, as two `serve` hosts (or `--workers` processes) do.
A scanner's requests for one message, split between them, are judged as one scan.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import re
import signal
import time

import psutil
import pytest
from aiohttp.test_utils import TestServer
from conftest import BROWSER_AGENT, free_port
from helpers import honeypot_links, tracked_links
from test_workers import kill_all, serve_env, start_two_workers

from tracker.app import create_app
from tracker.bots import AFTER_HONEYPOT, BURST, HONEYPOT, ScanDetector
from tracker.consent import erase
from tracker.keys import DETECTOR
from tracker.queries import SQL
from tracker.recorder import Click, now, write_events

HTML = """<html><body><p>Hi</p>
<a href="https://example.com/1">1</a> <a href="https://example.com/2">2</a>
<a href="https://example.com/3">3</a>
</body></html>"""


class SharedClock:
    """The clock both servers' detectors read: the wall clock (as hosts in NTP sync share
    it), or, once a test sets `step`, one that moves that many seconds per click."""

    def __init__(self):
        self.step: float | None = None
        self.now = time.time()

    def __call__(self) -> float:
        if self.step is None:
            return time.time()
        self.now += self.step
        return self.now


@pytest.fixture
async def messages(pool, mailbox, add_recipients, make_campaign, deliver):
    """address -> (tracked links, honeypot link) of their message, sent an hour ago."""
    await add_recipients("email,tracking_consent\nyes@example.com,yes\nno@example.com,no\n")
    await make_campaign(HTML)
    await deliver("c")
    found = {}
    for m in mailbox.messages():
        html = m.get_body(("html",)).get_content()
        found[m["To"].addresses[0].addr_spec] = (tracked_links(html), honeypot_links(html)[0])
    return found


@pytest.fixture
async def servers(settings, tmp_path):
    """Two trackers on two ports, each with its own pool (made from settings), recorder and
    spool; they share the database only. Returns a function that points a mailed link at
    server 0 or 1, and the clock of their detectors."""
    clock = SharedClock()
    ports, started = [], []
    for n in range(2):
        port = free_port()
        own = dataclasses.replace(
            settings, data_dir=tmp_path / f"server{n}", base_url=f"http://127.0.0.1:{port}"
        )
        app = create_app(own)  # no pool handed in: its own, as a separate process has
        app[DETECTOR] = ScanDetector(clock=clock)
        server = TestServer(app, host="127.0.0.1", port=port)
        await server.start_server()
        ports.append(port)
        started.append(server)
    base = settings.base_url

    def via(n: int, url: str) -> str:
        assert url.startswith(base + "/c/")
        return f"http://127.0.0.1:{ports[n]}" + url[len(base) :]

    yield via, clock
    for server in started:
        await server.close()


async def get(http, url: str) -> int:
    async with http.get(url, allow_redirects=False) as response:
        await response.read()
        return response.status


async def click_rows(pool):
    return await pool.fetch(
        "SELECT l.url, k.kind, k.bot_reason, k.message_id IS NOT NULL AS identified"
        " FROM clicks k JOIN links l ON l.id = k.link_id ORDER BY k.clicked_at"
    )


@pytest.mark.parametrize("address", ["no@example.com", "yes@example.com"])
async def test_a_burst_split_between_two_servers_is_a_scan(pool, servers, http, messages, address):
    via, _ = servers
    links, _ = messages[address]
    for n, link in zip((0, 1, 0), links, strict=True):  # three links in a moment, two servers
        assert await get(http, via(n, link)) == 302
    rows = await click_rows(pool)
    # The third click is a bot's, and the two before it (one written by the other server)
    # are re-marked.
    assert [(r["kind"], r["bot_reason"]) for r in rows] == [("bot", BURST)] * 3
    assert {r["identified"] for r in rows} == {address == "yes@example.com"}


async def test_a_burst_fired_at_once_at_both_servers_is_a_scan(pool, servers, http, messages):
    """The three requests at the same moment: the servers' batches are in flight together."""
    via, _ = servers
    links, _ = messages["no@example.com"]
    for _ in range(5):
        await pool.execute("TRUNCATE clicks, scan_window")
        statuses = await asyncio.gather(
            *(get(http, via(n, link)) for n, link in zip((0, 1, 1), links, strict=True))
        )
        assert statuses == [302] * 3
        rows = await click_rows(pool)
        assert [(r["kind"], r["bot_reason"]) for r in rows] == [("bot", BURST)] * 3


async def test_a_person_clicking_two_links_on_two_servers_stays_human(
    pool, servers, http, messages
):
    via, _ = servers
    links, _ = messages["yes@example.com"]
    assert await get(http, via(0, links[0])) == 302
    assert await get(http, via(1, links[1])) == 302
    assert await get(http, via(0, links[1])) == 302  # the same link again: still two links
    rows = await click_rows(pool)
    assert [(r["kind"], r["bot_reason"]) for r in rows] == [("human", None)] * 3


async def test_three_links_read_slowly_on_two_servers_stay_human(pool, servers, http, messages):
    via, clock = servers
    clock.step = BURST_PACE
    links, _ = messages["no@example.com"]
    for n, link in zip((0, 1, 0), links, strict=True):
        assert await get(http, via(n, link)) == 302
    rows = await click_rows(pool)
    assert [(r["kind"], r["bot_reason"]) for r in rows] == [("human", None)] * 3


# A bit more than the burst's 2 s between clicks: three clicks span more than 2 s.
BURST_PACE = 1.1


async def test_a_honeypot_hit_on_one_server_marks_the_clicks_around_it_on_the_other(
    pool, servers, http, messages
):
    via, clock = servers
    clock.step = 20.0  # far apart for a burst, within a honeypot's minute
    links, honeypot = messages["no@example.com"]
    assert await get(http, via(0, links[0])) == 302
    assert await get(http, via(1, honeypot)) == 302
    assert await get(http, via(0, links[1])) == 302
    rows = await click_rows(pool)
    assert [r["bot_reason"] for r in rows] == [AFTER_HONEYPOT, HONEYPOT, AFTER_HONEYPOT]
    # A minute and more later, the next click of that message is a person's again.
    clock.step = 70.0
    assert await get(http, via(1, links[2])) == 302
    assert [r["bot_reason"] for r in await click_rows(pool)][-1] is None


async def test_earlier_clicks_committed_while_a_batch_waited_are_re_marked(
    pool, servers, http, messages
):
    """The race the second statement is for: another process's batch holds the message's
    scan row and commits after this server's statement began; its clicks are not in that
    statement's snapshot, yet they are re-marked."""
    via, _ = servers
    links, _ = messages["no@example.com"]
    message_id, link_ids = await message_and_links(pool)
    async with pool.acquire() as other:
        transaction = other.transaction()
        await transaction.start()
        seen = time.time()
        await write_events(other, [
            Click(message_id, link_ids[0], now(), "human", None, None, None, seen=seen),
            Click(message_id, link_ids[1], now(), "human", None, None, None, seen=seen),
        ])  # fmt: skip
        third = asyncio.create_task(get(http, via(1, links[2])))
        await wait_for_lock_wait(pool)  # the server's batch waits for the row
        await transaction.commit()
        assert await third == 302
    rows = await click_rows(pool)
    assert [(r["kind"], r["bot_reason"]) for r in rows] == [("bot", BURST)] * 3


async def message_and_links(pool) -> tuple[int, list[int]]:
    message_id = await pool.fetchval(
        "SELECT o.id FROM outbox o JOIN recipients r ON r.id = o.recipient_id"
        " WHERE r.email = 'no@example.com'"
    )
    link_ids = [
        r["id"]
        for r in await pool.fetch("SELECT id FROM links WHERE purpose = 'content' ORDER BY id")
    ]
    return message_id, link_ids


async def wait_for_lock_wait(pool) -> None:
    for _ in range(500):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server's batch never waited for the scan row")


async def test_the_shared_window_is_swept_and_erased(pool, servers, http, messages):
    """It holds a message's clicks for a minute at most, and nothing once the person is erased."""
    via, _ = servers
    links, _ = messages["yes@example.com"]
    assert await get(http, via(0, links[0])) == 302
    assert await pool.fetchval("SELECT count(*) FROM scan_window") == 1
    await pool.execute("UPDATE scan_window SET touched_at = now() - interval '61 seconds'")
    await pool.execute(SQL.sweep_scan_window, 60.0)
    assert await pool.fetchval("SELECT count(*) FROM scan_window") == 0
    assert await get(http, via(1, links[1])) == 302
    async with pool.acquire() as conn:
        assert await erase(conn, "yes@example.com")
    assert await pool.fetchval("SELECT count(*) FROM scan_window") == 0


async def test_a_burst_split_between_two_workers_is_a_scan(
    pool, db_url, tmp_path, tracker_port, messages
):
    """`serve --workers 2`: the kernel hands connections to either process (SO_REUSEPORT);
    the three links go over connections held by different workers."""
    process = await start_two_workers(serve_env(db_url, tmp_path), tracker_port)
    connections = []
    try:
        by_worker = {}  # pid of a worker -> connections it holds
        for _ in range(12):
            connection = await asyncio.open_connection("127.0.0.1", tracker_port)
            connections.append(connection)
            assert await status_over(connection, "/healthz") == 200  # accepted by now
            own_port = connection[1].get_extra_info("sockname")[1]
            pid = worker_holding(process.pid, tracker_port, own_port)
            by_worker.setdefault(pid, []).append(connection)
        assert len(by_worker) == 2, "all twelve connections went to one worker"
        (a, *_), (b, *_) = by_worker.values()
        links, _ = messages["no@example.com"]
        for connection, link in zip((a, b, a), links, strict=True):
            assert (
                await status_over(connection, link.removeprefix(f"http://127.0.0.1:{tracker_port}"))
                == 302
            )
    finally:
        for _, writer in connections:
            writer.close()
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)
        await kill_all(process)
    rows = await click_rows(pool)
    assert [(r["kind"], r["bot_reason"]) for r in rows] == [("bot", BURST)] * 3


async def status_over(connection, path: str) -> int:
    """One GET over a kept-alive connection; its status (the body is read and dropped)."""
    reader, writer = connection
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {BROWSER_AGENT}\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    await reader.readexactly(int(length[1]) if length else 0)
    return status


def worker_holding(supervisor: int, port: int, client_port: int) -> int:
    for child in psutil.Process(supervisor).children():
        for c in child.net_connections(kind="tcp"):
            if c.laddr.port == port and c.raddr and c.raddr.port == client_port:
                return child.pid
    raise AssertionError(f"no worker holds the connection from port {client_port}")


async def test_a_serving_tracker_leaves_its_start_up_objects_out_of_collections(settings):
    """gc.freeze once a tracker with its own pool is up: a full collection no longer walks
    (and pauses every click for) everything start-up made. Tests handing in a pool, which
    start many apps in one process, are left alone."""
    gc.unfreeze()
    server = TestServer(create_app(settings), host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        assert gc.get_freeze_count() > 0
    finally:
        await server.close()
        gc.unfreeze()
