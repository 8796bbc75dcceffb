"""Admins and API tokens as `fairclick admin` manages them, and one-time login links."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import asyncpg

from console.auth import OPERATOR, ROLES, digest
from console.passwords import check_new_password, hash_password
from tracker.errors import FairclickError
from tracker.queries import load_queries

SQL = load_queries("console")

LOGIN_LINK_SECONDS = 15 * 60
# The admin `fairclick quickstart` logs in with its one-time links (it has no known password).
QUICKSTART_ADMIN = "quickstart@localhost"


def check_email(email: str) -> str:
    email = email.strip()
    local, at, domain = email.rpartition("@")
    if (
        not at
        or not local
        or not domain
        or len(email) > 254
        or any(c.isspace() or not c.isprintable() or "\ud800" <= c <= "\udfff" for c in email)
    ):
        # repr: a control character or undecodable byte is shown escaped, not sent to the terminal.
        raise FairclickError(f"{email!r} is not an email address: use e.g. ops@example.com")
    return email


def check_role(role: str) -> str:
    if role not in ROLES:
        raise FairclickError(f"unknown role {role!r}: choose {' or '.join(ROLES)}")
    return role


async def create_admin(
    conn: asyncpg.Connection, email: str, password: str, role: str = OPERATOR
) -> int:
    """A new admin; an email that exists already (in any case) is a clear error."""
    email, role = check_email(email), check_role(role)
    password_hash = await hash_password(check_new_password(password))
    admin_id = await conn.fetchval(SQL.insert_admin, email, password_hash, role)
    if admin_id is None:
        raise FairclickError(
            f"an admin {email} exists already: `fairclick admin create {email} --reset` "
            "sets a new password"
        )
    return admin_id


async def reset_admin(
    conn: asyncpg.Connection, email: str, password: str, role: str | None = None
) -> str:
    """A new password (and role if given) for an admin; their sessions end. Returns the role."""
    email = check_email(email)
    role = check_role(role) if role is not None else None
    password_hash = await hash_password(check_new_password(password))
    async with conn.transaction():
        row = await conn.fetchrow(SQL.reset_admin, email, password_hash, role)
        if row is None:
            raise FairclickError(f"no admin {email}: `fairclick admin create {email}` makes one")
        # Whoever knew the old password (or holds its session) is out.
        await conn.execute(SQL.end_sessions_of_admin, row["id"])
    return row["role"]


async def remove_admin(conn: asyncpg.Connection, email: str) -> None:
    """Remove an admin; their sessions and login links go with them."""
    if await conn.fetchval(SQL.delete_admin, email.strip()) is None:
        raise FairclickError(f"no admin {email.strip()}: `fairclick admin list` shows them")


async def revoke_api_token(conn: asyncpg.Connection, name: str) -> None:
    if await conn.fetchval(SQL.delete_api_token, name) is None:
        raise FairclickError(f"no API token named {name!r}: `fairclick admin list` shows them")


@dataclass(frozen=True)
class Listing:
    admins: list[asyncpg.Record]
    tokens: list[asyncpg.Record]


async def list_access(conn: asyncpg.Connection) -> Listing:
    """Admins and API tokens, without anything secret."""
    return Listing(await conn.fetch(SQL.list_admins), await conn.fetch(SQL.list_api_tokens))


async def create_login_link(conn: asyncpg.Connection, admin_id: int) -> str:
    """A token for /login/once/TOKEN: logs the admin in once, within LOGIN_LINK_SECONDS."""
    token = secrets.token_urlsafe(32)
    await conn.execute(SQL.delete_expired_login_links)
    await conn.execute(SQL.insert_login_link, digest(token), admin_id, LOGIN_LINK_SECONDS)
    return token


async def ensure_admin(conn: asyncpg.Connection, email: str, role: str = OPERATOR) -> int:
    """The admin's id, made with a random password nobody knows if there is none (quickstart)."""
    row = await conn.fetchrow(SQL.admin_for_login, email)
    if row is not None:
        return row["id"]
    unknown = secrets.token_urlsafe(32)  # never shown: this admin logs in by one-time links
    admin_id = await conn.fetchval(SQL.insert_admin, email, await hash_password(unknown), role)
    if admin_id is None:  # another process made it in between
        admin_id = (await conn.fetchrow(SQL.admin_for_login, email))["id"]
    return admin_id
