"""The console's application parts: its login check, its headers and its routes.

`install(ops, tracker)` adds them to the operators' application (tracker/operators.py);
`create_console_app(settings, pool)` builds one on its own (tests, `console` alone).
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import jinja2
from aiohttp import web

from console import api, login, pages
from console.auth import principal_of
from console.csrf import check_csrf
from console.keys import CONSOLE_PAGES, PRINCIPAL
from tracker.database import UNREACHABLE
from tracker.hardening import hardened_app
from tracker.keys import POOL, SETTINGS
from tracker.logs import route_of
from tracker.pages import templates_dir
from tracker.settings import Settings

log = logging.getLogger(__name__)

# Routes anyone who reaches the listener may use: the operators' probes (as before the
# console existed: Prometheus and load balancers do not log in) and the login itself
# (its form, and one-time links, which are their own proof).
# Every other route needs a session or an API token: the check is default-deny.
# The API's OpenAPI document describes no data and is conventionally public.
PUBLIC_ROUTES = frozenset(
    {"healthz", "readyz", "metrics", "login", "login_once", "static", "openapi"}
)

# No inline script or style anywhere, no framing by others, forms post only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'"
)


def console_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir() / "console"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


@web.middleware
async def require_login(request: web.Request, handler):
    """Default-deny: a route not in PUBLIC_ROUTES answers only to a principal."""
    # A 404 or 405 of the router (match_info.http_exception) reveals nothing: let it be.
    route = request.match_info.route
    if route.name in PUBLIC_ROUTES or request.match_info.http_exception is not None:
        return await handler(request)
    principal = await principal_of(request, request.app[POOL])
    if principal is None:
        if _is_api(request):
            return web.json_response(
                {"error": {"code": "unauthorized", "message": "log in or send a bearer token"}},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="fairclick"'},
            )
        # Back to the page after the login; a form's target (a POST) cannot be gone back to.
        back = request.rel_url.path_qs if request.method in ("GET", "HEAD") else "/"
        raise web.HTTPSeeOther(f"/login?next={quote(back, safe='')}")
    request[PRINCIPAL] = principal
    return await handler(request)


@web.middleware
async def database_away(request: web.Request, handler):
    """A page (login included) while the database is away: a 503 page saying so.

    The API's requests get the same in its JSON shape from api.api_errors, further out.
    """
    try:
        return await handler(request)
    except UNREACHABLE as exc:
        if _is_api(request):
            raise
        log.warning("%s %s: database unreachable (%s)", request.method, route_of(request), exc)
        page = request.app[CONSOLE_PAGES].get_template("error.html").render(
            principal=request.get(PRINCIPAL),
            csrf_token="",
            title="Database unavailable",
            message="The console cannot reach its database just now; nothing was changed. "
            "Try again in a moment.",
        )
        return web.Response(
            text=page, status=503, content_type="text/html", headers={"Retry-After": "5"}
        )


async def _console_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")


def install(ops: web.Application, tracker: web.Application | None = None) -> None:
    """Add the console to the operators' application (before it starts)."""
    ops[CONSOLE_PAGES] = console_environment()
    pages.add_filters(ops[CONSOLE_PAGES])
    # Outside the login check: its 401 and a database away are in the API's shape too.
    ops.middlewares.append(api.api_errors)
    ops.middlewares.append(database_away)
    ops.middlewares.append(require_login)
    ops.middlewares.append(check_csrf)  # after the login check: it needs the principal
    ops.on_response_prepare.append(_console_headers)
    # Each part registers its routes here (console/pages.py, console/api.py, login).
    ops.router.add_routes(login.routes)
    ops.router.add_routes(api.routes)
    ops.router.add_routes(pages.routes)
    # The stylesheet (no personal data, and the login page needs it before any login).
    ops.router.add_static("/static", templates_dir() / "console" / "static", name="static")


def create_console_app(settings: Settings, pool) -> web.Application:
    """The operators' application with the console, on a pool the caller owns."""
    from tracker.health import healthz

    app = hardened_app()
    app[SETTINGS] = settings
    app[POOL] = pool
    app.router.add_get("/healthz", healthz, name="healthz")
    install(app)
    return app
