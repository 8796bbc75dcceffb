"""`fairclick serve --workers N`: several processes on one port, metrics merged, clean stop."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time

import aiohttp
from conftest import BROWSER_AGENT, TEST_KEY, free_port
from helpers import tracked_links


async def test_two_workers_share_the_port_and_flush_on_sigterm(
    pool, db_url, tmp_path, tracker_port, mailbox, add_recipients, make_campaign, deliver
):
    await add_recipients(
        "email,tracking_consent\n" + "".join(f"p{i}@example.com,yes\n" for i in range(20))
    )
    await make_campaign('<a href="https://example.com/x">x</a>')
    await deliver("c")
    links = [tracked_links(m.get_body(("html",)).get_content())[0] for m in mailbox.messages()]
    ops = free_port()
    env = {
        **os.environ,
        "FAIRCLICK_OPS_LISTEN": f"127.0.0.1:{ops}",
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
                assert response.status == 404  # for operators only, on their own listener
            async with http.get(f"http://127.0.0.1:{ops}/metrics") as response:
                text = await response.text()
        human = re.search(r'fairclick_clicks_total\{kind="human",outcome="stored"\} (\S+)', text)
        assert human and float(human[1]) == 20.0  # merged over both workers
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)
    assert process.returncode == 0
    assert await pool.fetchval("SELECT count(*) FROM clicks WHERE kind = 'human'") == 20
