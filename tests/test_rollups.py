"""Report rollups stay exact: after every kind of writer, each number the reports give (report,
series, list) equals a full recount of the clicks, opens and outbox rows by plain GROUP BYs."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from mailer.campaigns import set_status
from mailer.queries import SQL as MAILER_SQL
from tracker import schema
from tracker.consent import change_choices, erase
from tracker.errors import BadArgument
from tracker.partitions import ensure_partitions, month_start
from tracker.queries import SQL
from tracker.recorder import Click, Open, Recorder, _to_spool_row, write_events
from tracker.reports import campaign_failures, campaign_list, campaign_report, campaign_series
from tracker.retention import apply_retention
from tracker.rollups import rebuild_rollups
from tracker.spool import Spool

# The recount: plain GROUP BYs over the rows themselves, written apart from the reports' SQL.
RECOUNT_MESSAGES = """
SELECT count(*) AS queued,
       count(*) FILTER (WHERE status = 'sent') AS sent,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status IN ('queued', 'sending', 'deferred')) AS pending,
       count(*) FILTER (WHERE status = 'unknown') AS unknown,
       count(*) FILTER (WHERE status = 'skipped') AS skipped,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE status = 'sent' AND format = 'html') AS html,
       count(*) FILTER (WHERE status = 'sent' AND format = 'text') AS text,
       count(*) FILTER (WHERE status <> 'skipped' AND audience = 'html_consent') AS html_consent,
       count(*) FILTER (WHERE status <> 'skipped' AND (audience = 'html_no_consent'
                        OR audience IS NULL AND format IS DISTINCT FROM 'text')) AS html_no_consent,
       count(*) FILTER (WHERE status <> 'skipped' AND (audience = 'text'
                        OR audience IS NULL AND format = 'text')) AS text_audience,
       count(*) FILTER (WHERE status = 'sent' AND format = 'html' AND audience = 'html_consent')
           AS consenting_delivered
FROM outbox WHERE campaign_id = $1
"""
RECOUNT_LINKS = """
SELECT min(l.id) OVER (PARTITION BY l.url, l.name, l.purpose, l.per_message) AS first,
       l.id, l.url, l.name, l.purpose, l.per_message
FROM links l WHERE l.campaign_id = $1
"""
RECOUNT_CLICKS = """
SELECT c.link_id, c.kind, c.message_id, m.recipient_id, c.bot_reason
FROM clicks c JOIN links l ON l.id = c.link_id LEFT JOIN outbox m ON m.id = c.message_id
WHERE l.campaign_id = $1
"""
RECOUNT_HOURS = """
SELECT date_trunc('hour', c.clicked_at AT TIME ZONE 'UTC') AS at,
       count(*) FILTER (WHERE c.kind = 'human') AS clicks_human,
       count(*) FILTER (WHERE c.kind = 'bot') AS clicks_bot,
       count(*) FILTER (WHERE c.kind = 'human' AND c.message_id IS NOT NULL) AS identified,
       count(*) FILTER (WHERE c.kind = 'human' AND c.message_id IS NULL) AS anonymous
FROM clicks c JOIN links l ON l.id = c.link_id WHERE l.campaign_id = $1 GROUP BY 1
"""
RECOUNT_OPEN_HOURS = """
SELECT date_trunc('hour', opened_at AT TIME ZONE 'UTC') AS at,
       count(*) FILTER (WHERE kind = 'human') AS opens_human,
       count(*) FILTER (WHERE kind = 'bot') AS opens_bot
FROM opens WHERE campaign_id = $1 GROUP BY 1
"""
RECOUNT_OPENS = """
SELECT count(*) FILTER (WHERE o.kind = 'human') AS total,
       count(DISTINCT m.recipient_id) FILTER (WHERE o.kind = 'human') AS "unique",
       count(*) FILTER (WHERE o.kind = 'human' AND o.message_id IS NOT NULL) AS identified,
       count(*) FILTER (WHERE o.kind = 'human' AND o.message_id IS NULL) AS anonymous,
       count(*) FILTER (WHERE o.kind = 'bot') AS bot
