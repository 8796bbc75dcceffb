"""The preference page /p/TOKEN over real HTTP: GET shows, POST changes, bad input is refused."""

from __future__ import annotations

import re

import aiohttp
import pytest
from helpers import BAD_TOKEN_KINDS, bad_tokens

from tracker.tokens import Tokens

PEOPLE = (
    "email,name,format,tracking_consent\n"
    "ann@example.com,Ann,html,yes\n"
    "bob@example.com,Bob,text,no\n"
)
FORM = "application/x-www-form-urlencoded"
ONE_CLICK = "List-Unsubscribe=One-Click"


@pytest.fixture
async def people(add_recipients, pool, tracker):
    """{email: recipient id} for Ann (html, tracked) and Bob (text, untracked)."""
    await add_recipients(PEOPLE)
    return {r["email"]: r["id"] for r in await pool.fetch("SELECT id, email FROM recipients")}


def own(settings) -> dict[str, str]:
    """What a browser posting the page's own form sends: our Origin."""
    return {"Origin": settings.base_url}


def page_url(settings, recipient_id: int) -> str:
    token = Tokens(settings.secret_keys).preferences.encode(recipient_id)
    return f"{settings.base_url}/p/{token}"


async def snapshot(pool) -> tuple[list[dict], int]:
    rows = await pool.fetch("SELECT * FROM recipients ORDER BY id")
    events = await pool.fetchval("SELECT count(*) FROM consent_events")
    return [dict(r) for r in rows], events


async def choices(pool, recipient_id: int) -> tuple[str, bool, bool]:
    r = await pool.fetchrow(
        "SELECT format, tracking_consent, unsubscribed_at IS NULL AS subscribed"
        " FROM recipients WHERE id = $1",
        recipient_id,
    )
    return r["format"], r["tracking_consent"], r["subscribed"]


async def events(pool, recipient_id: int, since: int = 0) -> list[tuple[str, str, str]]:
    rows = await pool.fetch(
        "SELECT kind, value, source FROM consent_events WHERE recipient_id = $1 AND id > $2"
        " ORDER BY id",
        recipient_id,
        since,
    )
    return [tuple(r) for r in rows]


def checked(html: str, name: str) -> list[str]:
    """The values of the checked radio buttons named `name` on the page."""
    inputs = [dict(a) for a in map(attributes_of, re.findall(r"<input\b[^>]*>", html))]
    return [i["value"] for i in inputs if i.get("name") == name and "checked" in i]


def attributes_of(tag: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in re.findall(r'(\w+)(?:="([^"]*)")?', tag[len("<input") :])]


@pytest.mark.parametrize(
    ("who", "expected"),
    [("ann@example.com", ("html", "yes", "yes")), ("bob@example.com", ("text", "no", "yes"))],
)
async def test_get_shows_current_choices_and_changes_nothing(
    people, settings, pool, http, who, expected
):
    before = await snapshot(pool)
    async with http.get(page_url(settings, people[who])) as resp:
        html = await resp.text()
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
    assert (checked(html, "format"), checked(html, "tracking"), checked(html, "subscribed")) == (
        [expected[0]],
        [expected[1]],
        [expected[2]],
    )
    other = ({*people} - {who}).pop()
    assert who in html and other not in html
    assert "saved" not in html
    assert await snapshot(pool) == before


