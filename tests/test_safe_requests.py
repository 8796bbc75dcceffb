"""GET changes nothing, whatever its query string; every documented security header is sent."""

from __future__ import annotations

import pytest
from helpers import pixels, tracked_links
from mailed_links import mailed_link

from tracker.tokens import Tokens

# What a form or the one-click POST would carry, put into a GET's query string instead.
CHANGING_QUERIES = [
    "format=text",
    "tracking=no",
    "tracking=yes",
    "subscribed=no",
    "format=text&tracking=no&subscribed=no",
    "List-Unsubscribe=One-Click",
    "confirm=yes",
    "erase=1&confirm=yes",
]


@pytest.fixture
async def ann(pool, mailbox, add_recipients, make_campaign, deliver, tracker):
    """Ann (HTML, tracking consent) and her message; returns (recipient id, message HTML)."""
    await add_recipients("email,tracking_consent\nann@example.com,yes\nbob@example.com,no\n")
    await make_campaign('<html><body><a href="https://example.com/a">a</a></body></html>')
    await deliver("c")
    recipient_id = await pool.fetchval("SELECT id FROM recipients WHERE email = 'ann@example.com'")
    html = mailbox.for_address("ann@example.com")[0].get_body(("html",)).get_content()
    return recipient_id, html


async def everything_about_people(pool) -> tuple:
    recipients = [dict(r) for r in await pool.fetch("SELECT * FROM recipients ORDER BY id")]
    events = [dict(r) for r in await pool.fetch("SELECT * FROM consent_events ORDER BY id")]
    outbox = [dict(r) for r in await pool.fetch("SELECT * FROM outbox ORDER BY id")]
    return recipients, events, outbox


@pytest.mark.parametrize("path", ["", "/data", "/erase"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_get_on_preference_paths_changes_nothing(pool, settings, http, ann, path, method):
    token = Tokens(settings.secret_keys).preferences.encode(ann[0])
    before = await everything_about_people(pool)
    for query in CHANGING_QUERIES:
        url = f"{settings.base_url}/p/{token}{path}?{query}"
        async with http.request(method, url, allow_redirects=False) as response:
            await response.read()
            # The page itself shows; its data and erasure answer only POST.
            assert response.status == (200 if path == "" else 405), query
        assert await everything_about_people(pool) == before, query


# The headers README and the code promise, written out here so that removing one fails.
REDIRECT_HEADERS = {
    "Cache-Control": "no-store",  # a cached redirect is a click never counted
    "Referrer-Policy": "no-referrer",  # the target must not learn the token
    "X-Robots-Tag": "noindex",
}
PIXEL_HEADERS = {"Cache-Control": "no-store, private", "X-Robots-Tag": "noindex"}
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Robots-Tag": "noindex",
    "X-Frame-Options": "DENY",
}


def assert_headers(response, expected: dict[str, str]) -> None:
    assert {name: response.headers.get(name) for name in expected} == expected


async def test_a_redirect_sends_its_security_headers(http, ann):
    async with http.get(tracked_links(ann[1])[0], allow_redirects=False) as response:
        assert response.status == 302
        assert_headers(response, REDIRECT_HEADERS)


async def test_the_pixel_sends_its_headers(http, ann):
    async with http.get(pixels(ann[1])[0]) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/gif"
        assert_headers(response, PIXEL_HEADERS)


@pytest.mark.parametrize("page", ["preferences", "not found", "erased"])
async def test_pages_send_their_security_headers(settings, http, ann, page):
    path = {
        "preferences": f"/p/{Tokens(settings.secret_keys).preferences.encode(ann[0])}",
        "not found": "/c/not-a-token",
        "erased": "/erased",
    }[page]
    async with http.get(settings.base_url + path, allow_redirects=False) as response:
        assert response.content_type == "text/html"
        assert_headers(response, PAGE_HEADERS)
        policy = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["form-action"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "script-src" not in directives  # default-src 'none' forbids every script


async def test_the_data_download_is_not_sniffed_or_cached(settings, http, ann, pool, mailbox):
    link = await mailed_link(http, pool, settings, mailbox, ann[0], "download")
    async with http.post(link, headers={"Origin": settings.base_url}) as response:
        assert response.status == 200
        assert_headers(
            response,
            {
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin",
            },
        )
        assert response.headers["Content-Disposition"].startswith("attachment;")