FROM opens o LEFT JOIN outbox m ON m.id = o.message_id WHERE o.campaign_id = $1
"""
SERIES_KEYS = ("clicks_human", "clicks_bot", "identified", "anonymous", "opens_human", "opens_bot")


def rate(numerator, denominator):
    return {
        "value": numerator / denominator if denominator else None,
        "numerator": numerator,
        "denominator": denominator,
    }


async def recount(conn: asyncpg.Connection, campaign_id: int) -> dict:
    """The report's numbers, counted from scratch."""
    m = await conn.fetchrow(RECOUNT_MESSAGES, campaign_id)
    links = await conn.fetch(RECOUNT_LINKS, campaign_id)
    group = {r["id"]: r["first"] for r in links}
    per_group = {
        r["id"]: {"total": 0, "unique": set(), "identified": 0, "anonymous": 0, "bot": 0}
        for r in links
        if r["id"] == r["first"]
    }
    reasons: dict[str, int] = {}
    clickers = set()
    for c in await conn.fetch(RECOUNT_CLICKS, campaign_id):
        g = per_group[group[c["link_id"]]]
        if c["kind"] == "bot":
            g["bot"] += 1
            reason = c["bot_reason"] or "not recorded"
            reasons[reason] = reasons.get(reason, 0) + 1
            continue
        g["total"] += 1
        if c["message_id"] is None:
            g["anonymous"] += 1
        else:
            g["identified"] += 1
            g["unique"].add(c["recipient_id"])
            clickers.add(c["recipient_id"])
    for g in per_group.values():
        g["unique"] = len(g["unique"])
    human = sum(g["total"] for g in per_group.values())
    bot = sum(g["bot"] for g in per_group.values())
    return {
        **{k: m[k] for k in ("queued", "sent", "failed", "pending", "unknown", "skipped")},
        "cancelled": m["cancelled"],
        "recipients": {"html": m["html"], "text": m["text"]},
        "audience": {
            "html_consent": m["html_consent"],
            "html_no_consent": m["html_no_consent"],
            "text": m["text_audience"],
            "skipped": m["skipped"],
        },
        "clicks": {
            "total": human,
            "unique": len(clickers),
            "identified": sum(g["identified"] for g in per_group.values()),
            "anonymous": sum(g["anonymous"] for g in per_group.values()),
            "bot": bot,
        },
        "bot_reasons": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "opens": dict(await conn.fetchrow(RECOUNT_OPENS, campaign_id)),
        "rates": {
            "human_clicks_per_delivered_html": rate(human, m["html"]),
            "unique_clickers_among_consenting": rate(len(clickers), m["consenting_delivered"]),
            "bot_share": rate(bot, human + bot),
        },
        "links": [
            {
                "url": r["url"],
                "name": r["name"],
                "per_recipient": r["per_message"],
                **per_group[r["id"]],
            }
            for r in sorted(links, key=lambda r: r["id"])
            if r["id"] == r["first"] and r["purpose"] == "content"
        ],
    }


async def recount_hours(conn, campaign_id) -> dict[datetime, dict]:
    hours: dict[datetime, dict] = {}
    for query in (RECOUNT_HOURS, RECOUNT_OPEN_HOURS):
        for r in await conn.fetch(query, campaign_id):
            at = r["at"].replace(tzinfo=UTC)
            hours.setdefault(at, dict.fromkeys(SERIES_KEYS, 0)).update(
                {k: v for k, v in r.items() if k != "at"}
            )
    return hours


