"""Logging in to the console over a real loopback socket: sessions, cookies, CSRF, throttling."""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from yarl import URL

from console import passwords, throttle
from console.admins import create_admin, create_login_link, remove_admin, revoke_api_token
from console.app import create_console_app
from console.auth import create_api_token, log_action, require_operator
from console.keys import PRINCIPAL
from console.sessions import SESSION_SECONDS, csrf_token_for
from tracker.keys import POOL

PASSWORD = "correct horse battery"
COOKIE = "fairclick_session"


async def operate(request: web.Request) -> web.Response:
    """A tiny operator-only change, as pause/resume/erase will be."""
    principal = request[PRINCIPAL]
    require_operator(request, principal)
    async with request.app[POOL].acquire() as conn:
        await log_action(conn, principal, "test", "nothing")
    return web.json_response({"done": True})


async def start_console(settings, pool) -> TestClient:
    app = create_console_app(settings, pool)
    app.router.add_post("/api/v1/test-operate", operate, name="test_operate")
    app.router.add_post("/test-operate", operate, name="test_operate_form")
    # Cookies are handled by hand: each test says which cookie a request carries.
    client = TestClient(TestServer(app), cookie_jar=aiohttp.DummyCookieJar())
    await client.start_server()
    return client


@pytest.fixture
async def console(settings, pool):
    client = await start_console(settings, pool)
    yield client
    await client.close()


@pytest.fixture
async def admin(pool):
    async with pool.acquire() as conn:
        await create_admin(conn, "ops@example.com", PASSWORD, "operator")
        await create_admin(conn, "viewer@example.com", PASSWORD, "viewer")


async def log_in(console, email="ops@example.com", password=PASSWORD, *, headers=None, **form):
    return await console.post(
        "/login",
        data={"email": email, "password": password, **form},
        headers=headers or {},
        allow_redirects=False,
    )


def session_of(response, name=COOKIE) -> str:
    assert response.status == 303, response.status
    return response.cookies[name].value


def with_session(session_id: str, name=COOKIE) -> dict:
    return {"Cookie": f"{name}={session_id}"}


async def me(console, session_id: str):
    return await console.get("/api/v1/me", headers=with_session(session_id))


async def alert(response) -> str:
    found = re.search(r'role="alert">([^<]*)<', await response.text())
    return found[1] if found else ""


async def test_login_sets_a_strict_httponly_expiring_cookie_stored_only_as_a_hash(
    console, admin, pool
):
    response = await log_in(console, "OPS@example.com")
    assert response.headers["Location"] == "/"
    cookie = response.cookies[COOKIE]
    session_id = cookie.value
    assert len(session_id) == 43  # 32 random bytes, URL-safe base64
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert cookie["max-age"] == str(SESSION_SECONDS) == "43200"
    assert not cookie["secure"]  # http console URL: a Secure cookie would never come back
    rows = await pool.fetch(
        "SELECT id_hash, expires_at - created_at AS lifetime FROM console_sessions"
    )
    assert [bytes(r["id_hash"]) for r in rows] == [hashlib.sha256(session_id.encode()).digest()]
    assert rows[0]["lifetime"].total_seconds() == SESSION_SECONDS

    response = await me(console, session_id)
    assert response.status == 200
    assert await response.json() == {
        "name": "ops@example.com",
        "kind": "session",
        "role": "operator",
    }


async def test_an_https_console_gets_a_secure_host_only_cookie(settings, pool, admin):
    https = replace(settings, console_url="https://console.example.com")
    console = await start_console(https, pool)
    try:
        response = await log_in(console, headers={"Origin": "https://console.example.com"})
        cookie = response.cookies["__Host-fairclick_session"]
        assert cookie["secure"] is True and cookie["httponly"] is True
        assert cookie["samesite"] == "Strict" and cookie["path"] == "/"
        assert COOKIE not in response.cookies
        name = "__Host-fairclick_session"
        response = await console.get("/api/v1/me", headers=with_session(cookie.value, name))
        assert response.status == 200
        # The plain name is not taken on an https console: only the __Host- one.
        response = await console.get("/api/v1/me", headers=with_session(cookie.value))
        assert response.status == 401
    finally:
        await console.close()


