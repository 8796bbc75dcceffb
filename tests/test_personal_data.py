"""A person's own data from their preference page: download it and erase it.

The page's buttons mail a one-time link (tests/test_mailbox_proof.py tests that link
itself); here the link is taken from the captured message and used, as the person would.
Real mail, real clicks and opens over HTTP, real PostgreSQL. Ann and Bob both
allowed tracking; Ann later withdraws it on her page and clicks again (an
anonymous click, not hers to download).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from conftest import BROWSER_AGENT
from helpers import BAD_TOKEN_KINDS, bad_tokens, pixels, tracked_links
from mailed_links import follow, mailed_link

from tracker import consent
from tracker.consent import erase
from tracker.personal_data import NOT_INCLUDED
from tracker.reports import campaign_report
from tracker.suppressions import suppress, suppression_of
from tracker.tokens import Tokens

PEOPLE = (
    "email,name,format,tracking_consent,city\n"
    "ann@example.com,Ann,html,yes,Oslo\n"
    "bob@example.com,Bob,html,yes,Rome\n"
)
HTML = (
    "<p>Hello {{ recipient.name }}</p>"
    '<a href="https://example.com/a">a</a> <a href="https://example.com/b">b</a>'
    '<a href="{{ preferences_url }}">preferences</a>'
)
AGENTS = {"ann@example.com": BROWSER_AGENT + " Ann/1", "bob@example.com": BROWSER_AGENT + " Bob/2"}
TABLES = (
    "recipients",
    "consent_events",
    "campaigns",
    "links",
    "outbox",
    "clicks",
    "opens",
    "suppressions",
    "mailbox_links",
)
CONFIRMED = {"confirm": "yes"}


def page_url(settings, recipient_id: int, endpoint: str = "") -> str:
    token = Tokens(settings.secret_keys).preferences.encode(recipient_id)
    return f"{settings.base_url}/p/{token}{endpoint}"


async def get(http, url, **headers):
    async with http.get(url, headers=headers, allow_redirects=False) as resp:
        return resp.status, resp.headers, await resp.read()


async def download(http, url, origin=None):
    """POST to the page's "Download my data" (origin None sends no Origin)."""
    headers = {} if origin is None else {"Origin": origin}
    async with http.post(url, headers=headers, allow_redirects=False) as resp:
        return resp.status, resp.headers, await resp.read()


async def download_by_mail(http, pool, settings, mailbox, recipient_id: int):
    """Press "Download my data", open the mailed link, confirm: status, headers, body."""
    link = await mailed_link(http, pool, settings, mailbox, recipient_id, "download")
    return await follow(http, link, settings)


async def erase_by_mail(http, pool, settings, mailbox, recipient_id: int, form=CONFIRMED):
    """Press "Erase my data", open the mailed link, confirm: status, headers, body."""
    link = await mailed_link(http, pool, settings, mailbox, recipient_id, "erase")
    return await follow(http, link, settings, form)


@pytest.fixture
async def people(pool, mailbox, add_recipients, make_campaign, deliver, tracker, http, settings):
    """{email: recipient id}, after the mail went out and both clicked and opened."""
    await add_recipients(PEOPLE)
    ids = {r["email"]: r["id"] for r in await pool.fetch("SELECT id, email FROM recipients")}
    await make_campaign(HTML, name="spring", sender="news@example.com")
    await deliver("spring")
    mail = {
        m["To"].addresses[0].addr_spec: m.get_body(("html",)).get_content()
        for m in mailbox.messages()
    }
    ann_a, ann_b = tracked_links(mail["ann@example.com"])
    bob_b = tracked_links(mail["bob@example.com"])[1]
    for who, link in (("ann@example.com", ann_a), ("bob@example.com", bob_b)):
        status, _, _ = await get(http, link, **{"User-Agent": AGENTS[who]})
        assert status == 302
        (pixel,) = pixels(mail[who])
        assert (await get(http, pixel, **{"User-Agent": AGENTS[who]}))[0] == 200
    form = {"format": "html", "tracking": "no", "subscribed": "yes"}
    headers = {"Origin": settings.base_url}
    async with http.post(
        page_url(settings, ids["ann@example.com"]), data=form, headers=headers
    ) as resp:
        assert resp.status == 200  # after the redirect to ?saved=1
    # Without consent now: counted, but not linked to Ann.
    assert (await get(http, ann_b, **{"User-Agent": AGENTS["ann@example.com"]}))[0] == 302
    async with pool.acquire() as conn:
        for email in ids:
            await suppress(conn, email, "bounced")
    counts = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE message_id IS NOT NULL) AS identified,"
        " count(*) FILTER (WHERE message_id IS NULL) AS anonymous FROM clicks"
    )
    assert tuple(counts) == (2, 1)
    return ids


