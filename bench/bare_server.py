"""Baseline of bench/redirect.py: an aiohttp app whose handler only answers 302.

No token decoding, no database: the ceiling that aiohttp itself sets on one core.

    python bench/bare_server.py --port 8081
"""

from __future__ import annotations

import argparse

from aiohttp import web

LOCATION = "https://example.com/article"


async def redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": LOCATION})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/c/{token}", redirect)
    app.router.add_get("/healthz", healthz)
    # SIGTERM stops run_app gracefully, like the tracker.
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
