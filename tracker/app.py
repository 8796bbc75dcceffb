"""The tracker's aiohttp application factory."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from tracker import schema
from tracker.bots import HONEYPOT_SECONDS, ScanDetector
from tracker.clicks import follow_link, unavailable
from tracker.database import UNREACHABLE, create_pool, database_url
from tracker.hardening import hardened_app
from tracker.health import healthz, home, readyz
from tracker.keys import (
    DETECTOR,
    PAGES,
    POOL,
    RECORDER,
    SETTINGS,
    TARGETS,
    TOKENS,
)
from tracker.logs import route_of
from tracker.mailbox_links import SQL as MAILBOX_SQL
from tracker.mailbox_pages import confirm, show_confirmation
from tracker.opens import open_pixel
from tracker.operators import operators_listener
from tracker.organisation import Organisation
from tracker.pages import page_environment
from tracker.partitions import ensure_partitions
from tracker.preferences import (
    change_preferences,
    download_data,
    erase_data,
    show_erased,
    show_preferences,
)
from tracker.queries import SQL
from tracker.recorder import Recorder
from tracker.settings import Settings
from tracker.spool import Spool
from tracker.targets import TargetCache
from tracker.tokens import Tokens

log = logging.getLogger(__name__)

MAINTENANCE_SECONDS = 60
PARTITION_CHECK_SECONDS = 6 * 3600
# The scan detector's shared window (scan_window) is swept this often: a row untouched for
# HONEYPOT_SECONDS is gone within this many seconds more.
SCAN_SWEEP_SECONDS = 5


async def _prepare_all(pool: asyncpg.Pool) -> None:
    """Prepare every tracker statement once, so a broken query fails the start, not a click."""
    async with pool.acquire() as conn:
        await schema.ensure_current(conn)
        for sql in (*vars(SQL).values(), *vars(MAILBOX_SQL).values()):
            await conn.prepare(sql)
        await ensure_partitions(conn)


async def _maintenance(app: web.Application) -> None:
    """Every minute: replay spool files left by dead processes; a few times a day: partitions."""
    since_partitions = 0.0
    while True:
        await asyncio.sleep(MAINTENANCE_SECONDS)
        app[RECORDER].replay_soon()
        since_partitions += MAINTENANCE_SECONDS
        if since_partitions >= PARTITION_CHECK_SECONDS:
            try:
                async with app[POOL].acquire(timeout=2) as conn:
                    await ensure_partitions(conn)
                since_partitions = 0.0
            except UNREACHABLE as exc:
                log.warning("partition check postponed: %s", exc)


async def _sweep_scan_window(app: web.Application) -> None:
    """Delete the scan detector's rows of messages not clicked for a minute (every process
    does it: with one stopped, the others still do)."""
    while True:
        try:
            await app[POOL].execute(SQL.sweep_scan_window, HONEYPOT_SECONDS, timeout=5)
        except UNREACHABLE as exc:
            log.debug("scan window sweep postponed: %s", exc)
        await asyncio.sleep(SCAN_SWEEP_SECONDS)


async def _freeze_start_up_objects(app: web.Application) -> None:
    """Leave what start-up made (modules, templates, the crawler patterns, the pool) out of
    every later garbage collection: they live as long as the process, and a full collection
    walking them all paused every request in flight for milliseconds (a click's tail
    latency). Only objects made afterwards are collected."""
    gc.collect()
    gc.freeze()


@web.middleware
async def database_away(request: web.Request, handler):
    """A page that needs the database while it is away says so (503), never a traceback."""
    try:
        return await handler(request)
    except UNREACHABLE as exc:
        log.warning("%s %s: database unreachable (%s)", request.method, route_of(request), exc)
        return unavailable(request)


def create_app(settings: Settings, *, pool: asyncpg.Pool | None = None) -> web.Application:
    """The tracker; a pool passed in (by tests) is used as is and left open."""
    settings = settings.with_secret_keys()
    app = hardened_app(middlewares=[database_away])
    app[SETTINGS] = settings
    app[TOKENS] = Tokens(settings.secret_keys)
    app[PAGES] = page_environment(Organisation.of(settings))
    app[DETECTOR] = ScanDetector()

    async def database(app: web.Application) -> AsyncIterator[None]:
        if pool is not None:
            app[POOL] = pool
            await _prepare_all(pool)
            yield
            return
        own = await create_pool(
            database_url(settings),
            min_size=2,
            max_size=20,
            command_timeout=10,
            # The batch INSERT has the same shape every time; planning it anew for each
            # batch costs as much as running it.
            server_settings={"plan_cache_mode": "force_generic_plan"},
        )
        try:
            await _prepare_all(own)
            app[POOL] = own
            yield
        finally:
            await own.close()

    async def recording(app: web.Application) -> AsyncIterator[None]:
        recorder = Recorder(app[POOL], Spool(settings.data_dir / "spool"))
        app[RECORDER] = recorder
        app[TARGETS] = TargetCache(app[POOL])
        await recorder.start()
        maintenance = asyncio.create_task(_maintenance(app))
        sweeper = asyncio.create_task(_sweep_scan_window(app))
        yield
        # SIGTERM lands here after aiohttp stopped accepting and finished the requests
        # in hand: everything queued is written (or spooled) before the process exits.
        maintenance.cancel()
        sweeper.cancel()
        await recorder.stop()

    app.cleanup_ctx.append(database)
    app.cleanup_ctx.append(recording)
    app.cleanup_ctx.append(operators_listener)  # /metrics and /readyz detail, elsewhere
    if pool is None:  # a serving process (tests hand in a pool, and start many apps)
        app.on_startup.append(_freeze_start_up_objects)
    app.router.add_get("/", home)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/c/{token}", follow_link)
    app.router.add_get("/o/{token}.gif", open_pixel)
    app.router.add_get("/p/{token}", show_preferences, name="preferences")
    app.router.add_post("/p/{token}", change_preferences)
    app.router.add_post("/p/{token}/data", download_data, name="personal_data")
    app.router.add_post("/p/{token}/erase", erase_data, name="erase")
    app.router.add_get("/erased", show_erased)
    # The one-time links those two mail (tracker/mailbox_pages.py): GET shows, POST acts.
    app.router.add_get("/p/confirm/{action}/{token}", show_confirmation, name="mailbox_link")
    app.router.add_post("/p/confirm/{action}/{token}", confirm)
    return app
