"""The click path: consent read at the moment of the click, only stored targets, bad tokens 404."""

from __future__ import annotations

import base64
import hashlib
import hmac

import asyncpg
import pytest
from helpers import tracked_links
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tracker.consent import change_choices, erase
from tracker.errors import TemplateProblem
from tracker.reports import campaign_report
from tracker.tokens import TAG_BYTES, TokenCodec, Tokens

HTML = '<a href="https://example.com/a">a</a> <a href="https://example.com/ü?q=1 2">b</a>'


@pytest.fixture
async def sent(pool, mailbox, add_recipients, make_campaign, deliver):
    """Send campaign 'c' to yes@ (consent) and no@ (none); returns address -> tracked links."""
    await add_recipients("email,tracking_consent\nyes@example.com,yes\nno@example.com,no\n")
    await make_campaign(HTML)
    await deliver("c")
    return {
        m["To"].addresses[0].addr_spec: tracked_links(m.get_body(("html",)).get_content())
        for m in mailbox.messages()
    }


async def click(http, url, method="GET", **headers):
    async with http.request(method, url, allow_redirects=False, headers=headers) as response:
        return response.status, response.headers.get("Location")


async def recipient_id(pool, email):
    return await pool.fetchval("SELECT id FROM recipients WHERE email = $1", email)


async def test_click_with_consent_names_the_message_with_truncated_ip(pool, tracker, http, sent):
    status, location = await click(http, sent["yes@example.com"][0], **{"User-Agent": "Test/1"})
    assert (status, location) == (302, "https://example.com/a")
    row = await pool.fetchrow("SELECT message_id, host(ip) AS ip, user_agent, kind FROM clicks")
    assert row["message_id"] is not None
    assert (row["ip"], row["user_agent"], row["kind"]) == ("127.0.0.0", "Test/1", "human")


async def test_consent_is_read_at_the_moment_of_the_click(pool, tracker, http, sent):
    link = sent["yes@example.com"][0]
    me = await recipient_id(pool, "yes@example.com")
    async with pool.acquire() as conn:
        await change_choices(conn, me, tracking_consent=False, source="test")
    assert (await click(http, link))[0] == 302
    async with pool.acquire() as conn:
        await change_choices(conn, me, tracking_consent=True, source="test")
    assert (await click(http, link))[0] == 302
    async with pool.acquire() as conn:
        await change_choices(conn, me, subscribed=False, source="test")
    assert (await click(http, link))[0] == 302
    rows = await pool.fetch(
        "SELECT message_id IS NOT NULL AS named, ip FROM clicks ORDER BY clicked_at"
    )
    assert [r["named"] for r in rows] == [False, True, False]
    assert rows[0]["ip"] is None and rows[2]["ip"] is None


async def test_no_consent_means_link_and_time_only(pool, tracker, http, sent):
    for link in sent["no@example.com"]:
        assert (await click(http, link, **{"User-Agent": "Secret/1"}))[0] == 302
    rows = await pool.fetch("SELECT message_id, ip, user_agent FROM clicks")
    assert len(rows) == 2
    assert all(tuple(r.values()) == (None, None, None) for r in rows)


async def test_erasure_keeps_links_working_and_counts_anonymous(pool, tracker, http, sent):
    link = sent["yes@example.com"][0]
    await click(http, link)
    async with pool.acquire() as conn:
        before = await campaign_report(conn, "c")
        assert await erase(conn, "yes@example.com")
        after = await campaign_report(conn, "c")
    assert before["clicks"]["identified"] == 1 and after["clicks"]["identified"] == 0
    assert after["clicks"]["total"] == before["clicks"]["total"] == 1
    assert after["clicks"]["anonymous"] == 1 and after["sent"] == before["sent"]
    assert await click(http, link) == (302, "https://example.com/a")
    assert await pool.fetchval("SELECT count(*) FROM clicks WHERE message_id IS NOT NULL") == 0
    for table in ("recipients", "consent_events"):
        found = await pool.fetchval(
            f"SELECT count(*) FROM {table} t WHERE t::text LIKE '%yes@example.com%'"
        )
        assert found == 0, table
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE recipient_id IS NULL") == 1


async def test_schema_refuses_an_anonymous_click_with_personal_data(pool, sent):
    link_id = await pool.fetchval("SELECT min(id) FROM links")
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO clicks (link_id, message_id, ip) VALUES ($1, NULL, '10.0.0.0')", link_id
        )


async def test_head_requests_count_as_bots(pool, tracker, http, sent):
    assert (await click(http, sent["yes@example.com"][0], method="HEAD"))[0] == 302
    async with pool.acquire() as conn:
        report = await campaign_report(conn, "c")
    assert report["clicks"]["bot"] == 1 and report["clicks"]["total"] == 0


async def test_location_is_percent_encoded(tracker, http, sent):
    status, location = await click(http, sent["yes@example.com"][1])
    assert status == 302 and location == "https://example.com/%C3%BC?q=1%202"


IDN_LINKS = {  # as written in the template -> as it must come back in Location
    "https://例え.jp/パス?q=値#top": "https://xn--r8jz45g.jp/%E3%83%91%E3%82%B9?q=%E5%80%A4#top",
    # IDNA 2008 keeps ß (Python's IDNA 2003 codec would send the reader to fass.de).
    "https://faß.de/": "https://xn--fa-hia.de/",
    "https://user:pw@Bücher.example:8443/a%20b?x=%C3%BC&y=ü": (
        "https://user:pw@xn--bcher-kva.example:8443/a%20b?x=%C3%BC&y=%C3%BC"
    ),
    "https://&#20363;&#12360;.jp/": "https://xn--r8jz45g.jp/",  # a character reference
    "http://[::1]:8080/ü": "http://[::1]:8080/%C3%BC",
}


