"""Logging in and out of the console: the form, one-time links, and where to go next."""

from __future__ import annotations

import math

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from console import passwords, sessions, throttle
from console.auth import digest, page_context, principal_of
from console.keys import CONSOLE_PAGES, PRINCIPAL
from tracker.clients import client_ip, storable_text
from tracker.keys import POOL, SETTINGS
from tracker.queries import load_queries

SQL = load_queries("console")

routes = web.RouteTableDef()

HOME = "/"
# One message for an unknown email and a wrong password: the form says nothing of who exists.
WRONG = "Wrong email or password."
MAX_FIELD = 1024 + 1  # longer fields are refused as wrong, after the same work


def safe_next(value: str | None) -> str:
    """Where to go after login: a path on this console only, never another site.

    Browsers read `//evil.example` and `/\\evil.example` as other hosts, so only a
    single "/" followed by anything but "/" or "\\" is taken; control characters and
    anything that is not ASCII are refused too.
    """
    if (
        not value
        or len(value) > 2000
        or not value.startswith("/")
        or value[1:2] in ("/", "\\")
        or not value.isascii()
        or any(ord(c) < 0x21 or c == "\x7f" for c in value)
        or "\\" in value
    ):
        return HOME
    return value


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _render(request: web.Request, name: str, *, status: int = 200, **values) -> web.Response:
    page = request.app[CONSOLE_PAGES].get_template(name).render(**values)
    return web.Response(status=status, text=page, content_type="text/html")


async def _login_page(request, *, status=200, problem=None, email="", next_path=HOME, headers=None):
    pool = request.app[POOL]
    principal = await principal_of(request, pool)
    context = {"principal": None, "csrf_token": ""}
    if principal is not None and principal.kind == "session":
        request[PRINCIPAL] = principal  # a public route: the login check did not look
        context = page_context(request)
    response = _render(
        request,
        "login.html",
        status=status,
        problem=problem,
        email=email,
        next_path=next_path,
        **context,
    )
    response.headers.update(headers or {})
    return response


@routes.get("/login", name="login")
async def login_form(request: web.Request) -> web.Response:
    """The login form (and, when signed in already, who you are)."""
    return await _login_page(request, next_path=safe_next(request.query.get("next")))


@routes.post("/login", name="login")
async def login(request: web.Request) -> web.Response:
    """Check the password; on success a new session (a new id at every login) and a 303."""
    try:
        form = await request.post()
    except (ValueError, LookupError, HttpProcessingError):
        form = {}
    email, password = form.get("email"), form.get("password")
    next_path = safe_next(form.get("next") if isinstance(form.get("next"), str) else None)
    if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
        return await _login_page(
            request, status=400, problem="Enter your email and password.", next_path=next_path
        )
    # NUL and undecodable bytes cannot be stored or looked up (PostgreSQL refuses them): made
    # harmless, the address then matches nobody and fails like any other unknown one.
    email = storable_text(email.strip(), MAX_FIELD)
    password = password[: passwords.MAX_LENGTH + 1]
    pool = request.app[POOL]
    settings = request.app[SETTINGS]
    ip = client_ip(request, settings.trusted_proxies)
    async with pool.acquire() as conn:
        wait = await throttle.count_attempt(conn, email, ip)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            return await _login_page(
                request,
                status=429,
                problem=f"Too many failed logins: try again in {seconds} s.",
                email=email,
                next_path=next_path,
                headers={"Retry-After": str(seconds)},
            )
        admin = await conn.fetchrow(SQL.admin_for_login, email)
    stored = admin["password_hash"] if admin else None
    if not await passwords.verify_password(stored, password):
        # The try was counted before the check: a failure leaves it so.
        return await _login_page(
            request, status=401, problem=WRONG, email=email, next_path=next_path
        )
    async with pool.acquire() as conn:
        await throttle.record_success(conn, email, ip)
        if passwords.needs_rehash(stored):
            await conn.execute(
                SQL.update_password_hash, admin["id"], await passwords.hash_password(password)
            )
    return await _signed_in(request, admin["id"], next_path)


async def _signed_in(request: web.Request, admin_id: int, next_path: str) -> web.Response:
    """A fresh session replacing any the browser had (no fixation), then a 303 on."""
    settings = request.app[SETTINGS]
    async with request.app[POOL].acquire() as conn:
        old = sessions.session_id_of(request, settings)
        if old is not None:
            await sessions.end_session(conn, old)
        session_id = await sessions.start_session(conn, admin_id)
    response = _see_other(next_path)
    sessions.set_session_cookie(response, settings, session_id)
    return response


@routes.post("/logout", name="logout")
async def logout(request: web.Request) -> web.Response:
    """End this session (its row is deleted, the cookie cleared), then the login page."""
    settings = request.app[SETTINGS]
    session_id = sessions.session_id_of(request, settings)
    # Only a request that proved this session (and sent its CSRF token) ends it.
    if session_id is not None and request[PRINCIPAL].kind == "session":
        async with request.app[POOL].acquire() as conn:
            await sessions.end_session(conn, session_id)
    response = _see_other("/login")
    sessions.clear_session_cookie(response, settings)
    return response


@routes.get("/login/once/{token}", name="login_once")
async def login_once_form(request: web.Request) -> web.Response:
    """A one-time link's page: GET changes nothing, its button (a POST) logs in."""
    return _render(
        request,
        "login_once.html",
        principal=None,
        csrf_token="",
        token=request.match_info["token"],
    )


@routes.post("/login/once/{token}", name="login_once")
async def login_once(request: web.Request) -> web.Response:
    """Use a one-time login link: valid once, until it expires."""
    async with request.app[POOL].acquire() as conn:
        row = await conn.fetchrow(SQL.use_login_link, digest(request.match_info["token"]))
    if row is None or not row["valid"]:
        return await _login_page(
            request,
            status=410,
            problem="This one-time login link was used already or has expired: "
            "run `fairclick quickstart` again for a new one, or log in with a password.",
        )
    return await _signed_in(request, row["admin_id"], HOME)