@pytest.mark.parametrize(
    ("form", "after", "logged"),
    [
        (
            {"format": "text", "tracking": "no", "subscribed": "yes"},
            ("text", False, True),
            [("format", "text"), ("tracking", "withdrawn")],
        ),
        ({"format": "html", "tracking": "yes", "subscribed": "yes"}, ("html", True, True), []),
        (
            {"format": "html", "tracking": "yes", "subscribed": "no"},
            ("html", True, False),
            [("subscription", "unsubscribed")],
        ),
    ],
)
async def test_form_post_changes_and_logs_each_change(
    people, settings, pool, http, form, after, logged
):
    ann, bob = people["ann@example.com"], people["bob@example.com"]
    last = await pool.fetchval("SELECT max(id) FROM consent_events")
    bob_before = await pool.fetchrow("SELECT * FROM recipients WHERE id = $1", bob)
    url = page_url(settings, ann)
    async with http.post(url, data=form, headers=own(settings), allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == url.removeprefix(settings.base_url) + "?saved=1"
    assert await choices(pool, ann) == after
    assert await events(pool, ann, last) == [(k, v, "preference page") for k, v in logged]
    assert await choices(pool, bob) == ("text", False, True)
    assert await pool.fetchrow("SELECT * FROM recipients WHERE id = $1", bob) == bob_before
    async with http.get(url + "?saved=1") as resp:
        assert "Your choices are saved." in await resp.text()


async def test_resubscribe_after_unsubscribing_is_logged(people, settings, pool, http):
    ann = people["ann@example.com"]
    url = page_url(settings, ann)
    for subscribed in ("no", "yes"):
        form = {"format": "html", "tracking": "yes", "subscribed": subscribed}
        async with http.post(url, data=form, headers=own(settings), allow_redirects=False) as resp:
            assert resp.status == 303
    assert await choices(pool, ann) == ("html", True, True)
    assert [e[1] for e in await events(pool, ann) if e[0] == "subscription"] == [
        "unsubscribed",
        "subscribed",
    ]


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
async def test_one_click_unsubscribe(people, settings, pool, http, encoding):
    """RFC 8058 §3.1: the POST SHOULD be multipart/form-data and MAY be urlencoded."""
    ann = people["ann@example.com"]
    last = await pool.fetchval("SELECT max(id) FROM consent_events")
    if encoding == "urlencoded":
        kwargs = {"data": ONE_CLICK, "headers": {"Content-Type": FORM}}
    else:
        body = aiohttp.FormData({"List-Unsubscribe": "One-Click"}, default_to_multipart=True)
        kwargs = {"data": body}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        for _ in range(2):  # a repeat is harmless and logs nothing more
            async with client.post(page_url(settings, ann), **kwargs) as resp:
                assert 200 <= resp.status < 300, await resp.text()
    assert await choices(pool, ann) == ("html", True, False)
    assert await events(pool, ann, last) == [
        ("subscription", "unsubscribed", "one-click unsubscribe")
    ]
    assert await choices(pool, people["bob@example.com"]) == ("text", False, True)


@pytest.mark.parametrize(
    ("form", "complaint"),
    [
        ({"tracking": "no", "subscribed": "yes"}, "Choose HTML or text-only email."),
        ({"format": "pdf", "tracking": "no", "subscribed": "yes"}, "Choose HTML or text-only"),
        ({"format": "text", "tracking": "maybe", "subscribed": "yes"}, "may record your clicks"),
        ({"format": "text", "tracking": "no"}, "whether to stay subscribed"),
        ({"format": "text", "tracking": "no", "subscribed": "1"}, "whether to stay subscribed"),
        ({}, "Choose HTML or text-only email."),
        ({"List-Unsubscribe": "One-Click-ish"}, "Choose HTML or text-only email."),
    ],
)
async def test_malformed_form_is_refused_and_changes_nothing(
    people, settings, pool, http, form, complaint
):
    before = await snapshot(pool)
    url = page_url(settings, people["ann@example.com"])
    async with http.post(url, data=form, headers=own(settings)) as resp:
        html = await resp.text()
        assert resp.status == 400
    assert "Nothing was changed" in html and complaint in html
    assert "ann@example.com" in html
    assert await snapshot(pool) == before


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://127.0.0.1:1", "null", "http://localhost"]
)
async def test_post_from_another_origin_is_forbidden(people, settings, pool, http, origin):
    before = await snapshot(pool)
    form = {"format": "text", "tracking": "no", "subscribed": "no"}
    async with http.post(
        page_url(settings, people["ann@example.com"]), data=form, headers={"Origin": origin}
    ) as resp:
        assert resp.status == 403
    assert await snapshot(pool) == before


