"""`fairclick serve --workers N`: several processes on one port, metrics merged, clean stop."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time

import aiohttp
import psutil
from conftest import BROWSER_AGENT, TEST_KEY
from helpers import tracked_links

from fairclick.workers import CRASH_LIMIT


async def test_two_workers_share_the_port_and_flush_on_sigterm(
    pool, db_url, tmp_path, tracker_port, mailbox, add_recipients, make_campaign, deliver
):
    await add_recipients(
        "email,tracking_consent\n" + "".join(f"p{i}@example.com,yes\n" for i in range(20))
    )
    await make_campaign('<a href="https://example.com/x">x</a>')
    await deliver("c")
    links = [tracked_links(m.get_body(("html",)).get_content())[0] for m in mailbox.messages()]
    env = {
        **os.environ,
        "FAIRCLICK_DATABASE_URL": db_url,
        "FAIRCLICK_SECRET_KEY": TEST_KEY.decode(),
        "FAIRCLICK_DATA_DIR": str(tmp_path / "data"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fairclick.cli", "serve", "--port", str(tracker_port),
        "--workers", "2", env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{tracker_port}"
    try:
        assert b"2 workers" in await asyncio.wait_for(process.stdout.readline(), 60)
        async with aiohttp.ClientSession(headers={"User-Agent": BROWSER_AGENT}) as http:
            ready = False
            deadline = time.monotonic() + 60  # the workers bind a moment after the parent prints
            while not ready and time.monotonic() < deadline:
                try:
                    async with http.get(f"{base}/readyz") as response:
                        ready = response.status == 200
                except aiohttp.ClientConnectionError:
                    pass
                if not ready:
                    await asyncio.sleep(0.05)
            assert ready
            # Separate connections, so the kernel spreads them over both workers.
            statuses = []
            for link in links:
                async with aiohttp.ClientSession(headers={"User-Agent": BROWSER_AGENT}) as one:
                    async with one.get(link, allow_redirects=False) as response:
                        statuses.append(response.status)
            assert statuses == [302] * 20
            async with http.get(f"{base}/metrics") as response:
                text = await response.text()
        human = re.search(r'fairclick_clicks_total\{kind="human",outcome="stored"\} (\S+)', text)
        assert human and float(human[1]) == 20.0  # merged over both workers
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)
    assert process.returncode == 0
    assert await pool.fetchval("SELECT count(*) FROM clicks WHERE kind = 'human'") == 20


def serve_env(db_url, tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRCLICK_")}
    return env | {
        "FAIRCLICK_DATABASE_URL": db_url,
        "FAIRCLICK_SECRET_KEY": TEST_KEY.decode(),
        "FAIRCLICK_DATA_DIR": str(tmp_path / "data"),
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
