"""/metrics and the reasons of /readyz are for operators, on their own listener.

The public port answers /healthz and a bare /readyz and nothing more; the operators'
listener (127.0.0.1 by default) answers /metrics and /readyz with reasons, never with
the driver's exception text.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from dataclasses import replace

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from conftest import TEST_KEY, free_port

from tracker.app import create_app
from tracker.settings import DEFAULT_OPS_LISTEN, Settings


async def get(http, url) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


@pytest.fixture
async def own_pool(db_url):
    """A pool of this test's own, so that closing it (the database 'away') harms no other."""
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture
async def tracker_with_operators(settings, own_pool, tracker_port):
    """The tracker on tracker_port and its operators' listener; returns both base URLs."""
    ops_port = free_port()
    app = create_app(replace(settings, ops_listen=("127.0.0.1", ops_port)), pool=own_pool)
    server = TestServer(app, host="127.0.0.1", port=tracker_port)
    await server.start_server()
    yield f"http://127.0.0.1:{tracker_port}", f"http://127.0.0.1:{ops_port}"
    await server.close()


async def test_metrics_and_reasons_only_on_the_operators_listener(tracker_with_operators, http):
    public, operators = tracker_with_operators
    assert await get(http, f"{public}/healthz") == (200, "ok\n")
    assert await get(http, f"{public}/readyz") == (200, "ready\n")
    assert (await get(http, f"{public}/metrics"))[0] == 404
    assert await get(http, f"{operators}/healthz") == (200, "ok\n")
    assert await get(http, f"{operators}/readyz") == (200, "ready\n")
    status, text = await get(http, f"{operators}/metrics")
    assert status == 200 and "fairclick_clicks_total" in text
    for page in ("/c/x", "/p/x", "/"):  # nothing of the public port on the operators' one
        assert (await get(http, f"{operators}{page}"))[0] == 404


async def test_not_ready_says_why_to_operators_only_and_never_echoes_the_error(
    tracker_with_operators, http, own_pool
):
    public, operators = tracker_with_operators
    await own_pool.close()  # every acquire now fails with asyncpg's "pool is closed"
    assert await get(http, f"{public}/readyz") == (503, "not ready\n")
    assert await get(http, f"{operators}/readyz") == (503, "database unreachable\n")
    assert await get(http, f"{public}/healthz") == (200, "ok\n")


def test_the_operators_listener_is_on_loopback_unless_set():
    assert DEFAULT_OPS_LISTEN.startswith("127.0.0.1:")
    assert Settings.from_env({}).ops_listen == ("127.0.0.1", int(DEFAULT_OPS_LISTEN[10:]))
    assert Settings.from_env({"FAIRCLICK_OPS_LISTEN": "off"}).ops_listen is None
    assert Settings.from_env({"FAIRCLICK_OPS_LISTEN": "9999"}).ops_listen == ("127.0.0.1", 9999)
    both = Settings.from_env({"FAIRCLICK_OPS_LISTEN": "[::1]:9181"}).ops_listen
    assert both == ("::1", 9181)


def serve_env(db_url, tmp_path, ops_listen: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRCLICK_")}
    return env | {
        "FAIRCLICK_DATABASE_URL": db_url,
        "FAIRCLICK_SECRET_KEY": TEST_KEY.decode(),
        "FAIRCLICK_DATA_DIR": str(tmp_path / "data"),
        "FAIRCLICK_OPS_LISTEN": ops_listen,
    }


async def start_serve(env: dict, port: int, *args: str) -> tuple[asyncio.subprocess.Process, str]:
    """`fairclick serve` as a real process; returns it and the line it printed on start."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fairclick.cli", "serve", "--port", str(port), *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    assert line, (await process.stderr.read()).decode()
    return process, line.decode()


async def stop(process: asyncio.subprocess.Process) -> str:
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr
    return stderr.decode()


async def test_serve_names_the_operators_listener_and_serves_metrics_there(
    db_url, tmp_path, tracker_port, http
):
    ops = free_port()
    process, line = await start_serve(serve_env(db_url, tmp_path, f"127.0.0.1:{ops}"), tracker_port)
    try:
        assert f"http://127.0.0.1:{tracker_port}" in line
        assert f"for operators: http://127.0.0.1:{ops}/metrics and /readyz" in line
        assert (await get(http, f"http://127.0.0.1:{tracker_port}/metrics"))[0] == 404
        status, text = await get(http, f"http://127.0.0.1:{ops}/metrics")
        assert status == 200 and "fairclick_clicks_total" in text
    finally:
        assert "Traceback" not in await stop(process)


async def test_a_busy_operators_port_is_said_once_and_links_keep_working(
    db_url, tmp_path, tracker_port, http
):
    """Clicks come first: another process on the metrics port must not stop the tracker."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ops = taken.getsockname()[1]
        env = serve_env(db_url, tmp_path, f"127.0.0.1:{ops}")
        process, _ = await start_serve(env, tracker_port)
        try:
            assert await get(http, f"http://127.0.0.1:{tracker_port}/readyz") == (200, "ready\n")
        finally:
            stderr = await stop(process)
    assert "Traceback" not in stderr
    (warning,) = [line for line in stderr.splitlines() if "operators" in line]
    assert f"127.0.0.1:{ops}" in warning and "FAIRCLICK_OPS_LISTEN" in warning


async def test_a_malformed_operators_address_is_one_clear_line(db_url, tmp_path, tracker_port):
    env = serve_env(db_url, tmp_path, "0.0.0.0:99999")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fairclick.cli", "serve", "--port", str(tracker_port),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    (line,) = stderr.decode().splitlines()
    assert line.startswith("fairclick: FAIRCLICK_OPS_LISTEN='0.0.0.0:99999' is not HOST:PORT")