async def test_wrong_password_and_unknown_email_look_the_same(console, admin, pool):
    wrong = await log_in(console, password="not the password at all")
    unknown = await log_in(console, email="nobody@example.com")
    for response in (wrong, unknown):
        assert response.status == 401
        assert await alert(response) == "Wrong email or password."
        assert "Set-Cookie" not in response.headers
    assert await pool.fetchval("SELECT count(*) FROM console_sessions") == 0


async def test_an_unknown_email_costs_an_argon2_verification_like_a_wrong_password(
    console, admin, monkeypatch
):
    verified = []

    class Counting(PasswordHasher):
        def verify(self, hash, password):
            verified.append(hash.split("$")[1])
            return super().verify(hash, password)

    monkeypatch.setattr(passwords, "HASHER", Counting())
    await log_in(console, email="nobody@example.com")
    await log_in(console, password="not the password at all")
    assert verified == ["argon2id", "argon2id"]


async def test_a_hash_made_with_old_parameters_is_replaced_at_login(console, pool):
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    await pool.execute(
        "INSERT INTO admins (email, password_hash, role) VALUES ('old@example.com', $1, 'viewer')",
        weak,
    )
    session_of(await log_in(console, "old@example.com"))
    stored = await pool.fetchval("SELECT password_hash FROM admins")
    assert stored != weak and not passwords.needs_rehash(stored)
    assert passwords.HASHER.verify(stored, PASSWORD)


async def test_each_login_gets_a_new_session_id_and_ends_the_one_the_browser_had(
    console, admin, pool
):
    first = session_of(await log_in(console))
    second = session_of(await log_in(console, headers=with_session(first)))
    assert second != first
    assert (await me(console, first)).status == 401
    assert (await me(console, second)).status == 200
    # An id planted by someone else is never adopted: the login makes its own.
    planted = "A" * 43
    third = session_of(await log_in(console, headers=with_session(planted)))
    assert third != planted
    assert (await me(console, planted)).status == 401
    assert await pool.fetchval("SELECT count(*) FROM console_sessions") == 2


async def test_an_expired_session_is_refused_and_deleted(console, admin, pool):
    session_id = session_of(await log_in(console))
    await pool.execute("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
    response = await me(console, session_id)
    assert response.status == 401
    assert await pool.fetchval("SELECT count(*) FROM console_sessions") == 0
    response = await console.get("/login", headers=with_session(session_id), allow_redirects=False)
    assert "Log in" in await response.text()


async def test_logout_deletes_the_session_and_clears_the_cookie(console, admin, pool):
    session_id = session_of(await log_in(console))
    response = await console.post(
        "/logout",
        data={"csrf": csrf_token_for(session_id)},
        headers=with_session(session_id),
        allow_redirects=False,
    )
    assert response.status == 303 and response.headers["Location"] == "/login"
    cleared = response.cookies[COOKIE]
    assert cleared.value == "" and cleared["max-age"] == "0"
    assert await pool.fetchval("SELECT count(*) FROM console_sessions") == 0
    assert (await me(console, session_id)).status == 401


@pytest.mark.parametrize("sent", ["missing", "wrong", "another session's", "another site"])
async def test_a_change_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    console, admin, pool, sent
):
    session_id = session_of(await log_in(console))
    other = session_of(await log_in(console))
    form = {
        "missing": {},
        "wrong": {"csrf": csrf_token_for(session_id)[:-2] + "AA"},
        "another session's": {"csrf": csrf_token_for(other)},
        "another site": {"csrf": csrf_token_for(session_id)},
    }[sent]
    headers = with_session(session_id)
    if sent == "another site":
        headers["Origin"] = "https://evil.example"
    for path in ("/logout", "/test-operate"):
        response = await console.post(path, data=form, headers=headers, allow_redirects=False)
        assert response.status == 403, path
        text = await response.text()
        assert "nothing was changed" in text.lower()
        assert response.content_type == "text/html"
    assert (await me(console, session_id)).status == 200  # logout did not happen
    assert await pool.fetchval("SELECT count(*) FROM console_actions") == 0
    # The API answers the same refusal in JSON; the header carries the token there.
    response = await console.post(
        "/api/v1/test-operate",
        headers={**headers, "X-CSRF-Token": form.get("csrf", "")},
    )
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "forbidden"
    assert await pool.fetchval("SELECT count(*) FROM console_actions") == 0


