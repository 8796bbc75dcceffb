"""The recipient's pages in a real Chromium: axe-core (WCAG 2.1 A and AA), keyboard only,
320 px wide and 200 % zoom.

Every page the public tracker shows a recipient is checked in each state it can be in:
the home page, the preference page (as it comes, saved, unsubscribed, a bad form post), the
answer of its Download and Erase buttons (a confirmation link sent, or too many this hour),
the mailed one-time link's page (download, erase, an erasure not confirmed, the link used,
expired or not valid), the erasure's answer, an erased person's old links, a link that is
not valid, and the three pages only a fault shows (a busy erasure, a database away, a link
made from erased data), which are rendered from their templates with the real renderer.
The mailed links are read out of the messages the real delivery put in the SMTP capture.
axe-core is the copy bundled in axe-playwright-python: nothing is fetched from elsewhere,
and the browser is kept to the loopback tracker (any other request fails the test).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from axe_playwright_python.async_playwright import Axe
from mailed_links import deliver_queued, follow, link_in, link_messages
from playwright.async_api import expect

from tracker.organisation import Organisation
from tracker.pages import page_environment
from tracker.tokens import Tokens

WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
ORGANISATION = {
    "organisation_name": "Example Corp",
    "organisation_address": "1 Main Street\nSpringfield, IL 62701\nUSA",
    "privacy_policy_url": "https://example.com/privacy",
}
# A long address must wrap, not widen the page past a phone's screen (no hyphen or space in
# it, where browsers would break a line anyway).
LONG_EMAIL = (
    "annabelle.longname.with.a.very.long.local.part.that.goes.on"
    "@mail.subdomain.examplecompany.com"
)
# Pages only a fault shows (a busy erasure, the database away, a link made from erased data).
FAULT_PAGES = ["erase_later.html", "unavailable.html", "link_erased.html"]


@pytest.fixture(params=["organisation set", "nothing set"])
def settings(request, settings):
    """The tracker's settings, with the organisation's name, address and policy, or none."""
    if request.param == "nothing set":
        return settings
    return replace(settings, **ORGANISATION)



@pytest.fixture
def new_page(browser, settings):
    """A page in a new context that may reach only the tracker; **options for the context."""
    elsewhere = []

    async def make(**options):
        context = await browser.new_context(**options)  # closed with the browser

        async def only_the_tracker(route):
            if route.request.url.startswith(settings.base_url + "/"):
                await route.continue_()
            else:
                elsewhere.append(route.request.url)
                await route.abort()

        await context.route("**/*", only_the_tracker)
        return await context.new_page()

    yield make
    assert elsewhere == []  # axe-core, fonts, anything: nothing came from outside


@pytest.fixture
async def person(add_recipients, pool, tracker, settings):
    """A recipient with a long address; returns (recipient id, preference page URL)."""
    await add_recipients(f"email,format,tracking_consent\n{LONG_EMAIL},html,yes\n")
    rid = await pool.fetchval("SELECT id FROM recipients WHERE email = $1", LONG_EMAIL)
    token = Tokens(settings.secret_keys).preferences.encode(rid)
    return rid, f"{settings.base_url}/p/{token}"


async def axe_violations(page) -> str | None:
    """axe-core's WCAG 2.1 A/AA violations of the page as a report, or None when there are none."""
    results = await Axe().run(
        page,
        options={
            "runOnly": {"type": "tag", "values": WCAG_21_AA},
            "resultTypes": ["violations"],
        },
    )
    if results.violations_count == 0:
        return None
    return results.generate_report()


async def submit(page, button_name: str) -> int:
    """Press a button (by mouse: the keyboard has its own test), wait for the answer: status."""
    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name=button_name, exact=True).click()
    return (await navigation.value).status


async def new_link(pool, settings, mailbox, action: str, seen: set[str]) -> str:
    """Deliver what is queued (as `fairclick worker` does); the one new mailed link for action."""
    await deliver_queued(pool, settings)
    links = {link_in(m) for m in link_messages(mailbox, LONG_EMAIL)} - seen
    seen |= links
    (link,) = [link for link in links if f"/p/confirm/{action}/" in link]
    return link