async def check(pool, name: str = "c") -> dict:
    """Every rollup-based number equals the recount; returns the report."""
    async with pool.acquire() as conn:
        campaign_id = await conn.fetchval("SELECT id FROM campaigns WHERE name = $1", name)
        expected = await recount(conn, campaign_id)
        report = await campaign_report(conn, name)
        assert {k: report[k] for k in expected} == expected
        hours = await recount_hours(conn, campaign_id)
        nonzero = {at: v for at, v in hours.items() if any(v.values())}
        if nonzero:
            first, last = min(nonzero), max(nonzero)
            series = await campaign_series(conn, name, bucket="hour", start=first, end=last)
            assert len(series) == (last - first) / timedelta(hours=1) + 1
            got = {
                datetime.fromisoformat(b["at"]): {k: b[k] for k in SERIES_KEYS}
                for b in series
                if any(b[k] for k in SERIES_KEYS)
            }
            assert got == nonzero
            days: dict[datetime, dict] = {}
            for at, v in nonzero.items():
                day = days.setdefault(at.replace(hour=0), dict.fromkeys(SERIES_KEYS, 0))
                for k in SERIES_KEYS:
                    day[k] += v[k]
            daily = await campaign_series(conn, name, bucket="day", start=first, end=last)
            assert {
                datetime.fromisoformat(b["at"]): {k: b[k] for k in SERIES_KEYS}
                for b in daily
                if any(b[k] for k in SERIES_KEYS)
            } == days
        listed = {c["name"]: c for c in (await campaign_list(conn))["campaigns"]}[name]
        assert listed["clicks"] == {
            "human": expected["clicks"]["total"],
            "unique": expected["clicks"]["unique"],
            "bot": expected["clicks"]["bot"],
        }
        assert {k: listed[k] for k in ("queued", "sent", "failed", "unknown", "pending")} == {
            k: expected[k] for k in ("queued", "sent", "failed", "unknown", "pending")
        }
        assert listed["recipients"] == expected["recipients"]
        assert listed["rates"] == expected["rates"]
        return report


TEMPLATE = """<html><body>
<a href="https://example.com/a">a</a>
<a href="https://example.com/b" data-fairclick-name="b">b</a>
{% for i in range(2) %}<a href="https://example.com/p?who={{ recipient.email|urlencode }}">p</a>
{% endfor %}</body></html>"""

PEOPLE = "email,format,tracking_consent\n" + "".join(
    f"p{i}@example.com,{'text' if i % 5 == 4 else 'html'},{'yes' if i % 3 else 'no'}\n"
    for i in range(12)
)
# Clicks to come (consent is checked against the consent events, all from now): 4 months.
MONTHS = [month_start(datetime.now(UTC).date(), i) for i in range(1, 5)]
LATER = MONTHS[-1] + timedelta(days=14)  # "today" for retention


@pytest.fixture
async def campaign(pool, mailbox, add_recipients, make_campaign, deliver):
    await add_recipients(PEOPLE)
    await make_campaign(TEMPLATE)
    await deliver("c")
    async with pool.acquire() as conn:
        await ensure_partitions(conn, today=MONTHS[0], months_ahead=len(MONTHS) - 1)
        messages = [r["id"] for r in await conn.fetch("SELECT id FROM outbox ORDER BY id")]
        links = [r["id"] for r in await conn.fetch("SELECT id FROM links ORDER BY id")]
    return messages, links


def random_clicks(rng: random.Random, messages, links, n: int) -> list[Click]:
    clicks = []
    for _ in range(n):
        month = rng.choice(MONTHS)
        at = datetime(month.year, month.month, rng.randint(1, 28), rng.randint(0, 23),
                      rng.randint(0, 59), tzinfo=UTC)  # fmt: skip
        bot = rng.random() < 0.3
        reason = rng.choice(["HEAD request", "honeypot link", None]) if bot else None
        clicks.append(Click(rng.choice(messages), rng.choice(links), at,
                            "bot" if bot else "human", reason, "192.0.2.1", "UA"))  # fmt: skip
    return clicks


def random_opens(rng: random.Random, messages, n: int) -> list[Open]:
    return [
        Open(
            rng.choice(messages),
            datetime(
                *rng.choice(MONTHS[:3]).timetuple()[:2],
                rng.randint(1, 28),
                rng.randint(0, 23),
                tzinfo=UTC,
            ),
            rng.choice(["human", "human", "bot"]),
            None,
            "192.0.2.1",
            "UA",
        )
        for _ in range(n)
    ]


