"""README's first command: `fairclick quickstart` on the embedded defaults, as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import aiohttp
from conftest import free_port
from helpers import running_quickstart

from tracker.bots import KNOWN_AGENT


async def run(*args: str, env: dict) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fairclick.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode, out.decode(), err.decode()


async def _log_in_once(link: str, console: str) -> None:
    """The printed link logs in once, as quickstart's operator; a second use is refused."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(link) as page:
            assert page.status == 200 and "One-time login" in await page.text()
        async with http.post(link, allow_redirects=False) as response:
            assert response.status == 303
            session = response.cookies["fairclick_session"].value
        cookie = {"Cookie": f"fairclick_session={session}"}
        async with http.get(f"{console}/api/v1/me", headers=cookie) as response:
            assert await response.json() == {
                "name": "quickstart@localhost",
                "kind": "session",
                "role": "operator",
            }
        async with http.post(link, allow_redirects=False) as response:
            assert response.status == 410


async def test_quickstart_runs_the_whole_loop(tmp_path, tracker_port):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRCLICK_")}
    env["FAIRCLICK_DATA_DIR"] = str(tmp_path / "data")
    ops = free_port()
    env["FAIRCLICK_OPS_LISTEN"] = f"127.0.0.1:{ops}"  # not 9180: anything may hold it
    async with running_quickstart(env, tracker_port) as (process, output):
        assert f"console:          http://127.0.0.1:{ops}\n" in output
        once = re.search(r"one-time login:\s+(\S+)", output)[1]
        assert once.startswith(f"http://127.0.0.1:{ops}/login/once/")
        await _log_in_once(once, f"http://127.0.0.1:{ops}")
        link = re.search(r"a tracked link:\s+(\S+)", output)[1]
        prefs = re.search(r"preference page:\s+(\S+)", output)[1]
        assert f"captured emails:  {tmp_path / 'data' / 'mail'}" in output
        assert "fairclick report welcome" in output
        # The guide says what makes a click a bot's, and how to click as a person.
        guide = " ".join(output.split())
        for said in (
            "within 10 s of delivery",
            "HEAD request",
            "known scanner or crawler agent (curl's",
            "hidden honeypot link",
            "3 links of one message within 2 s",
            "wait 10 s after sending, then open the link in a browser",
            "bot clicks by reason",
        ):
            assert said in guide
        assert len(list((tmp_path / "data" / "mail").glob("*.eml"))) == 3

        async with aiohttp.ClientSession() as http:
            async with http.get(link, allow_redirects=False) as response:
                assert response.status == 302
                assert response.headers["Location"].startswith("https://example.com/")
            async with http.get(prefs) as response:
                assert response.status == 200 and "ada@example.com" in await response.text()

        # `fairclick report` from another process joins the same embedded database.
        code, out, err = await run("report", "welcome", "--format", "json", env=env)
        assert code == 0, err
        report = json.loads(out)
        assert report["sent"] == 3 and report["recipients"] == {"html": 2, "text": 1}
        # Clicked by a machine within seconds of delivery: counted, but as a bot.
        assert report["clicks"]["bot"] == 1 and report["clicks"]["total"] == 0
        # … and the report says why: aiohttp's agent is on the crawler list, as curl's is.
        assert report["bot_reasons"] == {KNOWN_AGENT: 1}
        code, out, err = await run("report", "welcome", env=env)
        assert code == 0, err
        assert f"bot clicks by reason: 1 {KNOWN_AGENT}" in out
    assert process.returncode == 0
    assert "Traceback" not in (await process.stderr.read()).decode()
    assert (tmp_path / "data" / "secret_key").stat().st_mode & 0o777 == 0o600


async def test_quickstart_again_prints_a_new_one_time_login_for_the_same_admin(tracker_port):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRCLICK_")}
    # Outside pytest's tmp folders, which another pytest run may close to the embedded
    # PostgreSQL's own user (see test_suppressions.data_dir).
    folder = Path(tempfile.mkdtemp(prefix="fc-qs-"))
    env["FAIRCLICK_DATA_DIR"] = str(folder / "data")
    links = []
    for _ in range(2):
        # A new port each time: the one freed by the first run may be taken by then.
        ops = free_port()
        env["FAIRCLICK_OPS_LISTEN"] = f"127.0.0.1:{ops}"
        async with running_quickstart(env, tracker_port) as (process, output):
            links.append(re.search(r"one-time login:\s+(\S+)", output)[1])
            await _log_in_once(links[-1], f"http://127.0.0.1:{ops}")
        assert process.returncode == 0
    assert links[0] != links[1]
    shutil.rmtree(folder, ignore_errors=True)