async def each_state(page, settings, url: str, pool, mailbox, http):
    """Drive one browser page through every state of the recipient's pages.

    Yields (state, HTTP status) with the page showing that state.
    """
    response = await page.goto(f"{settings.base_url}/")
    yield "home", response.status
    response = await page.goto(url)
    yield "preferences", response.status

    await page.get_by_label("Text-only email", exact=True).check()
    yield "saved", await submit(page, "Save my choices")

    await page.get_by_label("Unsubscribe me").check()
    status = await submit(page, "Save my choices")
    await expect(page.get_by_role("heading", level=2, name="You are unsubscribed")).to_be_visible()
    yield "unsubscribed (saved)", status
    response = await page.goto(url)
    yield "unsubscribed (visited later)", response.status

    yield "resubscribed", await submit(page, "Subscribe me again")

    # A form the page would never send (a value changed in the page): the 400 page.
    await page.locator("input[name=format][value=html]").evaluate("e => e.value = 'pdf'")
    await page.get_by_label("HTML email", exact=True).check()
    status = await submit(page, "Save my choices")
    await expect(page.get_by_role("alert")).to_contain_text("Choose HTML or text-only email.")
    yield "bad form post", status

    # Download and Erase only mail a one-time link; the fourth in an hour is refused.
    seen: set[str] = set()
    await page.goto(url)
    status = await submit(page, "Download my data")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Check your email")
    yield "confirmation link sent (download)", status
    download = await new_link(pool, settings, mailbox, "download", seen)
    await page.goto(url)
    status = await submit(page, "Erase my data")
    await expect(page.get_by_role("status")).to_contain_text("We sent a link to a…@")
    yield "confirmation link sent (erase)", status
    erase = await new_link(pool, settings, mailbox, "erase", seen)
    await page.goto(url)
    assert await submit(page, "Download my data") == 200  # the third this hour
    expiring = await new_link(pool, settings, mailbox, "download", seen)
    await page.goto(url)
    status = await submit(page, "Erase my data")
    await expect(page.get_by_role("alert")).to_contain_text("No new email was sent.")
    yield "too many links", status

    # The mailed download link: its page, then used (by the person, elsewhere), expired.
    response = await page.goto(download)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Download your data")
    yield "mailed download link", response.status
    assert (await follow(http, download, settings))[0] == 200  # the file itself
    response = await page.goto(download)
    yield "mailed link used", response.status
    await pool.execute(
        "UPDATE mailbox_links SET expires_at = now() - interval '1 second'"
        " WHERE used_at IS NULL AND action = 'download'"
    )
    response = await page.goto(expiring)
    yield "mailed link expired", response.status
    response = await page.goto(f"{settings.base_url}/p/confirm/erase/not-a-token")
    yield "mailed link not valid", response.status

    # The mailed erase link: without the confirmation (the browser's own check taken away)
    # the 400 page, then confirmed.
    response = await page.goto(erase)
    yield "mailed erase link", response.status
    await page.locator("input[name=confirm]").evaluate("e => e.required = false")
    status = await submit(page, "Erase my data")
    await expect(page.get_by_role("alert")).to_contain_text("Nothing was erased.")
    yield "erasure not confirmed", status

    await page.get_by_label("I understand this cannot be undone").check()
    yield "erased", await submit(page, "Erase my data")

    response = await page.goto(url)
    yield "old link after erasure", response.status
    response = await page.goto(erase)
    yield "mailed link after erasure", response.status

    response = await page.goto(f"{settings.base_url}/p/not-a-token")
    yield "preference link not valid", response.status
    response = await page.goto(f"{settings.base_url}/c/not-a-token")
    yield "tracked link not valid", response.status


