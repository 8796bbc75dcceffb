"""Marks of sent messages: several senders' marks share one statement, each waits for its own."""

from __future__ import annotations

import asyncio

import asyncpg

from mailer.delivery import SentMarks
from mailer.sending import prepare_composer, queue_campaign


async def queued_ids(pool, add_recipients, make_campaign, settings, n: int) -> list[int]:
    await add_recipients("email\n" + "".join(f"p{i}@example.com\n" for i in range(n)))
    await make_campaign('<p>Hi {{ recipient.name }}</p><a href="https://example.com/x">x</a>')
    async with pool.acquire() as conn:
        await queue_campaign(conn, await prepare_composer(conn, settings, "c"))
    await pool.execute("UPDATE outbox SET status = 'sending', lease_until = now() + '1 min'")
    return [r["id"] for r in await pool.fetch("SELECT id FROM outbox ORDER BY id")]


class CountingPool:
    """The real pool, counting the connections it lends and the statements run on them."""

    def __init__(self, pool):
        self.pool = pool
        self.statements = 0
        self.acquired = 0

    async def acquire(self):
        self.acquired += 1
        return CountingConnection(self, await self.pool.acquire())

    async def release(self, conn, timeout=None):
        await self.pool.release(conn.conn, timeout=timeout)


class CountingConnection:
    def __init__(self, counter: CountingPool, conn):
        self.counter, self.conn = counter, conn

    async def execute(self, *args):
        self.counter.statements += 1
        return await self.conn.execute(*args)

    def terminate(self):
        self.conn.terminate()


async def test_concurrent_marks_share_statements(pool, add_recipients, make_campaign, settings):
    ids = await queued_ids(pool, add_recipients, make_campaign, settings, 12)
    counting = CountingPool(pool)
    marks = SentMarks(counting)
    await asyncio.gather(*(marks.mark(i, "html", f"<m{i}@x>", "250 ok") for i in ids))
    rows = await pool.fetch("SELECT id, status, format, message_header, smtp_reply, lease_until,"
                            " sent_at FROM outbox ORDER BY id")  # fmt: skip
    assert [r["id"] for r in rows] == ids
    for r in rows:
        assert (r["status"], r["format"], r["message_header"], r["smtp_reply"]) == (
            "sent",
            "html",
            f"<m{r['id']}@x>",
            "250 ok",
        )
        assert r["lease_until"] is None and r["sent_at"] is not None
    # All twelve queued before the flusher first ran: one statement.
    assert counting.statements == 1
    # Later marks start a new flush.
    await pool.execute("UPDATE outbox SET status = 'sending' WHERE id = $1", ids[0])
    await marks.mark(ids[0], "text", "<again@x>", "250 ok")
    assert counting.statements == 2
    assert await pool.fetchval("SELECT format FROM outbox WHERE id = $1", ids[0]) == "text"
    # Both flushes ran on one kept connection (no reset round trip between them), which
    # close() gives back.
    assert counting.acquired == 1
    assert pool.get_idle_size() < pool.get_size()
    await marks.close()
    assert pool.get_idle_size() == pool.get_size()


async def test_marks_go_on_after_postgresql_drops_their_connection(
    pool, add_recipients, make_campaign, settings
):
    ids = await queued_ids(pool, add_recipients, make_campaign, settings, 2)
    counting = CountingPool(pool)
    marks = SentMarks(counting)
    await marks.mark(ids[0], "html", "<a@x>", "250 ok")
    kept = marks._conn.conn.get_server_pid()
    assert await pool.fetchval("SELECT pg_terminate_backend($1)", kept)
    # The kept connection is dead: the mark is written on a new one, and only once.
    await marks.mark(ids[1], "html", "<b@x>", "250 ok")
    assert counting.acquired == 2
    assert await pool.fetchval("SELECT status FROM outbox WHERE id = $1", ids[1]) == "sent"
    await marks.close()
    assert pool.get_idle_size() == pool.get_size()


