"""Links made from a recipient's data belong to their message (issue 9, item 5).

A template link whose href or data-fairclick-name reads the recipient (their address in a
query, their homepage as the href, their city as the name, a loop) renders differently for
each person. Reports count it under what the template wrote; the click still leads where the
person's own message pointed; erasure removes the rendered URL with the person, from every
column of every table. Real mail, real clicks over HTTP, real PostgreSQL, the real CLI.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from urllib.parse import quote, quote_plus

import pytest
from conftest import TEST_KEY
from helpers import tracked_links
from mailed_links import mailed_link

from mailer.preview import preview_message
from tracker.reports import as_csv, as_json, as_table, campaign_report

PEOPLE = (
    "email,name,format,tracking_consent,city,homepage\n"
    "ann.quux@example.com,Annabelle Quux,html,yes,Zanzibarville,https://annabelle-home.example/me\n"
    "bob.zork@example.com,Bobby Zork,html,no,Quetzaltown,https://bobby-home.example/pages/bz\n"
)
ANN, BOB = "ann.quux@example.com", "bob.zork@example.com"
# What the CSV says about each, as the erasure scan looks for it.
PERSONAL = {
    ANN: (ANN, "Annabelle Quux", "Zanzibarville", "annabelle-home.example/me"),
    BOB: (BOB, "Bobby Zork", "Quetzaltown", "bobby-home.example/pages/bz"),
}
WHO = "https://shop.example/?who={{ recipient.email|urlencode }}"
HOME = "{{ recipient.attributes.homepage }}"
GREETING = "https://shop.example/hello?n={{ recipient.name|urlencode }}"
LOOPED = "https://shop.example/p/{{ n }}?who={{ recipient.email|urlencode }}"
CITY = "{{ recipient.attributes.city }}"
HTML = (
    "<p>Hello {{ recipient.name }}</p>\n"
    f'<a href="{WHO}">shop</a>\n'
    '<a href="https://shop.example/sale?c={{ campaign.name|urlencode }}">sale</a>\n'
    f'<a href="https://shop.example/city" data-fairclick-name="{CITY}">your city</a>\n'
    f'<a href="{HOME}">your page</a>\n'
    f'<a href="{GREETING}">hello</a>\n'
    f'{{% for n in range(2) %}}<a href="{LOOPED}">product {{{{ n }}}}</a>{{% endfor %}}\n'
    '<a href="https://shop.example/fixed">fixed</a>\n'
    '<a href="{{ preferences_url }}">preferences</a>\n'
)
TEXT = f"Hello {{{{ recipient.name }}}}\nShop: {WHO}\nYour page: {HOME}\n"
# The order of tracked_links() in each HTML part.
LINKS = ("who", "sale", "city", "home", "greeting", "p0", "p1", "fixed")


def rendered(email: str) -> dict[str, str]:
    """Where each of the person's links leads (their rendered hrefs)."""
    homepage = {
        ANN: "https://annabelle-home.example/me",
        BOB: "https://bobby-home.example/pages/bz",
    }
    name = PERSONAL[email][1]
    return {
        "who": f"https://shop.example/?who={quote(email, safe='')}",
        "sale": "https://shop.example/sale?c=spring",
        "city": "https://shop.example/city",
        "home": homepage[email],
        "greeting": f"https://shop.example/hello?n={quote(name, safe='')}",
        "p0": f"https://shop.example/p/0?who={quote(email, safe='')}",
        "p1": f"https://shop.example/p/1?who={quote(email, safe='')}",
        "fixed": "https://shop.example/fixed",
    }


def forms(value: str) -> set[str]:
    """value as a database, a URL or an HTML page may hold it."""
    return {value, quote(value, safe=""), quote_plus(value), quote(value), html.escape(value)}