async def test_the_right_csrf_token_lets_an_operator_change_things(console, admin, pool):
    session_id = session_of(await log_in(console))
    token = csrf_token_for(session_id)
    response = await console.post(
        "/test-operate",
        data={"csrf": token},
        headers={**with_session(session_id), "Origin": str(console.make_url("")).rstrip("/")},
    )
    assert response.status == 200
    response = await console.post(
        "/api/v1/test-operate", headers={**with_session(session_id), "X-CSRF-Token": token}
    )
    assert response.status == 200
    assert await pool.fetchval("SELECT count(*) FROM console_actions") == 2
    actor = await pool.fetchval("SELECT DISTINCT actor FROM console_actions")
    assert actor == "session:ops@example.com"


async def test_a_viewer_may_read_but_not_change(console, admin, pool):
    session_id = session_of(await log_in(console, "viewer@example.com"))
    response = await me(console, session_id)
    assert (await response.json())["role"] == "viewer"
    response = await console.post(
        "/test-operate", data={"csrf": csrf_token_for(session_id)}, headers=with_session(session_id)
    )
    assert response.status == 403
    assert "operator role" in await response.text()
    async with pool.acquire() as conn:
        token = await create_api_token(conn, "dash", "viewer")
        operator_token = await create_api_token(conn, "ci", "operator")
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await console.post("/api/v1/test-operate", headers=bearer)).status == 403
    # A bearer token needs no CSRF token: browsers never send one on their own.
    bearer = {"Authorization": f"Bearer {operator_token}"}
    assert (await console.post("/api/v1/test-operate", headers=bearer)).status == 200
    assert await pool.fetchval("SELECT count(*) FROM console_actions") == 1


async def test_a_revoked_token_and_a_removed_admin_are_out_at_once(console, admin, pool):
    session_id = session_of(await log_in(console))
    async with pool.acquire() as conn:
        token = await create_api_token(conn, "dash", "viewer")
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await console.get("/api/v1/me", headers=bearer)).status == 200
    async with pool.acquire() as conn:
        await revoke_api_token(conn, "dash")
        await remove_admin(conn, "ops@example.com")
    assert (await console.get("/api/v1/me", headers=bearer)).status == 401
    assert (await me(console, session_id)).status == 401


