"""The console in real Chromium: hostile text everywhere renders inert and visible as text,
and an operator's walk through it (log in, a campaign and its chart, pause and resume, a
search, log out) works, with a screenshot for the README."""

from __future__ import annotations

import csv
import html as html_lib
import io
import os
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from aiohttp.test_utils import TestServer
from helpers import tracked_links
from playwright.async_api import expect
from smtp_servers import RecordingServer

from console.app import create_console_app
from console.auth import create_api_token
from mailer.campaigns import create_campaign
from mailer.capture import start_capture_server
from mailer.sending import send_campaign
from tracker.settings import SmtpTarget

ROOT = Path(__file__).resolve().parent.parent

# Each would run script if the page put it in as markup (or as an attribute, or a URL):
# every one sets window.__xss or opens a dialog. Tag breakers, attribute breakers (both
# quotes, backtick, none), URL schemes, SVG and MathML, comments and CDATA, template and
# encoding tricks, and Unicode look-alikes and bidi controls.
PAYLOADS = [
    "<script>window.__xss=1</script>",
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    '"><script>window.__xss=1</script>',
    "'><script>window.__xss=1</script>",
    '"><img src=x onerror=window.__xss=1>',
    "'><img src=x onerror=window.__xss=1>",
    "<img src=x onerror=alert(1)>",
    '<img src="x" onerror="window.__xss=1">',
    "<img/src/onerror=window.__xss=1>",
    '" onmouseover="window.__xss=1" x="',
    "' onfocus='window.__xss=1' autofocus x='",
    "` onerror=window.__xss=1 `",
    " onload=window.__xss=1 ",
    "javascript:window.__xss=1",
    "JaVaScRiPt:alert(1)",
    "javascript&colon;window.__xss=1",
    "&#106;avascript:window.__xss=1",
    "data:text/html,<script>window.__xss=1</script>",
    "vbscript:msgbox(1)",
    "<svg onload=window.__xss=1>",
    "<svg/onload=alert(1)>",
    "<svg><script>window.__xss=1</script></svg>",
    '<svg><a xlink:href="javascript:window.__xss=1"><text y=20>x</text></a></svg>',
    "<svg><animate onbegin=window.__xss=1 attributeName=x dur=1s>",
    "</text><script>window.__xss=1</script>",
    "</desc></svg><script>window.__xss=1</script>",
    "<math><mtext></p><script>window.__xss=1</script>",
    "</title><script>window.__xss=1</script>",
    "</style><script>window.__xss=1</script>",
    "</textarea><script>window.__xss=1</script>",
    "</script><script>window.__xss=1</script>",
    "<!--<script>window.__xss=1</script>-->",
    "--><script>window.__xss=1</script>",
    "]]><script>window.__xss=1</script>",
    "<![CDATA[<script>window.__xss=1</script>]]>",
    "<iframe src=javascript:window.__xss=1></iframe>",
    '<iframe srcdoc="<script>parent.__xss=1</script>"></iframe>',
    "<object data=javascript:window.__xss=1></object>",
    "<embed src=javascript:window.__xss=1>",
    "<details open ontoggle=window.__xss=1>",
    "<input autofocus onfocus=window.__xss=1>",
    "<body onload=window.__xss=1>",
    "<video><source onerror=window.__xss=1></video>",
    "<base href=//evil.example/>",
    '<meta http-equiv="refresh" content="0;url=javascript:window.__xss=1">',
    '<form action="javascript:window.__xss=1"><button>go</button></form>',
    "<a href=javascript:window.__xss=1>click</a>",
    '<div style="background:url(javascript:window.__xss=1)">',
    "<style>@import 'https://evil.example/x.css';</style>",
    '<noscript><p title="</noscript><img src=x onerror=window.__xss=1>">',
    "<template><script>window.__xss=1</script></template>",
    "<xmp></xmp><script>window.__xss=1</script>",
    "<plaintext>",
    "{{7*7}}${7*7}<%= 7*7 %>",
    "&lt;script&gt;window.__xss=1&lt;/script&gt;",
    "%3Cscript%3Ewindow.__xss%3D1%3C%2Fscript%3E",
    "\\u003cscript\\u003ewindow.__xss=1\\u003c/script\\u003e",
    "＜script＞window.__xss=1＜/script＞",
    "\u202egnp.exe<script>window.__xss=1</script>",
    "zero\u200bwidth<scr\u200bipt>window.__xss=1</script>",
    "<img src=x onerror=&#x77;indow.__xss=1>",
    '=HYPERLINK("https://evil.example")<b>bold</b>',
]
# Valid addresses (a dot-atom local part; non-ASCII allowed) that still try something.
HOSTILE_EMAILS = [
    "'onmouseover='window.__xss=1'@xss.example",
    "x`onfocus=window.__xss=1`@xss.example",
    "＜script＞window.__xss=1＜／script＞@xss.example",
    "ｊａｖａｓｃｒｉｐｔ：x@xss.example",
    "a/**/onload=window.__xss=1@xss.example",
]
SMTP_REPLY = '550 5.1.1 <script>window.__xss=1</script> "><img src=x onerror=window.__xss=1>'
AGENTS = [
    "Mozilla/5.0 <script>window.__xss=1</script>",
    'Mozilla/5.0 "><img src=x onerror=window.__xss=1>',
    "Mozilla/5.0 </td></tr></table><svg onload=window.__xss=1>",
]
# The tags the console's pages are made of: anything else came from data.
OUR_TAGS = set(
    "html head meta title link body header a nav form input span button main h1 h2 h3 p table "
    "thead tbody tr th td section div dl dt dd figure svg desc rect line text polyline circle "
    "details summary label iframe code strong pre".split()
)