@pytest.fixture
async def mail(pool, mailbox, add_recipients, make_campaign, deliver, tracker):
    """{email: {link: tracked URL}} of the HTML part, and {email: text part}, once sent."""
    await add_recipients(PEOPLE)
    await make_campaign(HTML, name="spring", text=TEXT)
    await deliver("spring")
    links, texts = {}, {}
    for message in mailbox.messages():
        email = message["To"].addresses[0].addr_spec
        found = tracked_links(message.get_body(("html",)).get_content())
        assert len(found) == len(LINKS), found
        links[email] = dict(zip(LINKS, found, strict=True))
        texts[email] = message.get_body(("plain",)).get_content()
    assert set(links) == {ANN, BOB}
    return links, texts


async def follow(http, url: str) -> tuple[int, str | None]:
    async with http.get(url, allow_redirects=False) as resp:
        return resp.status, resp.headers.get("Location")


async def report_forms(pool) -> dict[str, str]:
    async with pool.acquire() as conn:
        report = await campaign_report(conn, "spring")
    return {"json": as_json(report), "csv": as_csv(report), "table": as_table(report)}


async def every_text_column(pool) -> list[tuple[str, str]]:
    return [
        (r["table_name"], r["column_name"])
        for r in await pool.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema()"
            " AND data_type IN ('text', 'character varying', 'character', 'jsonb', 'json')"
            " ORDER BY 1, 2"
        )
    ]


async def mentions(pool, values) -> list[str]:
    """Where in the database any form of any value is found: 'table.column: value'."""
    found = []
    needles = sorted({form.lower() for value in values for form in forms(value)})
    for table, column in await every_text_column(pool):
        hits = await pool.fetch(
            f'SELECT DISTINCT n FROM "{table}" t, unnest($1::text[]) AS n'
            f' WHERE strpos(lower(t."{column}"::text), n) > 0',
            needles,
        )
        found += [f"{table}.{column}: {h['n']}" for h in hits]
    return found


