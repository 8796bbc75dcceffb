"""The JSON API under /api/v1, over a real loopback server and the real database."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from db_proxy import DatabaseProxy

from console.app import create_console_app
from mailer.campaigns import create_campaign
from mailer.delivery import Delivery
from mailer.link_check import check_links
from mailer.sending import prepare_composer, queue_campaign
from tracker.reports import campaign_failures, campaign_report, campaign_series

HTML = """<html><body><p>Hello {{ recipient.name }}</p>
<a href="https://example.com/one" data-fairclick-name="one">One</a>
<a href="mailto:hi@example.com">mail</a>
<a href="{{ preferences_url }}">Preferences</a>
</body></html>"""

RECIPIENTS = """\
email,name,format,tracking_consent
ada@example.com,Ada,html,yes
adam@example.com,Adam,html,no
bada@example.com,Bada,text,no
"""




@pytest.fixture
async def sent(pool, mailbox, add_recipients, make_campaign, deliver):
    """Campaign "autumn" sent to the three recipients."""
    await add_recipients(RECIPIENTS)
    await make_campaign(HTML, name="autumn")
    await deliver("autumn")


async def error_of(response, status: int) -> dict:
    """The error of a response, checked to have the API's one shape and this status."""
    assert response.status == status, (response.status, await response.text())
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


async def test_campaigns_are_listed_a_page_at_a_time(console, tokens, pool, make_campaign):
    names = [f"campaign {n}" for n in range(5)]
    for name in names:
        await make_campaign(HTML, name=name)
    viewer = tokens["viewer"]
    seen = []
    for offset in (0, 2, 4):
        response = await console.get(
            "/api/v1/campaigns", params={"limit": "2", "offset": str(offset)}, headers=viewer
        )
        page = await response.json()
        assert response.status == 200
        assert (page["total"], page["limit"], page["offset"]) == (5, 2, offset)
        assert len(page["items"]) == (2 if offset < 4 else 1)
        seen += [item["name"] for item in page["items"]]
    assert sorted(seen) == names and len(set(seen)) == 5
    past = await (
        await console.get("/api/v1/campaigns", params={"offset": "10"}, headers=viewer)
    ).json()
    assert past == {"items": [], "total": 5, "limit": 50, "offset": 10}


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "-1"},
        {"limit": "0"},
        {"limit": str(10**9)},
        {"limit": "201"},
        {"limit": "1.5"},
        {"limit": " 1"},
        {"limit": "+1"},
        {"limit": "١"},  # an Arabic-Indic one: int() would take it
        {"limit": ""},
        {"offset": "abc"},
        {"offset": "-1"},
        {"offset": str(10**30)},
    ],
)
async def test_bad_page_values_are_400s(console, tokens, query):
    response = await console.get("/api/v1/campaigns", params=query, headers=tokens["viewer"])
    error = await error_of(response, 400)
    assert error["code"] == "bad_request"
    assert next(iter(query)) in error["message"]


@pytest.mark.parametrize(
    "query",
    [
        {"bucket": "bogus"},
        {"bucket": ""},
        {"start": "yesterday"},
        {"end": "2026-13-01"},
        {"start": "0001-01-01T00:00:00"},
        {"start": "2026-10-01", "end": "2026-09-01"},
        {"start": "2000-01-01", "end": "2026-01-01"},  # more hours than a series may have
        {"failures_limit": "1000"},
        {"failures_offset": "x"},
    ],
)
async def test_bad_report_values_are_400s(console, tokens, sent, query):
    response = await console.get(
        "/api/v1/campaigns/autumn/report", params=query, headers=tokens["viewer"]
    )
    assert (await error_of(response, 400))["code"] == "bad_request"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/campaigns/nope",
        "/api/v1/campaigns/nope/report",
        "/api/v1/campaigns/nope/links",
        "/api/v1/campaigns/a%00b",
        "/api/v1/campaigns/a%00b/report",
        "/api/v1/campaigns/%FF%FE",
        "/api/v1/campaigns/%ED%A0%80/links",
        "/api/v1/campaigns/%1B%5B31m%E2%80%AE",
        "/api/v1/campaigns/a%2Fb",
        "/api/v1/campaigns/%25",
        "/api/v1/recipients/999999",
        "/api/v1/recipients/99999999999999999999999999",
        "/api/v1/nothing-here",
        "/api/v2/campaigns",
        "/api/",
    ],
)
async def test_what_is_not_there_is_a_json_404(console, tokens, path):
    from yarl import URL

    response = await console.get(URL(path, encoded=True), headers=tokens["viewer"])
    assert (await error_of(response, 404))["code"] == "not_found"


