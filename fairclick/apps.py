"""The tracker as `serve` and `quickstart` run it: with the ops console on the operators' side."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from console.app import install as install_console
from tracker.app import create_app
from tracker.keys import CONSOLE
from tracker.settings import Settings


def tracker_with_console(
    settings: Settings, *, pool: asyncpg.Pool | None = None
) -> web.Application:
    app = create_app(settings, pool=pool)
    app[CONSOLE] = install_console
    return app
