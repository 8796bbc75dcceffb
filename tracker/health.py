"""Health for orchestrators and numbers for Prometheus.

The public port answers /healthz and a bare /readyz; the reasons and /metrics are for
operators only, on their own listener (tracker/operators.py).
"""

from __future__ import annotations

import logging

from aiohttp import web

from tracker import metrics, schema
from tracker.database import UNREACHABLE
from tracker.keys import PAGES, POOL, RECORDER
from tracker.pages import render_page

log = logging.getLogger(__name__)


async def home(request: web.Request) -> web.Response:
    return render_page(request.app[PAGES], "home.html")


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers (links keep working even while the database is away)."""
    return _plain(200, "ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready or not, and nothing more: whoever asks the public port learns no reasons."""
    ready = not await _problems(request.app)
    return _plain(200, "ready\n") if ready else _plain(503, "not ready\n")


async def readyz_detail(request: web.Request) -> web.Response:
    """Ready, or what is wrong: the database answers, its schema is current, no spooling."""
    problems = await _problems(request.app)
    if not problems:
        return _plain(200, "ready\n")
    return _plain(503, "".join(f"{problem}\n" for problem in problems))


async def _problems(app: web.Application) -> list[str]:
    problems = []
    try:
        async with app[POOL].acquire(timeout=2) as conn:
            pending = await schema.pending_migrations(conn)
        if pending:
            problems.append(f"{len(pending)} pending migration(s)")
    except UNREACHABLE as exc:
        # The driver's words (host, port, user, database) go to the log, never into an answer.
        log.warning("not ready: the database is unreachable (%s)", exc)
        problems.append("database unreachable")
    if app[RECORDER].degraded:
        problems.append("clicks are being spooled locally")
    return problems


def _plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, headers={"Cache-Control": "no-store"})


async def prometheus(request: web.Request) -> web.Response:
    body, content_type = metrics.render()
    response = web.Response(body=body, headers={"Cache-Control": "no-store"})
    response.headers["Content-Type"] = content_type
    return response