EXPECTED_STATUS = {
    "home": 200,
    "preferences": 200,
    "saved": 200,
    "unsubscribed (saved)": 200,
    "unsubscribed (visited later)": 200,
    "resubscribed": 200,
    "bad form post": 400,
    "confirmation link sent (download)": 200,
    "confirmation link sent (erase)": 200,
    "too many links": 429,
    "mailed download link": 200,
    "mailed link used": 410,
    "mailed link expired": 410,
    "mailed link not valid": 404,
    "mailed erase link": 200,
    "erasure not confirmed": 400,
    "erased": 200,
    "old link after erasure": 410,
    "mailed link after erasure": 410,
    "preference link not valid": 404,
    "tracked link not valid": 404,
}


async def fault_pages(page, settings):
    """The pages only a fault shows, rendered by the tracker's own renderer, one by one."""
    pages = page_environment(Organisation.of(settings))
    for name in FAULT_PAGES:
        await page.set_content(pages.get_template(name).render())
        yield name


async def test_axe_finds_no_wcag_21_aa_violation_on_any_page_in_any_state(
    new_page, person, settings, pool, mailbox, http
):
    _, url = person
    page = await new_page()
    seen = []
    async for state, status in each_state(page, settings, url, pool, mailbox, http):
        assert status == EXPECTED_STATUS[state], state
        seen.append(state)
        assert (report := await axe_violations(page)) is None, f"{state}: {report}"
    async for name in fault_pages(page, settings):
        assert (report := await axe_violations(page)) is None, f"{name}: {report}"
    assert seen == list(EXPECTED_STATUS)


async def check_fits(page, width: int, what: str) -> None:
    """Nothing scrolls sideways, and every control is visible and inside the width."""
    scroll_width = await page.evaluate("document.scrollingElement.scrollWidth")
    assert scroll_width <= width, f"{what}: {scroll_width} px wide in a {width} px viewport"
    controls = page.locator("main button, main input:not([type=hidden]), a, label")
    for i in range(await controls.count()):
        control = controls.nth(i)
        await control.scroll_into_view_if_needed()
        box = await control.bounding_box()
        html = await control.evaluate("e => e.outerHTML.slice(0, 80)")
        assert box is not None and await control.is_visible(), f"{what}: {html} not visible"
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, f"{what}: {html} {box}"


@pytest.mark.parametrize(
    ("width", "scale"),
    [(320, 1), (640, 2)],
    ids=["320px", "200% zoom (640 css px at scale 2)"],
)
async def test_every_page_fits_a_small_screen_and_200_percent_zoom(
    new_page, person, settings, pool, mailbox, http, width, scale
):
    """WCAG 1.4.10 reflow at 320 CSS px, and 1.4.4 at 200 %: a 1280 px window zoomed to
    200 % lays pages out in 640 CSS px, drawn with 2 device pixels per CSS pixel."""
    _, url = person
    page = await new_page(viewport={"width": width, "height": 640}, device_scale_factor=scale)
    async for state, status in each_state(page, settings, url, pool, mailbox, http):
        assert status == EXPECTED_STATUS[state], state
        await check_fits(page, width, state)
    async for name in fault_pages(page, settings):
        await check_fits(page, width, name)


async def focused(page) -> dict:
    """What has the keyboard focus, and whether it shows (a 2 px outline or more)."""
    return await page.evaluate(
        """() => {
            const e = document.activeElement;
            const style = getComputedStyle(e);
            return {
                tag: e.tagName.toLowerCase(),
                type: e.type || null,
                name: e.name || null,
                value: e.value || null,
                checked: e.checked === undefined ? null : e.checked,
                text: (e.innerText || (e.labels && e.labels[0] && e.labels[0].innerText) || "")
                    .trim(),
                outline: style.outlineStyle === "none" ? 0 : parseFloat(style.outlineWidth),
            };
        }"""
    )


async def tab_to(page, what: str, **want) -> dict:
    """Press Tab until the focus is on the control matching want (tag, name, value, text)."""
    for _ in range(60):
        await page.keyboard.press("Tab")
        now = await focused(page)
        if all(now.get(k) == v for k, v in want.items()):
            assert now["outline"] >= 2, f"the focus on {what} does not show: {now}"
            return now
    raise AssertionError(f"Tab never reached {what}")


