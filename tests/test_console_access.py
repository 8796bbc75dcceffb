"""The console lets nobody in without a session or an API token, on every route it has."""

from __future__ import annotations

import re

from console.admins import create_admin
from console.app import PUBLIC_ROUTES
from console.auth import create_api_token
from console.sessions import COOKIE, SECURE_COOKIE, start_session


def _concrete(path: str) -> str:
    """A path for a route template: each {variable} filled with a plausible value."""
    return re.sub(r"\{[^}]+\}", "x1", path)


def expired_sessions(pool):
    """Session ids that were valid once: their admin exists, their time is over.

    A new one for each request: the first request that presents one deletes it.
    """
    admin = []

    async def make() -> str:
        async with pool.acquire() as conn:
            if not admin:
                admin.append(
                    await create_admin(conn, "old@example.com", "long enough pw", "operator")
                )
            session_id = await start_session(conn, admin[0])
        await pool.execute("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
        return session_id

    return make


async def test_no_route_answers_2xx_without_a_session_or_token(console, pool):
    expired = expired_sessions(pool)
    forged = "A" * 43  # the shape of a session id, never issued
    walked = 0
    for resource in console.app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        for route in resource:
            if route.name in PUBLIC_ROUTES or route.method == "*":
                continue
            for headers in (
                {},
                {"Authorization": "Bearer fc_wrong"},
                {"Cookie": "x=y"},
                {"Cookie": f"{COOKIE}={forged}"},
                {"Cookie": f"{COOKIE}=EXPIRED"},
                {"Cookie": f"{SECURE_COOKIE}=EXPIRED"},
            ):
                if headers.get("Cookie", "").endswith("EXPIRED"):
                    headers = {"Cookie": headers["Cookie"].replace("EXPIRED", await expired())}
                response = await console.request(
                    route.method, _concrete(path), headers=headers, allow_redirects=False
                )
                assert response.status in (303, 401, 403, 405), (route.method, path, headers)
                walked += 1
    assert walked >= 3, "the walk found no protected route: it tests nothing"


async def test_a_token_is_let_in_with_its_role_and_is_stored_only_hashed(console, pool):
    async with pool.acquire() as conn:
        token = await create_api_token(conn, "grafana", "viewer")
        stored = await conn.fetchval("SELECT token_hash FROM api_tokens WHERE name = 'grafana'")
    assert token.encode() not in stored and len(stored) == 32
    response = await console.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200
    assert await response.json() == {"name": "grafana", "kind": "token", "role": "viewer"}
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    response = await console.get("/api/v1/me", headers={"Authorization": f"Bearer {altered}"})
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "unauthorized"


async def test_a_page_without_login_is_sent_to_the_login_page(console):
    response = await console.get("/api/v1/me", allow_redirects=False)
    assert response.status == 401
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