async def test_rollups_equal_a_recount_after_every_writer(pool, campaign, tmp_path):
    messages, links = campaign
    rng = random.Random(10)
    await check(pool)  # delivered, nothing clicked

    # Click batches: human and bot, identified and anonymous (no consent), honeypot and the
    # per-message links (two occurrences, one template link); a batch replayed is no change.
    batch = random_clicks(rng, messages, links, 300)
    async with pool.acquire() as conn:
        await write_events(conn, batch)
        await write_events(conn, batch[:50])
    report = await check(pool)
    assert report["clicks"]["identified"] and report["clicks"]["anonymous"]
    assert report["clicks"]["bot"] and report["clicks"]["unique"]
    assert any(link["per_recipient"] for link in report["links"])

    # Opens, alone and in a batch with clicks (one transaction).
    async with pool.acquire() as conn:
        await write_events(conn, random_opens(rng, messages, 80))
        async with conn.transaction():
            await write_events(conn, [*random_clicks(rng, messages, links, 40),
                                      *random_opens(rng, messages, 20)])  # fmt: skip
    assert (await check(pool))["opens"]["unique"]

    # Bot re-marking, as the scan detector does it.
    keys = await pool.fetch("SELECT id, clicked_at FROM clicks WHERE kind = 'human' LIMIT 40")
    await pool.execute(SQL.mark_clicks_bot, [k["id"] for k in keys],
                       [k["clicked_at"] for k in keys], "many links at once")  # fmt: skip
    assert (await check(pool))["bot_reasons"]["many links at once"] == 40

    # Consent withdrawn, then clicks: anonymous.
    async with pool.acquire() as conn:
        someone = await conn.fetchval(
            "SELECT recipient_id FROM outbox m JOIN clicks c ON c.message_id = m.id LIMIT 1"
        )
        await change_choices(conn, someone, tracking_consent=False, source="test")
        mine = await conn.fetchval("SELECT id FROM outbox WHERE recipient_id = $1", someone)
        await write_events(conn, random_clicks(rng, [mine], links, 10))
    await check(pool)

    # Erasure: identified becomes anonymous, unique clickers drop.
    before = await check(pool)
    async with pool.acquire() as conn:
        email = await conn.fetchval(
            "SELECT r.email FROM recipients r JOIN outbox m ON m.recipient_id = r.id"
            " JOIN clicks c ON c.message_id = m.id AND c.kind = 'human' LIMIT 1"
        )
        assert await erase(conn, email)
    after = await check(pool)
    assert after["clicks"]["unique"] == before["clicks"]["unique"] - 1

    # Spool replay: new clicks and opens, and clicks already stored (not written twice).
    spool = Spool(tmp_path / "spool")
    replayed = [*random_clicks(rng, messages, links, 30), *random_opens(rng, messages, 10)]
    spool.append([_to_spool_row(e) for e in [*replayed, *batch[100:120]]])
    spool.seal()
    assert await Recorder(pool, spool, max_batch=7).replay() == 1
    await check(pool)

    # Outbox status changes: failed, unknown, deferred, skipped, claimed, cancelled.
    async with pool.acquire() as conn:
        await conn.execute(MAILER_SQL.mark_failed, messages[0], "550 5.1.1 no such user")
        await conn.execute(MAILER_SQL.mark_unknown, messages[1], "connection lost after DATA")
        await conn.execute(MAILER_SQL.mark_deferred, messages[2], "451 later", 60)
        await conn.execute(MAILER_SQL.mark_skipped, messages[3], "unsubscribed before sending")
        await conn.execute(MAILER_SQL.mark_failed, messages[4], "550 5.1.1 no such user")
    report = await check(pool)
    assert (report["failed"], report["unknown"], report["pending"], report["skipped"]) == (
        2,
        1,
        1,
        1,
    )
    async with pool.acquire() as conn:
        await set_status(conn, "c", "cancel")
        failures = await campaign_failures(conn, "c")
    assert (await check(pool))["cancelled"] == 1
    assert failures["total"] == 3
    assert failures["by_reply"][0] == {"reply": "550 5.1.1 no such user", "messages": 2}

    # Retention: de-identify, then delete, whole partitions dropped and rows one by one.
    async with pool.acquire() as conn:
        await apply_retention(conn, deidentify_after=2, today=LATER)
    await check(pool)
    async with pool.acquire() as conn:
        result = await apply_retention(conn, deidentify_after=1, delete_after=2, today=LATER)
    assert f"clicks_{MONTHS[0]:%Y_%m}" in result.dropped
    await check(pool)

    # The rebuild gives what the triggers kept.
    kept = await pool.fetch("SELECT * FROM click_totals WHERE clicks <> 0 ORDER BY 1, 2, 3, 4, 5")
    async with pool.acquire() as conn:
        await rebuild_rollups(conn)
    assert await pool.fetch("SELECT * FROM click_totals ORDER BY 1, 2, 3, 4, 5") == kept
    await check(pool)


