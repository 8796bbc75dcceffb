"""The naive design of bench/redirect.py: one INSERT per click, awaited before the 302.

It does the same per-request work as the tracker — token decode (same codec and
keys), link target from an in-process cache, user-agent classification, IP
truncation — and writes the same columns of `clicks`, but each click is its own
autocommitted INSERT (its own WAL flush) instead of a group commit. No burst
detector and no consent lookup: it is the design being compared, not a product.

    FAIRCLICK_DATABASE_URL=... FAIRCLICK_SECRET_KEY=... python bench/naive_server.py --port 8082
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from tracker.bots import classify_request
from tracker.clients import truncated_ip
from tracker.settings import parse_secret_keys
from tracker.tokens import Tokens

INSERT_CLICK = """
INSERT INTO clicks (link_id, message_id, clicked_at, kind, bot_reason, ip, user_agent)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
REDIRECT_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}
POOL = web.AppKey("pool", asyncpg.Pool)
TOKENS = web.AppKey("tokens", Tokens)
TARGETS = web.AppKey("targets", dict)


async def follow_link(request: web.Request) -> web.Response:
    app = request.app
    ids = app[TOKENS].click.decode(request.match_info["token"])
    if ids is None:
        raise web.HTTPNotFound
    message_id, link_id = ids
    url = app[TARGETS].get(link_id)
    if url is None:
        raise web.HTTPNotFound
    user_agent = request.headers.get("User-Agent")
    reason = classify_request(request.method, user_agent)
    await app[POOL].execute(
        INSERT_CLICK,
        link_id,
        message_id,
        datetime.now(UTC),
        "bot" if reason else "human",
        reason,
        truncated_ip(request.remote),
        user_agent,
    )
    return web.Response(status=302, headers={"Location": url, **REDIRECT_HEADERS})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def create_app(dsn: str, secret_keys: tuple[bytes, ...]) -> web.Application:
    app = web.Application()
    app[TOKENS] = Tokens(secret_keys)

    async def database(app: web.Application) -> AsyncIterator[None]:
        # The tracker's pool size, so both designs may have as many commits in flight.
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=20, command_timeout=10)
        app[POOL] = pool
        app[TARGETS] = {r["id"]: r["url"] for r in await pool.fetch("SELECT id, url FROM links")}
        yield
        await pool.close()

    app.cleanup_ctx.append(database)
    app.router.add_get("/c/{token}", follow_link)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_app(
        os.environ["FAIRCLICK_DATABASE_URL"],
        parse_secret_keys(os.environ["FAIRCLICK_SECRET_KEY"]),
    )
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
