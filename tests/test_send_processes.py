"""Senders as real processes: a kill -9 mid-campaign loses and doubles (almost) nothing."""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import sys
import time
from dataclasses import replace

import psutil
import pytest
from conftest import TEST_KEY
from smtp_servers import SlowServer

from fairclick.send_processes import share_rate
from mailer.capture import start_capture_server
from mailer.sending import prepare_composer, queue_campaign

RECIPIENTS = 150
CONNECTIONS = 4


@pytest.fixture
def slow_smtp(tmp_path):
    controller = start_capture_server(tmp_path / "slow", handler=SlowServer)
    yield controller
    controller.stop()


@pytest.fixture
def cli_env(db_url, settings, slow_smtp, tmp_path):
    return {
        **os.environ,
        "FAIRCLICK_DATABASE_URL": db_url,
        "FAIRCLICK_SECRET_KEY": TEST_KEY.decode(),
        "FAIRCLICK_BASE_URL": settings.base_url,
        "FAIRCLICK_SMTP_URL": f"smtp://127.0.0.1:{slow_smtp.port}",
        "FAIRCLICK_SMTP_CONNECTIONS": str(CONNECTIONS),
        "FAIRCLICK_SEND_LEASE_SECONDS": "1",
        "FAIRCLICK_DATA_DIR": str(tmp_path / "data"),
    }


@pytest.fixture
async def campaign(add_recipients, make_campaign):
    await add_recipients("email\n" + "".join(f"r{i}@example.com\n" for i in range(RECIPIENTS)))
    await make_campaign('<p>Hello</p><a href="https://example.com/">x</a>')


def fairclick(*args: str, env: dict) -> asyncio.subprocess.Process:
    return asyncio.create_subprocess_exec(
        sys.executable, "-m", "fairclick.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def wait_until(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def received(controller) -> collections.Counter:
    return collections.Counter(
        re.sub(r"^\d+-", "", p.stem) for p in controller.handler.folder.glob("*.eml")
    )


async def test_kill_9_mid_campaign_then_send_again(pool, campaign, cli_env, slow_smtp):
    first = await fairclick("send", "c", "--quiet", env=cli_env)
    await wait_until(lambda: len(slow_smtp.handler.arrivals) >= 40, 60)
    first.kill()
    await first.wait()
    assert len(slow_smtp.handler.arrivals) < RECIPIENTS  # really killed halfway

    second = await fairclick("send", "c", "--quiet", env=cli_env)
    _, err = await asyncio.wait_for(second.communicate(), 120)
    assert second.returncode == 0, err.decode()

    counts = received(slow_smtp)
    assert set(counts) == {f"r{i}@example.com" for i in range(RECIPIENTS)}  # nobody skipped
    doubles = sum(n - 1 for n in counts.values())
    assert doubles <= CONNECTIONS  # only what was mid-transaction at the kill
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE status <> 'sent'") == 0


async def test_two_workers_deliver_one_campaign_once(pool, settings, campaign, cli_env, slow_smtp):
    async with pool.acquire() as conn:
        await queue_campaign(conn, await prepare_composer(conn, settings, "c"))
    workers = [await fairclick("worker", env=cli_env) for _ in range(2)]
    try:
        await wait_until(lambda: len(slow_smtp.handler.arrivals) >= RECIPIENTS, 120)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        outputs = [await asyncio.wait_for(w.communicate(), 60) for w in workers]
    assert [w.returncode for w in workers] == [0, 0]
    sent = [int(re.search(rb"worker stopped: sent (\d+)", out)[1]) for out, _ in outputs]
    assert sum(sent) == RECIPIENTS and min(sent) > 0  # both worked, none twice
    assert max(received(slow_smtp).values()) == 1
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE status = 'sent'") == RECIPIENTS


async def test_send_with_two_processes_mails_everyone_once(pool, campaign, cli_env, slow_smtp):
    send = await fairclick("send", "c", "--quiet", "--processes", "2", env=cli_env)
    out, err = await asyncio.wait_for(send.communicate(), 120)
    assert send.returncode == 0, err.decode()
    counts = received(slow_smtp)
    assert set(counts) == {f"r{i}@example.com" for i in range(RECIPIENTS)}
    assert max(counts.values()) == 1
    # One summary for both processes, and each did part of the work.
    assert f"c: sent {RECIPIENTS}, ".encode() in out
    by_process = [int(n) for n in re.search(rb"sent by process: (\d+), (\d+)", out).groups()]
    assert sum(by_process) == RECIPIENTS and min(by_process) > 0
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE status <> 'sent'") == 0


async def test_a_sender_process_killed_mid_campaign_is_reported_and_loses_nothing(
    pool, campaign, cli_env, slow_smtp
):
    send = await fairclick("send", "c", "--quiet", "--processes", "2", env=cli_env)
    try:
        await wait_until(lambda: len(slow_smtp.handler.arrivals) >= 40, 60)
        (child,) = psutil.Process(send.pid).children()
        child.kill()
        _, err = await asyncio.wait_for(send.communicate(), 120)
    finally:
        if send.returncode is None:
            send.kill()
    assert send.returncode == 1
    assert f"sender process 2 (pid {child.pid}) was killed by signal 9".encode() in err
    assert b"Traceback" not in err
    counts = received(slow_smtp)
    assert set(counts) == {f"r{i}@example.com" for i in range(RECIPIENTS)}  # nobody skipped
    assert sum(n - 1 for n in counts.values()) <= CONNECTIONS  # only what was mid-transaction
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE status <> 'sent'") == 0


async def test_sigterm_stops_every_sender_process(pool, campaign, cli_env, slow_smtp):
    send = await fairclick("send", "c", "--quiet", "--processes", "3", env=cli_env)
    try:
        await wait_until(lambda: len(slow_smtp.handler.arrivals) >= 20, 60)
        children = psutil.Process(send.pid).children()
        assert len(children) == 2
        send.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(send.communicate(), 60)
    finally:
        if send.returncode is None:
            send.kill()
    assert send.returncode == 0, err.decode()
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    assert len(slow_smtp.handler.arrivals) < RECIPIENTS  # stopped, not finished
    # Whatever was accepted is marked sent, nothing is left leased, and the summary says so.
    sent = await pool.fetchval("SELECT count(*) FROM outbox WHERE status = 'sent'")
    assert sent == len(slow_smtp.handler.arrivals)
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE status = 'sending'") == 0
    assert f"c: sent {sent}, ".encode() in out


def test_rate_is_split_between_processes(settings):
    shared = share_rate(replace(settings, smtp_rate=90.0), 3)
    assert shared.smtp_rate == 30.0
    assert share_rate(settings, 3).smtp_rate == 0  # no limit stays no limit
