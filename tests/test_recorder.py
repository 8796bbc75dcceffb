"""Group commit and the spool: acknowledged means durable, replay applies each file once."""

from __future__ import annotations

import asyncio
import shutil
import stat
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from helpers import tracked_links

from tracker.app import create_app
from tracker.consent import change_choices, erase_recipient
from tracker.errors import ErasureBusy
from tracker.recorder import Click, Open, Outcome, Recorder, _to_spool_row, write_events
from tracker.spool import Spool


@pytest.fixture
async def message_and_link(pool, mailbox, add_recipients, make_campaign, deliver):
    await add_recipients("email,tracking_consent\nyes@example.com,yes\n")
    await make_campaign('<a href="https://example.com/x">x</a>')
    await deliver("c")
    row = await pool.fetchrow(
        "SELECT m.id AS message_id, l.id AS link_id FROM outbox m"
        " JOIN links l ON l.campaign_id = m.campaign_id AND l.purpose = 'content'"
    )
    return row["message_id"], row["link_id"]


def click(message_id: int, link_id: int, agent: str) -> Click:
    return Click(message_id, link_id, datetime.now(UTC), "human", None, "192.0.2.0", agent)


async def test_batches_are_stored_before_the_answer(pool, tmp_path, message_and_link):
    recorder = Recorder(pool, Spool(tmp_path / "spool"))
    await recorder.start()
    try:
        results = [await recorder.record(click(*message_and_link, f"a{i}")) for i in range(3)]
        bad = await recorder.record(click(message_and_link[0], 999_999, "nope"))
    finally:
        await recorder.stop()
    assert [r.outcome for r in results] == [Outcome.STORED] * 3
    assert bad.outcome is Outcome.INVALID
    assert await pool.fetchval("SELECT count(*) FROM clicks") == 3


async def test_a_kept_connection_the_server_dropped_is_replaced_not_spooled(
    pool, tmp_path, message_and_link
):
    """What a PostgreSQL restart does to the connections the recorder keeps between batches."""
    recorder = Recorder(pool, Spool(tmp_path / "spool"))
    await recorder.start()
    try:
        assert (await recorder.record(click(*message_and_link, "before"))).outcome is Outcome.STORED
        kept = [conn.get_server_pid() for conn in recorder._idle]
        assert kept
        await pool.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", kept)
        after = await recorder.record(click(*message_and_link, "after"))
    finally:
        await recorder.stop()
    assert after.outcome is Outcome.STORED and not recorder.degraded
    assert await pool.fetchval("SELECT user_agent FROM clicks WHERE clicked_at = $1", after.key[1])
    assert not list((tmp_path / "spool").glob("*.spool"))


async def test_unreachable_database_spools_then_replays_exactly_once(
    pool, tmp_path, message_and_link
):
    # A pool to a port where nothing listens: every acquire fails like a database that is down.
    down = await asyncpg.create_pool("postgresql://x@127.0.0.1:9/x", min_size=0, max_size=1)
    spool = Spool(tmp_path / "spool")
    recorder = Recorder(down, spool, retry_seconds=0.01)
    await recorder.start()
    try:
        result = await recorder.record(click(*message_and_link, "while-down"))
        assert result.outcome is Outcome.SPOOLED and recorder.degraded
        assert spool.depth() == 1
        spooled = next((tmp_path / "spool").glob("*.spool"))
        on_disk = spooled.read_bytes()
        assert str(message_and_link[0]).encode() in on_disk  # on disk before the answer
        # Consent cannot be checked while the database is away: no agent, no address kept.
        assert b"while-down" not in on_disk and b"192.0.2" not in on_disk
        kept = tmp_path / "copy.spool"
        shutil.copy(spooled, kept)
        spool.seal()
        recorder.pool = pool  # the database is back
        assert await recorder.replay() == 1
        # The same file again (say the process died before deleting it): recognised, not re-applied.
        shutil.copy(kept, tmp_path / "spool" / spooled.name)
        assert await recorder.replay() == 1
    finally:
        await recorder.stop()
        await down.close()
    row = await pool.fetchrow("SELECT message_id, ip, user_agent FROM clicks")
    assert await pool.fetchval("SELECT count(*) FROM clicks") == 1
    assert row["message_id"] == message_and_link[0]  # consented then and now: identified
    assert (row["ip"], row["user_agent"]) == (None, None)
    assert spool.depth() == 0


