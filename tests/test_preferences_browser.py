"""The preference page in a real headless Chromium: what a recipient sees, clicks and gets."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mailed_links import deliver_queued, link_in, link_messages
from playwright.async_api import expect

from tracker.tokens import Tokens


@pytest.fixture
async def ann(add_recipients, pool, tracker, settings):
    """Ann gets HTML mail and allowed tracking; returns (recipient id, preference page URL)."""
    await add_recipients(
        "email,format,tracking_consent\nann@example.com,html,yes\nbob@example.com,text,no\n"
    )
    rid = await pool.fetchval("SELECT id FROM recipients WHERE email = 'ann@example.com'")
    token = Tokens(settings.secret_keys).preferences.encode(rid)
    return rid, f"{settings.base_url}/p/{token}"


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
async def test_switch_to_text_only_and_withdraw_tracking(browser, ann, pool, tmp_path, javascript):
    rid, url = ann
    context = await browser.new_context(java_script_enabled=javascript)
    page = await context.new_page()
    requests = []
    page.on("request", lambda r: requests.append((r.method, r.url)))

    response = await page.goto(url)
    assert response.status == 200
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your email preferences")
    await expect(page.get_by_text("ann@example.com")).to_be_visible()
    assert await page.get_by_text("bob@example.com").count() == 0
    await expect(page.get_by_label("HTML email", exact=True)).to_be_checked()
    await expect(page.get_by_label("Yes, you may record")).to_be_checked()
    await expect(page.get_by_label("Keep sending me these emails")).to_be_checked()
    await expect(page.get_by_label("Text-only email", exact=True)).not_to_be_checked()
    await expect(page.get_by_role("status")).to_have_count(0)
    await page.screenshot(path=tmp_path / "before.png", full_page=True)

    await page.get_by_text("Text-only email", exact=True).click()
    await page.get_by_text("No, count my clicks anonymously only").click()
    await expect(page.get_by_label("Text-only email", exact=True)).to_be_checked()
    async with page.expect_navigation():
        await page.get_by_role("button", name="Save my choices").click()

    body = await page.content()
    assert page.url == url + "?saved=1", body[:300]
    await expect(page.get_by_role("status")).to_have_text("Your choices are saved.")
    await expect(page.get_by_role("alert")).to_have_count(0)
    await expect(page.get_by_label("Text-only email", exact=True)).to_be_checked()
    await expect(page.get_by_label("No, count my clicks anonymously only")).to_be_checked()
    await expect(page.get_by_label("Keep sending me these emails")).to_be_checked()
    await page.screenshot(path=tmp_path / "saved.png", full_page=True)
    await context.close()

    row = await pool.fetchrow(
        "SELECT format, tracking_consent, unsubscribed_at FROM recipients WHERE id = $1", rid
    )
    assert (row["format"], row["tracking_consent"], row["unsubscribed_at"]) == ("text", False, None)
    logged = await pool.fetch(
        "SELECT kind, value, source FROM consent_events"
        " WHERE recipient_id = $1 AND source = 'preference page' ORDER BY id",
        rid,
    )
    assert [tuple(e) for e in logged] == [
        ("format", "text", "preference page"),
        ("tracking", "withdrawn", "preference page"),
    ]
    assert ("POST", url) in requests
    assert all(u.startswith(url) for _, u in requests), requests  # nothing fetched elsewhere


async def test_erase_my_data_through_the_mailed_link(browser, ann, pool, http, settings, mailbox):
    """Erase on the page mails a link; the link from the captured message, confirmed, erases."""
    rid, url = ann
    context = await browser.new_context()
    page = await context.new_page()
    assert (await page.goto(url)).status == 200

    async with page.expect_navigation():
        await page.get_by_role("button", name="Erase my data").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Check your email")
    await expect(page.get_by_role("status")).to_have_text("We sent a link to a…@example.com.")
    assert await pool.fetchval("SELECT count(*) FROM recipients WHERE id = $1", rid) == 1

    await deliver_queued(pool, settings)  # what `fairclick worker` does
    (message,) = link_messages(mailbox, "ann@example.com")
    link = link_in(message)
    assert (await page.goto(link)).status == 200
    await expect(page.get_by_role("heading", level=1)).to_have_text("Erase your data")
    await expect(page.get_by_text("ann@example.com")).to_be_visible()

    # Without the tick the browser does not send the form at all (the box is required).
    erase = page.get_by_role("button", name="Erase my data")
    await erase.click()
    assert page.url == link
    assert await pool.fetchval("SELECT count(*) FROM recipients WHERE id = $1", rid) == 1

    await page.get_by_label("I understand this cannot be undone").check()
    async with page.expect_navigation():
        await erase.click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your data is erased")
    await expect(page.get_by_role("status")).to_have_text(
        "Your data is erased; clicks remain only as anonymous counts."
    )
    assert await page.get_by_text("ann@example.com").count() == 0
    # Reloading shows the same answer (no form is sent again to a link naming nobody now).
    assert (await page.reload()).status == 200
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your data is erased")
    # The mailed link, opened again, says so.
    assert (await page.goto(link)).status == 410
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your data was erased")
    await context.close()

    assert await pool.fetchval("SELECT count(*) FROM recipients WHERE id = $1", rid) == 0
    assert (
        await pool.fetchval("SELECT count(*) FROM consent_events WHERE recipient_id = $1", rid) == 0
    )
    assert await pool.fetchval("SELECT count(*) FROM recipients") == 1  # Bob stays
    async with http.get(url) as resp:
        assert resp.status == 410  # her old link: "The data behind this link was erased"


async def test_download_through_the_mailed_link_answers_a_json_attachment(
    browser, ann, pool, settings, mailbox
):
    rid, url = ann
    context = await browser.new_context(accept_downloads=True)
    page = await context.new_page()
    await page.goto(url)
    async with page.expect_navigation():
        await page.get_by_role("button", name="Download my data").click()
    await expect(page.get_by_role("status")).to_have_text("We sent a link to a…@example.com.")
    await deliver_queued(pool, settings)
    (message,) = link_messages(mailbox, "ann@example.com")
    await page.goto(link_in(message))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Download your data")
    days = {datetime.now(UTC).date()}
    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Download my data").click()
    download = await download_info.value
    days.add(datetime.now(UTC).date())  # the day the file was made, even across midnight
    # Named after the organisation (none is set here) and the day: tests/test_organisation.py
    assert download.suggested_filename in {f"personal-data-{d.isoformat()}.json" for d in days}
    data = json.loads(Path(await download.path()).read_text(encoding="utf-8"))
    await context.close()
    assert data["recipient"]["email"] == "ann@example.com"
    assert [e["value"] for e in data["consent_events"]] == ["html", "granted"]
    assert "bob@example.com" not in json.dumps(data)
    assert await pool.fetchval("SELECT count(*) FROM recipients WHERE id = $1", rid) == 1
