"""The tracker's aiohttp application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from tracker import schema
from tracker.clicks import follow_link
from tracker.database import create_pool, database_url
from tracker.keys import PAGES, POOL, SETTINGS, TOKENS
from tracker.pages import page_environment
from tracker.preferences import change_preferences, show_preferences
from tracker.queries import SQL
from tracker.settings import Settings
from tracker.tokens import Tokens


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _prepare_all(pool: asyncpg.Pool) -> None:
    """Prepare every tracker statement once, so a broken query fails the start, not a click."""
    async with pool.acquire() as conn:
        await schema.ensure_current(conn)
        for sql in vars(SQL).values():
            await conn.prepare(sql)


def create_app(settings: Settings, *, pool: asyncpg.Pool | None = None) -> web.Application:
    """The tracker; a pool passed in (by tests) is used as is and left open."""
    settings = settings.with_secret_keys()
    app = web.Application()
    app[SETTINGS] = settings
    app[TOKENS] = Tokens(settings.secret_keys)
    app[PAGES] = page_environment()

    async def database(app: web.Application) -> AsyncIterator[None]:
        if pool is not None:
            app[POOL] = pool
            await _prepare_all(pool)
            yield
            return
        own = await create_pool(database_url(settings), min_size=2, max_size=20)
        try:
            await _prepare_all(own)
            app[POOL] = own
            yield
        finally:
            await own.close()

    app.cleanup_ctx.append(database)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/c/{token}", follow_link)
    app.router.add_get("/p/{token}", show_preferences)
    app.router.add_post("/p/{token}", change_preferences)
    return app