def test_spool_files_are_the_trackers_own(tmp_path, message_and_link):
    """Spooled rows name messages, also of people without consent: 0600 files, 0700 folder."""
    old_folder = tmp_path / "spool"
    old_folder.mkdir(mode=0o755)  # as an earlier version made it
    old_folder.chmod(0o755)
    spool = Spool(old_folder)
    spool.append([_to_spool_row(click(*message_and_link, "x"))])
    spool.seal()
    (path,) = old_folder.glob("*.spool")
    assert stat.S_IMODE(old_folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    fresh = Spool(tmp_path / "data" / "new-spool")
    fresh.append([_to_spool_row(click(*message_and_link, "y"))])
    fresh.seal()
    assert stat.S_IMODE((tmp_path / "data" / "new-spool").stat().st_mode) == 0o700


async def test_replayed_click_is_anonymous_if_consent_changed_since(
    pool, tmp_path, message_and_link
):
    spool = Spool(tmp_path / "spool")
    recorder = Recorder(pool, spool)
    clicked = click(*message_and_link, "x")
    spool.append([_to_spool_row(clicked)])
    spool.seal()
    # Withdrawn and granted again after the click, while the click sat in the spool.
    async with pool.acquire() as conn:
        recipient = await conn.fetchval("SELECT id FROM recipients")
        await change_choices(conn, recipient, tracking_consent=False, source="test")
        await change_choices(conn, recipient, tracking_consent=True, source="test")
    assert await recorder.replay() == 1
    assert await pool.fetchval("SELECT message_id FROM clicks") is None


async def test_a_line_cut_short_by_a_crash_is_ignored(pool, tmp_path, message_and_link):
    spool = Spool(tmp_path / "spool")
    spool.append([["click", *message_and_link, datetime.now(UTC).isoformat(), "human", None,
                   None, "whole"]])  # fmt: skip
    spool.seal()
    path = next((tmp_path / "spool").glob("*.spool"))
    with path.open("ab") as f:
        f.write(b'["click", 1, 2, "2026-')
    recorder = Recorder(pool, spool)
    assert await recorder.replay() == 1
    agents = [r["user_agent"] for r in await pool.fetch("SELECT user_agent FROM clicks")]
    assert agents == ["whole"]


@pytest.mark.parametrize(
    ("trusted", "forwarded", "stored"),
    [
        ("", "203.0.113.77", "127.0.0.0"),  # nobody trusted: the header is anyone's to forge
        ("127.0.0.1", "203.0.113.77", "203.0.113.0"),
        ("127.0.0.0/8", "198.51.100.9, 203.0.113.77, 127.0.0.5", "203.0.113.0"),
        ("127.0.0.1", "2001:db8:abcd:12::1", "2001:db8:abcd::"),
        ("127.0.0.1", "::ffff:203.0.113.77", "203.0.113.0"),  # IPv4 in IPv6 clothing
    ],
)
async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    pool, settings, http, message_and_link, mailbox, tracker_port, trusted, forwarded, stored
):
    from tracker.settings import parse_networks

    app = create_app(replace(settings, trusted_proxies=parse_networks(trusted)), pool=pool)
    server = TestServer(app, host="127.0.0.1", port=tracker_port)
    await server.start_server()
    try:
        link = tracked_links(mailbox.messages()[0].get_body(("html",)).get_content())[0]
        headers = {"X-Forwarded-For": forwarded}
        async with http.get(link, allow_redirects=False, headers=headers) as response:
            assert response.status == 302
    finally:
        await server.close()
    assert await pool.fetchval("SELECT host(ip) FROM clicks") == stored


