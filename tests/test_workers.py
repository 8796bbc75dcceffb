"""`fairclick serve --workers N`: several processes on one port, metrics merged, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from conftest import BROWSER_AGENT, TEST_KEY, free_port
from helpers import tracked_links
from test_faults import Load, all_stored, until

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
    env = {
        **os.environ,
        "FAIRCLICK_OPS_LISTEN": f"127.0.0.1:{ops_port}",
        "FAIRCLICK_DATABASE_URL": db_url,
        "FAIRCLICK_SECRET_KEY": TEST_KEY.decode(),
        "FAIRCLICK_DATA_DIR": str(tmp_path / "data"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fairclick.cli", "serve", "--port", str(tracker_port),
        "--workers", "2", env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert b"2 workers" in await asyncio.wait_for(process.stdout.readline(), 60)

        async def two_listening():
            return len(sockets_of_children(process.pid, tracker_port, LISTEN)) == 2

        # The workers bind a moment after the parent prints.
        await until(two_listening, "both workers to listen", 60)
        process.ops_port = ops_port
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)


LISTEN, ESTABLISHED = "0A", "01"  # socket states as /proc/net/tcp writes them


def sockets_of_children(parent: int, port: int, state: str) -> dict[int, int]:
    """{child pid: how many of its TCP sockets on `port` are in `state`}, read from /proc."""
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == state:
                inodes[fields[9]] = True
    counts = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            pid = int(stat.parent.name)
            held = 0
            for fd in (stat.parent / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    held += target.startswith("socket:[") and target[8:-1] in inodes
            if held:
                counts[pid] = held
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
        answering = sockets_of_children(workers.pid, tracker_port, ESTABLISHED)
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
