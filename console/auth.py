"""Who is asking: API tokens (Authorization: Bearer) and their roles.

Roles: a viewer reads; an operator also pauses, resumes and cancels campaigns and erases
people. Tokens are random (32 bytes, URL-safe) and stored only as their SHA-256 digest.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from tracker.errors import FairclickError
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
    return None


def require_operator(request: web.Request, principal: Principal) -> None:
    """403 unless the principal may change things."""
    if not principal.may_operate:
        raise web.HTTPForbidden(text="This needs the operator role; you are a viewer.\n")


async def log_action(conn, principal: Principal, action: str, subject: str) -> None:
    await conn.execute(SQL.log_action, principal.actor, action, subject)