async def test_a_batch_committed_and_also_spooled_is_stored_once(pool, tmp_path, message_and_link):
    """The connection broke after PostgreSQL committed but before it said so: spooled too."""
    events = [click(*message_and_link, "lost-answer"), click(*message_and_link, "second")]
    async with pool.acquire() as conn:
        written = await write_events(conn, events)
    assert [r.outcome for r in written] == [Outcome.STORED] * 2
    spool = Spool(tmp_path / "spool")
    spool.append([_to_spool_row(e) for e in events])
    spool.seal()
    assert await Recorder(pool, spool).replay() == 1
    assert await pool.fetchval("SELECT count(*) FROM clicks") == 2
    # Rows spooled by previous versions: without the detector's time (recognised by its id,
    # not written twice), and without an id of its own (replayed as a click of its own).
    spool.append([_to_spool_row(events[0])[:-1], _to_spool_row(events[0])[:-2]])
    spool.seal()
    assert await Recorder(pool, spool).replay() == 1
    assert await pool.fetchval("SELECT count(*) FROM clicks") == 3


async def test_a_click_being_written_when_erasure_starts_ends_anonymous(pool, message_and_link):
    recipient = await pool.fetchval("SELECT id FROM recipients")
    async with pool.acquire() as clicker, pool.acquire() as eraser:
        writing = clicker.transaction()
        await writing.start()
        # The click read the person's consent before erasure began: identified.
        (result,) = await write_events(clicker, [click(*message_and_link, "in flight")])
        assert result.outcome is Outcome.STORED
        erasing = asyncio.create_task(erase_recipient(eraser, recipient))
        await _waiting_on(pool, "relation")
        assert not erasing.done()  # erasure waits for the click to commit ...
        await writing.commit()
        assert await erasing  # ... and then anonymises it with the rest
    row = await pool.fetchrow("SELECT message_id, ip, user_agent FROM clicks")
    assert tuple(row) == (None, None, None)


async def test_a_click_arriving_during_erasure_is_anonymous(pool, message_and_link):
    recipient = await pool.fetchval("SELECT id FROM recipients")
    async with pool.acquire() as clicker, pool.acquire() as eraser:
        erasing = eraser.transaction()
        await erasing.start()
        assert await erase_recipient(eraser, recipient)  # not committed yet
        writing = asyncio.create_task(write_events(clicker, [click(*message_and_link, "x")]))
        await _waiting_on(pool, "relation")
        assert not writing.done()  # held until erasure commits ...
        await erasing.commit()
        (result,) = await writing
    assert result.outcome is Outcome.STORED  # ... and then it finds nobody to name
    row = await pool.fetchrow("SELECT message_id, ip, user_agent FROM clicks")
    assert tuple(row) == (None, None, None)