async def everything(pool) -> dict[str, list[str]]:
    """Every row of every table, to show that a request changed nothing."""
    return {
        table: [
            r[0] for r in await pool.fetch(f"SELECT to_jsonb(t)::text FROM {table} t ORDER BY 1")
        ]
        for table in TABLES
    }


async def message_ids(pool, recipient_id: int) -> list[int]:
    return [
        r[0]
        for r in await pool.fetch("SELECT id FROM outbox WHERE recipient_id = $1", recipient_id)
    ]


async def traces(pool, recipient_id: int, email: str, messages: list[int]) -> dict[str, int]:
    """How many rows still name the person, or link to them through their messages."""
    count = pool.fetchval
    mentions = 0
    for table in TABLES:
        mentions += await count(
            f"SELECT count(*) FROM {table} t WHERE t::text ILIKE '%' || $1 || '%'", email
        )
    return {
        "recipient": await count("SELECT count(*) FROM recipients WHERE id = $1", recipient_id),
        "consent events": await count(
            "SELECT count(*) FROM consent_events WHERE recipient_id = $1", recipient_id
        ),
        # Erasure leaves the keyed hash of the address (so it is never mailed again), saying
        # only "erased": not the bounce, complaint or date that was there before.
        "suppression other than erased": await count(
            "SELECT count(*) FROM suppressions"
            " WHERE address_hash = suppression_hash($1) AND reason <> 'erased'",
            email,
        ),
        "messages linked": await count(
            "SELECT count(*) FROM outbox WHERE recipient_id = $1", recipient_id
        ),
        "server replies": await count(
            "SELECT count(*) FROM outbox WHERE id = ANY($1) AND smtp_reply IS NOT NULL", messages
        ),
        "identified clicks": await count(
            "SELECT count(*) FROM clicks WHERE message_id = ANY($1)", messages
        ),
        "identified opens": await count(
            "SELECT count(*) FROM opens WHERE message_id = ANY($1)", messages
        ),
        "rows quoting the address": mentions,
    }


NOTHING = dict.fromkeys(
    (
        "recipient",
        "consent events",
        "suppression other than erased",
        "messages linked",
        "server replies",
        "identified clicks",
        "identified opens",
        "rows quoting the address",
    ),
    0,
)


