"""Who is asking: an admin's session cookie or an API token (Authorization: Bearer), and roles.

Roles: a viewer reads; an operator also pauses, resumes and cancels campaigns and erases
people. Tokens are random (32 bytes, URL-safe) and stored only as their SHA-256 digest;
sessions are in console/sessions.py. Pages get who is signed in and the form's CSRF token
from page_context(request).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from console import sessions
from tracker.errors import FairclickError
from tracker.keys import SETTINGS
from tracker.queries import load_queries

SQL = load_queries("console")

VIEWER = "viewer"
OPERATOR = "operator"
ROLES = (VIEWER, OPERATOR)
TOKEN_PREFIX = "fc_"  # noqa: S105 - not a secret: so a leaked token is recognisable in a secret scanner's rules


@dataclass(frozen=True)
class Principal:
    """Someone the console let in: an admin's session or an API token."""

    kind: str  # "session" or "token"
    name: str  # the admin's email or the token's name
    role: str

    @property
    def may_operate(self) -> bool:
        return self.role == OPERATOR

    @property
    def actor(self) -> str:
        """How the log of actions names them."""
        return f"{self.kind}:{self.name}"


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


async def create_api_token(conn: asyncpg.Connection, name: str, role: str) -> str:
    """A new token, returned once; only its digest is stored."""
    if role not in ROLES:
        raise FairclickError(f"unknown role {role!r}: choose {' or '.join(ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    if await conn.fetchval(SQL.insert_api_token, name, digest(token), role) is None:
        raise FairclickError(f"an API token named {name!r} exists already: choose another name")
    return token


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


async def principal_of(request: web.Request, pool: asyncpg.Pool) -> Principal | None:
    """The principal a request proves it is, or None."""
    token = _bearer(request)
    if token is not None:
        row = await pool.fetchrow(SQL.principal_by_token, digest(token))
        return Principal("token", row["name"], row["role"]) if row else None
    session_id = sessions.session_id_of(request, request.app[SETTINGS])
    if session_id is not None:
        # The role is read at each request: a removed admin or a changed role counts at once.
        row = await pool.fetchrow(SQL.principal_by_session, sessions.id_hash(session_id))
        return Principal("session", row["email"], row["role"]) if row else None
    return None


def csrf_token(request: web.Request) -> str:
    """The CSRF token for this request's forms; "" without a session (no form needs one)."""
    session_id = sessions.session_id_of(request, request.app[SETTINGS])
    return sessions.csrf_token_for(session_id) if session_id else ""


def page_context(request: web.Request) -> dict:
    """What every console page's template needs: `principal` and `csrf_token`.

    Pages render with `{**page_context(request), ...}`; base.html puts the token into the
    logout form, and every form a page has carries `<input type=hidden name=csrf
    value="{{ csrf_token }}">`.
    """
    from console.keys import PRINCIPAL  # console.keys imports this module

    principal = request.get(PRINCIPAL)
    has_session = principal is not None and principal.kind == "session"
    return {"principal": principal, "csrf_token": csrf_token(request) if has_session else ""}


def require_operator(request: web.Request, principal: Principal) -> None:
    """403 unless the principal may change things."""
    if not principal.may_operate:
        raise web.HTTPForbidden(text="This needs the operator role; you are a viewer.\n")


async def log_action(conn, principal: Principal, action: str, subject: str) -> None:
    await conn.execute(SQL.log_action, principal.actor, action, subject)
