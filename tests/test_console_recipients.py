"""The console's recipient lookups (console/recipients.py), shared by the pages and the API."""

from __future__ import annotations

import pytest
from helpers import tracked_links

from console.recipients import recipient_detail, search_recipients
from tracker.consent import change_choices
from tracker.errors import FairclickError

PEOPLE = (
    "email,name,format,tracking_consent,city\n"
    "ann@example.com,Ann,html,yes,Oslo\n"
    "joann@example.org,Jo Ann,html,no,Bergen\n"
    "bob@example.com,Bob,text,no,Lima\n"
    "100%_sure@example.net,Percent,html,no,Rome\n"
)


async def test_search_by_prefix_or_substring_prefix_first(pool, add_recipients):
    await add_recipients(PEOPLE)
    async with pool.acquire() as conn:
        found = await search_recipients(conn, "ANN")
        assert [r["email"] for r in found["recipients"]] == ["ann@example.com", "joann@example.org"]
        assert found["total"] == 2
        # LIKE's wildcards are looked for as themselves.
        assert [r["email"] for r in (await search_recipients(conn, "%_"))["recipients"]] == [
            "100%_sure@example.net"
        ]
        assert (await search_recipients(conn, "_"))["total"] == 1
        everyone = await search_recipients(conn, "", limit=3, offset=3)
        assert everyone["total"] == 4 and len(everyone["recipients"]) == 1
        assert (await search_recipients(conn, "ann", offset=50)) == {"recipients": [], "total": 2}
        for bad in ({"limit": 0}, {"limit": 10_000}, {"offset": -1}):
            with pytest.raises(FairclickError):
                await search_recipients(conn, "a", **bad)
        with pytest.raises(FairclickError, match="at most 254"):
            await search_recipients(conn, "a" * 255)


async def test_one_person_shows_choices_history_messages_and_consented_clicks_only(
    pool, add_recipients, make_campaign, deliver, mailbox, tracker, http
):
    await add_recipients(PEOPLE)
    await make_campaign('<p><a href="https://example.com/x" data-fairclick-name="x">x</a></p>')
    await deliver("c")
    ann = await pool.fetchval("SELECT id FROM recipients WHERE email = 'ann@example.com'")
    jo = await pool.fetchval("SELECT id FROM recipients WHERE email = 'joann@example.org'")
    for address in ("ann@example.com", "joann@example.org"):
        html = mailbox.for_address(address)[0].get_body(("html",)).get_content()
        for link in tracked_links(html):
            async with http.get(link, allow_redirects=False) as response:
                assert response.status == 302
    async with pool.acquire() as conn:
        await change_choices(conn, ann, format="text", source="test")
        detail = await recipient_detail(conn, ann)
        other = await recipient_detail(conn, jo)
        assert await recipient_detail(conn, 999_999) is None
    assert detail["email"] == "ann@example.com" and detail["attributes"] == {"city": "Oslo"}
    assert (detail["format"], detail["tracking_consent"], detail["subscribed"]) == (
        "text", True, True,
    )  # fmt: skip
    assert [(e["kind"], e["value"]) for e in detail["consent_events"]][-1] == ("format", "text")
    assert [(m["campaign"], m["status"]) for m in detail["messages"]] == [("c", "sent")]
    assert [(c["campaign"], c["link_name"], c["url"]) for c in detail["clicks"]] == [
        ("c", "x", "https://example.com/x")
    ]
    assert detail["click_count"] == 1
    # Jo clicked too, without consent: the click is anonymous and names nobody.
    assert other["clicks"] == [] and other["click_count"] == 0
    assert len(other["messages"]) == 1
