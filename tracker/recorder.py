"""Group commit for clicks and opens: durable before acknowledged, spooled if the database is away.

Requests hand their event to the recorder and wait. Flusher tasks take whatever
has queued up and write it in one transaction; each waiting request is answered
once its batch is committed. If PostgreSQL cannot be reached, the batch is
appended to the local spool (fsync'd) instead, the requests are answered, and the
spool is replayed — exactly once, by file — when the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import asyncpg

from tracker import metrics
from tracker.bots import SCAN_PARAMETERS
from tracker.database import UNREACHABLE
from tracker.queries import SQL
from tracker.spool import Spool

log = logging.getLogger(__name__)

# Clicks this soon after the message went out are a scanner's: nobody opens and
# reads that fast.
TOO_SOON_SECONDS = 10
TOO_SOON_REASON = f"within {TOO_SOON_SECONDS}s of delivery"
# Tries at a batch before it is spooled: a restart of PostgreSQL breaks every kept connection
# and every idle one in the pool; a new one is made after each connection error.
WRITE_ATTEMPTS = 3


class Outcome(enum.Enum):
    STORED = "stored"
    SPOOLED = "spooled"  # durable locally, replayed into the database later
    INVALID = "invalid"  # no such message/link pair: the request gets a 404
    REFUSED = "refused"  # its values could not be stored, even without IP and agent: a 400


def new_event_id() -> int:
    """A click's or open's id, chosen where it happens (random 63 bits, safe across forks).

    Chosen before the write, it travels with the event into the spool, so a batch that
    was committed but whose answer was lost (the connection broke) and was spooled
    anyway is recognised when the spool is replayed, and written once. The primary key
    is (id, time to the microsecond): two events never share both.
    """
    return secrets.randbits(63)


@dataclass(slots=True)
class Click:
    message_id: int
    link_id: int
    at: datetime
    kind: str
    reason: str | None
    ip: str | None
    user_agent: str | None
    id: int = field(default_factory=new_event_id)
    # When the scan detector's clock saw it (tracker/bots.py ScanDetector); None for a
    # click not seen by a detector (written by a tool), whose timing is not judged.
    seen: float | None = None


@dataclass(slots=True)
class Open:
    message_id: int
    at: datetime
    kind: str
    reason: str | None
    ip: str | None
    user_agent: str | None
    id: int = field(default_factory=new_event_id)


@dataclass(slots=True)
class Result:
    outcome: Outcome
    key: tuple[int, datetime] | None = None  # a stored click's (id, clicked_at)
    bot_reason: str | None = None  # why a stored click was judged a bot's


def _to_spool_row(event: Click | Open) -> list:
    """What a spool file keeps of an event: never the network or the user agent.

    While the database is away nobody can tell whether this person consented, and a
    spool file is storage too: it holds message, link, time and bot verdict only, so
    even a consenting person's spooled click is stored without IP and agent. A click
    keeps when the detector saw it: its timing is judged when it is replayed.
    """
    when = event.at.isoformat()
    if isinstance(event, Click):
        return ["click", event.message_id, event.link_id, when, event.kind, event.reason,
                None, None, event.id, event.seen]  # fmt: skip
    return ["open", event.message_id, when, event.kind, event.reason, None, None, event.id]


def _from_row(row: list) -> Click | Open:
    # Rows spooled before events had their own id (8 and 7 fields) get a new one; clicks
    # spooled before their timing was judged where they are written (9 fields) were judged
    # when they were taken, and are not judged again.
    if row[0] == "click":
        _, message_id, link_id, at, kind, reason, ip, ua, *id_and_seen = row
        at = datetime.fromisoformat(at)
        return Click(message_id, link_id, at, kind, reason, ip, ua, *id_and_seen)
    _, message_id, at, kind, reason, ip, ua, *event_id = row
    return Open(message_id, datetime.fromisoformat(at), kind, reason, ip, ua, *event_id)


async def write_events(
    conn: asyncpg.Connection, events: list[Click | Open], *, earlier: list | None = None
) -> list[Result]:
    """Insert clicks and opens (inside the caller's transaction); one Result per event.

    An event whose id is already stored (a replay of a batch that was committed after
    all) is not written again, and counts as stored. The clicks are judged for scanning
    in the statement that writes them (tracker/bots.py); the earlier clicks that shows to
    be a scanner's (wherever they were written) are re-marked by a second statement, here,
    or, given a list `earlier`, added to it for the caller to re-mark (mark_earlier) once
    the batch is answered.
    """
    clicks = [e for e in events if isinstance(e, Click)]
    opens = [e for e in events if isinstance(e, Open)]
    stored_clicks: dict[int, str | None] = {}  # id -> bot reason
    stored_opens: set[int] = set()
    if clicks:
        rows = await conn.fetch(
            SQL.record_clicks,
            [e.id for e in clicks],
            [e.message_id for e in clicks],
            [e.link_id for e in clicks],
            [e.at for e in clicks],
            [e.kind for e in clicks],
            [e.reason for e in clicks],
            [e.ip for e in clicks],
            [e.user_agent for e in clicks],
            TOO_SOON_SECONDS,
            TOO_SOON_REASON,
            [e.seen for e in clicks],
            *SCAN_PARAMETERS,
        )
        stored_clicks.update((row[0], row[2]) for row in rows if row[1] is None)
        remarks = [tuple(row) for row in rows if row[1] is not None]
        if earlier is None:
            await mark_earlier(conn, remarks)
        else:
            earlier.extend(remarks)
    if opens:
        rows = await conn.fetch(
            SQL.record_opens,
            [e.id for e in opens],
            [e.message_id for e in opens],
            [e.at for e in opens],
            [e.kind for e in opens],
            [e.reason for e in opens],
            [e.ip for e in opens],
            [e.user_agent for e in opens],
        )
        stored_opens.update(row[0] for row in rows)
    return [
        Result(Outcome.STORED, (e.id, e.at), stored_clicks.get(e.id))
        if e.id in (stored_clicks if isinstance(e, Click) else stored_opens)
        else Result(Outcome.INVALID)
        for e in events
    ]


async def mark_earlier(conn: asyncpg.Connection, earlier: list) -> None:
    """Re-mark earlier clicks of a scan as a bot's: (id, clicked_at, reason) each.

    A statement of its own, which also sees those another process committed after the
    recording statement began (two hosts writing clicks of one message at the same moment:
    that statement waited for the other's row of scan_window, not in its snapshot).
    """
    for reason in sorted({row[2] for row in earlier}):
        keys = [row for row in earlier if row[2] == reason]
        await conn.execute(SQL.mark_clicks_bot, [k[0] for k in keys], [k[1] for k in keys], reason)


async def _write(conn: asyncpg.Connection, events: list[Click | Open], earlier: list) -> list:
    """write_events, committed on return."""
    if all(isinstance(e, Click) for e in events):
        # One statement is atomic on its own: no BEGIN/COMMIT round trips.
        return await write_events(conn, events, earlier=earlier)
    async with conn.transaction():
        return await write_events(conn, events, earlier=earlier)


def _described(exc: Exception) -> str:
    """An error as logs may hold it: its class and SQLSTATE, never its text (the driver
    quotes a statement's arguments, which are people's agents and addresses)."""
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__} (SQLSTATE {sqlstate})" if sqlstate else type(exc).__name__


class Recorder:
    def __init__(
        self,
        pool: asyncpg.Pool,
        spool: Spool,
        *,
        max_batch: int = 1000,
        flushers: int = 2,
        retry_seconds: float = 0.5,
    ):
        self.pool = pool
        self.spool = spool
        self.max_batch = max_batch
        self.retry_seconds = retry_seconds
        self.degraded = False
        self._flusher_count = flushers
        self._pending: list[tuple[Click | Open, asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._stopped = False
        self._tasks: set[asyncio.Task] = set()
        self._recovery: asyncio.Task | None = None
        # Connections kept between batches: handing one back to the pool after every
        # batch costs a reset round trip (RESET ALL and friends) for nothing, as
        # batches set no session state.
        self._idle: list[asyncpg.Connection] = []

    async def start(self) -> None:
        for _ in range(self._flusher_count):
            self._keep(asyncio.create_task(self._flusher()))
        # Files left by a process that died (or by our own last run) go in first.
        self._start_recovery()

    async def stop(self) -> None:
        """Write everything still queued, then stop (SIGTERM path)."""
        self._closing = True
        self._wake.set()
        flushers = [t for t in self._tasks if t is not self._recovery]
        await asyncio.gather(*flushers, return_exceptions=True)
        self._stopped = True
        if self._pending:  # queued between the flushers' last look and now
            batch, self._pending = self._pending, []
            await self._flush(batch)
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        while self._idle:
            await self._give_back(self._idle.pop())
        self.spool.seal()

    async def _give_back(self, conn: asyncpg.Connection) -> None:
        """Return a kept connection to the pool, which resets it or, if broken, closes it."""
        try:
            await self.pool.release(conn, timeout=2)
        except Exception as exc:  # a connection PostgreSQL already dropped
            log.debug("releasing a recorder connection: %s", _described(exc))
            # The pool may have taken it back before the release failed (a timeout, a
            # broken reset): then it is the pool's to close, and terminate() refuses.
            with contextlib.suppress(asyncpg.InterfaceError):
                conn.terminate()

    def _keep(self, task: asyncio.Task) -> asyncio.Task:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def record(self, event: Click | Open) -> Result:
        future = asyncio.get_running_loop().create_future()
        if self._stopped:
            # A request that arrived while the server was shutting down, after the last
            # batch: written on its own (or spooled), never dropped or turned into a 500.
            await self._flush([(event, future)])
        else:
            self._pending.append((event, future))
            self._wake.set()
        return await future

    async def _flusher(self) -> None:
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
            batch = self._pending[: self.max_batch]
            del self._pending[: len(batch)]
            await self._flush(batch)

    async def _flush(self, batch: list[tuple[Click | Open, asyncio.Future]]) -> None:
        events = [event for event, _ in batch]
        metrics.BATCH_SIZE.observe(len(batch))
        results = None
        earlier: list = []  # earlier clicks of a scan, re-marked once the batch is answered
        if not self.degraded:
            try:
                results = await self._store(events, earlier)
            except Exception as exc:
                # A bug, not an outage: the batch goes to the spool all the same, and the
                # flusher lives on. A flusher that died here left every request queued
                # behind it waiting for ever (found under a PostgreSQL restart).
                log.error("writing %d events failed (%s): spooling them", len(events),
                          _described(exc))  # fmt: skip
        if results is None:
            try:
                await asyncio.to_thread(self.spool.append, [_to_spool_row(e) for e in events])
            except Exception as exc:  # disk full: nothing durable to promise
                log.exception("spooling %d events failed", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            metrics.SPOOL_FILES.set(self.spool.depth())
            results = [Result(Outcome.SPOOLED) for _ in events]
            if not self.degraded:
                # The database came back while this batch was on its way to the spool:
                # make sure a replay pass still picks it up.
                self._start_recovery()
        answers = list(zip(batch, results, strict=True))
        if earlier:
            # Only a machine waits for the re-marking of a scan's earlier clicks: the people
            # in the batch are answered first; the bots' clicks once it is done.
            for (_, future), result in answers:
                if result.bot_reason is None and not future.done():
                    future.set_result(result)
            await self._mark_earlier(earlier)
        for (_, future), result in answers:
            if not future.done():
                future.set_result(result)

    async def _mark_earlier(self, earlier: list) -> None:
        """Re-mark a scan's earlier clicks (SQL.mark_clicks_bot) in a statement of its own."""
        conn = None
        try:
            conn = self._idle.pop() if self._idle else await self.pool.acquire(timeout=2)
            await mark_earlier(conn, earlier)
        except UNREACHABLE as exc:
            log.warning("could not re-mark %d clicks as bot: %s", len(earlier), exc)
            if conn is not None:
                await self._give_back(conn)
            return
        except Exception as exc:  # a bug: the clicks stay as they were judged
            log.error("re-marking %d clicks as bot failed (%s)", len(earlier), _described(exc))
        if conn is not None:
            self._idle.append(conn)

    async def _store(self, events: list[Click | Open], earlier: list) -> list[Result] | None:
        """Write a batch to the database; None if it cannot be reached (the caller spools).

        A connection PostgreSQL dropped (a restart: the kept ones are the first to find
        out) is replaced and the batch written again before anything is spooled, so a
        database that is up never costs a consenting person's IP and agent (a spooled
        click keeps neither). Writing again is safe: events carry their own ids.
        """
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            conn = None
            try:
                conn = self._idle.pop() if self._idle else await self.pool.acquire(timeout=2)
                # results is set only once the COMMIT returned. Set inside the transaction
                # (as it once was), a COMMIT failing on a closed connection answered 302
                # for clicks never stored: lost on a PostgreSQL restart.
                earlier.clear()  # of an attempt that failed
                results = await self._write_batch(conn, events, earlier)
            except UNREACHABLE as exc:
                if conn is not None:
                    # The other kept connections date from before the break too: the
                    # next attempt takes a new one from the pool, which replaces closed ones.
                    kept, self._idle = [conn, *self._idle], []
                    for broken in kept:
                        await self._give_back(broken)
                # No connection to be had, or one that did not answer in time (asking a
                # database that hangs again only keeps the clicks waiting longer).
                if conn is None or attempt == WRITE_ATTEMPTS or isinstance(exc, TimeoutError):
                    log.warning("database unreachable (%s): spooling clicks locally", exc)
                    self._enter_degraded()
                    return None
                continue
            self._idle.append(conn)
            return results
        raise AssertionError("unreachable")  # the loop returns on its last attempt

    async def _write_batch(
        self, conn: asyncpg.Connection, events: list[Click | Open], earlier: list
    ) -> list:
        """The batch in one statement (or transaction). If it fails on data, each event on
        its own, so that one bad request never costs another person's click; an event that
        fails alone once more without the two values its client chose (IP and agent); and
        one that fails even so is refused (answered, never stored), not a 500."""
        try:
            return await _write(conn, events, earlier)
        except UNREACHABLE:
            raise
        except Exception as exc:
            failed = exc
        if len(events) > 1:
            log.warning(
                "a batch of %d events failed (%s): writing them one by one",
                len(events), _described(failed),
            )  # fmt: skip
            return [(await self._write_batch(conn, [event], earlier))[0] for event in events]
        (event,) = events
        if event.ip is not None or event.user_agent is not None:
            log.warning("an event failed (%s): writing it without IP and agent", _described(failed))
            return await self._write_batch(
                conn, [replace(event, ip=None, user_agent=None)], earlier
            )
        log.error("an event could not be stored and was refused: %s", _described(failed))
        return [Result(Outcome.REFUSED)]

    def _enter_degraded(self) -> None:
        self.degraded = True
        self._start_recovery()

    def replay_soon(self) -> None:
        """Look for spool files to replay (e.g. left by another worker that was killed)."""
        self._start_recovery()

    def _start_recovery(self) -> None:
        if self._recovery is None or self._recovery.done():
            self._recovery = self._keep(asyncio.create_task(self._recover()))

    async def _recover(self) -> None:
        """Wait for the database, then replay every spool file nobody is writing."""
        while True:
            try:
                async with self.pool.acquire(timeout=2) as conn:
                    await conn.fetchval("SELECT 1")
                if self.degraded:
                    log.warning("database reachable again: replaying the spool")
                self.degraded = False
                # A batch that was already on its way to the spool may land in a new
                # file after the seal: go round until a pass finds nothing to replay.
                self.spool.seal()
                if await self.replay() == 0:
                    return
            except UNREACHABLE:
                self.degraded = True
                await asyncio.sleep(self.retry_seconds)

    async def replay(self) -> int:
        """Apply ready spool files, each exactly once; returns how many files it took."""
        files = 0
        with self.spool.ready_files() as paths:
            for path in paths:
                rows = await asyncio.to_thread(Spool.read, path)
                async with self.pool.acquire(timeout=2) as conn, conn.transaction():
                    if await conn.fetchval(SQL.claim_spool_file, path.name, len(rows)):
                        # Erasure locks clicks, then opens: taking both first, in its
                        # order, the replay cannot deadlock it.
                        await conn.execute(SQL.lock_event_tables)
                        # All clicks in one statement, then all opens in one, as a live batch
                        # writes them: the report rollups' rows are then taken in one key
                        # order (tracker/migrations/0006_rollups.sql), where chunks written
                        # one after the other would hold one chunk's rows while waiting
                        # for the next's, and could deadlock a live batch.
                        await write_events(conn, [_from_row(r) for r in rows])
                        log.warning("replayed %d spooled events from %s", len(rows), path)
                # Only after the commit: a crash before this line leaves a file that the
                # next replay recognises by name and merely deletes.
                path.unlink()
                files += 1
        metrics.SPOOL_FILES.set(self.spool.depth())
        return files


def now() -> datetime:
    return datetime.now(UTC)