async def test_post_from_own_origin_is_accepted(people, settings, pool, http):
    form = {"format": "text", "tracking": "no", "subscribed": "yes"}
    async with http.post(
        page_url(settings, people["ann@example.com"]),
        data=form,
        headers={"Origin": settings.base_url},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
    assert await choices(pool, people["ann@example.com"]) == ("text", False, True)


@pytest.mark.parametrize("kind", BAD_TOKEN_KINDS)
@pytest.mark.parametrize("method", ["GET", "form POST", "one-click POST"])
async def test_bad_token_gets_404_and_changes_nothing(people, settings, pool, http, kind, method):
    token = bad_tokens(settings, people["ann@example.com"])[kind]
    url = f"{settings.base_url}/p/{token}"
    before = await snapshot(pool)
    if method == "GET":
        request = http.get(url)
    elif method == "form POST":
        form = {"format": "text", "tracking": "no", "subscribed": "no"}
        request = http.post(url, data=form, headers=own(settings))
    else:
        request = http.post(url, data=ONE_CLICK, headers={"Content-Type": FORM})
    async with request as resp:
        html = await resp.text()
        assert resp.status == 404
    assert "This link is not valid" in html
    assert "ann@example.com" not in html and "bob@example.com" not in html
    assert await snapshot(pool) == before


async def test_broken_multipart_body_is_refused_and_changes_nothing(people, settings, pool, http):
    before = await snapshot(pool)
    headers = {"Content-Type": "multipart/form-data; boundary=x", **own(settings)}
    body = b"--x\r\nformat=text\r\n"
    async with http.post(
        page_url(settings, people["ann@example.com"]), data=body, headers=headers
    ) as resp:
        assert resp.status == 400
        html = await resp.text()
    assert "Nothing was changed" in html and "The form arrived broken" in html
    assert await snapshot(pool) == before


ACTING_FORMS = {  # each form of the page, filled in so that it would act
    "": {"format": "text", "tracking": "no", "subscribed": "no"},
    "/data": {},  # mails a one-time link (tests/test_mailbox_proof.py)
    "/erase": {},
}
ACTED = {"": 303, "/data": 200, "/erase": 200}


@pytest.mark.parametrize("endpoint", list(ACTING_FORMS), ids=["choices", "download", "erase"])
@pytest.mark.parametrize(
    ("headers", "ours"),
    [
        ({}, False),  # no Origin, no Sec-Fetch-Site, no Referer: nothing says it is our page
        ({"Referer": "https://evil.example/p/x"}, False),
        ({"Referer": "http://127.0.0.1:1/p/x"}, False),
        ({"Referer": "/p/x"}, False),
        ({"Referer": "null"}, False),
        ({"Sec-Fetch-Site": "cross-site"}, False),
        ({"Sec-Fetch-Site": "same-site"}, False),
        ({"Sec-Fetch-Site": "none"}, False),
        ({"Sec-Fetch-Site": "same-origin", "Origin": "https://evil.example"}, False),
        ({"Referer": "{page}", "Origin": "null"}, False),
        ({"Referer": "{page}", "Sec-Fetch-Site": "cross-site"}, False),
        ({"Referer": "{page}"}, True),
        ({"Sec-Fetch-Site": "same-origin"}, True),
        ({"Sec-Fetch-Site": "same-origin", "Referer": "{page}"}, True),
        ({"Origin": "{base}"}, True),
    ],
)
async def test_a_form_post_must_show_it_comes_from_our_page(
    people, settings, pool, http, endpoint, headers, ours
):
    """Origin decides; without it Sec-Fetch-Site, else the Referer; with none, refused."""
    url = page_url(settings, people["ann@example.com"])
    headers = {k: v.format(page=url, base=settings.base_url) for k, v in headers.items()}
    before = await snapshot(pool)
    async with http.post(
        url + endpoint, data=ACTING_FORMS[endpoint], headers=headers, allow_redirects=False
    ) as resp:
        assert resp.status == (ACTED[endpoint] if ours else 403), await resp.text()
    if not ours:
        assert await snapshot(pool) == before
        assert await pool.fetchval("SELECT count(*) FROM mailbox_links") == 0  # nothing mailed


BOGUS_BODIES = {
    "urlencoded": (
        f"{FORM}; charset=bogus",
        b"format=text&tracking=no&subscribed=no&confirm=yes",
    ),
    "multipart": (
        "multipart/form-data; boundary=x",
        b"".join(
            b'--x\r\nContent-Disposition: form-data; name="%s"\r\n'
            b"Content-Type: text/plain; charset=bogus\r\n\r\n%s\r\n" % pair
            for pair in ((b"format", b"text"), (b"tracking", b"no"), (b"confirm", b"yes"))
        )
        + b"--x--\r\n",
    ),
}


@pytest.mark.parametrize("encoding", list(BOGUS_BODIES))
# The erasure's own form (with its confirmation box) is on the mailed link's page now:
# tests/test_mailbox_proof.py sends it in a bogus charset.
@pytest.mark.parametrize(("endpoint", "nothing_done"), [("", "Nothing was changed")])
async def test_a_form_in_an_unknown_charset_gets_a_clear_400(
    people, settings, pool, http, encoding, endpoint, nothing_done
):
    content_type, body = BOGUS_BODIES[encoding]
    before = await snapshot(pool)
    url = page_url(settings, people["ann@example.com"]) + endpoint
    headers = {"Content-Type": content_type, **own(settings)}
    async with http.post(url, data=body, headers=headers) as resp:
        assert resp.status == 400
        assert resp.content_type == "text/html"
        html = await resp.text()
    assert nothing_done in html and "a character set we cannot read" in html
    assert "ann@example.com" in html  # the page itself, to send again from
    assert await snapshot(pool) == before


async def test_one_click_unsubscribe_in_an_unknown_charset_still_unsubscribes(
    people, settings, pool
):
    ann = people["ann@example.com"]
    headers = {"Content-Type": f"{FORM}; charset=bogus"}
    async with aiohttp.ClientSession() as client:
        async with client.post(page_url(settings, ann), data=ONE_CLICK, headers=headers) as resp:
            assert resp.status == 200
    assert await choices(pool, ann) == ("html", True, False)