async def test_download_holds_the_persons_data_and_nobody_elses(
    people, settings, pool, http, mailbox
):
    link = await mailed_link(http, pool, settings, mailbox, people["ann@example.com"], "download")
    before = await everything(pool)
    days = {datetime.now(UTC).date()}
    status, headers, body = await follow(http, link, settings)
    days.add(datetime.now(UTC).date())  # the day the file was made, even across midnight
    assert status == 200
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    # Named after the organisation (none is set here) and the day: tests/test_organisation.py
    assert headers["Content-Disposition"] in {
        f'attachment; filename="personal-data-{day.isoformat()}.json"' for day in days
    }
    assert headers["Cache-Control"] == "no-store"
    data = json.loads(body)

    me = data["recipient"]
    assert (me["email"], me["name"], me["attributes"], me["format"]) == (
        "ann@example.com",
        "Ann",
        {"city": "Oslo"},
        "html",
    )
    assert (me["tracking_consent"], me["subscribed"], me["unsubscribed_at"]) == (False, True, None)
    datetime.fromisoformat(me["created_at"])
    assert [(e["what"], e["value"], e["source"]) for e in data["consent_events"]] == [
        ("format", "html", "import:recipients.csv:2"),
        ("tracking", "granted", "import:recipients.csv:2"),
        ("tracking", "withdrawn", "preference page"),
    ]
    message, link_message = data["messages"]
    assert (message["campaign"], message["sender"], message["status"], message["format"]) == (
        "spring",
        "news@example.com",
        "sent",
        "html",
    )
    # The message that brought her this link is hers too.
    assert (link_message["campaign"], link_message["status"]) == (
        "the link to download your data you asked for",
        "sent",
    )
    assert message["sent_at"] and message["queued_at"] and message["message_id"]
    # The identified click only: the click on b came after she withdrew consent.
    assert [(c["url"], c["kind"], c["ip"], c["user_agent"]) for c in data["clicks"]] == [
        ("https://example.com/a", "human", "127.0.0.0", AGENTS["ann@example.com"])
    ]
    assert [(o["campaign"], o["ip"], o["user_agent"]) for o in data["opens"]] == [
        ("spring", "127.0.0.0", AGENTS["ann@example.com"])
    ]
    assert data["suppression"]["suppressed"] is True
    assert data["suppression"]["reason"] == "bounced"
    assert "keyed hash" in data["suppression"]["kept_as"]
    assert NOT_INCLUDED in data["notes"]
    text = body.decode()
    for bobs in ("bob@example.com", "Bob", "Rome", AGENTS["bob@example.com"]):
        assert bobs not in text
    after = await everything(pool)  # the download changed nothing but its link (used up)
    assert {**after, "mailbox_links": None} == {**before, "mailbox_links": None}

    _, _, body = await download_by_mail(http, pool, settings, mailbox, people["bob@example.com"])
    bob = json.loads(body)
    assert bob["recipient"]["email"] == "bob@example.com"
    assert [(c["url"], c["user_agent"]) for c in bob["clicks"]] == [
        ("https://example.com/b", AGENTS["bob@example.com"])
    ]
    assert "ann@example.com" not in body.decode() and "Oslo" not in body.decode()


async def test_download_is_not_a_link_anything_can_follow(people, settings, pool, http):
    """Mail scanners and prefetchers GET what the page links to: the data is not there."""
    url = page_url(settings, people["ann@example.com"], "/data")
    status, _, body = await get(http, url)
    assert status == 405 and b"ann@example.com" not in body
    for origin in ("https://evil.example", "null"):
        status, _, body = await download(http, url, origin=origin)
        assert status == 403 and b"ann@example.com" not in body


async def test_preference_page_links_to_download_and_erase(people, settings, http):
    url = page_url(settings, people["ann@example.com"])
    _, _, body = await get(http, url)
    html = body.decode()
    path = url.removeprefix(settings.base_url)
    assert f'<form method="post" action="{path}/data">' in html
    assert "<a" not in html.split("<h2>Your data</h2>", 1)[1]  # no link a crawler could follow
    assert f'<form method="post" action="{path}/erase">' in html
    assert "these two buttons email a one-time link to your address" in html
    assert "we keep one thing: a keyed hash of your address" in html  # and why


@pytest.mark.parametrize("kind", BAD_TOKEN_KINDS)
@pytest.mark.parametrize("endpoint", ["download", "erase"])
async def test_bad_token_gets_404_and_changes_nothing(people, settings, pool, http, kind, endpoint):
    token = bad_tokens(settings, people["ann@example.com"])[kind]
    before = await everything(pool)
    origin = {"Origin": settings.base_url}
    if endpoint == "download":
        request = http.post(f"{settings.base_url}/p/{token}/data", headers=origin)
    else:
        request = http.post(f"{settings.base_url}/p/{token}/erase", data=CONFIRMED, headers=origin)
    async with request as resp:
        assert resp.status == 404
        assert resp.content_type == "text/html"
        html = await resp.text()
    assert "This link is not valid" in html
    assert "ann@example.com" not in html and "bob@example.com" not in html
    assert await everything(pool) == before