async def test_an_internationalised_host_comes_back_in_idna(
    pool, tracker, http, mailbox, add_recipients, make_campaign, deliver
):
    """RFC 3986 §3.2.2: hosts in IDNA; path and query percent-encoded once, as UTF-8."""
    await add_recipients("email,tracking_consent\nyes@example.com,yes\n")
    await make_campaign("".join(f'<a href="{url}">x</a>' for url in IDN_LINKS))
    await deliver("c")
    (message,) = mailbox.messages()
    links = tracked_links(message.get_body(("html",)).get_content())
    locations = [(await click(http, link))[1] for link in links]
    assert locations == list(IDN_LINKS.values())


async def test_a_host_with_no_idna_form_is_refused_before_sending_and_never_fails_a_click(
    pool, settings, tracker, http, sent, make_campaign, deliver
):
    with pytest.raises(TemplateProblem) as refused:
        await make_campaign('<a href="https://☃.net/snow">snow</a>', name="snow")
    assert "snow.html: the link https://☃.net/snow cannot be followed" in str(refused.value)
    assert "for 2 recipient(s)" in str(refused.value)
    assert await pool.fetchval("SELECT count(*) FROM campaigns WHERE name = 'snow'") == 0
    # A per-recipient host is only known when rendering for each: `send` checks it then.
    await make_campaign('<a href="https://{{ recipient.name }}.example/">you</a>', name="you")
    await pool.execute("UPDATE recipients SET name = '☃' WHERE email = 'no@example.com'")
    with pytest.raises(TemplateProblem, match=r"for 1 recipient\(s\): no@example\.com"):
        await deliver("you")
    you = await pool.fetchval("SELECT id FROM campaigns WHERE name = 'you'")
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE campaign_id = $1", you) == 0
    # A link stored before hosts were checked still redirects, as it always did.
    link = sent["yes@example.com"][0]
    await pool.execute("UPDATE links SET url = 'https://☃.net/snow' WHERE url LIKE '%/a'")
    assert await click(http, link) == (302, "https://%E2%98%83.net/snow")


async def test_a_signed_token_across_campaigns_does_not_redirect(
    pool, settings, tracker, http, sent
):
    """Even a genuinely signed (message, link) pair must belong to one campaign."""
    async with pool.acquire() as conn:
        campaign = await conn.fetchval("SELECT campaign_id FROM links LIMIT 1")
        other = await conn.fetchval(
            "INSERT INTO campaigns (name, subject_template, from_address, html_template,"
            " html_filename) VALUES ('other', 's', 'n@example.com', 'x', 'x') RETURNING id"
        )
        foreign_link = await conn.fetchval(
            "INSERT INTO links (campaign_id, url) VALUES ($1, 'https://evil.example/')"
            " RETURNING id",
            other,
        )
        message = await conn.fetchval("SELECT min(id) FROM outbox WHERE campaign_id = $1", campaign)
    token = Tokens(settings.secret_keys).click.encode(message, foreign_link)
    assert await click(http, f"{settings.base_url}/c/{token}") == (404, None)
    assert await pool.fetchval("SELECT count(*) FROM clicks") == 0


def mutations(token: str) -> list[str]:
    body, _, tag = token.partition(".")
    return [
        token[:-1],
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        ("x" if token[0] != "x" else "y") + token[1:],
        body,
        "." + tag,
        token + "A",
        token.upper(),
        body + "." + tag[::-1],
        "",
    ]


async def test_tampered_tokens_never_redirect(pool, settings, tracker, http, sent):
    for token_url in sent["yes@example.com"]:
        base, _, token = token_url.rpartition("/")
        for bad in mutations(token):
            if bad == token:
                continue
            assert (await click(http, f"{base}/{bad}"))[0] == 404, bad
    forged = TokenCodec("click", [b"another-key-that-is-long-enough"], 2).encode(1, 1)
    assert await click(http, f"{settings.base_url}/c/{forged}") == (404, None)
    assert await pool.fetchval("SELECT count(*) FROM clicks") == 0


@hsettings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60) | st.from_regex(r"\A[A-Za-z0-9]{6,12}\.[A-Za-z0-9_-]{16}\Z"))
def test_invented_tokens_do_not_decode(token):
    codec = Tokens([b"test-secret-key-0123456789abcdef"]).click
    assert codec.decode(token) is None


@given(st.integers(1, 2**40), st.integers(1, 2**40))
def test_tokens_round_trip_and_survive_key_rotation(message_id, link_id):
    old, new = b"old-key-0123456789abcdef", b"new-key-0123456789abcdef"
    token = Tokens([old]).click.encode(message_id, link_id)
    assert Tokens([new, old]).click.decode(token) == (message_id, link_id)
    assert Tokens([new]).click.decode(token) is None
    # A token for one purpose is worthless for another.
    assert Tokens([old]).preferences.decode(token) is None


@given(st.binary(min_size=1, max_size=200), st.text(max_size=40))
def test_token_tags_are_hmac_sha256_of_purpose_and_body(key, body):
    """Tokens already in sent mail keep verifying: the tag is still HMAC-SHA256, cut to 96 bits."""
    codec = Tokens([key]).click
    expected = hmac.new(key, b"click:" + body.encode(), hashlib.sha256).digest()[:TAG_BYTES]
    tag = codec._tag(codec._keyed[0], body)
    assert tag == base64.urlsafe_b64encode(expected)
