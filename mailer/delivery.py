"""Delivering the outbox over SMTP: pooled connections, a smooth rate, retries, leases.

Rows move queued → sending (leased) → sent | deferred (retry_at) | failed |
unknown. Senders claim a few rows at a time with FOR UPDATE SKIP LOCKED and
keep their leases alive while they work, so a killed sender's rows return to the
pool once its lease lapses; a claimed row it never tried is simply sent later,
and only a message in the middle of its SMTP transaction can arrive twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import NamedTuple

import aiosmtplib
import asyncpg

from mailer import dkim
from mailer.campaigns import compile_templates
from mailer.compose import Composer, LinkRegistry, Recipient
from mailer.mailbox_mail import MailboxMail
from mailer.message import needs_smtputf8, wire_bytes
from mailer.outgoing import OutgoingMessage
from mailer.queries import SQL
from mailer.smtp_data import send_data, smtp_data
from tracker.database import UNREACHABLE
from tracker.errors import FairclickError
from tracker.organisation import Organisation
from tracker.settings import Settings, SmtpTarget
from tracker.tokens import Tokens

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
FIRST_RETRY_SECONDS = 60
IDLE_POLL_SECONDS = 1.0
# Rows claimed per statement, per SMTP connection. A claim is a round trip, an UPDATE and
# its rollup trigger whatever it takes; rows claimed ahead wait for the lease if the process
# dies (nothing is lost), and the heartbeat keeps their lease while they wait here.
CLAIM_PER_CONNECTION = 16
# How long the first sender that needs its mark waits for the others' (each composing its
# next message) before the statement goes without them.
MARK_GATHER_SECONDS = 0.010
# A 421 or 4.7.x means "slow down" from that destination: wait this long at first,
# doubling while it keeps saying so.
DOMAIN_PAUSE_SECONDS = 30.0
DOMAIN_PAUSE_MAX_SECONDS = 1800.0
_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


@dataclass
class SendProgress:
    total: int = 0
    counts: Counter = field(default_factory=Counter)  # sent, failed, deferred, skipped, unknown

    @property
    def done(self) -> int:
        return sum(self.counts.values())


def retry_delay(attempts: int) -> float:
    """Exponential backoff with jitter, so deferred messages don't return all at once."""
    base = FIRST_RETRY_SECONDS * 2 ** (attempts - 1)
    return base * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security


def enhanced_code(reply: str) -> str | None:
    match = _ENHANCED.search(reply)
    return match[1] if match else None


class RateLimiter:
    """At most `rate` sends a second overall, spaced evenly (no bursts at each second)."""

    def __init__(self, rate: float, *, clock=time.monotonic):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._next = clock()

    def reserve(self) -> float:
        """The moment (by the clock) the next send may go: the next free slot, or now."""
        at = max(self._next, self._clock())
        self._next = at + self.interval
        return at

    async def wait(self) -> None:
        if not self.interval:
            return
        delay = self.reserve() - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)


class DomainThrottle:
    """Destinations that asked us to slow down (421, 4.7.x) wait before their next message."""

    def __init__(self):
        self._pause: dict[str, float] = {}
        self._until: dict[str, float] = {}

    def wait_for(self, domain: str) -> float:
        return max(0.0, self._until.get(domain, 0.0) - time.monotonic())

    def slow_down(self, domain: str) -> float:
        pause = min(self._pause.get(domain, DOMAIN_PAUSE_SECONDS / 2) * 2, DOMAIN_PAUSE_MAX_SECONDS)
        self._pause[domain] = pause
        self._until[domain] = time.monotonic() + pause
        return pause

    def succeeded(self, domain: str) -> None:
        self._pause.pop(domain, None)