def fairclick(db_url, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRCLICK_")}
    env |= {
        "FAIRCLICK_DATABASE_URL": db_url,
        "FAIRCLICK_DATA_DIR": str(tmp_path / "cli-data"),
        "FAIRCLICK_SECRET_KEY": TEST_KEY.decode(),
    }
    return subprocess.run(
        [sys.executable, "-m", "fairclick.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_a_click_leads_where_the_persons_own_message_pointed(mail, http):
    links, texts = mail
    for email in (ANN, BOB):
        assert {k: (await follow(http, u)) for k, u in links[email].items()} == {
            k: (302, target) for k, target in rendered(email).items()
        }
    # Ann consented: her text part is tracked too, and leads to her URLs.
    ann_text = texts[ANN]
    assert "ann.quux" not in ann_text and "annabelle-home" not in ann_text
    text_links = [w for w in ann_text.split() if "/c/" in w]
    assert [(await follow(http, u)) for u in text_links] == [
        (302, rendered(ANN)["who"]),
        (302, rendered(ANN)["home"]),
    ]
    # Bob did not: his text part has his links as they are, untracked.
    assert rendered(BOB)["who"] in texts[BOB] and "/c/" not in texts[BOB]


async def test_the_report_counts_a_templated_link_once_as_the_template_wrote_it(mail, http, pool):
    links, _ = mail
    for email in (ANN, BOB):
        for link in ("who", "city", "home", "greeting", "p0", "p1"):
            assert (await follow(http, links[email][link]))[0] == 302
    async with pool.acquire() as conn:
        report = await campaign_report(conn, "spring")
    rows = {(r["url"], r["name"]): r for r in report["links"]}
    assert list(rows) == [
        (WHO, ""),
        ("https://shop.example/sale?c=spring", ""),  # the same for everyone: as today
        ("https://shop.example/city", CITY),
        (HOME, ""),
        (GREETING, ""),
        (LOOPED, ""),
        ("https://shop.example/fixed", ""),
    ]
    counts = {key: (r["total"], r["identified"], r["anonymous"]) for key, r in rows.items()}
    # Ann's clicks are hers (she consented), Bob's anonymous, on one row per template link;
    # the loop's two links per message count on one row too.
    for key in [(WHO, ""), ("https://shop.example/city", CITY), (HOME, ""), (GREETING, "")]:
        assert counts[key] == (2, 1, 1), key
    assert counts[(LOOPED, "")] == (4, 2, 2)
    assert (
        rows[(WHO, "")]["per_recipient"]
        and not rows[("https://shop.example/fixed", "")]["per_recipient"]
    )
    printed = await report_forms(pool)
    for shape, text in printed.items():
        for value in (*PERSONAL[ANN], *PERSONAL[BOB]):
            for form in forms(value):
                assert form not in text, (shape, form)
        assert "{{ recipient.email|urlencode }}" in text, shape


async def test_erasure_leaves_no_trace_in_any_column_and_old_links_still_lead_somewhere(
    mail, http, pool, settings, db_url, tmp_path, mailbox
):
    links, _ = mail
    for email in (ANN, BOB):
        for link in LINKS:
            assert (await follow(http, links[email][link]))[0] == 302
    assert await mentions(pool, PERSONAL[ANN])  # what is held before
    assert await mentions(pool, PERSONAL[BOB])
    async with pool.acquire() as conn:
        before = await campaign_report(conn, "spring")

    erased = fairclick(db_url, tmp_path, "erase", ANN)
    assert erased.returncode == 0, erased.stderr
    bob_id = await pool.fetchval("SELECT id FROM recipients WHERE email = $1", BOB)
    link = await mailed_link(http, pool, settings, mailbox, bob_id, "erase")  # from his page
    async with http.post(
        link,
        data={"confirm": "yes"},
        headers={"Origin": settings.base_url},
    ) as resp:
        assert resp.status == 200
        assert "Your data is erased" in await resp.text()

    assert await pool.fetchval("SELECT count(*) FROM recipients") == 0
    assert await mentions(pool, (*PERSONAL[ANN], *PERSONAL[BOB])) == []
    assert await pool.fetchval("SELECT count(*) FROM message_links") == 0
    async with pool.acquire() as conn:
        after = await campaign_report(conn, "spring")
    assert after["clicks"]["total"] == before["clicks"]["total"]
    assert [r["total"] for r in after["links"]] == [r["total"] for r in before["links"]]

    # Old links keep working, anonymously: a link that was the person's leads to the site the
    # template wrote, or (its host was the person's) to a page saying it is gone.
    clicks = await pool.fetchval("SELECT count(*) FROM clicks")
    erased_targets = {
        "who": (302, "https://shop.example/"),
        "home": (410, None),
        "greeting": (302, "https://shop.example/"),
        "p0": (302, "https://shop.example/"),
        "p1": (302, "https://shop.example/"),
    }
    for email in (ANN, BOB):
        expected = {k: erased_targets.get(k, (302, v)) for k, v in rendered(email).items()}
        assert {k: (await follow(http, u)) for k, u in links[email].items()} == expected
    async with http.get(links[ANN]["home"]) as resp:
        assert "no longer available" in await resp.text()
    assert await pool.fetchval("SELECT count(*) FROM clicks") == clicks + 2 * len(LINKS) + 1
    assert await pool.fetchval("SELECT count(*) FROM clicks WHERE message_id IS NOT NULL") == 0
    assert await mentions(pool, (*PERSONAL[ANN], *PERSONAL[BOB])) == []
    for shape, text in (await report_forms(pool)).items():
        for value in (*PERSONAL[ANN], *PERSONAL[BOB]):
            assert not any(form in text for form in forms(value)), shape


async def test_the_download_holds_the_links_made_for_the_person(
    mail, http, pool, settings, mailbox
):
    links, _ = mail
    assert (await follow(http, links[ANN]["who"]))[0] == 302
    ann_id = await pool.fetchval("SELECT id FROM recipients WHERE email = $1", ANN)
    link = await mailed_link(http, pool, settings, mailbox, ann_id, "download")  # from her page
    async with http.post(link, headers={"Origin": settings.base_url}) as resp:
        assert resp.status == 200
        data = json.loads(await resp.read())
    made = {
        (made["as_written_in_the_template"], made["url"]) for made in data["links_made_for_you"]
    }
    mine = rendered(ANN)
    assert made == {
        (WHO, mine["who"]),
        (HOME, mine["home"]),
        (GREETING, mine["greeting"]),
        (LOOPED, mine["p0"]),
        (LOOPED, mine["p1"]),
    }
    assert [(c["url"], c["link_name"]) for c in data["clicks"]] == [(mine["who"], "")]
    assert "bob" not in json.dumps(data).lower()


async def test_preview_of_templated_links_stores_nothing(
    pool, settings, mailbox, add_recipients, make_campaign, deliver
):
    await add_recipients(PEOPLE)
    await make_campaign(HTML, name="spring", text=TEXT)
    everything = (
        "SELECT (SELECT count(*) FROM links), (SELECT count(*) FROM message_links),"
        " (SELECT count(*) FROM outbox)"
    )
    for _ in range(2):  # before any message, and once links are stored
        before = tuple(await pool.fetchrow(everything))
        async with pool.acquire() as conn:
            preview = await preview_message(conn, settings, "spring", ANN)
        assert tuple(await pool.fetchrow(everything)) == before
        html_part = preview.message.get_body(("html",)).get_content()
        assert html_part.count(f'href="{settings.base_url}/c/') == len(LINKS) + 1  # + honeypot
        await deliver("spring")
    assert await pool.fetchval("SELECT count(*) FROM message_links") > 0


async def test_a_text_part_made_from_the_html_follows_the_same_rule(
    pool, mailbox, add_recipients, make_campaign, deliver, tracker, http
):
    """Without a text template the text part is generated from the HTML: its tracked links
    are the HTML's, so they lead to the person's own URLs and are counted on the same rows."""
    await add_recipients(PEOPLE)
    await make_campaign(HTML, name="spring")
    await deliver("spring")
    (message,) = mailbox.for_address(ANN)
    text = message.get_body(("plain",)).get_content()
    assert "ann.quux" not in text and "annabelle-home" not in text
    clicks = re.findall(r"http://127\.0\.0\.1:\d+/c/[\w.-]+", text)
    targets = [(await follow(http, link)) for link in clicks]
    assert targets == [(302, url) for url in rendered(ANN).values()]
    assert await pool.fetchval("SELECT count(*) FROM links WHERE url ~ 'ann|annabelle'") == 0


async def test_text_and_html_parts_rendering_one_written_link_differently_keep_apart(
    pool, mailbox, add_recipients, make_campaign, deliver, tracker, http
):
    """The same written link in both templates, looped over other values in each: every
    tracked link still leads to what its own part showed."""
    looped = '<a href="https://s.example/p/{{ n }}?w={{ recipient.email|urlencode }}">p</a>'
    await add_recipients(PEOPLE)
    await make_campaign(
        "{% for n in range(2) %}" + looped + "{% endfor %}",
        name="spring",
        text="{% for n in [7] %}https://s.example/p/{{ n }}?w={{ recipient.email|urlencode }}\n"
        "{% endfor %}",
    )
    await deliver("spring")
    (message,) = mailbox.for_address(ANN)
    who = quote(ANN, safe="")
    html_links = tracked_links(message.get_body(("html",)).get_content())
    text_links = re.findall(
        r"http://127\.0\.0\.1:\d+/c/[\w.-]+", message.get_body(("plain",)).get_content()
    )
    assert [(await follow(http, link)) for link in html_links + text_links] == [
        (302, f"https://s.example/p/{n}?w={who}") for n in (0, 1, 7)
    ]
    async with pool.acquire() as conn:
        (row,) = (await campaign_report(conn, "spring"))["links"]
    assert row["url"] == "https://s.example/p/{{ n }}?w={{ recipient.email|urlencode }}"
    assert row["total"] == 3
