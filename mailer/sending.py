"""`fairclick send`: check and queue a campaign, then deliver it; safe to run again at any time."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from mailer.campaigns import check_renders, compile_templates, load_campaign, subscribed_recipients
from mailer.compose import Composer, LinkRegistry
from mailer.delivery import Delivery, SendProgress
from mailer.queries import SQL
from tracker.errors import FairclickError
from tracker.organisation import Organisation
from tracker.settings import Settings
from tracker.tokens import Tokens

__all__ = [
    "SendProgress",
    "check_active",
    "prepare_composer",
    "queue_campaign",
    "queue_for_sending",
    "send_campaign",
]


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
        organisation=Organisation.of(settings),
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
        organisation=composer.organisation,
    )
    await conn.execute(SQL.queue_campaign, composer.campaign["id"])


async def queue_for_sending(pool: asyncpg.Pool, settings: Settings, name: str) -> int:
    """Check and queue (idempotently) an active campaign; returns its id."""
    settings.require_smtp()
    async with pool.acquire() as conn:
        composer = await prepare_composer(conn, settings, name)
        check_active(composer.campaign)
        await queue_campaign(conn, composer)
    return composer.campaign["id"]


def check_active(campaign) -> None:
    status = campaign["status"]
    if status != "active":
        name = campaign["name"]
        hint = "resume it with `fairclick campaign resume`" if status == "paused" else ""
        raise FairclickError(f"campaign {name!r} is {status}; nothing was sent. {hint}".strip())


async def send_campaign(
    pool: asyncpg.Pool,
    settings: Settings,
    name: str,
    *,
    on_progress: Callable[[SendProgress], None] | None = None,
) -> SendProgress:
    """Queue (idempotently) and deliver every message that is due; returns this run's counts."""
    campaign_id = await queue_for_sending(pool, settings, name)
    delivery = Delivery(pool, settings, campaign_id=campaign_id, on_progress=on_progress)
    return await delivery.run()