async def test_tokens_from_the_mail_are_not_preference_tokens(
    people, settings, pool, http, mailbox
):
    """The click and open tokens in Ann's own message open neither her data nor its erasure."""
    (mail,) = mailbox.for_address("ann@example.com")
    html = mail.get_body(("html",)).get_content()
    tokens = [link.rsplit("/", 1)[1] for link in tracked_links(html)]
    tokens += [pixel.rsplit("/", 1)[1].removesuffix(".gif") for pixel in pixels(html)]
    assert len(tokens) == 3
    before = await everything(pool)
    for token in tokens:
        assert (await download(http, f"{settings.base_url}/p/{token}/data"))[0] == 404
        async with http.post(f"{settings.base_url}/p/{token}/erase", data=CONFIRMED) as resp:
            assert resp.status == 404
    assert await everything(pool) == before


@pytest.mark.parametrize(
    "form",
    [
        {},
        {"confirm": "no"},
        {"confirm": ""},
        {"confirm": "on"},
        {"email": "ann@example.com"},
    ],
)
async def test_erase_without_confirmation_is_refused_and_erases_nothing(
    people, settings, pool, http, mailbox, form
):
    link = await mailed_link(http, pool, settings, mailbox, people["ann@example.com"], "erase")
    before = await everything(pool)
    status, _, body = await follow(http, link, settings, form)
    assert status == 400
    html = body.decode()
    assert "Nothing was erased" in html and "I understand this cannot be undone" in html
    assert "Erase your data" in html and "ann@example.com" in html
    assert await everything(pool) == before


async def test_erase_with_a_body_that_is_not_a_form_is_refused(
    people, settings, pool, http, mailbox
):
    url = await mailed_link(http, pool, settings, mailbox, people["ann@example.com"], "erase")
    before = await everything(pool)
    headers = {"Content-Type": "multipart/form-data; boundary=x", "Origin": settings.base_url}
    async with http.post(url, data=b"--x\r\nconfirm=yes\r\n", headers=headers) as resp:
        assert resp.status == 400
        assert "Nothing was erased" in await resp.text()
    assert await everything(pool) == before


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://127.0.0.1:1", "null", "http://localhost"]
)
async def test_erase_from_another_origin_is_forbidden(
    people, settings, pool, http, mailbox, origin
):
    link = await mailed_link(http, pool, settings, mailbox, people["ann@example.com"], "erase")
    before = await everything(pool)
    for url in (page_url(settings, people["ann@example.com"], "/erase"), link):
        async with http.post(url, data=CONFIRMED, headers={"Origin": origin}) as resp:
            assert resp.status == 403
    assert await everything(pool) == before


async def test_erase_while_clicks_are_held_says_try_again_and_erases_nothing(
    people, settings, pool, http, mailbox, monkeypatch
):
    monkeypatch.setattr(consent, "ERASURE_ATTEMPTS", 1)
    url = await mailed_link(http, pool, settings, mailbox, people["ann@example.com"], "erase")
    async with pool.acquire() as holder:
        long_write = holder.transaction()  # a retention run or a spool replay, say
        await long_write.start()
        await holder.execute("LOCK TABLE clicks IN ROW EXCLUSIVE MODE")
        before = await everything(pool)
        async with http.post(url, data=CONFIRMED, headers={"Origin": settings.base_url}) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "60"
            assert "Nothing was erased" in await resp.text()
        assert await everything(pool) == before  # the link too: not used up
        await long_write.rollback()
    status, _, _ = await follow(http, url, settings, CONFIRMED)  # so it works once they pass
    assert status == 303


