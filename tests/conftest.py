"""Shared fixtures: a real PostgreSQL, a real SMTP server and the real tracker over loopback."""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from console.app import create_console_app
from console.auth import create_api_token
from mailer.campaigns import create_campaign
from mailer.capture import start_capture_server
from mailer.sending import send_campaign
from tracker import schema
from tracker.app import create_app
from tracker.bots import ScanDetector
from tracker.database import embedded_database_url
from tracker.keys import DETECTOR
from tracker.recipients import import_recipients
from tracker.settings import Settings, SmtpTarget

TEST_KEY = b"test-secret-key-0123456789abcdef"
# Debian's Chromium, never a downloaded one. Without the background-networking flags it
# keeps trying to reach Google's hosts, which this machine's closed network refuses.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TABLES = (
    "clicks, opens, message_links, outbox, links, campaigns, consent_events, recipients,"
    " suppressions, spool_replays, key_fingerprints, admins, console_sessions, api_tokens,"
    " console_actions, console_login_failures, console_login_links,"
    " consent_wordings, erasure_counts,"
    " click_hours, click_totals, message_clicks, clickers, open_hours, message_opens, openers,"
    " outbox_counts,"
    " mailbox_links, scan_window"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def database_url():
    """A fresh database on TEST_DATABASE_URL's server, or on an embedded PostgreSQL."""
    server_url = os.environ.get("TEST_DATABASE_URL")
    if not server_url:
        # A short path: PostgreSQL's socket path must stay under ~100 characters.
        server_url = embedded_database_url(Path(tempfile.mkdtemp(prefix="fc-test-")))
    name = f"fairclick_test_{secrets.token_hex(4)}"
    parts = urlsplit(server_url)
    yield name, server_url, urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
async def db_url(database_url):
    name, server_url, url = database_url
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(url)
        await schema.migrate(conn)
        await conn.close()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
async def pool(db_url):
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture(autouse=True)
async def clean_tables(pool):
    await pool.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")


@dataclass
class Mailbox:
    """The real SMTP server's catch: one parsed message per .eml file."""

    folder: Path
    port: int

    def messages(self) -> list[EmailMessage]:
        return [
            message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in sorted(self.folder.glob("*.eml"))
        ]

    def for_address(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages() if m["To"].addresses[0].addr_spec == address]


@pytest.fixture
def mailbox(tmp_path):
    controller = start_capture_server(tmp_path / "mail")
    yield Mailbox(tmp_path / "mail", controller.port)
    controller.stop()


@pytest.fixture
def tracker_port():
    return free_port()


@pytest.fixture
def settings(tmp_path, db_url, mailbox, tracker_port) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        base_url=f"http://127.0.0.1:{tracker_port}",
        secret_keys=(TEST_KEY,),
        smtp=SmtpTarget("127.0.0.1", mailbox.port, use_tls=False),
    )


BROWSER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)


class ReadingPace:
    """A clock for the scan detector that moves 30 s per click: a person reading between clicks.

    Tests follow every link of a message at machine speed, which the real clock
    rightly calls a scanner; tests of the detector itself use the real clock.
    """

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 30.0
        return self.now


@pytest.fixture
def detector_clock():
    return ReadingPace()


@pytest.fixture
async def tracker(settings, pool, tracker_port, detector_clock):
    """The tracker app on a real loopback socket, at settings.base_url."""
    app = create_app(settings, pool=pool)
    app[DETECTOR] = ScanDetector(clock=detector_clock)
    server = TestServer(app, host="127.0.0.1", port=tracker_port)
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def http():
    """An HTTP client that shows redirects instead of following them."""
    async with aiohttp.ClientSession(headers={"User-Agent": BROWSER_AGENT}) as session:
        yield session


@pytest.fixture
def write_file(tmp_path) -> Callable[[str, str], Path]:
    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def add_recipients(pool, write_file):
    """Import recipients from CSV text through the real importer."""

    async def add(csv_text: str, name: str = "recipients.csv"):
        async with pool.acquire() as conn:
            return await import_recipients(conn, write_file(name, csv_text))

    return add


@pytest.fixture
def deliver(pool, settings):
    """Send a campaign through the real SMTP path, then let an hour pass for its messages.

    Clicks within seconds of delivery are a scanner's; tests click right away, so
    the messages are dated back as if the reader came to them later.
    """

    async def run(name: str, **kwargs):
        progress = await send_campaign(pool, settings, name, **kwargs)
        await pool.execute("UPDATE outbox SET sent_at = sent_at - interval '1 hour'")
        return progress

    return run


@pytest.fixture
def make_campaign(pool, write_file):
    """Create a campaign through the real path, templates written to files first."""

    async def make(
        html: str,
        *,
        name: str = "c",
        subject: str = "Hi",
        text: str | None = None,
        sender: str = "news@example.com",
    ) -> int:
        async with pool.acquire() as conn:
            return await create_campaign(
                conn,
                name,
                subject=subject,
                from_address=sender,
                html_path=write_file(f"{name}.html", html),
                text_path=write_file(f"{name}.txt", text) if text is not None else None,
            )

    return make


@pytest.fixture
async def console(settings, pool):
    """The ops console (console.app.create_console_app) over loopback, on the test pool."""
    client = TestClient(TestServer(create_console_app(settings, pool), host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


@pytest.fixture
async def tokens(pool) -> dict[str, dict[str, str]]:
    """Authorization headers of an API token for each role, named after the role."""
    async with pool.acquire() as conn:
        return {
            role: {"Authorization": f"Bearer {await create_api_token(conn, role, role)}"}
            for role in ("viewer", "operator")
        }


@pytest.fixture
async def browser():
    """Headless Chromium through Playwright, for the page tests."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()
