"""The console's pages over a real loopback server, on data made by the real flows: import,
send over SMTP, click through the tracker. Their numbers are the report's; a viewer changes
nothing; GET changes nothing; exports are formula-safe."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import replace
from html import unescape
from urllib.parse import quote

import pytest
from helpers import tracked_links
from smtp_servers import RecordingServer

from mailer.capture import start_capture_server
from tracker.reports import campaign_list, campaign_report, campaign_series
from tracker.settings import SmtpTarget

HTML = """<html><body><p>Hello {{ recipient.name }}</p>
<a href="https://example.com/spring" data-fairclick-name="Spring sale">sale</a>
<a href="https://example.com/shoes?size=42">shoes</a>
<a href="mailto:help@example.com">help</a>
</body></html>"""

PEOPLE = (
    "email,name,format,tracking_consent\n"
    "ann@example.com,Ann,html,yes\n"
    "bea@example.com,Bea,html,no\n"
    "cat@example.com,Cat,text,no\n"
    "nobody@example.com,Nobody,html,yes\n"
    "nobody2@example.com,Nobody Two,html,no\n"
)


class Refusing(RecordingServer):
    """Refuses nobody*@ for good, with the reply a test sets (hostile in the XSS tests)."""

    reply = "550 5.1.1 <nobody@example.com>: Recipient address rejected: no such user"

    def refuse(self, address: str) -> str | None:
        return type(self).reply if address.startswith(("nobody", "-")) else None


@pytest.fixture
def refusing_settings(tmp_path, settings):
    controller = start_capture_server(tmp_path / "refusing", handler=Refusing)
    yield replace(settings, smtp=SmtpTarget("127.0.0.1", controller.port, use_tls=False))
    controller.stop()




async def click_all(http, html: str, agent: str | None = None) -> None:
    for link in tracked_links(html):
        headers = {"User-Agent": agent} if agent else {}
        async with http.get(link, allow_redirects=False, headers=headers) as response:
            assert response.status == 302


def html_of(message) -> str:
    return message.get_body(("html",)).get_content()


@pytest.fixture
async def spring(pool, add_recipients, make_campaign, refusing_settings, tracker, http, tmp_path):
    """Campaign "spring": sent (two refused), clicked by Ann (consent), Bea (none) and curl."""
    from mailer.sending import send_campaign

    await add_recipients(PEOPLE)
    await make_campaign(HTML, name="spring")
    await send_campaign(pool, refusing_settings, "spring")
    await pool.execute("UPDATE outbox SET sent_at = sent_at - interval '1 hour'")
    inbox = tmp_path / "refusing"
    from email import message_from_bytes, policy

    mail = {
        m["To"].addresses[0].addr_spec: m
        for m in (
            message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in sorted(inbox.glob("*.eml"))
        )
    }
    await click_all(http, html_of(mail["ann@example.com"]))
    await click_all(http, html_of(mail["bea@example.com"]))
    await click_all(http, html_of(mail["ann@example.com"]), agent="curl/8.5.0")
    return mail


async def page(console, path: str, headers: dict, status: int = 200) -> str:
    response = await console.get(path, headers=headers, allow_redirects=False)
    text = await response.text()
    assert response.status == status, (path, response.status, text[:500])
    return text


def cell(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">(.*?)</', html, re.S)
    assert found, element_id
    return unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip()


def rate_text(rate: dict, per: bool = False) -> str:
    if per:
        value = f"{rate['value']:.2f} per message" if rate["denominator"] else "—"
        return f"{value} ({rate['numerator']} clicks, {rate['denominator']} messages)"
    if not rate["denominator"]:
        return f"— ({rate['numerator']} of 0)"
    return f"{rate['value'] * 100:.1f} % ({rate['numerator']} of {rate['denominator']})"


async def test_campaign_page_numbers_are_the_reports(console, tokens, spring, pool):
    async with pool.acquire() as conn:
        report = await campaign_report(conn, "spring")
    assert report["failed"] == 2 and report["clicks"]["identified"] == 2  # the data is real
    assert report["clicks"]["anonymous"] == 2 and report["clicks"]["bot"] == 2
    html = await page(console, "/campaigns/spring", tokens["viewer"])
    for key in ("queued", "sent", "failed", "pending", "unknown", "skipped", "cancelled"):
        assert cell(html, f"n-{key}") == str(report[key]), key
    assert (
        cell(html, "n-formats")
        == f"{report['recipients']['html']} / {report['recipients']['text']}"
    )
    for key, value in report["audience"].items():
        assert cell(html, f"a-{key}") == str(value), key
    for key in ("total", "identified", "anonymous", "unique", "bot"):
        assert cell(html, f"c-{key}") == str(report["clicks"][key]), key
    assert cell(html, "o-total") == str(report["opens"]["total"])
    rates = report["rates"]
    assert cell(html, "r-clicks") == rate_text(rates["human_clicks_per_delivered_html"], per=True)
    assert cell(html, "r-unique") == rate_text(rates["unique_clickers_among_consenting"])
    assert cell(html, "r-bot") == rate_text(rates["bot_share"])
    for reason, n in report["bot_reasons"].items():
        assert f'… {reason}</th><td class="num">{n}</td>' in html
    # Per link: the named one by its name, the other by position and URL as written.
    rows = re.findall(
        r"<tr>\s*<td class=\"num\">(\d+)</td>\s*<td>(.*?)</td>\s*<td class=\"url\">(.*?)</td>"
        r"\s*((?:<td class=\"num\">\d+</td>\s*)+)</tr>",
        html,
        re.S,
    )
    shown = [
        (unescape(re.sub(r"<[^>]+>", "", name)), unescape(url), re.findall(r">(\d+)<", counts))
        for _, name, url, counts in rows
    ]
    assert shown == [
        (
            link["name"] or f"link {i}",
            link["url"],
            [str(link[k]) for k in ("total", "unique", "identified", "anonymous", "bot")],
        )
        for i, link in enumerate(report["links"], 1)
    ]
    # Failures by reply, and who, with the reason.
    assert "Recipient address rejected: no such user" in html
    assert "nobody@example.com" in html and "nobody2@example.com" in html
    assert "<svg" in html and '<title id="chart-hour-title">' in html
    # The chart's legend and its table of numbers are the series'.
    async with pool.acquire() as conn:
        series = await campaign_series(conn, "spring", bucket="hour")
    for key, label in (
        ("clicks_human", "human clicks"),
        ("clicks_bot", "bot clicks"),
        ("opens_human", "opens"),
    ):
        assert f"{label} ({sum(r[key] for r in series)})</text>" in html, label
    table = re.search(r'<table class="series">(.*?)</table>', html, re.S).group(1)
    shown = [re.findall(r'class="num">(\d+)<', row) for row in table.split("<tr>")[2:]]
    keys = ("clicks_human", "identified", "anonymous", "clicks_bot", "opens_human", "opens_bot")
    assert shown == [[str(r[k]) for k in keys] for r in series if any(r[k] for k in keys)]
    assert shown and int(shown[0][0]) == report["clicks"]["total"]


async def test_campaigns_page_shows_each_rate_with_its_denominator(console, tokens, spring, pool):
    async with pool.acquire() as conn:
        report = await campaign_report(conn, "spring")
    html = await page(console, "/campaigns", tokens["viewer"])
    text = unescape(re.sub(r"<[^>]+>", "", html))
    for key, rate in report["rates"].items():
        assert rate_text(rate, per=key == "human_clicks_per_delivered_html") in text
    assert f"{report['recipients']['html']} / {report['recipients']['text']}" in text
    assert 'href="/campaigns/spring"' in html
    async with pool.acquire() as conn:
        listed = (await campaign_list(conn))["campaigns"][0]
    row = re.search(r'href="/campaigns/spring">.*?</tr>', html, re.S).group()
    counts = re.findall(r'<td class="num">([^<]*)</td>', row)
    assert counts == [
        *(str(listed[k]) for k in ("queued", "sent", "failed", "unknown")),
        f"{listed['recipients']['html']} / {listed['recipients']['text']}",
    ]
    assert f"<td>{listed['clicks']['bot']} · " in row


async def test_day_buckets_and_bad_query_values_get_a_400_page(console, tokens, spring):
    html = await page(console, "/campaigns/spring?bucket=day", tokens["viewer"])
    assert 'id="chart-day-title"' in html
    for path in (
        "/campaigns/spring?bucket=bogus",
        "/campaigns/spring?failures=-1",
        "/campaigns?page=-1",
        "/campaigns?page=0",
        "/campaigns?page=99999999999999999999999",
        "/campaigns?page=%C2%B2",
        "/recipients?q=" + "a" * 300,
        "/recipients?q=%00",
        "/recipients?page=x",
        "/campaigns/spring/preview?email=",
    ):
        html = await page(console, path, tokens["viewer"], status=400)
        assert 'role="alert"' in html and "Traceback" not in html
    for path in (
        "/campaigns/nope",
        "/campaigns/nope/links.csv",
        "/campaigns/%00",
        "/recipients/999999",
        "/recipients/abc",
        "/recipients/99999999999999999999999",
        "/campaigns/spring/preview?email=who@example.com",
    ):
        html = await page(console, path, tokens["viewer"], status=404)
        assert 'role="alert"' in html


async def test_a_viewer_can_neither_pause_nor_erase(console, tokens, spring, pool):
    ann = await pool.fetchval("SELECT id FROM recipients WHERE email = 'ann@example.com'")
    for path, form in (
        ("/campaigns/spring/status", {"action": "pause"}),
        ("/campaigns/spring/status", {"action": "cancel", "confirm": "yes"}),
        (f"/recipients/{ann}/erase", {"confirm": "yes"}),
    ):
        response = await console.post(
            path, data=form, headers=tokens["viewer"], allow_redirects=False
        )
        assert response.status == 403, path
        assert "operator role" in await response.text()
    assert await pool.fetchval("SELECT status FROM campaigns WHERE name = 'spring'") == "active"
    assert await pool.fetchval("SELECT count(*) FROM recipients WHERE id = $1", ann) == 1
    assert await pool.fetchval("SELECT count(*) FROM console_actions") == 0
    # And the page offers them no such buttons.
    html = await page(console, "/campaigns/spring", tokens["viewer"])
    assert 'value="pause"' not in html and "need the operator role" in html


async def test_an_operator_pauses_resumes_cancels_and_each_is_logged(console, tokens, spring, pool):
    op = tokens["operator"]
    html = await page(console, "/campaigns/spring", op)
    assert 'value="pause"' in html
    response = await console.post(
        "/campaigns/spring/status", data={"action": "pause"}, headers=op, allow_redirects=False
    )
    assert (
        response.status == 303 and response.headers["Location"] == "/campaigns/spring?changed=pause"
    )
    assert await pool.fetchval("SELECT status FROM campaigns WHERE name = 'spring'") == "paused"
    html = await page(console, response.headers["Location"], op)
    assert "Campaign paused." in html and 'value="resume"' in html
    await console.post("/campaigns/spring/status", data={"action": "resume"}, headers=op)
    assert await pool.fetchval("SELECT status FROM campaigns WHERE name = 'spring'") == "active"
    # Cancel needs its box ticked.
    response = await console.post("/campaigns/spring/status", data={"action": "cancel"}, headers=op)
    assert response.status == 400
    assert await pool.fetchval("SELECT status FROM campaigns WHERE name = 'spring'") == "active"
    await console.post(
        "/campaigns/spring/status", data={"action": "cancel", "confirm": "yes"}, headers=op
    )
    assert await pool.fetchval("SELECT status FROM campaigns WHERE name = 'spring'") == "cancelled"
    response = await console.post("/campaigns/spring/status", data={"action": "resume"}, headers=op)
    assert response.status == 400 and "cannot be" in await response.text()
    logged = await pool.fetch("SELECT actor, action, subject FROM console_actions ORDER BY id")
    assert [tuple(r) for r in logged] == [
        ("token:operator", f"campaign {a}", "campaign spring")
        for a in ("pause", "resume", "cancel")
    ]


async def test_get_never_changes_anything(console, tokens, spring, pool):
    ann = await pool.fetchval("SELECT id FROM recipients WHERE email = 'ann@example.com'")

    async def state():
        return [
            await pool.fetch("SELECT * FROM campaigns ORDER BY id"),
            await pool.fetch("SELECT * FROM recipients ORDER BY id"),
            await pool.fetch("SELECT id, status FROM outbox ORDER BY id"),
            await pool.fetchval("SELECT count(*) FROM clicks"),
        ]

    before = await state()
    for path in (
        "/",
        "/campaigns",
        "/campaigns/spring",
        "/campaigns/spring?bucket=day",
        "/campaigns/spring/links",
        "/campaigns/spring/links.csv",
        "/campaigns/spring/status",
        f"/recipients/{ann}/erase",
        "/recipients?q=ann",
        f"/recipients/{ann}",
        "/campaigns/spring/preview?email=ann@example.com",
        "/campaigns/spring/status?action=pause",
        f"/recipients/{ann}/erase?confirm=yes",
    ):
        response = await console.get(path, headers=tokens["operator"], allow_redirects=False)
        assert response.status in (200, 302, 404, 405), (path, response.status)
    assert await state() == before


async def test_csv_exports_are_attachments_formula_safe_and_failures_logged(
    console, tokens, pool, add_recipients, make_campaign, refusing_settings, tracker
):
    from mailer.sending import send_campaign

    await add_recipients(PEOPLE.replace("nobody2@example.com", "-2+3@example.com"))
    await make_campaign(
        '<a href="https://example.com/a" data-fairclick-name="=cmd|\' /C calc\'!A0">a</a>'
        '<a href="https://example.com/b" data-fairclick-name="+1">b</a>',
        name="=2+3",
    )
    await send_campaign(pool, refusing_settings, "=2+3")
    path = "/campaigns/" + quote("=2+3", safe="")
    response = await console.get(path + "/links.csv", headers=tokens["viewer"])
    assert response.status == 200
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(await response.text())))
    assert [r[1] for r in rows[1:]] == ["'=cmd|' /C calc'!A0", "'+1"]
    response = await console.get(path + "/failures.csv", headers=tokens["viewer"])
    assert response.status == 200 and response.headers["Content-Disposition"].startswith(
        "attachment;"
    )
    rows = list(csv.reader(io.StringIO(await response.text())))
    assert {r[0] for r in rows[1:]} == {"nobody@example.com", "'-2+3@example.com"}
    for row in rows:
        assert not any(c.startswith(("=", "+", "-", "@")) for c in row), row
    assert all(r[2].startswith("550") for r in rows[1:])
    logged = await pool.fetch("SELECT actor, action, subject FROM console_actions")
    assert [tuple(r) for r in logged] == [("token:viewer", "export failures csv", "campaign =2+3")]


async def test_link_check_page_and_the_sandboxed_preview(console, tokens, spring):
    html = await page(console, "/campaigns/spring/links", tokens["viewer"])
    text = unescape(re.sub(r"<[^>]+>", " ", html))
    assert re.search(r"html\s+1\s+Spring sale\s+https://example.com/spring\s+yes", text)
    assert re.search(r"html\s+3\s+mailto:help@example.com\s+no\s+mailto", text)
    assert "<iframe" not in html
    html = await page(
        console, "/campaigns/spring/links?email=nobody@nowhere.example", tokens["viewer"]
    )
    assert "No recipient has the address" in html and "<iframe" not in html
    html = await page(console, "/campaigns/spring/links?email=Ann@example.com", tokens["viewer"])
    frame = re.search(r"<iframe[^>]*>", html).group()
    assert " sandbox " in frame and "allow-" not in frame
    src = unescape(re.search(r'src="([^"]+)"', frame).group(1))
    assert src == "/campaigns/spring/preview?email=Ann%40example.com"
    response = await console.get(src, headers=tokens["viewer"])
    assert response.status == 200
    assert response.headers["Content-Security-Policy"] == (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"
    )
    body = await response.text()
    assert "Hello Ann" in body and "https://example.com/spring" not in body  # rewritten
    response = await console.get(
        "/campaigns/spring/preview?email=cat@example.com", headers=tokens["viewer"]
    )
    assert "<pre>" in await response.text()  # text-only: shown as text


async def test_an_operator_erases_a_recipient_as_fairclick_erase_does(
    console, tokens, spring, pool
):
    ann = await pool.fetchval("SELECT id FROM recipients WHERE email = 'ann@example.com'")
    op = tokens["operator"]
    html = await page(console, f"/recipients/{ann}", op)
    assert "ann@example.com" in html and 'name="confirm"' in html
    assert "https://example.com/spring" in html  # Ann's identified click is listed
    # Without the box ticked nothing happens.
    response = await console.post(f"/recipients/{ann}/erase", data={}, headers=op)
    assert response.status == 400
    assert await pool.fetchval("SELECT count(*) FROM recipients WHERE id = $1", ann) == 1
    response = await console.post(
        f"/recipients/{ann}/erase", data={"confirm": "yes"}, headers=op, allow_redirects=False
    )
    assert response.status == 303 and response.headers["Location"] == f"/recipients?erased={ann}"
    html = await page(console, response.headers["Location"], op)
    assert f"Recipient #{ann} is erased" in html
    assert await pool.fetchval("SELECT count(*) FROM recipients WHERE id = $1", ann) == 0
    # As `fairclick erase`: the address is suppressed (a keyed hash), clicks anonymous.
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM suppressions"
            " WHERE address_hash = suppression_hash('ann@example.com')"
        )
        == 1
    )
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE recipient_id = $1", ann) == 0
    await page(console, f"/recipients/{ann}", op, status=404)
    logged = await pool.fetch("SELECT actor, action, subject FROM console_actions")
    assert [tuple(r) for r in logged] == [("token:operator", "erase", f"recipient #{ann}")]
    assert "ann" not in str([tuple(r) for r in logged])
    # Erasing again is a 404; the page never claims an erasure of someone still held.
    response = await console.post(f"/recipients/{ann}/erase", data={"confirm": "yes"}, headers=op)
    assert response.status == 404
    bea = await pool.fetchval("SELECT id FROM recipients WHERE email = 'bea@example.com'")
    assert "is erased" not in await page(console, f"/recipients?erased={bea}", op)


async def test_a_session_needs_the_pages_csrf_token_and_a_broken_form_is_a_400(
    console, tokens, spring, pool
):
    from console.admins import create_admin

    async with pool.acquire() as conn:
        await create_admin(conn, "ops@example.com", "correct horse battery", "operator")
    response = await console.post(
        "/login",
        data={"email": "ops@example.com", "password": "correct horse battery"},
        allow_redirects=False,
    )
    assert response.status == 303
    html = await page(console, "/campaigns/spring", {})
    csrf = re.search(r'<form class="inline" method="post"[^>]*>\s*<input type="hidden" '
                     r'name="csrf" value="([^"]+)"', html).group(1)  # fmt: skip
    response = await console.post("/campaigns/spring/status", data={"action": "pause"})
    assert response.status == 403
    assert await pool.fetchval("SELECT status FROM campaigns") == "active"
    response = await console.post(
        "/campaigns/spring/status", data={"action": "pause", "csrf": csrf}, allow_redirects=False
    )
    assert response.status == 303
    assert await pool.fetchval("SELECT status FROM campaigns") == "paused"
    response = await console.post(
        "/campaigns/spring/status",
        data=b"--x\r\nbroken",
        headers={**tokens["operator"], "Content-Type": "multipart/form-data; boundary=x"},
    )
    assert response.status == 400 and 'role="alert"' in await response.text()
    # The same broken form from the session: its CSRF token cannot be read, so it is refused
    # (was a 500: the multipart error is no ValueError).
    response = await console.post(
        "/campaigns/spring/status",
        data=b"--x\r\nbroken",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert response.status == 403
    assert await pool.fetchval("SELECT status FROM campaigns") == "paused"