class SmtpConnection:
    """One SMTP connection reused for many messages, reopened when the server drops it."""

    def __init__(self, target: SmtpTarget):
        self.target = target
        self.client: aiosmtplib.SMTP | None = None
        # (message id, its mark) of the last message the server accepted here, until the mark
        # is written: the next one is not transmitted before (Delivery._settle).
        self.unmarked: tuple[int, asyncio.Future] | None = None

    async def ensure(self) -> aiosmtplib.SMTP:
        if self.client is not None and self.client.is_connected:
            return self.client
        t = self.target
        client = aiosmtplib.SMTP(hostname=t.host, port=t.port, use_tls=t.use_tls, timeout=60)
        try:
            await client.connect()
            if t.username:
                await client.login(t.username, t.password or "")
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise FairclickError(
                f"cannot use the SMTP server {t.host}:{t.port} ({exc}); check FAIRCLICK_SMTP_URL"
            ) from exc
        self.client = client
        return client

    def drop(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None

    async def close(self) -> None:
        if self.client is not None and self.client.is_connected:
            try:
                await self.client.quit()
            except (aiosmtplib.SMTPException, OSError):
                self.client.close()
        self.client = None


class SentMarks:
    """Marks sent for every sender, one statement for the marks of all connections.

    A sender asks for its message's mark (add) as soon as the server accepted it, and waits
    for it (settle) only before it transmits its next message on that connection: so a killed
    process still leaves at most one accepted-but-unmarked message per connection. Meanwhile
    it composes that next message. A statement goes once every sender is waiting for its mark
    or has nothing to send (or MARK_GATHER_SECONDS after the first needed one): one round
    trip and one commit per ~connections messages, where writing each as soon as it was
    needed wrote 1.3 a statement (each sender's mark came alone, while the others were still
    talking to the SMTP server), and a statement costs PostgreSQL ~0.4 ms. The marks keep one
    connection from their first statement until close() (a worker: its whole life); given
    back to the pool per statement, it cost a reset round trip.
    """

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool
        self._waiting: list[tuple[tuple, asyncio.Future]] = []
        self._writing: set[asyncio.Future] = set()  # the marks of the statement running now
        self._blocked = 0  # settle() calls waiting for a mark in _waiting
        # Set by Delivery: its senders, and how many of them wait for work (or have ended).
        self.senders = 0
        self.parked = 0
        self._closing = False
        self._flusher: asyncio.Task | None = None
        self._gathered: asyncio.Future | None = None  # the flusher, waiting for the others
        self._conn: asyncpg.Connection | None = None

    def add(self, message_id: int, recipient_format: str, header: str, reply: str):
        """A mark to write with a coming statement; settle() the future before relying on it."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append(((message_id, recipient_format, header, reply), done))
        if self._all_gathered():
            # The last mark a statement could hold: written now, while the senders compose,
            # not once each waits for its own (the sending core idled for the round trip).
            self._need()
        return done

    async def settle(self, done: asyncio.Future) -> None:
        """Return once the mark is committed."""
        if not done.done() and done not in self._writing:
            self._blocked += 1
            self._need()
        await done

    async def mark(self, message_id: int, recipient_format: str, header: str, reply: str) -> None:
        await self.settle(self.add(message_id, recipient_format, header, reply))

    def _need(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        elif self._all_gathered():
            self._stop_gathering()

    def _all_gathered(self) -> bool:
        """Whether a statement now holds every mark there is to wait for: each sender that
        is not parked has one waiting (a sender adds its next only after this one is settled)."""
        return self._closing or len(self._waiting) + self.parked >= self.senders

    def park(self, parked: int) -> None:
        """Delivery: `parked` more (or fewer) senders wait for work; the others may go on."""
        self.parked += parked
        if self._waiting and self._all_gathered():
            self._need()

    def _stop_gathering(self) -> None:
        if self._gathered is not None and not self._gathered.done():
            self._gathered.set_result(None)

    async def close(self) -> None:
        """Give the kept connection back, once the marks in hand are written."""
        self._closing = True
        if self._waiting:
            self._need()
        if self._flusher is not None:
            await asyncio.wait([self._flusher])
        await self._give_back(self._conn)

    async def _give_back(self, conn: asyncpg.Connection | None) -> None:
        if conn is None:
            return
        self._conn = None
        try:
            await self.pool.release(conn, timeout=2)  # the pool resets it, or replaces it
        except Exception as exc:  # a connection PostgreSQL already dropped
            log.debug("releasing the sent marks' connection: %r", exc)
            conn.terminate()

    async def _execute(self, columns: list[list]) -> None:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = await self.pool.acquire()
            try:
                await self._conn.execute(SQL.mark_sent_many, *columns)
                return
            except BaseException as exc:
                if isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, UNREACHABLE):
                    raise  # the statement's own error: the connection is fine
                conn, self._conn = self._conn, None
                # In an unknown state: the pool will make a new one (if PostgreSQL closed
                # it, the pool has already taken it back, and terminate() refuses).
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()
                await self._give_back(conn)
                # Marking is idempotent: after a broken connection (PostgreSQL restarted
                # since the last mark), once more on a new one.
                if attempt == 2 or not isinstance(exc, UNREACHABLE):
                    raise

    async def _gather(self) -> None:
        """Wait until every sender with a mark waiting needs it, MARK_GATHER_SECONDS at most."""
        if self._all_gathered():
            return
        loop = asyncio.get_running_loop()
        self._gathered = loop.create_future()
        timer = loop.call_later(MARK_GATHER_SECONDS, self._stop_gathering)
        try:
            await self._gathered
        finally:
            timer.cancel()
            self._gathered = None

    async def _flush(self) -> None:
        try:
            while self._waiting and (self._blocked or self._all_gathered()):
                await self._gather()
                batch, self._waiting = self._waiting, []
                self._blocked = 0  # each was waiting for one of these
                self._writing = {done for _, done in batch}
                try:
                    rows = [marks for marks, _ in batch]
                    columns = [list(column) for column in zip(*rows, strict=True)]
                    await self._execute(columns)
                except BaseException as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
        except asyncio.CancelledError:
            for _, done in self._waiting:  # nobody will write these
                if not done.done():
                    done.set_exception(asyncio.CancelledError())
            raise
        finally:
            # Marks nobody needs yet wait for the next flush (or close()).
            self._flusher = None
            self._writing = set()


def _person(row: asyncpg.Record) -> asyncpg.Record | None:
    """The claimed row's recipient columns stand for the person; None: erased."""
    return row if row["person_id"] is not None else None


def _recipient(person: asyncpg.Record) -> Recipient:
    attributes = person["attributes"]
    if isinstance(attributes, str):
        attributes = json.loads(attributes)
    return Recipient(
        person["person_id"],
        person["email"],
        person["name"],
        person["format"],
        person["tracking_consent"],
        attributes,
    )


class Prepared(NamedTuple):
    """A message composed for its row, and what sending it needs."""

    recipient: Recipient
    domain: str
    message: EmailMessage | OutgoingMessage
    data: bytes


class AmbiguousDelivery(Exception):
    """The connection failed after DATA: the server may or may not have the message."""


class Undeliverable(Exception):
    """This message can never go through this server (the reason is kept for the report)."""


async def transmit(connection: SmtpConnection, sender: str, recipient: str, data: bytes) -> str:
    """One SMTP transaction; errors before DATA are safe to retry, after it they are not."""
    client = await connection.ensure()
    options, encoding = [], "ascii"
    if needs_smtputf8(recipient):
        if not client.supports_extension("smtputf8"):
            raise Undeliverable(
                f"the mail server does not offer SMTPUTF8 (RFC 6531), which an address with "
                f"non-ASCII characters before the @ needs: {recipient}"
            )
        options, encoding = ["SMTPUTF8"], "utf-8"
    try:
        await client.mail(sender, options=options, encoding=encoding)
        await client.rcpt(recipient, encoding=encoding)
    except aiosmtplib.SMTPResponseException:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.rset()
        raise
    try:
        response = await send_data(client, data)  # data is _wire_bytes': already dot-stuffed
    except aiosmtplib.SMTPResponseException:
        raise  # a definite answer from the server
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        connection.drop()
        raise AmbiguousDelivery(str(exc)) from exc
    return f"{response.code} {response.message}"


class Delivery:
    """Senders sharing the outbox: `send` (one campaign, until done) and `worker` (all, forever)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        *,
        campaign_id: int | None = None,
        on_progress: Callable[[SendProgress], None] | None = None,
        until_idle: bool = True,
    ):
        self.pool = pool
        self.settings = settings
        self.campaign_id = campaign_id
        self.on_progress = on_progress
        self.until_idle = until_idle
        self.progress = SendProgress()
        self.tokens = Tokens(settings.secret_keys)
        self.base_url = settings.require_base_url()
        self.smtp_target = settings.require_smtp()
        self.rate = RateLimiter(settings.smtp_rate)
        self.domains = DomainThrottle()
        self.stopping = asyncio.Event()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._leased: set[int] = set()
        self._composers: dict[int, Composer] = {}
        self.mailbox_mail = MailboxMail(self.tokens, self.base_url)
        # The claimer, while it waits for the queue to run low (or for stop()).
        self._claimer_waiting: asyncio.Future | None = None
        self._low_water = 1
        self._sent = SentMarks(pool)
        self._claimer_conn: asyncpg.Connection | None = None

    def stop(self) -> None:
        """Claim nothing more; messages already claimed are finished."""
        self.stopping.set()
        self._wake_claimer()

    def _wake_claimer(self) -> None:
        waiting = self._claimer_waiting
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def _finished_one(self) -> None:
        """A sender is done with a message: the claimer is woken only if it has work now
        (waking it per message, with its futures and timer, cost ~0.1 ms a message)."""
        if self._queue.qsize() < self._low_water or self.stopping.is_set():
            self._wake_claimer()

    async def run(self) -> SendProgress:
        connections = self.settings.smtp_connections
        async with self.pool.acquire() as conn:
            self.progress.total = await conn.fetchval(SQL.due_messages, self.campaign_id)
        if self.progress.total and self.until_idle:
            # Fail early with a clear message if the server cannot be reached at all.
            probe = SmtpConnection(self.smtp_target)
            await probe.ensure()
            await probe.close()
        self._sent.senders = connections
        senders = [asyncio.create_task(self._sender()) for _ in range(connections)]
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self._claimer(batch=connections * CLAIM_PER_CONNECTION, low_water=connections * 2)
        finally:
            for _ in senders:
                self._queue.put_nowait(None)
            results = await asyncio.gather(*senders, return_exceptions=True)
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self._sent.close()
            await self._release_unsent()
            if self._claimer_conn is not None:
                conn, self._claimer_conn = self._claimer_conn, None
                with contextlib.suppress(Exception):
                    await self.pool.release(conn, timeout=2)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return self.progress

    async def _claimer(self, batch: int, low_water: int) -> None:
        lease = self.settings.send_lease_seconds
        self._low_water = low_water
        cursor = 0  # the highest id claimed: the next claim reads on from there
        while not self.stopping.is_set():
            # Keep only a little claimed ahead: what is claimed but unsent waits for
            # the lease if this process dies.
            if self._queue.qsize() >= low_water:
                await self._pause(IDLE_POLL_SECONDS)
                continue
            rows = await self._claim(batch, lease, cursor)
            for row in rows:
                self._leased.add(row["id"])
                self._queue.put_nowait((row, _person(row)))
            # Rows a dead sender held come back once its lease lapses: count them in.
            self.progress.total = max(self.progress.total, self.progress.done + len(self._leased))
            if rows:
                cursor = max(cursor, rows[-1]["id"])
                continue
            if cursor:
                cursor = 0  # nothing after it: look again from the start, for rows that came back
                continue
            if self.until_idle and self._queue.empty() and not self._leased:
                # Rows another sender holds are finished by it, or come back here
                # when its lease lapses (it was killed): `send` ends only when none are left.
                elsewhere = await self._query(
                    "fetchval", SQL.in_flight_elsewhere, self.campaign_id, list(self._leased)
                )
                if not elsewhere:
                    return
            await self._pause(IDLE_POLL_SECONDS)

    async def _claim(self, batch: int, lease: float, cursor: int) -> list:
        return await self._query(
            "fetch", SQL.claim_messages, self.campaign_id, batch, lease, cursor
        )

    async def _query(self, method: str, query: str, *args):
        """The claimer's statements, on one kept connection (a pool release costs a reset)."""
        if self._claimer_conn is None:
            self._claimer_conn = await self.pool.acquire()
        try:
            return await getattr(self._claimer_conn, method)(query, *args)
        except BaseException as exc:
            if not isinstance(exc, asyncpg.PostgresError) or isinstance(exc, UNREACHABLE):
                conn, self._claimer_conn = self._claimer_conn, None
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()
                with contextlib.suppress(Exception):
                    await self.pool.release(conn, timeout=2)
            raise

    async def _pause(self, seconds: float) -> None:
        """Wait until the queue runs low after a message, stop() is called, or time passes."""
        loop = asyncio.get_running_loop()
        waiting = self._claimer_waiting = loop.create_future()
        timer = loop.call_later(seconds, self._wake_claimer)
        try:
            await waiting
        finally:
            timer.cancel()
            self._claimer_waiting = None

    async def _heartbeat(self) -> None:
        lease = self.settings.send_lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            if self._leased:
                with contextlib.suppress(asyncpg.PostgresError, OSError):
                    await self.pool.execute(SQL.extend_leases, list(self._leased), lease)

    async def _release_unsent(self) -> None:
        unsent = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                unsent.append(item[0]["id"])
        if unsent:
            await self.pool.execute(SQL.release_claims, unsent)
            self._leased.difference_update(unsent)

    async def _composer(self, conn: asyncpg.Pool, campaign_id: int) -> Composer:
        if campaign_id not in self._composers:
            campaign = await conn.fetchrow(SQL.campaign_by_id, campaign_id)
            composer = Composer(
                campaign=campaign,
                templates=compile_templates(campaign),
                tokens=self.tokens,
                base_url=self.base_url,
                links=LinkRegistry(campaign_id),
                organisation=Organisation.of(self.settings),
            )
            await composer.links.load(conn)
            self._composers[campaign_id] = composer
        return self._composers[campaign_id]

    async def _sender(self) -> None:
        connection = SmtpConnection(self.smtp_target)
        # The next row, its message being prepared while this one goes out: the CPU composes
        # during the SMTP round trips and the wait for the last mark, where it idled (with 4
        # connections all four were often waiting at once: a fifth of a `send`).
        ahead: tuple[asyncpg.Record, asyncio.Future] | None = None
        try:
            while True:
                if ahead is not None:
                    (row, preparing), ahead = ahead, None
                else:
                    if self._queue.empty():
                        if connection.unmarked is not None:
                            await self._settle(connection)  # nothing to compose meanwhile
                        self._sent.park(1)  # the others' marks need not wait for this one
                        try:
                            item = await self._queue.get()
                        finally:
                            self._sent.park(-1)
                    else:
                        item = self._queue.get_nowait()
                    if item is None:
                        return
                    row, person = item
                    preparing = self._prepare(row, person)
                try:
                    outcome = prepared = await preparing
                    if not isinstance(prepared, str):
                        ahead = self._prepare_next()
                        outcome = await self._send(connection, row, prepared)
                except BaseException:
                    # Nothing sensible to do with the rest: stop claiming and report. The row
                    # in hand stays leased and returns to the outbox when the lease lapses.
                    self.stop()
                    raise
                finally:
                    if connection.unmarked is None or connection.unmarked[0] != row["id"]:
                        self._leased.discard(row["id"])
                        self._finished_one()
                if outcome is not None:  # a sent message counts once its mark is written
                    self._count(outcome)
        finally:
            try:
                if ahead is not None:  # this sender failed: that row, too, waits for its lease
                    ahead[1].cancel()
                    await asyncio.gather(ahead[1], return_exceptions=True)
                if connection.unmarked is not None:
                    await self._settle(connection)
            finally:
                self._sent.park(1)  # for good
                await connection.close()

    def _prepare_next(self) -> tuple[asyncpg.Record, asyncio.Future] | None:
        """The next row in the queue, if one is there, with its message being prepared."""
        if self._queue.empty():
            return None
        item = self._queue.get_nowait()
        if item is None:  # the end: this sender sees it once the row in hand is sent
            self._queue.put_nowait(None)
            return None
        row, person = item
        return row, asyncio.ensure_future(self._prepare(row, person))

    def _count(self, outcome: str) -> None:
        self.progress.counts[outcome] += 1
        if self.on_progress:
            self.on_progress(self.progress)

    async def _settle(self, connection: SmtpConnection) -> None:
        """Wait until the last message this connection sent is marked sent."""
        message_id, done = connection.unmarked
        await self._sent.settle(done)
        connection.unmarked = None
        self._leased.discard(message_id)
        self._finished_one()
        self._count("sent")

    async def _prepare(self, row, person) -> str | Prepared:
        """The row's message, ready to go, or its outcome ("skipped", "deferred", "failed")."""
        message_id = row["id"]
        mailbox_link = row["mailbox_link_id"]
        # A mailbox link goes to the person who asked for it, subscribed or suppressed: it
        # is their answer, not a campaign's mail.
        if person is None or (
            mailbox_link is None and (not person["subscribed"] or person["suppressed"])
        ):
            reason = (
                "erased before sending" if person is None
                else "unsubscribed before sending" if not person["subscribed"]
                else f"address suppressed ({person['suppressed']})"
            )  # fmt: skip
            await self.pool.execute(SQL.mark_skipped, message_id, reason)
            return "skipped"
        recipient = _recipient(person)
        domain = recipient.email.rpartition("@")[2].lower()
        if await self._paused(message_id, domain):
            return "deferred"
        try:
            # The pool stands in for a connection: composing needs one only for a campaign or
            # a link it has not seen yet, and acquiring one per message costs a reset query.
            if mailbox_link is not None:
                message = await self.mailbox_mail.compose(self.pool, recipient, mailbox_link)
                if message is None:
                    reason = "the link expired or was used before it could be sent"
                    await self.pool.execute(SQL.mark_skipped, message_id, reason)
                    return "skipped"
            else:
                composer = await self._composer(self.pool, row["campaign_id"])
                message = await composer.compose(self.pool, recipient, message_id)
            data = self._wire_bytes(message)
        except (asyncpg.PostgresError, OSError):
            raise
        except Exception as exc:  # this recipient's message cannot be built; the rest can
            # The reason may quote the address or name: it goes to the outbox row (which
            # erasure clears), the log only says which message.
            log.warning(
                "message %d not built (%s): see its outbox row", message_id, type(exc).__name__
            )
            await self.pool.execute(
                SQL.mark_failed, message_id, f"could not build the message: {exc!r}"
            )
            return "failed"
        return Prepared(recipient, domain, message, data)

    async def _send(self, connection: SmtpConnection, row, prepared: Prepared) -> str | None:
        """Transmit a prepared message once the connection's last one is marked sent."""
        message_id = row["id"]
        recipient, domain, message, data = prepared
        # Asked again: another connection may have been told to slow down since it was prepared.
        if await self._paused(message_id, domain):
            return "deferred"
        if connection.unmarked is not None:
            # Composed while the last message's mark was written: now it must be, so that a
            # kill leaves at most one accepted-but-unmarked message on this connection.
            await self._settle(connection)
        await self.rate.wait()
        sender = message["From"].addresses[0].addr_spec
        try:
            reply = await transmit(connection, sender, recipient.email, data)
        except AmbiguousDelivery as exc:
            await self.pool.execute(
                SQL.mark_unknown, message_id, f"connection lost after DATA: {exc}"
            )
            return "unknown"
        except Undeliverable as exc:
            await self.pool.execute(SQL.mark_failed, message_id, str(exc))
            return "failed"
        except aiosmtplib.SMTPResponseException as exc:
            return await self._refused(row, domain, exc.code, f"{exc.code} {exc.message}")
        except FairclickError:
            raise  # the server cannot be reached at all: stop with the clear message
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            connection.drop()
            return await self._refused(row, domain, 421, f"connection problem: {exc}")
        self.domains.succeeded(domain)
        mark = self._sent.add(message_id, recipient.format, message["Message-ID"], reply)
        connection.unmarked = (message_id, mark)
        return None  # "sent", counted once the mark is written (_settle)

    async def _paused(self, message_id: int, domain: str) -> bool:
        """Defer the message if its domain asked us to slow down."""
        if wait := self.domains.wait_for(domain):
            await self.pool.execute(
                SQL.mark_deferred, message_id, f"{domain} asked us to slow down", wait
            )
            return True
        return False

    def _wire_bytes(self, message: EmailMessage | OutgoingMessage) -> bytes:
        """What follows DATA: the message (signed), line ends CRLF, dot-stuffed and ended."""
        data = wire_bytes(message)
        if self.settings.dkim is not None:
            data = dkim.sign(data, self.settings.dkim)
        return smtp_data(data, crlf=isinstance(message, OutgoingMessage))

    async def _refused(self, row, domain: str, code: int, reply: str) -> str:
        enhanced = enhanced_code(reply) or ""
        if code == 421 or enhanced.startswith("4.7."):
            pause = self.domains.slow_down(domain)
            log.warning("%s asked us to slow down (%s); pausing it %.0fs", domain, reply, pause)
        if 400 <= code < 500 and row["attempts"] < MAX_ATTEMPTS:
            await self.pool.execute(
                SQL.mark_deferred, row["id"], reply, retry_delay(row["attempts"])
            )
            return "deferred"
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(SQL.mark_failed, row["id"], reply)
            if enhanced == "5.1.1":  # no such user: later campaigns skip the address
                await conn.execute(SQL.suppress_recipient, row["recipient_id"])
        return "failed"
