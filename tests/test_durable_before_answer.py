"""The headline promise, with the commit held back: no 302 (and no pixel) before the click commits.

A deferred constraint trigger runs at COMMIT and waits on an advisory lock the test
holds, so the click's transaction cannot finish until the test lets it. Any answer
sent while it waits would be an acknowledgement of a click that is not yet durable.
"""

from __future__ import annotations

import asyncio

import pytest
from helpers import pixels, tracked_links
from test_faults import until

GATE = 0x6661697274  # an advisory lock id no other code uses
# Long enough for a wrongly early answer to arrive many times over (it would take a few
# milliseconds); the test never waits for it to pass in order to see something happen.
EARLY_ANSWER_WINDOW_SECONDS = 0.5


@pytest.fixture
async def held_commits(pool):
    """While the returned connection holds GATE, commits that wrote clicks or opens wait."""
    async with pool.acquire() as gate:
        await gate.execute(f"""
            CREATE FUNCTION pass_gate() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_advisory_lock_shared({GATE});
                PERFORM pg_advisory_unlock_shared({GATE});
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER clicks_gate AFTER INSERT ON clicks
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pass_gate();
            CREATE CONSTRAINT TRIGGER opens_gate AFTER INSERT ON opens
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pass_gate();
        """)
        try:
            await gate.execute("SELECT pg_advisory_lock($1)", GATE)
            yield gate
        finally:
            await gate.execute("SELECT pg_advisory_unlock_all()")
            await gate.execute("""
                DROP TRIGGER clicks_gate ON clicks;
                DROP TRIGGER opens_gate ON opens;
                DROP FUNCTION pass_gate();
            """)


async def waiting_at_the_gate(pool) -> int:
    return await pool.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND ((classid::bigint << 32) | objid::bigint) = $1",
        GATE,
    )


@pytest.fixture
async def message(pool, mailbox, add_recipients, make_campaign, deliver):
    await add_recipients("email,tracking_consent\nann@example.com,yes\n")
    await make_campaign('<html><body><a href="https://example.com/a">a</a></body></html>')
    await deliver("c")
    return mailbox.messages()[0].get_body(("html",)).get_content()


async def fetch(http, url: str) -> int:
    async with http.get(url, allow_redirects=False) as response:
        await response.read()
        return response.status


@pytest.mark.parametrize("what", ["click", "open", "click and open in one batch"])
async def test_no_answer_leaves_before_the_commit(pool, tracker, http, message, held_commits, what):
    urls = {
        "click": tracked_links(message),
        "open": pixels(message),
        "click and open in one batch": tracked_links(message) + pixels(message),
    }[what]
    requests = [asyncio.create_task(fetch(http, url)) for url in urls]
    await until(lambda: waiting_at_the_gate(pool), "the commit to reach the gate")
    done, _ = await asyncio.wait(requests, timeout=EARLY_ANSWER_WINDOW_SECONDS)
    assert not done, "answered while the commit was still waiting"
    assert await pool.fetchval("SELECT count(*) FROM clicks") == 0  # not visible: not committed
    await held_commits.execute("SELECT pg_advisory_unlock($1)", GATE)
    statuses = await asyncio.gather(*requests)
    assert sorted(statuses) == sorted(302 if "/c/" in url else 200 for url in urls)
    assert await pool.fetchval("SELECT count(*) FROM clicks") == sum("/c/" in u for u in urls)
    assert await pool.fetchval("SELECT count(*) FROM opens") == sum("/o/" in u for u in urls)