async def test_a_failed_statement_fails_every_mark_in_it(
    pool, add_recipients, make_campaign, settings
):
    ids = await queued_ids(pool, add_recipients, make_campaign, settings, 3)
    marks = SentMarks(pool)
    results = await asyncio.gather(
        marks.mark(ids[0], "html", "<a@x>", "250 ok"),
        marks.mark(ids[1], "bogus", "<b@x>", "250 ok"),  # violates the format CHECK
        marks.mark(ids[2], "html", "<c@x>", "250 ok"),
        return_exceptions=True,
    )
    # One statement: none of its marks is written, and every sender hears so.
    assert all(isinstance(r, asyncpg.CheckViolationError) for r in results)
    statuses = [r["status"] for r in await pool.fetch("SELECT status FROM outbox ORDER BY id")]
    assert statuses == ["sending", "sending", "sending"]
    # The marks go on working after a failure.
    await marks.mark(ids[2], "html", "<c@x>", "250 ok")
    assert await pool.fetchval("SELECT status FROM outbox WHERE id = $1", ids[2]) == "sent"
    await marks.close()


async def test_a_lone_mark_is_written_before_it_returns(
    pool, add_recipients, make_campaign, settings
):
    ids = await queued_ids(pool, add_recipients, make_campaign, settings, 1)
    marks = SentMarks(pool)
    await marks.mark(ids[0], "html", "<a@x>", "250 ok")
    assert await pool.fetchval("SELECT status FROM outbox WHERE id = $1", ids[0]) == "sent"
    await marks.close()


async def test_a_mark_cut_off_mid_statement_is_written_on_a_new_connection(
    pool, add_recipients, make_campaign, settings
):
    """PostgreSQL ends the kept connection while a mark runs on it (a failover, an admin):
    the mark is written on a new connection, not lost (which would mail the person again)."""
    ids = await queued_ids(pool, add_recipients, make_campaign, settings, 2)
    marks = SentMarks(pool)
    await marks.mark(ids[0], "html", "<a@x>", "250 ok")
    kept = marks._conn.get_server_pid()
    async with pool.acquire() as other:
        holding = other.transaction()
        await holding.start()
        await other.execute("SELECT 1 FROM outbox WHERE id = $1 FOR UPDATE", ids[1])
        marking = asyncio.create_task(marks.mark(ids[1], "html", "<b@x>", "250 ok"))
        while not await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)", kept
        ):
            await asyncio.sleep(0.01)
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", kept)
        await holding.rollback()
        await marking
    assert await pool.fetchval("SELECT status FROM outbox WHERE id = $1", ids[1]) == "sent"
    await marks.close()


async def wait_done(futures, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not all(f.done() for f in futures):
            await asyncio.sleep(0.001)


async def test_the_last_senders_mark_goes_at_once_while_senders_compose(
    pool, add_recipients, make_campaign, settings
):
    """The statement goes with the last mark a statement can hold, before anyone waits for
    it: its round trip overlaps the composing of the next messages (waiting for every
    sender's settle left the sending core idle for it)."""
    ids = await queued_ids(pool, add_recipients, make_campaign, settings, 4)
    counting = CountingPool(pool)
    marks = SentMarks(counting)
    marks.senders = 3
    first = [marks.add(i, "html", f"<m{i}@x>", "250 ok") for i in ids[:2]]
    await asyncio.sleep(0.05)  # far beyond a statement: none goes for two of three senders
    assert counting.statements == 0 and not any(f.done() for f in first)
    last = marks.add(ids[2], "html", f"<m{ids[2]}@x>", "250 ok")
    await wait_done([*first, last])  # nobody settled
    assert counting.statements == 1
    statuses = await pool.fetch("SELECT status FROM outbox WHERE id = ANY($1)", ids[:3])
    assert {r["status"] for r in statuses} == {"sent"}
    # A sender waiting for work has no mark to wait for: two marks suffice with one parked.
    marks.park(1)
    await pool.execute("UPDATE outbox SET status = 'sending' WHERE id = ANY($1)", ids[:2])
    again = [marks.add(i, "text", "<again@x>", "250 ok") for i in ids[:2]]
    await wait_done(again)
    assert counting.statements == 2
    for done in [*first, last, *again]:
        await marks.settle(done)
    await marks.close()
