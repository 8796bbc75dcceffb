"""Health for orchestrators and numbers for Prometheus."""

from __future__ import annotations

from aiohttp import web

from tracker import metrics, schema
from tracker.database import UNREACHABLE
from tracker.keys import PAGES, POOL, RECORDER
from tracker.pages import render_page


async def home(request: web.Request) -> web.Response:
    return render_page(request.app[PAGES], "home.html")


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers (links keep working even while the database is away)."""
    return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: the database answers and its schema is current."""
    problems = []
    try:
        async with request.app[POOL].acquire(timeout=2) as conn:
            pending = await schema.pending_migrations(conn)
        if pending:
            problems.append(f"{len(pending)} pending migration(s)")
    except UNREACHABLE as exc:
        problems.append(f"database unreachable: {exc}")
    if request.app[RECORDER].degraded:
        problems.append("clicks are being spooled locally")
    status = 503 if problems else 200
    text = "\n".join(problems) + "\n" if problems else "ready\n"
    return web.Response(status=status, text=text, headers={"Cache-Control": "no-store"})


async def prometheus(request: web.Request) -> web.Response:
    body, content_type = metrics.render()
    response = web.Response(body=body, headers={"Cache-Control": "no-store"})
    response.headers["Content-Type"] = content_type
    return response
