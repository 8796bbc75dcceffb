"""The JSON API under /api/v1: the numbers the console pages show, for scripts."""

from __future__ import annotations

from aiohttp import web

from console.keys import PRINCIPAL

routes = web.RouteTableDef()


@routes.get("/api/v1/me", name="api_me")
async def me(request: web.Request) -> web.Response:
    """Who the request is authenticated as, and what they may do."""
    principal = request[PRINCIPAL]
    return web.json_response(
        {"name": principal.name, "kind": principal.kind, "role": principal.role}
    )