@pytest.mark.parametrize(
    ("asked", "goes_to"),
    [
        ("/campaigns/7?tab=links", "/campaigns/7?tab=links"),
        ("//evil.example/", "/"),
        ("/\\evil.example/", "/"),
        ("\\\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("http:evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("/\n/evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
    ],
)
async def test_after_login_only_a_local_path(console, admin, asked, goes_to):
    response = await log_in(console, next=asked)
    assert response.status == 303
    assert response.headers["Location"] == goes_to
    page = await console.get("/login", params={"next": asked})
    assert f'name="next" value="{goes_to}"' in (await page.text()).replace("&amp;", "&")


async def test_a_protected_page_sends_to_the_login_with_the_way_back(console, admin):
    response = await console.get("/campaigns?a=1&b=2", allow_redirects=False)
    assert response.status == 303
    location = URL(response.headers["Location"])
    assert location.path == "/login" and dict(location.query) == {"next": "/campaigns?a=1&b=2"}
    # A form posted after the session ended: back to the start, not to a POST-only address.
    response = await console.post("/logout", allow_redirects=False)
    assert response.status == 303
    assert dict(URL(response.headers["Location"]).query) == {"next": "/"}


async def test_failed_logins_slow_down_the_account_whoever_asks(console, admin, pool):
    for _ in range(4):
        assert (await log_in(console, password="wrong password!!")).status == 401
    assert (await log_in(console, password="wrong password!!")).status == 401  # the 5th
    blocked = await log_in(console)  # the right password, but too soon
    assert blocked.status == 429
    assert "Set-Cookie" not in blocked.headers
    assert int(blocked.headers["Retry-After"]) >= 1
    assert (await alert(blocked)).startswith("Too many failed logins: try again in")
    # The other account from the same address is not blocked (20 failures block an address).
    session_of(await log_in(console, "viewer@example.com"))

    # Time passes (the block is moved into the past): the next failure blocks twice as long.
    await pool.execute("UPDATE console_login_failures SET blocked_until = now()")
    assert (await log_in(console, password="wrong password!!")).status == 401
    row = await pool.fetchrow(
        "SELECT failures, extract(epoch FROM blocked_until - last_failed_at) AS seconds"
        " FROM console_login_failures WHERE subject = $1",
        throttle.account("ops@example.com"),
    )
    assert (row["failures"], row["seconds"]) == (6, 2)
    await pool.execute("UPDATE console_login_failures SET blocked_until = now()")
    session_of(await log_in(console))
    # A success clears the account's count; the address keeps its own.
    assert await pool.fetchval("SELECT max(failures) FROM console_login_failures") == 6


async def test_an_unknown_account_is_blocked_the_same_way(console, admin):
    for _ in range(5):
        assert (await log_in(console, email="nobody@example.com")).status == 401
    blocked = await log_in(console, email="nobody@example.com")
    assert blocked.status == 429
    assert (await alert(blocked)).startswith("Too many failed logins")


async def test_failures_from_one_address_block_it_for_every_account(console, admin):
    for n in range(20):
        assert (await log_in(console, email=f"guess{n}@example.com")).status == 401
    blocked = await log_in(console)
    assert blocked.status == 429


async def test_a_one_time_link_logs_in_once(console, admin, pool):
    admin_id = await pool.fetchval("SELECT id FROM admins WHERE email = 'ops@example.com'")
    async with pool.acquire() as conn:
        token = await create_login_link(conn, admin_id)
    page = await console.get(f"/login/once/{token}")
    assert page.status == 200 and "Set-Cookie" not in page.headers
    assert await pool.fetchval("SELECT count(*) FROM console_login_links") == 1  # GET: unchanged
    response = await console.post(f"/login/once/{token}", allow_redirects=False)
    session_id = session_of(response)
    assert (await (await me(console, session_id)).json())["name"] == "ops@example.com"
    again = await console.post(f"/login/once/{token}", allow_redirects=False)
    assert again.status == 410 and "Set-Cookie" not in again.headers

    async with pool.acquire() as conn:
        token = await create_login_link(conn, admin_id)
    await pool.execute("UPDATE console_login_links SET expires_at = now()")
    expired = await console.post(f"/login/once/{token}", allow_redirects=False)
    assert expired.status == 410
    assert await pool.fetchval("SELECT count(*) FROM console_login_links") == 0
    invented = await console.post("/login/once/invented", allow_redirects=False)
    assert invented.status == 410


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling host is not the console
    ],
)
async def test_no_login_from_another_sites_form(console, admin, pool, headers):
    """Login CSRF: another site must not log a browser in (as its own account, say)."""
    response = await log_in(console, headers=headers)
    assert response.status == 403
    assert "another site" in await response.text()
    assert "Set-Cookie" not in response.headers
    assert await pool.fetchval("SELECT count(*) FROM console_sessions") == 0


async def test_the_login_form_from_the_console_itself_is_taken(console, admin):
    own = str(console.make_url("")).rstrip("/")
    session_of(await log_in(console, headers={"Origin": own, "Sec-Fetch-Site": "same-origin"}))


