"""Console sessions: a random id in a cookie, only its SHA-256 stored, and its CSRF token.

The cookie holds 32 random bytes (URL-safe), is HttpOnly, SameSite=Strict, Path=/, Secure
(and named with the __Host- prefix) when the console's URL is https, and lasts
SESSION_SECONDS from the login whatever happens (an absolute lifetime: a stolen cookie
does not live on by being used). Every login makes a new id; logout deletes it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import asyncpg
from aiohttp import web

from tracker.queries import load_queries
from tracker.settings import Settings

SQL = load_queries("console")

SESSION_SECONDS = 12 * 3600
COOKIE = "fairclick_session"
# Browsers keep a __Host- cookie only if it is Secure, Path=/ and has no Domain: nothing on
# a sibling host or plain http can plant one (session fixation by a neighbour).
SECURE_COOKIE = "__Host-fairclick_session"
_CSRF_PURPOSE = b"fairclick console csrf token v1"


def cookie_name(settings: Settings) -> str:
    return SECURE_COOKIE if settings.console_is_https else COOKIE


def session_id_of(request: web.Request, settings: Settings) -> str | None:
    value = request.cookies.get(cookie_name(settings))
    # Ours are 43 characters; anything else is not worth a database round trip.
    return value if value and 32 <= len(value) <= 64 and value.isascii() else None


def id_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("ascii")).digest()


def csrf_token_for(session_id: str) -> str:
    """The token every form of this session carries: an HMAC keyed by the session id.

    Bound to the session (another session's token fails), and it reveals nothing of the
    id, which only the HttpOnly cookie holds: a page on another site can read neither.
    """
    mac = hmac.new(session_id.encode("ascii"), _CSRF_PURPOSE, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def csrf_token_matches(session_id: str, sent: str | None) -> bool:
    if not sent:
        return False
    return hmac.compare_digest(csrf_token_for(session_id).encode(), sent.encode("utf-8", "replace"))


async def start_session(conn: asyncpg.Connection, admin_id: int) -> str:
    """A new session for the admin: its id, returned once (only its digest is stored)."""
    session_id = secrets.token_urlsafe(32)
    async with conn.transaction():
        # Expired sessions go here rather than on a timer: logins are rare, and the lookup
        # refuses (and deletes) an expired one anyway.
        await conn.execute(SQL.delete_expired_sessions)
        await conn.execute(SQL.insert_session, id_hash(session_id), admin_id, SESSION_SECONDS)
    return session_id


async def end_session(conn: asyncpg.Connection, session_id: str) -> None:
    await conn.execute(SQL.delete_session, id_hash(session_id))


def set_session_cookie(response: web.StreamResponse, settings: Settings, session_id: str) -> None:
    response.set_cookie(
        cookie_name(settings),
        session_id,
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=settings.console_is_https,
    )


def clear_session_cookie(response: web.StreamResponse, settings: Settings) -> None:
    response.del_cookie(
        cookie_name(settings),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=settings.console_is_https,
    )