async def test_rows_in_the_default_partition_deleted_one_by_one(pool, campaign):
    messages, links = campaign
    old = datetime(2024, 7, 1, tzinfo=UTC)  # before every monthly partition
    async with pool.acquire() as conn:
        await write_events(
            conn,
            [
                Click(messages[0], links[0], old, "human", None, None, None),
                Click(messages[5], links[1], old, "human", None, None, None),
            ],
        )
    # (Before the message was sent, so both are taken for a scanner's.)
    assert (await check(pool))["clicks"]["bot"] == 2
    async with pool.acquire() as conn:
        await apply_retention(conn, deidentify_after=1, delete_after=2, today=date(2025, 1, 15))
    assert (await check(pool))["clicks"]["bot"] == 0


async def test_series_fills_empty_buckets_and_refuses_unknown_ones(pool, campaign):
    messages, links = campaign
    async with pool.acquire() as conn:
        assert await campaign_series(conn, "c") == []
        at = datetime(MONTHS[0].year, MONTHS[0].month, 1, 10, 30, tzinfo=UTC)
        await write_events(conn, [Click(messages[1], links[0], at, "human", None, None, None),
                                  Click(messages[1], links[0], at + timedelta(hours=3), "human",
                                        None, None, None)])  # fmt: skip
        series = await campaign_series(conn, "c")
        assert [b["clicks_human"] for b in series] == [1, 0, 0, 1]
        assert series[0]["at"] == f"{MONTHS[0]}T10:00:00+00:00"
        with pytest.raises(BadArgument):
            await campaign_series(conn, "c", bucket="minute")
        with pytest.raises(BadArgument):
            await campaign_series(conn, "c", start=at, end=at - timedelta(days=1))


async def test_migration_fills_rollups_for_data_already_there(database_url):
    """A deployment at migration 5 with clicks, opens and messages: 0006 counts them all."""
    name, server_url, _ = database_url
    db = f"{name}_m6"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{db}"')
    try:
        url = urlunsplit(urlsplit(server_url)._replace(path=f"/{db}"))
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for migration in schema.available_migrations():
                if migration.version < 6:
                    await conn.execute(migration.sql)
                    await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)",
                                       migration.version, migration.name)  # fmt: skip
            await conn.execute(OLD_DATA)
            await schema.migrate(conn)
            campaign_id = await conn.fetchval("SELECT id FROM campaigns")
            expected = await recount(conn, campaign_id)
            report = await campaign_report(conn, "old")
            assert {k: report[k] for k in expected} == expected
            assert report["clicks"]["unique"] == 2 and report["clicks"]["anonymous"] == 1
            assert report["audience"] == {"html_consent": 2, "html_no_consent": 0, "text": 1,
                                          "skipped": 0}  # fmt: skip
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


OLD_DATA = """
INSERT INTO campaigns (name, subject_template, from_address, html_template, html_filename)
VALUES ('old', 's', 'n@example.com', 'x', 'x');
INSERT INTO recipients (email, tracking_consent, format) VALUES
    ('a@example.com', true, 'html'), ('b@example.com', true, 'html'),
    ('t@example.com', false, 'text');
INSERT INTO outbox (campaign_id, recipient_id, status, format)
SELECT 1, id, 'sent', format FROM recipients;
INSERT INTO links (campaign_id, url, name) VALUES (1, 'https://example.com/a', ''),
    (1, 'https://example.com/b', 'b');
INSERT INTO links (campaign_id, url, name, occurrence) VALUES (1, 'https://example.com/a', '', 1);
INSERT INTO clicks (link_id, message_id, kind, bot_reason, clicked_at) VALUES
    (1, 1, 'human', NULL, '2025-01-01 10:00+00'), (3, 1, 'human', NULL, '2025-01-01 11:00+00'),
    (2, 2, 'human', NULL, '2025-01-02 10:00+00'), (2, NULL, 'human', NULL, '2025-01-02 10:00+00'),
    (1, 2, 'bot', 'HEAD request', '2025-01-02 10:00+00');
INSERT INTO opens (campaign_id, message_id, kind, opened_at) VALUES
    (1, 1, 'human', '2025-01-01 09:00+00'), (1, NULL, 'bot', '2025-01-01 09:00+00');
"""
