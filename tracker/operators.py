"""The operators' listener: /metrics and /readyz with its reasons, apart from the public port.

The public port serves only what a recipient's mail points at; counters and the
reasons a tracker is not ready (database, migrations, spooling) are for operators, on
FAIRCLICK_OPS_LISTEN (127.0.0.1:9180 unless set). With `serve --workers N` the first
worker process serves it: its /metrics merges every worker's counters (they share
PROMETHEUS_MULTIPROC_DIR) and its /readyz reports that process's view.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from tracker.hardening import hardened_app
from tracker.health import healthz, prometheus, readyz_detail
from tracker.keys import CONSOLE, POOL, RECORDER, SETTINGS
from tracker.settings import Settings

log = logging.getLogger(__name__)


def for_operators(settings: Settings) -> str:
    """Where operators find /metrics and /readyz, for the start-up lines."""
    if settings.ops_listen is None:
        return "none (FAIRCLICK_OPS_LISTEN=off)"
    host, port = settings.ops_listen
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/metrics and /readyz"


def create_operators_app(tracker: web.Application) -> web.Application:
    """Operators' routes, reading the tracker's pool and recorder, and the console if given."""
    app = hardened_app()
    app[POOL] = tracker[POOL]
    app[RECORDER] = tracker[RECORDER]
    app[SETTINGS] = tracker[SETTINGS]
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz_detail, name="readyz")
    app.router.add_get("/metrics", prometheus, name="metrics")
    install_console = tracker.get(CONSOLE)
    if install_console is not None:
        install_console(app, tracker)
    return app


async def operators_listener(tracker: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx of the tracker: the operators' listener lives as long as the tracker."""
    listen = tracker[SETTINGS].ops_listen
    if listen is None:
        yield
        return
    runner = web.AppRunner(create_operators_app(tracker), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, *listen).start()
    except OSError as exc:
        # Clicks come first: a busy metrics port (another tracker on this host, the old
        # process of a restart) must not keep links from working. Said once, loudly.
        log.warning(
            "cannot serve /metrics and /readyz for operators on %s:%s (%s): set "
            "FAIRCLICK_OPS_LISTEN to a free HOST:PORT, or `off`; the tracker runs without it",
            *listen,
            exc.strerror or exc,
        )
    try:
        yield
    finally:
        await runner.cleanup()
