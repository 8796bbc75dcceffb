"""Queue a campaign in the outbox and deliver it over SMTP; safe to run again at any time."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiosmtplib
import asyncpg

from mailer.campaigns import check_renders, compile_templates, load_campaign, subscribed_recipients
from mailer.compose import Composer, LinkRegistry, Recipient
from mailer.queries import SQL
from tracker.errors import FairclickError
from tracker.settings import Settings, SmtpTarget
from tracker.tokens import Tokens

log = logging.getLogger(__name__)

BATCH = 50
LEASE_SECONDS = 300
MAX_ATTEMPTS = 5
FIRST_RETRY_SECONDS = 60


@dataclass
class SendProgress:
    total: int = 0
    counts: Counter = field(default_factory=Counter)  # this run: sent, failed, deferred, skipped

    @property
    def done(self) -> int:
        return sum(self.counts.values())


def retry_delay(attempts: int) -> float:
    """Exponential backoff with jitter, so deferred messages don't return all at once."""
    base = FIRST_RETRY_SECONDS * 2 ** (attempts - 1)
    return base * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security


class SmtpSession:
    """One SMTP connection reused for many messages, reopened when the server drops it."""

    def __init__(self, target: SmtpTarget):
        self.target = target
        self.client: aiosmtplib.SMTP | None = None

    async def connect(self) -> None:
        t = self.target
        self.client = aiosmtplib.SMTP(hostname=t.host, port=t.port, use_tls=t.use_tls, timeout=60)
        try:
            await self.client.connect()
            if t.username:
                await self.client.login(t.username, t.password or "")
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.client = None
            raise FairclickError(
                f"cannot use the SMTP server {t.host}:{t.port} ({exc}); check FAIRCLICK_SMTP_URL"
            ) from exc

    async def send(self, message) -> str:
        if self.client is None or not self.client.is_connected:
            await self.connect()
        _, reply = await self.client.send_message(message)
        return reply

    async def close(self) -> None:
        if self.client is not None and self.client.is_connected:
            try:
                await self.client.quit()
            except (aiosmtplib.SMTPException, OSError):
                self.client.close()


async def prepare_composer(
    conn: asyncpg.Connection, settings: Settings, name: str, *, create_links: bool = True
) -> Composer:
    campaign = await load_campaign(conn, name)
    composer = Composer(
        campaign=campaign,
        templates=compile_templates(campaign),
        tokens=Tokens(settings.secret_keys),
        base_url=settings.require_base_url(),
        links=LinkRegistry(campaign["id"], create=create_links),
    )
    await composer.links.load(conn)
    return composer


async def queue_campaign(conn: asyncpg.Connection, composer: Composer) -> None:
    """Render for everyone first (nothing is queued if anyone fails), then queue once each."""
    recipients = await subscribed_recipients(conn)
    check_renders(
        composer.templates,
        composer.campaign["name"],
        recipients,
        lambda recipient: composer.preferences_url(recipient.id),
    )
    await conn.execute(SQL.queue_campaign, composer.campaign["id"])


async def _deliver_one(
    conn: asyncpg.Connection, smtp: SmtpSession, composer: Composer, row, recipient
) -> str:
    """Send one claimed message and record the outcome; returns it (sent/failed/...)."""
    if recipient is None or not recipient["subscribed"]:
        reason = "erased before sending" if recipient is None else "unsubscribed before sending"
        await conn.execute(SQL.mark_skipped, row["id"], reason)
        return "skipped"
    person = Recipient.from_record(recipient)
    message = await composer.compose(conn, person, row["id"])
    try:
        reply = await smtp.send(message)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        refusal = exc.recipients[0] if exc.recipients else None
        return await _refused(conn, row, refusal.code if refusal else 550, str(exc))
    except aiosmtplib.SMTPResponseException as exc:
        return await _refused(conn, row, exc.code, f"{exc.code} {exc.message}")
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        smtp.client = None  # reconnect for the next message
        return await _refused(conn, row, 421, f"connection problem: {exc}")
    await conn.execute(SQL.mark_sent, row["id"], person.format, message["Message-ID"], reply)
    return "sent"


async def _refused(conn: asyncpg.Connection, row, code: int, reply: str) -> str:
    if 400 <= code < 500 and row["attempts"] < MAX_ATTEMPTS:
        await conn.execute(SQL.mark_deferred, row["id"], reply, retry_delay(row["attempts"]))
        return "deferred"
    await conn.execute(SQL.mark_failed, row["id"], reply)
    return "failed"


async def send_campaign(
    pool: asyncpg.Pool,
    settings: Settings,
    name: str,
    *,
    on_progress: Callable[[SendProgress], None] | None = None,
) -> SendProgress:
    """Queue (idempotently) and deliver every message that is due; returns this run's counts."""
    smtp_target = settings.require_smtp()
    async with pool.acquire() as conn:
        composer = await prepare_composer(conn, settings, name)
        await queue_campaign(conn, composer)
        progress = SendProgress()
        for row in await conn.fetch(SQL.outbox_counts, composer.campaign["id"]):
            if row["status"] in ("queued", "sending", "deferred"):
                progress.total += row["n"]
        smtp = SmtpSession(smtp_target)
        if progress.total:
            await smtp.connect()
        try:
            while True:
                claimed = await conn.fetch(
                    SQL.claim_messages, composer.campaign["id"], BATCH, LEASE_SECONDS
                )
                if not claimed:
                    break
                found = await conn.fetch(
                    SQL.recipients_by_ids, [r["recipient_id"] for r in claimed]
                )
                people = {r["id"]: r for r in found}
                for done, row in enumerate(claimed):
                    try:
                        outcome = await _deliver_one(
                            conn, smtp, composer, row, people.get(row["recipient_id"])
                        )
                    except BaseException:
                        # The row in hand may have reached the server: its lease
                        # expires and it is retried then; the rest were never tried.
                        untried = [r["id"] for r in claimed[done + 1 :]]
                        await conn.execute(SQL.release_claims, untried)
                        raise
                    progress.counts[outcome] += 1
                    if on_progress:
                        on_progress(progress)
        finally:
            await smtp.close()
    return progress