def text(value: str) -> str:
    """As innerText shows it: runs of white space as one space."""
    return " ".join(value.split())


class RefusingWithPayload(RecordingServer):
    def refuse(self, address: str) -> str | None:
        return SMTP_REPLY if address.startswith("nobody@") else None



@pytest.fixture
async def console_url(settings, pool):
    server = TestServer(create_console_app(settings, pool), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def hostile(
    pool, settings, add_recipients, make_campaign, write_file, tracker, http, tmp_path
):
    """Payloads in campaign names, recipients' names, addresses and attributes, link names and
    URLs, an SMTP reply and user agents, all stored through the real flows."""
    rows = [["email", "name", "tracking_consent", "note", PAYLOADS[5]]]
    rows.append(["ann@example.com", PAYLOADS[0], "yes", PAYLOADS[28], PAYLOADS[20]])
    rows.append(["nobody@example.com", PAYLOADS[3], "yes", "", ""])
    for i, email in enumerate(HOSTILE_EMAILS):
        rows.append([email, PAYLOADS[6 + i], "yes", PAYLOADS[30 + i], PAYLOADS[40 + i]])
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    await add_recipients(out.getvalue())
    # One campaign whose links carry the payloads as names and in their URLs.
    in_template = [p for p in PAYLOADS if not any(t in p for t in ("{{", "{%", "{#"))]
    links = "\n".join(
        f'<a href="https://example.com/l{i}?p={html_lib.escape(p)}" '
        f'data-fairclick-name="{html_lib.escape(p)}">link {i}</a>'
        for i, p in enumerate(in_template)
    )
    await make_campaign(
        "<html><body><p>Hi {{ recipient.name }}</p>"
        "<script>window.__xss=1;parent.__xss=1</script><img src=x onerror=window.__xss=1>"
        '<a href="javascript:window.__xss=1">js</a>\n' + links + "</body></html>",
        name="links",
    )
    controller = start_capture_server(tmp_path / "refusing", handler=RefusingWithPayload)
    try:
        target = SmtpTarget("127.0.0.1", controller.port, use_tls=False)
        await send_campaign(pool, replace(settings, smtp=target), "links")
    finally:
        controller.stop()
    await pool.execute("UPDATE outbox SET sent_at = sent_at - interval '1 hour'")
    from email import message_from_bytes, policy

    ann = next(
        m
        for m in (
            message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in (tmp_path / "refusing").glob("*.eml")
        )
        if m["To"].addresses[0].addr_spec == "ann@example.com"
    )
    for i, link in enumerate(tracked_links(ann.get_body(("html",)).get_content())[:6]):
        async with http.get(
            link, allow_redirects=False, headers={"User-Agent": AGENTS[i % 3]}
        ) as r:
            assert r.status == 302
    # And a campaign named by each payload.
    plain = write_file("plain.html", "<p>Hello</p>")
    async with pool.acquire() as conn:
        for p in PAYLOADS:
            await create_campaign(
                conn, p, subject="Hi", from_address="news@example.com", html_path=plain
            )
    return in_template


CHECK = """() => {
  const all = [...document.querySelectorAll('*')];
  return {
    xss: window.__xss === undefined ? null : String(window.__xss),
    tags: [...new Set(all.map(e => e.tagName.toLowerCase()))],
    handlers: all.flatMap(e => [...e.attributes].filter(a => a.name.startsWith('on'))
                                   .map(a => e.tagName + ' ' + a.name)),
    urls: all.flatMap(e => ['href', 'src', 'action', 'xlink:href', 'formaction', 'data']
                           .map(n => e.getAttribute(n)).filter(v => v !== null)),
    text: document.body.innerText,
  };
}"""


async def test_hostile_text_renders_inert_and_visible_on_every_page(
    browser, console_url, hostile, pool
):
    async with pool.acquire() as conn:
        token = await create_api_token(conn, "xss", "operator")
    # bypass_csp: the CSP would block an injected inline script and hide an escaping bug;
    # here the markup itself must be inert.
    context = await browser.new_context(
        bypass_csp=True, extra_http_headers={"Authorization": f"Bearer {token}"}
    )
    page = await context.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    ids = {r["email"]: r["id"] for r in await pool.fetch("SELECT id, email FROM recipients")}
    link_names = hostile

    visits: list[tuple[str, list[str]]] = [
        ("/campaigns?page=1", []),
        ("/campaigns?page=2", []),
        ("/campaigns/links", [*link_names, SMTP_REPLY, PAYLOADS[3]]),
        ("/campaigns/links?bucket=day", link_names),
        ("/campaigns/links/links", link_names),
        ("/recipients", [*HOSTILE_EMAILS, PAYLOADS[0]]),
        *[(f"/campaigns/{quote(p, safe='')}", [p]) for p in PAYLOADS],
        *[(f"/campaigns/{quote(p, safe='')}/links", [p]) for p in PAYLOADS[:10]],
        *[(f"/campaigns/{quote(p + 'x', safe='')}", []) for p in PAYLOADS[:10]],  # 404s
        *[(f"/recipients?q={quote(p, safe='')}", []) for p in PAYLOADS[:20]],
        (
            f"/recipients/{ids['ann@example.com']}",
            [PAYLOADS[0], PAYLOADS[28], PAYLOADS[20], PAYLOADS[5], *AGENTS],
        ),
        *[
            (f"/recipients/{ids[e]}", [e, PAYLOADS[6 + i], PAYLOADS[30 + i], PAYLOADS[40 + i]])
            for i, e in enumerate(HOSTILE_EMAILS)
        ],
        *[(f"/campaigns/links/links?email={quote(e, safe='')}", [e]) for e in HOSTILE_EMAILS],
        ("/campaigns/links/links?email=ann%40example.com", []),
    ]
    shown_campaigns = ""
    for path, expected in visits:
        response = await page.goto(console_url + path)
        assert response.status in (200, 404), (path, response.status)
        await page.wait_for_load_state("load")
        found = await page.evaluate(CHECK)
        assert found["xss"] is None, (path, "script ran")
        assert set(found["tags"]) <= OUR_TAGS, (path, set(found["tags"]) - OUR_TAGS)
        assert found["handlers"] == [], (path, found["handlers"])
        assert all(u.startswith("/") for u in found["urls"]), (path, found["urls"])
        for frame in page.frames[1:]:  # the sandboxed preview: its own script must not run
            assert await frame.evaluate("window.__xss === undefined"), (path, "script in frame")
        for value in expected:
            assert text(value) in text(found["text"]), (path, value)
        if path.startswith("/recipients?q="):  # the search box holds what was searched
            assert await page.input_value("#q") == unquote(path.partition("=")[2]), path
        if path.startswith("/campaigns?"):
            shown_campaigns += found["text"]
        if "email=" in path:
            assert len(page.frames) == 2, (path, "no preview")
    for p in PAYLOADS:
        assert text(p) in text(shown_campaigns), p
    assert dialogs == []
    assert len(visits) >= 100
    await context.close()


@pytest.fixture
async def busy_campaign(pool, settings, add_recipients, make_campaign, deliver, mailbox):
    """A campaign with a day and a half of clicks and opens, written through the click
    recorder's own write path (as a spool replay writes them, with their times)."""
    from datetime import UTC, datetime, timedelta

    from tracker.recorder import Click, Open, write_events

    rows = ["email,name,format,tracking_consent"]
    for i in range(60):
        rows.append(f"reader{i:02}@example.com,Reader {i},{'text' if i % 6 == 5 else 'html'},"
                    f"{'yes' if i % 3 else 'no'}")  # fmt: skip
    rows.append("nobody@example.com,Nobody,html,no")
    await add_recipients("\n".join(rows) + "\n")
    await make_campaign(
        "<html><body><p>Hello {{ recipient.name }}, spring is here.</p>"
        '<a href="https://shop.example/spring" data-fairclick-name="Spring sale">sale</a> '
        '<a href="https://shop.example/shoes">shoes</a> '
        '<a href="https://shop.example/blog/garden">garden</a></body></html>',
        name="Spring sale 2026",
    )
    await deliver("Spring sale 2026")
    await pool.execute("UPDATE outbox SET sent_at = now() - interval '2 days'")
    # As if the list had been imported a week ago: consent given before these clicks.
    await pool.execute("UPDATE consent_events SET created_at = now() - interval '7 days'")
    await pool.execute(
        "UPDATE outbox SET status = 'failed', smtp_reply = $1 WHERE recipient_id ="
        " (SELECT id FROM recipients WHERE email = 'nobody@example.com')",
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: no such user",
    )
    messages = await pool.fetch(
        "SELECT o.id FROM outbox o WHERE o.status = 'sent' AND o.format = 'html' ORDER BY o.id"
    )
    links = [r["id"] for r in await pool.fetch(
        "SELECT id FROM links WHERE purpose = 'content' ORDER BY id")]  # fmt: skip
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=36)
    events = []
    for hour in range(36):
        # Most read it the first morning, fewer each hour after.
        for n in range(max(1, 14 - hour // 3) if hour % 24 < 20 else 1):
            m = messages[(hour * 7 + n * 3) % len(messages)]["id"]
            at = start + timedelta(hours=hour, minutes=(n * 11) % 60)
            agent = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"
            events.append(Click(m, links[(hour + n) % 3], at, "human", None, "192.0.2.1", agent))
            if n % 3 == 0:
                events.append(Open(m, at, "human", None, "192.0.2.1", agent))
        if hour % 5 == 0:
            m = messages[hour % len(messages)]["id"]
            events.append(Click(m, links[0], start + timedelta(hours=hour), "bot",
                                "known scanner or crawler agent", None, "curl/8.5.0"))  # fmt: skip
    async with pool.acquire() as conn:
        await write_events(conn, events)
    return "Spring sale 2026"


@pytest.mark.timeout(240)
async def test_an_operator_walks_through_the_console(
    browser, console_url, busy_campaign, pool, tmp_path
):
    from console.admins import create_admin

    async with pool.acquire() as conn:
        await create_admin(conn, "ops@example.com", "correct horse battery", "operator")
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    # Not logged in: sent to the login page.
    await page.goto(console_url + "/campaigns")
    assert "/login" in page.url
    await page.get_by_label("Email").fill("ops@example.com")
    await page.get_by_label("Password").fill("correct horse battery")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Campaigns")

    async with page.expect_navigation():
        await page.get_by_role("link", name=busy_campaign).click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text(busy_campaign)
    chart = page.locator("svg.chart")
    await expect(chart).to_be_visible()
    assert await chart.get_attribute("role") == "img"
    assert await page.locator("svg.chart polyline").count() == 3
    await expect(page.locator("#c-total")).not_to_have_text("0")
    await page.screenshot(path=tmp_path / "campaign.png", full_page=True)
    # The README's picture: refreshed only when asked (FAIRCLICK_SCREENSHOT=docs/console.png),
    # so running the tests leaves the repository as it was.
    if os.environ.get("FAIRCLICK_SCREENSHOT"):
        await page.screenshot(path=ROOT / os.environ["FAIRCLICK_SCREENSHOT"], full_page=False)

    async with page.expect_navigation():
        await page.get_by_role("button", name="Pause").click()
    await expect(page.get_by_role("status")).to_have_text("Campaign paused.")
    assert await pool.fetchval("SELECT status FROM campaigns") == "paused"
    async with page.expect_navigation():
        await page.get_by_role("button", name="Resume").click()
    await expect(page.get_by_role("status")).to_have_text("Campaign resumed.")
    assert await pool.fetchval("SELECT status FROM campaigns") == "active"

    async with page.expect_navigation():
        await page.get_by_role("link", name="day", exact=True).click()
    assert page.url.endswith("?bucket=day")
    await expect(page.locator("svg.chart title")).to_contain_text("per day")

    async with page.expect_navigation():
        await page.get_by_role("link", name="Recipients", exact=True).click()
    await page.get_by_label("Address contains").fill("reader07")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Search").click()
    async with page.expect_navigation():
        await page.get_by_role("link", name="reader07@example.com").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("reader07@example.com")
    await expect(page.locator("#consent")).to_have_text("granted")

    async with page.expect_navigation():
        await page.get_by_role("button", name="Log out").click()
    await page.goto(console_url + "/campaigns")
    assert "/login" in page.url
    assert dialogs == []
    await context.close()
    logged = await pool.fetch("SELECT actor, action FROM console_actions ORDER BY id")
    assert [tuple(r) for r in logged] == [
        ("session:ops@example.com", "campaign pause"),
        ("session:ops@example.com", "campaign resume"),
    ]