async def _waiting_on(pool, kind: str, seconds: float = 10) -> None:
    """Until a session of this database waits for a lock of this kind, as pg_locks shows."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE NOT l.granted AND l.locktype = $1 AND a.datname = current_database())",
        kind,
    ):
        assert loop.time() < deadline, f"nobody waits for a {kind} lock"
        await asyncio.sleep(0.01)


async def test_erasure_and_a_replay_that_writes_opens_first_do_not_deadlock(
    pool, tmp_path, message_and_link
):
    """A spool file whose first chunk holds only opens, then a click, replayed while an erasure
    runs: erasure locks clicks then opens, so the replay must take them in that order too."""
    message_id, link_id = message_and_link
    recipient = await pool.fetchval("SELECT id FROM recipients")
    opened = Open(message_id, datetime.now(UTC), "human", None, None, None)
    spool = Spool(tmp_path / "spool")
    spool.append([_to_spool_row(opened), _to_spool_row(click(message_id, link_id, "x"))])
    spool.seal()
    recorder = Recorder(pool, spool, max_batch=1)
    async with pool.acquire() as other, pool.acquire() as eraser:
        # Another session writing the very same open keeps the replay waiting inside its
        # transaction, so the erasure can be made to start in the middle of it.
        holding = other.transaction()
        await holding.start()
        await other.execute(
            "INSERT INTO opens (id, campaign_id, opened_at, kind)"
            " SELECT $1, campaign_id, $2, 'human' FROM outbox WHERE id = $3",
            opened.id, opened.at, message_id,
        )  # fmt: skip
        replaying = asyncio.create_task(recorder.replay())
        await _waiting_on(pool, "transactionid")
        erasing = asyncio.create_task(erase_recipient(eraser, recipient))
        await _waiting_on(pool, "relation")
        await holding.rollback()
        replayed, erased = await asyncio.wait_for(asyncio.gather(replaying, erasing), 30)
    assert (replayed, erased) == (1, True)
    rows = await pool.fetch("SELECT message_id FROM clicks UNION ALL SELECT message_id FROM opens")
    assert [r["message_id"] for r in rows] == [None, None]


async def test_erasure_gives_way_to_a_long_click_write_and_clicks_keep_flowing(
    pool, message_and_link
):
    recipient = await pool.fetchval("SELECT id FROM recipients")
    async with pool.acquire() as holder, pool.acquire() as eraser, pool.acquire() as clicker:
        long_write = holder.transaction()  # like a retention run or a spool replay
        await long_write.start()
        await write_events(holder, [click(*message_and_link, "long")])
        erasing = asyncio.create_task(erase_recipient(eraser, recipient, attempts=2))
        await _waiting_on(pool, "relation")
        # Queued behind the erasure's lock request, a click waits only until it times out.
        (result,) = await asyncio.wait_for(write_events(clicker, [click(0, 1, "x")]), 5)
        assert result.outcome is Outcome.INVALID  # written through (and refused: no message 0)
        with pytest.raises(ErasureBusy, match="nothing was erased"):
            await erasing
        assert await pool.fetchval("SELECT count(*) FROM recipients") == 1
        await long_write.commit()
        assert await erase_recipient(eraser, recipient)  # once the long write is over
    assert await pool.fetchval("SELECT count(*) FROM recipients") == 0
    assert await pool.fetchval("SELECT count(*) FROM clicks WHERE message_id IS NOT NULL") == 0


async def test_a_click_queued_after_the_flushers_last_look_is_written_by_stop(
    pool, tmp_path, message_and_link
):
    """SIGTERM path: an event that arrives after the flushers have finished is still written."""
    recorder = Recorder(pool, Spool(tmp_path / "spool"), flushers=1)
    await recorder.start()
    (flusher,) = [t for t in recorder._tasks if t is not recorder._recovery]
    late: list[asyncio.Task] = []
    # Runs as soon as the flusher has returned, before stop() takes its next step: the
    # click lands in the queue when no flusher will ever look at it again.
    flusher.add_done_callback(
        lambda _: late.append(asyncio.create_task(recorder.record(click(*message_and_link, "l"))))
    )
    await recorder.stop()
    result = await asyncio.wait_for(late[0], timeout=10)
    assert result.outcome is Outcome.STORED
    assert await pool.fetchval("SELECT user_agent FROM clicks") == "l"


async def test_an_unexpected_error_while_writing_spools_the_batch_and_the_flusher_lives_on(
    pool, tmp_path, message_and_link, monkeypatch
):
    """A flusher that died left every request queued behind it waiting for ever."""
    recorder = Recorder(pool, Spool(tmp_path / "spool"), flushers=1)
    store = Recorder._store
    calls = []

    async def fails_once(self, events, *rest):
        calls.append(len(events))
        if len(calls) == 1:
            raise RuntimeError("a bug in writing")
        return await store(self, events, *rest)

    monkeypatch.setattr(Recorder, "_store", fails_once)
    await recorder.start()
    try:
        first = await asyncio.wait_for(recorder.record(click(*message_and_link, "a")), 10)
        second = await asyncio.wait_for(recorder.record(click(*message_and_link, "b")), 10)
    finally:
        await recorder.stop()
    assert (first.outcome, second.outcome) == (Outcome.SPOOLED, Outcome.STORED)

