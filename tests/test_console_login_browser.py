"""Logging in and out of the console in a real headless Chromium, as an operator does."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestServer
from conftest import free_port
from playwright.async_api import expect

from console.admins import create_admin
from console.app import create_console_app

PASSWORD = "correct horse battery"



@pytest.fixture
async def console_url(settings, pool):
    async with pool.acquire() as conn:
        await create_admin(conn, "ops@example.com", PASSWORD, "operator")
    server = TestServer(create_console_app(settings, pool), host="127.0.0.1", port=free_port())
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def test_log_in_see_who_you_are_and_log_out(browser, console_url, pool):
    context = await browser.new_context()
    page = await context.new_page()
    console_errors = []
    page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))

    # A page that needs a login sends there, and back after it.
    await page.goto(f"{console_url}/campaigns")
    assert page.url == f"{console_url}/login?next=/campaigns"
    await expect(page.get_by_role("heading", level=1)).to_have_text("Log in")
    await page.get_by_label("Email").fill("ops@example.com")
    await page.get_by_label("Password").fill("a wrong password")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    await expect(page.locator("header .who")).to_have_count(0)

    await page.get_by_label("Password").fill(PASSWORD)
    async with page.expect_navigation():
        await page.get_by_role("button", name="Log in").click()
    assert page.url == f"{console_url}/campaigns"
    await expect(page.locator("header .who")).to_have_text("ops@example.com (operator)")
    # Back on the login page while signed in: it says who you are.
    await page.goto(f"{console_url}/login")
    await expect(page.get_by_role("status")).to_have_text(
        "You are signed in as ops@example.com (operator)."
    )
    (cookie,) = await context.cookies()
    assert cookie["name"] == "fairclick_session"
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert await page.evaluate("document.cookie") == ""  # scripts never see the session
    assert await pool.fetchval("SELECT count(*) FROM console_sessions") == 1

    async with page.expect_navigation():
        await page.get_by_role("button", name="Log out").click()
    assert page.url == f"{console_url}/login"
    await expect(page.get_by_role("heading", level=1)).to_have_text("Log in")
    await expect(page.locator("header .who")).to_have_count(0)
    assert await context.cookies() == []
    assert await pool.fetchval("SELECT count(*) FROM console_sessions") == 0
    # No inline script or style was refused by the CSP (the 401 of the wrong password and
    # the 404 of /favicon.ico are the only failed loads).
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors
    await context.close()
