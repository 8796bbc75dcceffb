"""Download and erase need proof that the person owns the mailbox (issue 11).

The page's buttons only queue a one-time link; the real delivery mails it through the SMTP
capture server; the link is read out of the captured message and used over HTTP. Real
PostgreSQL throughout.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from helpers import pixels, tracked_links
from mailed_links import (
    deliver_queued,
    follow,
    link_in,
    link_messages,
    mailed_link,
    page_url,
    press,
)

from mailer.sending import send_campaign
from tracker.consent import erase
from tracker.mailbox_links import request_link, use_link
from tracker.reports import campaign_report
from tracker.suppressions import suppress
from tracker.tokens import Tokens

PEOPLE = (
    "email,name,format,tracking_consent,city\n"
    "ann@example.com,Ann,html,yes,Oslo\n"
    "bob@example.com,Bob,text,no,Rome\n"
)
HTML = '<p>Hello {{ recipient.name }}</p><a href="https://example.com/a">a</a>'
# Everything a download or an erasure could change or a mail request could add.
TABLES = (
    "recipients",
    "consent_events",
    "suppressions",
    "outbox",
    "mailbox_links",
    "clicks",
    "opens",
    "message_links",
    "outbox_counts",
)
CONFIRMED = {"confirm": "yes"}


@pytest.fixture
async def people(pool, mailbox, add_recipients, make_campaign, deliver, tracker):
    """{email: recipient id}, after a campaign went to both."""
    await add_recipients(PEOPLE)
    await make_campaign(HTML, name="spring", sender="News <news@example.com>")
    await deliver("spring")
    return {r["email"]: r["id"] for r in await pool.fetch("SELECT id, email FROM recipients")}


async def dump(pool, tables=TABLES) -> dict[str, list[str]]:
    return {
        table: [
            r[0] for r in await pool.fetch(f"SELECT to_jsonb(t)::text FROM {table} t ORDER BY 1")
        ]
        for table in tables
    }


async def message_counts(pool) -> list[tuple]:
    """The rollup of messages per campaign (rows at zero left out: a rebuild drops them)."""
    rows = await pool.fetch("SELECT * FROM outbox_counts WHERE messages <> 0 ORDER BY 1, 2, 3, 4")
    return [tuple(r) for r in rows]


async def get(http, url, method="GET"):
    async with http.request(method, url, allow_redirects=False) as resp:
        return resp.status, await resp.text()


@pytest.mark.parametrize("action", ["download", "erase"])
async def test_the_page_buttons_change_nothing_by_themselves(
    people, settings, pool, http, mailbox, action
):
    ann = people["ann@example.com"]
    before = await dump(pool)
    status, html = await press(http, settings, ann, action)
    assert status == 200
    assert "We sent a link to a…@example.com." in html
    assert "30 minutes" in html and "works once" in html
    assert ("download your data" if action == "download" else "erase your data") in html
    assert "ann@example.com" not in html and "Oslo" not in html  # no data on this page
    after = await dump(pool)
    # Only the link and the message that will carry it were added; nothing else moved.
    unchanged = [t for t in TABLES if t not in ("outbox", "mailbox_links")]
    assert {t: after[t] for t in unchanged} == {t: before[t] for t in unchanged}
    link = await pool.fetchrow("SELECT * FROM mailbox_links")
    assert (link["recipient_id"], link["action"], link["used_at"]) == (ann, action, None)
    lifetime = await pool.fetchval("SELECT expires_at - created_at FROM mailbox_links")
    assert lifetime == timedelta(minutes=30)
    queued = await pool.fetch("SELECT * FROM outbox WHERE campaign_id IS NULL")
    assert [(q["recipient_id"], q["mailbox_link_id"], q["status"]) for q in queued] == [
        (ann, link["id"], "queued")
    ]
    assert set(before["outbox"]) < set(after["outbox"])  # the campaign's rows as they were
    assert await pool.fetchval("SELECT count(*) FROM recipients WHERE id = $1", ann) == 1
    assert len(mailbox.messages()) == 2  # the campaign's two: the tracker never talks SMTP


async def test_the_message_is_transactional_untracked_and_in_no_report(
    people, settings, pool, http, mailbox
):
    ann = people["ann@example.com"]
    counts_before = await message_counts(pool)
    async with pool.acquire() as conn:
        report_before = await campaign_report(conn, "spring")
    assert (await press(http, settings, ann, "download"))[0] == 200
    progress = await send_campaign(pool, settings, "spring")  # `send` delivers it too
    assert progress.counts["sent"] == 1
    (message,) = link_messages(mailbox, "ann@example.com")
    assert message["From"] == "News <news@example.com>"  # the sender she knows
    assert message["Subject"] == "Your link to download your data"
    assert "List-Unsubscribe" not in message and "List-Unsubscribe-Post" not in message
    html = message.get_body(("html",)).get_content()
    link = link_in(message)
    assert f'<a href="{link}">' in html
    assert tracked_links(html) == [] and pixels(html) == []
    assert "/c/" not in message.as_string() and "/o/" not in message.as_string()
    assert "30 minutes" in message.get_body(("plain",)).get_content()
    # Bob reads text only: his link comes as text alone.
    await mailed_link(http, pool, settings, mailbox, people["bob@example.com"], "erase")
    (bobs,) = link_messages(mailbox, "bob@example.com")
    assert bobs.get_content_type() == "text/plain"
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM outbox WHERE campaign_id IS NULL AND status = 'sent'"
        )
        == 2
    )
    assert await message_counts(pool) == counts_before
    async with pool.acquire() as conn:
        assert await campaign_report(conn, "spring") == report_before
        await conn.execute("SELECT rebuild_rollups()")
    assert await message_counts(pool) == counts_before


async def test_a_paused_campaign_does_not_hold_the_link(people, settings, pool, http, mailbox):
    await pool.execute("UPDATE campaigns SET status = 'paused'")
    await mailed_link(http, pool, settings, mailbox, people["ann@example.com"], "download")


async def test_the_mailed_download_link_works_once(people, settings, pool, http, mailbox):
    ann = people["ann@example.com"]
    link = await mailed_link(http, pool, settings, mailbox, ann, "download")
    before = await dump(pool)
    for method in ("GET", "HEAD", "GET"):  # what a mail scanner does: nothing
        status, html = await get(http, link, method)
        assert status == 200
    assert "Download your data" in html and "ann@example.com" in html
    assert 'method="post"' in html and '"city"' not in html
    assert await dump(pool) == before

    days = {datetime.now(UTC).date()}
    status, headers, body = await follow(http, link, settings)
    days.add(datetime.now(UTC).date())  # the day the file was made, even across midnight
    assert status == 200
    # Named after the organisation (none set here) and the day: tests/test_organisation.py
    assert headers["Content-Disposition"] in {
        f'attachment; filename="personal-data-{day.isoformat()}.json"' for day in days
    }
    assert headers["Cache-Control"] == "no-store"
    data = json.loads(body)
    assert data["recipient"]["email"] == "ann@example.com"
    assert data["recipient"]["attributes"] == {"city": "Oslo"}
    assert "bob@example.com" not in body.decode()
    assert await pool.fetchval("SELECT used_at IS NOT NULL FROM mailbox_links")

    used = await dump(pool)
    status, _, body = await follow(http, link, settings)
    assert status == 410 and b"already used" in body and b"Oslo" not in body
    status, html = await get(http, link)
    assert status == 410 and "already used" in html
    assert await dump(pool) == used


async def test_the_mailed_erase_link_erases_once_then_says_the_data_was_erased(
    people, settings, pool, http, mailbox
):
    ann, bob = people["ann@example.com"], people["bob@example.com"]
    download = await mailed_link(http, pool, settings, mailbox, ann, "download")
    erase = await mailed_link(http, pool, settings, mailbox, ann, "erase")
    before = await dump(pool)
    status, html = await get(http, erase)
    assert status == 200 and "Erase your data" in html
    assert 'name="confirm" value="yes" required' in html
    for form in ({}, {"confirm": "no"}, {"email": "bob@example.com"}):
        status, _, body = await follow(http, erase, settings, form)
        assert status == 400 and b"Nothing was erased" in body
    for origin in (None, "https://evil.example", "null"):
        status, _, _ = await follow(http, erase, settings, CONFIRMED, origin=origin)
        assert status == 403
    assert await dump(pool) == before

    # Who is erased comes from the link alone.
    form = {**CONFIRMED, "email": "bob@example.com", "recipient_id": str(bob)}
    status, headers, _ = await follow(http, erase, settings, form)
    assert (status, headers["Location"]) == (303, "/erased")
    assert await pool.fetchval("SELECT count(*) FROM recipients WHERE id = $1", ann) == 0
    assert await pool.fetchval("SELECT count(*) FROM recipients WHERE id = $1", bob) == 1
    # Counted as the person's own request (erasure_counts holds no one, only why and when).
    reasons = await pool.fetch("SELECT reason, erasures FROM erasure_counts")
    assert [tuple(r) for r in reasons] == [("request", 1)]
    erased = await dump(pool)
    for link in (erase, download):
        status, html = await get(http, link)
        assert status == 410 and "Your data was erased" in html, link
        status, _, body = await follow(http, link, settings, CONFIRMED)
        assert status == 410 and b"Your data was erased" in body
    assert await dump(pool) == erased
    status, html = await get(http, page_url(settings, ann))  # her old page link: erased, 410
    assert status == 410 and "The data behind this link was erased" in html


async def test_an_expired_link_changes_nothing(people, settings, pool, http, mailbox):
    ann = people["ann@example.com"]
    links = {
        a: await mailed_link(http, pool, settings, mailbox, ann, a) for a in ("download", "erase")
    }
    await pool.execute("UPDATE mailbox_links SET expires_at = now() - interval '1 second'")
    before = await dump(pool)
    for link in links.values():
        status, html = await get(http, link)
        assert status == 410 and "This link has expired" in html and "30 minutes" in html
        status, _, body = await follow(http, link, settings, CONFIRMED)
        assert status == 410 and b"This link has expired" in body and b"Oslo" not in body
    assert await dump(pool) == before


async def test_a_link_that_expires_before_delivery_is_not_sent(
    people, settings, pool, http, mailbox
):
    assert (await press(http, settings, people["ann@example.com"], "erase"))[0] == 200
    await pool.execute("UPDATE mailbox_links SET expires_at = now() - interval '1 second'")
    await deliver_queued(pool, settings)
    assert link_messages(mailbox, "ann@example.com") == []
    row = await pool.fetchrow("SELECT status, smtp_reply FROM outbox WHERE campaign_id IS NULL")
    assert row["status"] == "skipped" and "expired" in row["smtp_reply"]


def flipped(token: str, at: int) -> str:
    c = token[at]
    return token[:at] + ("A" if c != "A" else "B") + token[at + 1 :]


async def test_altered_and_wrong_purpose_links_get_404_and_change_nothing(
    people, settings, pool, http, mailbox
):
    ann, bob = people["ann@example.com"], people["bob@example.com"]
    download = await mailed_link(http, pool, settings, mailbox, ann, "download")
    erase = await mailed_link(http, pool, settings, mailbox, ann, "erase")
    base = f"{settings.base_url}/p/confirm"
    tokens = Tokens(settings.secret_keys)
    d_token, e_token = download.rsplit("/", 1)[1], erase.rsplit("/", 1)[1]
    d_id = await pool.fetchval("SELECT id FROM mailbox_links WHERE action = 'download'")
    e_id = await pool.fetchval("SELECT id FROM mailbox_links WHERE action = 'erase'")
    bad = {
        "tag flipped": f"{base}/erase/{flipped(e_token, -1)}",
        "body flipped": f"{base}/erase/{flipped(e_token, 0)}",
        "truncated": erase[:-2],
        "other key": f"{base}/erase/"
        + Tokens((b"another-secret-key-0123456789ab",)).mailbox["erase"].encode(e_id, ann),
        "download link used to erase": f"{base}/erase/{d_token}",
        "erase link used to download": f"{base}/download/{e_token}",
        "unknown action": f"{base}/delete/{e_token}",
        "preference token": f"{base}/erase/{tokens.preferences.encode(ann)}",
        "click token": f"{base}/erase/{tokens.click.encode(e_id, ann)}",
        "open token": f"{base}/erase/{tokens.opens.encode(e_id)}",
        # Signed with our key, but not what the row says: another person, another action.
        "another person": f"{base}/erase/{tokens.mailbox['erase'].encode(e_id, bob)}",
        "the download row as an erase": f"{base}/erase/{tokens.mailbox['erase'].encode(d_id, ann)}",
        "no such link": f"{base}/erase/{tokens.mailbox['erase'].encode(e_id + 99, ann)}",
    }
    before = await dump(pool)
    for what, url in bad.items():
        status, html = await get(http, url)
        assert status == 404 and "This link is not valid" in html, what
        assert "ann@example.com" not in html, what
        status, _, body = await follow(http, url, settings, CONFIRMED)
        assert status == 404 and b"This link is not valid" in body, what
    # Nor is a link's token a preference token.
    for token in (d_token, e_token):
        assert (await get(http, f"{settings.base_url}/p/{token}"))[0] == 404
        for endpoint in ("/data", "/erase"):
            url = f"{settings.base_url}/p/{token}{endpoint}"
            async with http.post(url, headers={"Origin": settings.base_url}) as resp:
                assert resp.status == 404
    assert await dump(pool) == before
    # The genuine links still work after all that.
    assert (await get(http, erase))[0] == 200 and (await get(http, download))[0] == 200


async def test_at_most_three_links_an_hour(people, settings, pool, http, mailbox):
    ann = people["ann@example.com"]
    for action in ("download", "erase", "download"):
        assert (await press(http, settings, ann, action))[0] == 200
    before = await dump(pool)
    last = await pool.fetchval("SELECT max(created_at) FROM mailbox_links")
    status, html = await press(http, settings, ann, "erase")
    assert status == 429
    assert "We already sent links to a…@example.com in the last hour" in html
    assert f"the last one at {last:%H:%M} UTC" in html and "No new email was sent" in html
    assert "try again after" in html
    assert await dump(pool) == before
    # Bob is not limited by Ann's requests.
    assert (await press(http, settings, people["bob@example.com"], "erase"))[0] == 200
    # An hour later she may ask again.
    await pool.execute(
        "UPDATE mailbox_links SET created_at = created_at - interval '61 minutes'"
        " WHERE recipient_id = $1",
        ann,
    )
    assert (await press(http, settings, ann, "erase"))[0] == 200
    await deliver_queued(pool, settings)
    assert len(link_messages(mailbox, "ann@example.com")) == 4


@pytest.mark.parametrize(("action", "acted"), [("download", 200), ("erase", 303)])
async def test_concurrent_uses_of_one_link_act_once(
    people, settings, pool, http, mailbox, action, acted
):
    """Eight POSTs of one link at once: one acts, the others find it used (410)."""
    link = await mailed_link(http, pool, settings, mailbox, people["ann@example.com"], action)
    results = await asyncio.gather(*(follow(http, link, settings, CONFIRMED) for _ in range(8)))
    assert sorted(r[0] for r in results) == [acted] + [410] * 7


BOGUS_CHARSET = ("application/x-www-form-urlencoded; charset=bogus", b"confirm=yes")


async def test_an_erase_form_in_an_unknown_charset_gets_a_clear_400(
    people, settings, pool, http, mailbox
):
    erase = await mailed_link(http, pool, settings, mailbox, people["ann@example.com"], "erase")
    before = await dump(pool)
    headers = {"Content-Type": BOGUS_CHARSET[0], "Origin": settings.base_url}
    async with http.post(erase, data=BOGUS_CHARSET[1], headers=headers) as resp:
        assert resp.status == 400
        html = await resp.text()
    assert "Nothing was erased" in html and "a character set we cannot read" in html
    assert await dump(pool) == before


async def test_use_link_marks_a_link_used_once_and_never_after_it_expired(people, pool):
    """The statement that uses a link refuses a used or expired one by itself, whatever the
    page checked before (two requests may both have seen it usable)."""
    ann = people["ann@example.com"]
    async with pool.acquire() as conn:
        assert await request_link(conn, ann, "download")
        assert await request_link(conn, ann, "erase")
        download, erase = [
            r[0] for r in await conn.fetch("SELECT id FROM mailbox_links ORDER BY id")
        ]
        assert not await use_link(conn, "erase", download, ann)  # not its action
        assert not await use_link(conn, "download", download, people["bob@example.com"])
        assert await use_link(conn, "download", download, ann)
        assert not await use_link(conn, "download", download, ann)
        await conn.execute("UPDATE mailbox_links SET expires_at = now() WHERE id = $1", erase)
        assert not await use_link(conn, "erase", erase, ann)


async def test_unsubscribed_and_suppressed_people_still_get_their_link(
    people, settings, pool, http, mailbox
):
    """A campaign skips them; the link they asked for is not a campaign's mail."""
    ann, bob = people["ann@example.com"], people["bob@example.com"]
    async with http.post(page_url(settings, ann), data={"List-Unsubscribe": "One-Click"}) as resp:
        assert resp.status == 200
    async with pool.acquire() as conn:
        await suppress(conn, "bob@example.com", "bounced")
    await mailed_link(http, pool, settings, mailbox, ann, "download")
    await mailed_link(http, pool, settings, mailbox, bob, "erase")


async def test_a_link_of_someone_erased_before_delivery_is_not_sent(
    people, settings, pool, http, mailbox
):
    assert (await press(http, settings, people["ann@example.com"], "erase"))[0] == 200
    async with pool.acquire() as conn:
        assert await erase(conn, "ann@example.com")
    await deliver_queued(pool, settings)
    assert link_messages(mailbox, "ann@example.com") == []
    row = await pool.fetchrow("SELECT status, recipient_id FROM outbox WHERE campaign_id IS NULL")
    assert tuple(row) == ("skipped", None)