async def test_names_with_any_bytes_never_500(console, tokens, pool, write_file):
    """A campaign named with control and bidi characters is found by its encoded name."""
    from urllib.parse import quote

    from yarl import URL

    name = "fall \x1b[31m\u202e/ 100% ü"
    async with pool.acquire() as conn:
        await create_campaign(
            conn, name, subject="s", from_address="a@example.com", html_path=write_file("c", HTML)
        )
    path = f"/api/v1/campaigns/{quote(name, safe='')}"
    response = await console.get(URL(path, encoded=True), headers=tokens["viewer"])
    assert response.status == 200
    assert (await response.json())["name"] == name
    bad = "/api/v1/campaigns/%00/pause"
    response = await console.post(URL(bad, encoded=True), headers=tokens["operator"])
    assert (await error_of(response, 404))["code"] == "not_found"


async def test_wrong_method_without_token_and_bad_ids(console, tokens):
    response = await console.delete("/api/v1/campaigns", headers=tokens["operator"])
    error = await error_of(response, 405)
    assert error["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]
    response = await console.get("/api/v1/campaigns")
    assert (await error_of(response, 401))["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = await console.get("/api/v1/recipients/abc", headers=tokens["viewer"])
    assert (await error_of(response, 400))["code"] == "bad_request"
    response = await console.get("/api/v1/recipients", headers=tokens["viewer"])
    assert (await error_of(response, 400))["code"] == "bad_request"


async def test_a_viewer_may_not_pause_and_nothing_changes(console, tokens, pool, sent):
    response = await console.post("/api/v1/campaigns/autumn/pause", headers=tokens["viewer"])
    assert (await error_of(response, 403))["code"] == "forbidden"
    assert await pool.fetchval("SELECT status FROM campaigns WHERE name = 'autumn'") == "active"
    assert await pool.fetchval("SELECT count(*) FROM console_actions") == 0


async def status_of(pool) -> str:
    return await pool.fetchval("SELECT status FROM campaigns WHERE name = 'later'")


async def test_pause_resume_and_cancel_change_what_workers_deliver(
    console, tokens, pool, settings, mailbox, add_recipients, make_campaign
):
    operator = tokens["operator"]
    await add_recipients(RECIPIENTS)
    await make_campaign(HTML, name="later")
    async with pool.acquire() as conn:
        await queue_campaign(conn, await prepare_composer(conn, settings, "later"))

    response = await console.post("/api/v1/campaigns/later/pause", headers=operator)
    assert await response.json() == {"campaign": "later", "status": "paused"}
    assert await status_of(pool) == "paused"
    progress = await Delivery(pool, settings).run()
    assert progress.counts["sent"] == 0 and mailbox.messages() == []

    response = await console.post("/api/v1/campaigns/later/resume", headers=operator)
    assert await response.json() == {"campaign": "later", "status": "active"}
    progress = await Delivery(pool, settings).run()
    assert progress.counts["sent"] == 3 and len(mailbox.messages()) == 3

    response = await console.post("/api/v1/campaigns/later/cancel", headers=operator)
    assert await response.json() == {"campaign": "later", "status": "cancelled"}
    response = await console.post("/api/v1/campaigns/later/resume", headers=operator)
    error = await error_of(response, 409)
    assert error["code"] == "conflict" and "cancelled" in error["message"]
    assert await status_of(pool) == "cancelled"
    logged = await pool.fetch("SELECT actor, action, subject FROM console_actions ORDER BY id")
    assert [tuple(r) for r in logged] == [
        ("token:operator", f"campaign {action}", "campaign later")
        for action in ("pause", "resume", "cancel")
    ]


async def test_cancel_leaves_queued_mail_undelivered(
    console, tokens, pool, settings, mailbox, add_recipients, make_campaign
):
    await add_recipients(RECIPIENTS)
    await make_campaign(HTML, name="later")
    async with pool.acquire() as conn:
        await queue_campaign(conn, await prepare_composer(conn, settings, "later"))
    response = await console.post("/api/v1/campaigns/later/cancel", headers=tokens["operator"])
    assert response.status == 200
    assert await Delivery(pool, settings).run() is not None
    assert mailbox.messages() == []
    statuses = await pool.fetch("SELECT DISTINCT status FROM outbox")
    assert [r["status"] for r in statuses] == ["cancelled"]


async def test_the_report_is_the_cli_report_with_series_and_failures(console, tokens, pool, sent):
    response = await console.get(
        "/api/v1/campaigns/autumn/report",
        params={"bucket": "day", "failures_limit": "5"},
        headers=tokens["viewer"],
    )
    assert response.status == 200
    body = await response.json()
    async with pool.acquire() as conn:
        expected = await campaign_report(conn, "autumn")
        series = await campaign_series(conn, "autumn", bucket="day")
        failures = await campaign_failures(conn, "autumn", limit=5, offset=0)
    assert body.pop("series") == {"bucket": "day", "points": series}
    assert body.pop("failures") == failures
    assert body == expected
    assert body["sent"] == 3

    summary = await (await console.get("/api/v1/campaigns/autumn", headers=tokens["viewer"])).json()
    listed = await (await console.get("/api/v1/campaigns", headers=tokens["viewer"])).json()
    assert listed["items"] == [summary]


async def test_the_link_check_endpoint_is_the_link_check(console, tokens, pool, settings, sent):
    response = await console.get("/api/v1/campaigns/autumn/links", headers=tokens["viewer"])
    body = await response.json()
    async with pool.acquire() as conn:
        expected = await check_links(conn, "autumn", base_url=settings.base_url)
    assert body == {"campaign": "autumn", "links": expected}
    assert [(link["url"], link["tracked"]) for link in body["links"]] == [
        ("https://example.com/one", True),
        ("mailto:hi@example.com", False),
        ("{{ preferences_url }}", False),
    ]


@pytest.mark.parametrize(
    "near_miss",
    [
        "ada@example.co",
        "ada@example.com.",
        "da@example.com",
        "ada@example",
        "ada@example.com,adam@example.com",
        "%@example.com",
        "_da@example.com",
        "ada@example.co_",
        "adа@example.com",  # a Cyrillic а
        "ada@example.com\u200b",
        "ada @example.com",
        "",
    ],
)
async def test_an_address_lookup_never_returns_someone_else(
    console, tokens, add_recipients, near_miss
):
    await add_recipients(RECIPIENTS)
    response = await console.get(
        "/api/v1/recipients", params={"email": near_miss}, headers=tokens["viewer"]
    )
    assert response.status == 200
    assert await response.json() == {"items": [], "total": 0, "limit": 50, "offset": 0}


async def test_an_address_lookup_finds_exactly_that_person(console, tokens, add_recipients):
    await add_recipients(RECIPIENTS)
    viewer = tokens["viewer"]
    for asked in ("ada@example.com", "ADA@Example.COM", " ada@example.com "):
        page = await (
            await console.get("/api/v1/recipients", params={"email": asked}, headers=viewer)
        ).json()
        assert [item["email"] for item in page["items"]] == ["ada@example.com"], asked
    person = page["items"][0]
    detail = await (await console.get(f"/api/v1/recipients/{person['id']}", headers=viewer)).json()
    assert (detail["email"], detail["name"], detail["tracking_consent"]) == (
        "ada@example.com",
        "Ada",
        True,
    )
    # A search is a search: every address containing the text, those starting with it first.
    page = await (
        await console.get("/api/v1/recipients", params={"q": "ada@"}, headers=viewer)
    ).json()
    assert [item["email"] for item in page["items"]] == ["ada@example.com", "bada@example.com"]
    response = await console.get("/api/v1/recipients", params={"email": "a\x00b"}, headers=viewer)
    assert (await error_of(response, 400))["code"] == "bad_request"


async def test_the_database_away_is_a_503_in_the_api_shape(settings, db_url, pool, tokens):
    proxy = DatabaseProxy(db_url)
    await proxy.start()
    away_pool = await asyncpg.create_pool(proxy.url, min_size=1, max_size=2)
    client = TestClient(TestServer(create_console_app(settings, away_pool), host="127.0.0.1"))
    await client.start_server()
    try:
        response = await client.get("/api/v1/campaigns", headers=tokens["viewer"])
        assert response.status == 200
        await proxy.cut()
        for path in ("/api/v1/campaigns", "/api/v1/me", "/api/v1/recipients/1"):
            response = await client.get(path, headers=tokens["viewer"])
            assert (await error_of(response, 503))["code"] == "unavailable"
            assert response.headers["Retry-After"].isdigit()
        await proxy.restore()
        response = await client.get("/api/v1/campaigns", headers=tokens["viewer"])
        assert response.status == 200
    finally:
        await client.close()
        await asyncio.wait_for(away_pool.close(), 10)
        await proxy.cut()


async def test_the_database_away_is_a_503_page_on_the_console(settings, db_url, pool, tokens):
    """Pages and the login say the database is away (503), never a 500 or a traceback."""
    proxy = DatabaseProxy(db_url)
    await proxy.start()
    away_pool = await asyncpg.create_pool(proxy.url, min_size=1, max_size=2)
    client = TestClient(TestServer(create_console_app(settings, away_pool), host="127.0.0.1"))
    await client.start_server()
    try:
        await proxy.cut()
        for method, path, data in (
            ("GET", "/campaigns", None),
            ("GET", "/recipients?q=a", None),
            ("POST", "/login", {"email": "ops@example.com", "password": "x" * 12}),
        ):
            response = await client.request(
                method, path, data=data, headers=tokens["viewer"], allow_redirects=False
            )
            assert response.status == 503, (path, response.status)
            assert "cannot reach its database" in await response.text()
        await proxy.restore()
        response = await client.get("/campaigns", headers=tokens["viewer"])
        assert response.status == 200
    finally:
        await client.close()
        await asyncio.wait_for(away_pool.close(), 10)
        await proxy.cut()