async def press_and_wait(page, key: str) -> None:
    async with page.expect_navigation():
        await page.keyboard.press(key)


async def choices(pool, rid):
    row = await pool.fetchrow(
        "SELECT format, tracking_consent, unsubscribed_at IS NULL AS subscribed"
        " FROM recipients WHERE id = $1",
        rid,
    )
    return tuple(row) if row else None


async def test_keyboard_alone_completes_every_flow(new_page, person, settings, pool, mailbox):
    """No mouse: Tab to a control, Space or Enter to press it; in a radio group the arrow
    keys choose (browsers stop Tab at the group's checked radio only, as the ARIA radio
    group pattern says), so they are the only other keys used. The mailed links are opened
    as a mail program would open them (a new address in the browser)."""
    rid, url = person
    page = await new_page(accept_downloads=True)
    await page.goto(url)

    # Text-only mail, clicks no longer recorded; Save with Enter.
    await tab_to(page, "the format group", name="format", value="html", checked=True)
    await page.keyboard.press("ArrowDown")
    assert (await focused(page))["value"] == "text"
    await tab_to(page, "the tracking group", name="tracking", value="yes", checked=True)
    await page.keyboard.press("ArrowDown")
    await tab_to(page, "Save", tag="button", text="Save my choices")
    await press_and_wait(page, "Enter")
    await expect(page.get_by_role("status")).to_have_text("Your choices are saved.")
    assert await choices(pool, rid) == ("text", False, True)

    # Consent granted again; Save with Space.
    await tab_to(page, "the tracking group", name="tracking", value="no", checked=True)
    await page.keyboard.press("ArrowUp")
    await tab_to(page, "Save", tag="button", text="Save my choices")
    await press_and_wait(page, "Space")
    assert await choices(pool, rid) == ("text", True, True)

    # Unsubscribe, then back with the button the answer offers.
    await tab_to(page, "the subscription group", name="subscribed", value="yes", checked=True)
    await page.keyboard.press("ArrowDown")
    await tab_to(page, "Save", tag="button", text="Save my choices")
    await press_and_wait(page, "Enter")
    sender = settings.organisation_name or "these emails"
    await expect(
        page.get_by_role("heading", name=f"You are unsubscribed from {sender}")
    ).to_be_visible()
    assert await choices(pool, rid) == ("text", True, False)
    await tab_to(page, "Subscribe me again", tag="button", text="Subscribe me again")
    await press_and_wait(page, "Enter")
    assert await choices(pool, rid) == ("text", True, True)

    # The data download: Download (Enter) mails a link; back to the page by keyboard; the
    # mailed link, opened from the message, downloads with Enter.
    seen: set[str] = set()
    await tab_to(page, "Download my data", tag="button", text="Download my data")
    await press_and_wait(page, "Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Check your email")
    await tab_to(page, "the way back", tag="a", text="Back to your email preferences")
    await press_and_wait(page, "Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your email preferences")
    await page.goto(await new_link(pool, settings, mailbox, "download", seen))
    await tab_to(page, "Download my data", tag="button", text="Download my data")
    async with page.expect_download() as download:
        await page.keyboard.press("Enter")
    assert (await download.value).suggested_filename.endswith(".json")
    assert await pool.fetchval("SELECT used_at IS NOT NULL FROM mailbox_links") is True

    # Erasure: Erase (Space) mails a link; on the mailed link's page tick with Space, press
    # with Enter.
    await page.goto(url)
    await tab_to(page, "Erase my data", tag="button", text="Erase my data")
    await press_and_wait(page, "Space")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Check your email")
    assert await choices(pool, rid) == ("text", True, True)  # the button alone erases nothing
    await page.goto(await new_link(pool, settings, mailbox, "erase", seen))
    await tab_to(page, "the erasure confirmation", name="confirm", checked=False)
    await page.keyboard.press("Space")
    await tab_to(page, "Erase my data", tag="button", text="Erase my data")
    await press_and_wait(page, "Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your data is erased")
    assert await choices(pool, rid) is None