def test_the_console_address_and_its_cookies(settings):
    from tracker.settings import Settings

    assert Settings.from_env({}).console_address() == "http://127.0.0.1:9180"
    assert not Settings.from_env({}).console_is_https
    env = {"FAIRCLICK_OPS_LISTEN": "0.0.0.0:9300"}
    assert Settings.from_env(env).console_address() == "http://127.0.0.1:9300"
    env = {"FAIRCLICK_OPS_LISTEN": "[::1]:9300"}
    assert Settings.from_env(env).console_address() == "http://[::1]:9300"
    env = {"FAIRCLICK_OPS_LISTEN": "[::]:9300"}
    assert Settings.from_env(env).console_address() == "http://[::1]:9300"
    assert Settings.from_env({"FAIRCLICK_OPS_LISTEN": "off"}).console_address() is None
    behind = Settings.from_env({"FAIRCLICK_CONSOLE_URL": "https://ops.example.com/"})
    assert behind.console_address() == "https://ops.example.com" and behind.console_is_https
    assert settings.console_address() is None  # tests build settings without a listener


async def test_only_an_operator_pauses_a_campaign_through_the_api(
    console, admin, pool, make_campaign
):
    await make_campaign("<p>Hi</p>", name="spring")
    viewer = session_of(await log_in(console, "viewer@example.com"))
    operator = session_of(await log_in(console))
    for session_id, status in ((viewer, 403), (operator, 200)):
        response = await console.post(
            "/api/v1/campaigns/spring/pause",
            headers={**with_session(session_id), "X-CSRF-Token": csrf_token_for(session_id)},
        )
        assert response.status == status
        if session_id == viewer:
            assert await pool.fetchval("SELECT status FROM campaigns") != "paused"
    assert await pool.fetchval("SELECT status FROM campaigns") == "paused"
    assert await pool.fetch("SELECT actor, action FROM console_actions") == [
        ("session:ops@example.com", "campaign pause")
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"email=ops%00@example.com&password=x%00y",
        b"email=%FF%FE@example.com&password=%ED%A0%80%FF",
        b"email=ops@example.com&password=" + b"x" * 5000,
        b"email=" + b"e" * 5000 + b"&password=pw",
        b"email=ops@example.com",
        b"\xff\xfe=\x00",
    ],
)
async def test_a_hostile_login_form_is_refused_never_a_500(console, admin, body):
    response = await console.post(
        "/login",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
    )
    assert response.status in (400, 401)
    assert "Set-Cookie" not in response.headers


async def test_a_hostile_multipart_login_is_refused_never_a_500(console, admin):
    form = aiohttp.FormData()
    form.add_field("email", b"ops@example.com", filename="e.txt")
    form.add_field("password", PASSWORD)
    response = await console.post("/login", data=form, allow_redirects=False)
    assert response.status == 400


async def test_tries_sent_at_once_are_counted_one_after_the_other(
    console, admin, pool, monkeypatch
):
    """Many guesses in flight together: only those before the block are checked at all."""
    checked = []

    class Counting(PasswordHasher):
        def verify(self, hash, password):
            checked.append(password)
            return super().verify(hash, password)

    monkeypatch.setattr(passwords, "HASHER", Counting())
    # 12 failures in a row already: the next one blocks the account for 2**8 s.
    await pool.execute(
        "INSERT INTO console_login_failures VALUES ($1, 12, now(), now())",
        throttle.account("ops@example.com"),
    )
    guesses = [log_in(console, password=f"guess number {n}") for n in range(10)]
    statuses = sorted([response.status for response in await asyncio.gather(*guesses)])
    assert statuses == [401] + [429] * 9
    assert len(checked) == 1  # one guess was checked against the hash; nine never were
    assert (
        await pool.fetchval(
            "SELECT failures FROM console_login_failures WHERE subject = $1",
            throttle.account("ops@example.com"),
        )
        == 13
    )
