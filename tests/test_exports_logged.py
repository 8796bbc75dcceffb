"""Onward transfer (privacy policy section 5): every export of identified data is logged with
who, what and when, and exports to anyone but the person hold only people who consented.

Exports: the person's own download (POST /p/TOKEN/data), the console's failures CSV, the
API's recipient answers and its report (failures), and the command line's `campaign show`
and `recipients history`. Each writes exactly one row of console_actions, naming people by
number only. "Consented", for what operators see: a failure names its recipient only while
they are subscribed; identified clicks are shown only while tracking consent stands.
"""

# ruff: noqa: F811 - `fairclick` is test_cli's fixture, imported to be used by name
from __future__ import annotations

import getpass
import json

import pytest
from helpers import tracked_links
from mailed_links import download_through_link
from test_cli import fairclick  # noqa: F401

from console.auth import create_api_token
from mailer.queries import SQL as MAILER_SQL
from tracker.consent import change_choices
from tracker.reports import campaign_failures
from tracker.tokens import Tokens

PEOPLE = (
    "email,name,format,tracking_consent\n"
    "ada@example.com,Ada,html,yes\n"
    "adam@example.com,Adam,html,no\n"
    "bea@example.com,Bea,html,yes\n"
)
HTML = '<p>Hi {{ recipient.name }}</p><a href="https://example.com/one">one</a>'
CLI = f"cli:{getpass.getuser()}"



@pytest.fixture
async def viewer(pool) -> dict[str, str]:
    async with pool.acquire() as conn:
        return {"Authorization": f"Bearer {await create_api_token(conn, 'reader', 'viewer')}"}


@pytest.fixture
async def people(pool, mailbox, add_recipients, make_campaign, deliver, tracker, http):
    """{email: id}: campaign "autumn" went to all three, every message then failed (say a
    relay's late bounce), Ada clicked with consent; Bea has since unsubscribed."""
    await add_recipients(PEOPLE)
    ids = {r["email"]: r["id"] for r in await pool.fetch("SELECT id, email FROM recipients")}
    await make_campaign(HTML, name="autumn")
    await deliver("autumn")
    (ada_mail,) = mailbox.for_address("ada@example.com")
    (link,) = tracked_links(ada_mail.get_body(("html",)).get_content())
    async with http.get(link, allow_redirects=False) as resp:
        assert resp.status == 302
    async with pool.acquire() as conn:
        for message in await conn.fetch("SELECT id FROM outbox ORDER BY id"):
            await conn.execute(MAILER_SQL.mark_failed, message["id"], "550 5.1.1 gone")
        await change_choices(conn, ids["bea@example.com"], subscribed=False, source="test")
    await pool.execute("TRUNCATE console_actions")
    return ids


async def log(pool) -> list[tuple[str, str, str]]:
    rows = await pool.fetch("SELECT actor, action, subject FROM console_actions ORDER BY id")
    return [tuple(r) for r in rows]


def page_url(settings, recipient_id: int, endpoint: str = "") -> str:
    token = Tokens(settings.secret_keys).preferences.encode(recipient_id)
    return f"{settings.base_url}/p/{token}{endpoint}"


async def test_the_persons_own_download_is_logged(people, settings, pool, http, mailbox):
    ada = people["ada@example.com"]
    await download_through_link(http, pool, settings, mailbox, ada)
    assert await log(pool) == [("recipient", "download personal data", f"recipient #{ada}")]


@pytest.mark.parametrize(
    ("path", "action", "subject"),
    [
        ("/campaigns/autumn/failures.csv", "export failures csv", "campaign autumn"),
        ("/api/v1/recipients?q=ada", "export recipient search", "recipients #{ada}, #{adam}"),
        (
            "/api/v1/recipients?email=ADA@example.com",
            "export recipient lookup",
            "recipients #{ada}",
        ),
        ("/api/v1/recipients/{ada}", "export recipient", "recipient #{ada}"),
        ("/api/v1/campaigns/autumn/report", "export report failures", "campaign autumn"),
    ],
    ids=["failures-csv", "api-search", "api-lookup", "api-recipient", "api-report"],
)
async def test_each_console_and_api_export_writes_one_row(
    people, console, viewer, pool, path, action, subject
):
    ids = {"ada": people["ada@example.com"], "adam": people["adam@example.com"]}
    response = await console.get(path.format(**ids), headers=viewer)
    assert response.status == 200, await response.text()
    assert await log(pool) == [("token:reader", action, subject.format(**ids))]


@pytest.mark.parametrize(
    ("args", "action", "subject"),
    [
        (("campaign", "show", "autumn"), "campaign show (failed recipients)", "campaign autumn"),
        (("recipients", "history", "ada@example.com"), "recipient history", "recipient #{ada}"),
    ],
    ids=["campaign-show", "history"],
)
async def test_each_command_line_export_writes_one_row(
    people, fairclick, pool, args, action, subject
):
    result = fairclick(*args)
    assert result.returncode == 0, result.stderr
    assert await log(pool) == [(CLI, action, subject.format(ada=people["ada@example.com"]))]


async def test_answers_naming_nobody_are_not_exports(people, console, viewer, fairclick, pool):
    for path in ("/campaigns/autumn/links.csv", "/api/v1/recipients?q=zed", "/api/v1/campaigns"):
        response = await console.get(path, headers=viewer)
        assert response.status == 200, (path, await response.text())
        assert "@" not in await response.text(), path
    assert fairclick("report", "autumn").returncode == 0
    assert await log(pool) == []


async def test_failures_name_only_people_still_subscribed(people, console, viewer, fairclick, pool):
    async with pool.acquire() as conn:
        failures = await campaign_failures(conn, "autumn")
    assert [f["email"] for f in failures["recipients"]] == [
        "ada@example.com", "adam@example.com", None,
    ]  # fmt: skip
    csv_text = await (await console.get("/campaigns/autumn/failures.csv", headers=viewer)).text()
    report = await (await console.get("/api/v1/campaigns/autumn/report", headers=viewer)).json()
    page = await (await console.get("/campaigns/autumn", headers=viewer)).text()
    shown = fairclick("campaign", "show", "autumn").stdout
    for output in (csv_text, json.dumps(report), page, shown):
        assert "ada@example.com" in output and "bea@" not in output
    assert "(erased or unsubscribed)" in shown and "(erased or unsubscribed)" in page


async def test_identified_clicks_reach_operators_only_while_consent_stands(
    people, console, viewer, settings, pool, http, mailbox
):
    ada = people["ada@example.com"]
    detail = await (await console.get(f"/api/v1/recipients/{ada}", headers=viewer)).json()
    assert (len(detail["clicks"]), detail["click_count"]) == (1, 1)
    async with pool.acquire() as conn:
        await change_choices(conn, ada, tracking_consent=False, source="test")
    detail = await (await console.get(f"/api/v1/recipients/{ada}", headers=viewer)).json()
    assert (detail["clicks"], detail["click_count"]) == ([], 0)
    page = await (await console.get(f"/recipients/{ada}", headers=viewer)).text()
    assert "https://example.com/one" not in page
    # Her own download still has it: it is hers.
    data = await download_through_link(http, pool, settings, mailbox, ada)
    assert len(json.loads(data)["clicks"]) == 1