async def test_erase_removes_the_person_and_keeps_anonymous_counts(
    people, settings, pool, http, mailbox
):
    ann, bob = people["ann@example.com"], people["bob@example.com"]
    bob_data = (await download_by_mail(http, pool, settings, mailbox, bob))[2]
    link = await mailed_link(http, pool, settings, mailbox, ann, "erase")
    anns_messages, bobs_messages = await message_ids(pool, ann), await message_ids(pool, bob)
    assert await traces(pool, ann, "ann@example.com", anns_messages) != NOTHING
    bob_before = await traces(pool, bob, "bob@example.com", bobs_messages)
    async with pool.acquire() as conn:
        report_before = await campaign_report(conn, "spring")

    # Who is erased comes from the link alone: an address or id in the form is ignored.
    form = {**CONFIRMED, "email": "bob@example.com", "recipient_id": str(bob)}
    async with http.post(link, data=form, headers={"Origin": settings.base_url}) as resp:
        # Post/redirect/get: the answer to the POST is a 303 to a page naming nobody.
        assert [(r.status, r.headers["Location"]) for r in resp.history] == [(303, "/erased")]
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        html = await resp.text()
    assert "Your data is erased; clicks remain only as anonymous counts." in html
    assert "We kept only a keyed hash of your address" in html
    assert "ann@example.com" not in html

    assert await traces(pool, ann, "ann@example.com", anns_messages) == NOTHING
    async with pool.acquire() as conn:
        report_after = await campaign_report(conn, "spring")
    assert report_after["sent"] == report_before["sent"] == 2
    for what in ("clicks", "opens"):
        before, after = report_before[what], report_after[what]
        assert after["total"] == before["total"], what
        assert after["identified"] == before["identified"] - 1, what
        assert after["anonymous"] == before["anonymous"] + 1, what
    assert await traces(pool, bob, "bob@example.com", bobs_messages) == bob_before
    bob_after = (await download_by_mail(http, pool, settings, mailbox, bob))[2]
    assert json.loads(bob_after)["clicks"] == json.loads(bob_data)["clicks"]

    # Her page token now says her data was erased (410 Gone), and mails nothing.
    links = await pool.fetchval("SELECT count(*) FROM mailbox_links")
    status, _, body = await get(http, page_url(settings, ann))
    assert status == 410 and "The data behind this link was erased" in body.decode()
    assert (await download(http, page_url(settings, ann, "/data"), settings.base_url))[0] == 410
    erase_url = page_url(settings, ann, "/erase")
    async with http.post(erase_url, headers={"Origin": settings.base_url}) as resp:
        assert resp.status == 410
    assert await pool.fetchval("SELECT count(*) FROM mailbox_links") == links
    # The mailed link says what happened.
    status, _, body = await follow(http, link, settings, CONFIRMED)
    assert status == 410 and b"Your data was erased" in body


async def test_erasure_from_the_page_leaves_what_the_command_line_leaves(
    people, settings, pool, http, mailbox
):
    """Ann erased through her mailed link, Bob (who asked for one too, and left it) with
    `fairclick erase`'s function: the same is left."""
    ann, bob = people["ann@example.com"], people["bob@example.com"]
    anns_link = await mailed_link(http, pool, settings, mailbox, ann, "erase")
    await mailed_link(http, pool, settings, mailbox, bob, "erase")
    anns_messages, bobs_messages = await message_ids(pool, ann), await message_ids(pool, bob)
    assert len(anns_messages) == len(bobs_messages) == 2  # the campaign's and the link's
    status, _, _ = await follow(http, anns_link, settings, CONFIRMED)
    assert status == 303
    async with pool.acquire() as conn:
        assert await erase(conn, " BOB@example.com")

    async def left(messages: list[int]) -> list[tuple]:
        return [
            tuple(r)
            for r in await pool.fetch(
                "SELECT status, format, recipient_id, smtp_reply, sent_at IS NOT NULL"
                " FROM outbox WHERE id = ANY($1)",
                messages,
            )
        ]

    assert await traces(pool, ann, "ann@example.com", anns_messages) == NOTHING
    assert await traces(pool, bob, "bob@example.com", bobs_messages) == NOTHING
    async with pool.acquire() as conn:
        for email in ("ann@example.com", "bob@example.com"):
            assert (await suppression_of(conn, email)).reason == "erased"
    assert await pool.fetchval("SELECT count(*) FROM suppressions") == 2
    assert (
        await left(anns_messages)
        == await left(bobs_messages)
        == [("sent", "html", None, None, True)] * 2
    )
    # The links name nobody either; they differ only in whether one was used.
    links = await pool.fetch("SELECT recipient_id, action FROM mailbox_links ORDER BY id")
    assert [tuple(r) for r in links] == [(None, "erase"), (None, "erase")]
    assert await pool.fetchval("SELECT count(*) FROM clicks") == 3
    assert await pool.fetchval("SELECT count(*) FROM clicks WHERE message_id IS NOT NULL") == 0
