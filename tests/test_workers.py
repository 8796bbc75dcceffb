"""`fairclick serve --workers N`: several processes on one port, metrics merged, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time

import aiohttp
import psutil
import pytest
from conftest import BROWSER_AGENT, TEST_KEY, free_port
from helpers import tracked_links
from test_faults import Load, all_stored, until

from fairclick.workers import CRASH_LIMIT

PEOPLE = 20


@pytest.fixture
async def links(pool, mailbox, add_recipients, make_campaign, deliver) -> list[str]:
    await add_recipients(
        "email,tracking_consent\n" + "".join(f"p{i}@example.com,yes\n" for i in range(PEOPLE))
    )
    await make_campaign('<a href="https://example.com/x">x</a>')
    await deliver("c")
    return [tracked_links(m.get_body(("html",)).get_content())[0] for m in mailbox.messages()]


@pytest.fixture
async def workers(db_url, tmp_path, tracker_port):
    """`fairclick serve --workers 2` as a real process, ready; stopped by the test or at the end.

    Its operators' listener (/metrics) is on process.ops_port.
    """
    ops_port = free_port()
    env = serve_env(db_url, tmp_path) | {"FAIRCLICK_OPS_LISTEN": f"127.0.0.1:{ops_port}"}
    process = await start_two_workers(env, tracker_port)
    try:

        async def two_listening():
            return len(sockets_of_children(process.pid, tracker_port, psutil.CONN_LISTEN)) == 2

        await until(two_listening, "both workers to listen", 60)
        process.ops_port = ops_port
        yield process
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)
    finally:
        await kill_all(process)  # a test that failed may leave it running


def sockets_of_children(parent: int, port: int, status: str) -> dict[int, int]:
    """{child pid: how many of its TCP sockets on `port` are in `status`}."""
    counts = {}
    for child in psutil.Process(parent).children():
        with contextlib.suppress(psutil.Error):
            held = sum(
                c.laddr.port == port and c.status == status
                for c in child.net_connections(kind="tcp")
            )
            if held:
                counts[child.pid] = held
    return counts


async def test_two_workers_both_answer_and_metrics_are_merged(workers, links, tracker_port):
    base = f"http://127.0.0.1:{tracker_port}"
    # Separate connections, kept open, so the kernel spreads them over both workers and
    # each worker can be seen holding some (all 20 on one: a chance of 2 in a million).
    sessions = [aiohttp.ClientSession(headers={"User-Agent": BROWSER_AGENT}) for _ in links]
    try:
        statuses = []
        for session, link in zip(sessions, links, strict=True):
            async with session.get(link, allow_redirects=False) as response:
                statuses.append(response.status)
        assert statuses == [302] * PEOPLE
        answering = sockets_of_children(workers.pid, tracker_port, psutil.CONN_ESTABLISHED)
        assert len(answering) == 2, answering
        assert sum(answering.values()) == PEOPLE
        async with sessions[0].get(f"{base}/metrics") as response:
            assert response.status == 404  # for operators only, on their own listener
        async with sessions[0].get(f"http://127.0.0.1:{workers.ops_port}/metrics") as response:
            text = await response.text()
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
    human = re.search(r'fairclick_clicks_total\{kind="human",outcome="stored"\} (\S+)', text)
    assert human and float(human[1]) == PEOPLE  # merged over both workers


async def test_sigterm_under_load_stores_every_302_of_both_workers_and_exits_0(
    pool, workers, links
):
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        load = Load(http, links, tag="workers")
        task = asyncio.create_task(load.run(concurrency=16))
        await load.acks(200, task)
        workers.send_signal(signal.SIGTERM)  # with requests in flight in both workers
        assert await asyncio.wait_for(workers.wait(), 60) == 0
        load.stopping = True
        await task
    assert set((await all_stored(pool, load.acked)).values()) == {1}


def serve_env(db_url, tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRCLICK_")}
    return env | {
        "FAIRCLICK_DATABASE_URL": db_url,
        "FAIRCLICK_SECRET_KEY": TEST_KEY.decode(),
        "FAIRCLICK_DATA_DIR": str(tmp_path / "data"),
        "FAIRCLICK_OPS_LISTEN": "off",  # not 9180, which anything else may hold
    }


async def start_two_workers(env: dict, port: int):
    """`serve --workers 2`, returned once it announced that both workers listen."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fairclick.cli", "serve", "--port", str(port),
        "--workers", "2", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert b"2 workers" in await asyncio.wait_for(process.stdout.readline(), 60)
    except BaseException:
        await kill_all(process)
        raise
    return process


async def kill_all(process) -> None:
    """Kill the supervisor and its workers (orphaned workers would hold its pipes open)."""
    if process.returncode is None:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
    await process.wait()


async def stderr_line_with(process, text: bytes) -> bytes:
    while text not in (line := await asyncio.wait_for(process.stderr.readline(), 60)):
        assert line, f"the supervisor ended before saying {text!r}"
    return line


async def test_a_worker_that_dies_after_it_listened_is_replaced(db_url, tmp_path, tracker_port):
    process = await start_two_workers(serve_env(db_url, tmp_path), tracker_port)
    try:
        first = psutil.Process(process.pid).children()
        assert len(first) == 2
        first[0].kill()
        said = f"worker {first[0].pid} exited (-9); starting another"
        await stderr_line_with(process, said.encode())
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 60
            while True:  # the replacement serves (the survivor may answer meanwhile)
                children = psutil.Process(process.pid).children()
                if len(children) == 2 and first[0].pid not in {c.pid for c in children}:
                    break
                assert time.monotonic() < deadline, "no replacement worker"
                await asyncio.sleep(0.05)
            async with http.get(f"http://127.0.0.1:{tracker_port}/healthz") as response:
                assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)
    err = await process.stderr.read()
    assert process.returncode == 0, err
    assert b"Traceback" not in err


async def test_workers_that_keep_dying_end_the_command(db_url, tmp_path, tracker_port):
    """Restarts are not forever: past CRASH_LIMIT deaths a minute, the supervisor stops."""
    process = await start_two_workers(serve_env(db_url, tmp_path), tracker_port)
    supervisor = psutil.Process(process.pid)
    original = {c.pid for c in supervisor.children()}
    killed: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while process.returncode is None:
            assert time.monotonic() < deadline, "still restarting workers"
            # Kill every worker but one of the originals, each as soon as it appears.
            for child in supervisor.children():
                if child.pid not in killed and child.pid != min(original):
                    killed.add(child.pid)
                    child.kill()
            try:
                await asyncio.wait_for(process.wait(), 0.05)
            except TimeoutError:
                pass
    finally:
        await kill_all(process)
    err = (await process.stderr.read()).decode()
    assert process.returncode == 1
    assert err.strip().splitlines()[-1] == (
        f"fairclick: workers died {CRASH_LIMIT + 1} times within 60 s; "
        "stopped all of them (their errors are above)"
    )
    assert len(killed) == CRASH_LIMIT + 1 and "Traceback" not in err
