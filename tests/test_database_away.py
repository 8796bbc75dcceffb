"""The tracker in the test's own event loop while PostgreSQL goes away and comes back.

The database sits behind a proxy the test cuts (tests/db_proxy.py): what a person
clicking sees, what /readyz tells the load balancer, and that nothing is lost.
"""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from db_proxy import DatabaseProxy
from helpers import tracked_links

from tracker.app import create_app
from tracker.bots import BURST, ScanDetector
from tracker.clicks import RETRY_AFTER_SECONDS
from tracker.keys import DETECTOR, RECORDER

HTML = (
    "<html><body>"
    + "".join(f'<a href="https://example.com/{n}">{n}</a>' for n in (1, 2, 3))
    + "</body></html>"
)


@pytest.fixture
async def proxy(db_url):
    proxy = DatabaseProxy(db_url)
    await proxy.start()
    yield proxy
    await proxy.cut()


@pytest.fixture
async def links(pool, mailbox, add_recipients, make_campaign, deliver):
    """address -> the tracked links of their message (links 1, 2, 3), sent an hour ago."""
    await add_recipients("email,tracking_consent\nann@example.com,yes\nbob@example.com,yes\n")
    await make_campaign(HTML)
    await deliver("c")
    return {
        m["To"].addresses[0].addr_spec: tracked_links(m.get_body(("html",)).get_content())
        for m in mailbox.messages()
    }


@pytest.fixture
async def tracker_behind_proxy(settings, proxy, tracker_port):
    """The tracker on settings.base_url, its pool going through the proxy; clock frozen."""
    pool = await asyncpg.create_pool(proxy.url, min_size=1, max_size=4)
    app = create_app(settings, pool=pool)
    app[DETECTOR] = ScanDetector(clock=lambda: 1000.0)  # every click at the same moment
    server = TestServer(app, host="127.0.0.1", port=tracker_port)
    await server.start_server()
    yield app
    await server.close()
    await pool.close()


async def status_of(http, url: str) -> tuple[int, dict]:
    async with http.get(url, allow_redirects=False) as response:
        await response.read()
        return response.status, dict(response.headers)


async def test_an_uncached_link_answers_503_with_retry_after_while_the_database_is_away(
    pool, proxy, tracker_behind_proxy, http, links
):
    await proxy.cut()
    status, headers = await status_of(http, links["ann@example.com"][0])
    assert status == 503
    assert headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert "Location" not in headers
    await proxy.restore()
    # Once it is back the same link works, and the refused click was never counted.
    assert (await status_of(http, links["ann@example.com"][0]))[0] == 302
    assert await pool.fetchval("SELECT count(*) FROM clicks") == 1


async def test_readyz_is_503_while_clicks_are_spooled_though_the_database_answers_again(
    pool, proxy, tracker_behind_proxy, http, links, settings
):
    ann = links["ann@example.com"]
    assert (await status_of(http, ann[0]))[0] == 302  # its target is cached now
    assert (await status_of(http, f"{settings.base_url}/readyz"))[0] == 200
    # The recorder looks for the database again only after this; the test restores it
    # meanwhile, so readyz sees a database that answers and a recorder still spooling.
    tracker_behind_proxy[RECORDER].retry_seconds = 3600
    await proxy.cut()
    assert (await status_of(http, ann[0]))[0] == 302  # spooled, durable on local disk
    assert tracker_behind_proxy[RECORDER].degraded
    await proxy.restore()
    assert await pool.fetchval("SELECT 1") == 1
    status, _ = await status_of(http, f"{settings.base_url}/readyz")
    assert status == 503
    recorder = tracker_behind_proxy[RECORDER]
    recorder.spool.seal()
    assert await recorder.replay() == 1  # nothing acknowledged was lost
    assert await pool.fetchval("SELECT count(*) FROM clicks") == 2


async def test_a_burst_finished_while_the_database_is_away_still_redirects(
    pool, proxy, tracker_behind_proxy, http, links
):
    ann, bob = links["ann@example.com"], links["bob@example.com"]
    assert (await status_of(http, bob[2]))[0] == 302  # link 3's target cached (Bob's message)
    tracker_behind_proxy[RECORDER].retry_seconds = 3600  # the test replays, when it chooses
    for link in ann[:2]:  # Ann's links 1 and 2: stored, in the shared scan window too
        assert (await status_of(http, link))[0] == 302
    await proxy.cut()
    # The third link of Ann's message in one moment: a scanner. Judging it needs the
    # database, which is away: the click is still answered, and spooled with its time.
    assert (await status_of(http, ann[2]))[0] == 302
    await proxy.restore()
    tracker_behind_proxy[RECORDER].spool.seal()
    await tracker_behind_proxy[RECORDER].replay()
    # Judged when replayed: the burst is seen, and the two before it are re-marked.
    kinds = await pool.fetch("SELECT kind, bot_reason FROM clicks ORDER BY clicked_at")
    assert [(k["kind"], k["bot_reason"]) for k in kinds] == [("human", None)] + [("bot", BURST)] * 3
