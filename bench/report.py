"""Report benchmark: the campaign report and a 30-day hourly series, from rollups and the old way.

1. starts an embedded PostgreSQL (tracker.database.embedded_database_url) in a temp dir,
   migrates it and seeds, with set-based INSERT … SELECT generate_series, one campaign with
   --messages messages (default 1,000,000, one recipient each, a third without tracking
   consent), 20 links and --clicks clicks (default 5,000,000) over the last 30 days: 10% bot
   (by reason), 20% anonymous, the rest identified, spread over the messages. The seed goes
   in with triggers off (session_replication_role = replica) and the rollups are then
   recounted by rebuild_rollups(), the exact rebuild migration 0006 runs: the same numbers
   the writers' triggers keep (tests/test_rollups.py holds both to a recount);
2. times, --runs times each (median): campaign_report() and a 30-day hourly
   campaign_series() on the rollups, then the plain GROUP BYs they replaced (the old
   report queries of tracker/queries.sql: report_messages, report_links,
   report_unique_clickers, report_opens, report_bot_reasons; and an hourly GROUP BY of the
   clicks), --old-runs times each;
3. measures the click write path: batches of 200 clicks through write_events (the
   record_clicks statement), with the rollup triggers on and off, as wall time and the
   PostgreSQL backend's CPU time per click (read from /proc), median over --batches.

    python bench/report.py                     # about 3 minutes
    python bench/report.py --messages 100000 --clicks 500000 --old-runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import asyncpg  # noqa: E402

from tracker import database, schema  # noqa: E402
from tracker.database import embedded_database_url  # noqa: E402
from tracker.partitions import ensure_partitions  # noqa: E402
from tracker.queries import SQL  # noqa: E402
from tracker.recorder import Click, write_events  # noqa: E402
from tracker.reports import campaign_report, campaign_series  # noqa: E402
from tracker.rollups import rebuild_rollups  # noqa: E402

# The old series: a plain hourly GROUP BY of the campaign's clicks and opens.
OLD_SERIES = """
SELECT date_trunc('hour', c.clicked_at, 'UTC') AS at,
       count(*) FILTER (WHERE c.kind = 'human') AS clicks_human,
       count(*) FILTER (WHERE c.kind = 'bot') AS clicks_bot,
       count(*) FILTER (WHERE c.kind = 'human' AND c.message_id IS NOT NULL) AS identified,
       count(*) FILTER (WHERE c.kind = 'human' AND c.message_id IS NULL) AS anonymous
FROM clicks c JOIN links l ON l.id = c.link_id
WHERE l.campaign_id = $1 AND c.clicked_at >= $2 GROUP BY 1 ORDER BY 1
"""
OLD_OPENS_SERIES = """
SELECT date_trunc('hour', opened_at, 'UTC') AS at, count(*) FROM opens
WHERE campaign_id = $1 AND opened_at >= $2 GROUP BY 1
"""

SEED = [
    """INSERT INTO campaigns (name, subject_template, from_address, html_template, html_filename)
       VALUES ('bench', 's', 'news@example.com', 'x', 'x')""",
    """INSERT INTO recipients (email, tracking_consent)
       SELECT 'r' || i || '@example.com', i % 3 <> 0 FROM generate_series(1, $1) AS i""",
    """INSERT INTO outbox (campaign_id, recipient_id, status, format, audience, sent_at)
       SELECT 1, id, 'sent', 'html',
              CASE WHEN tracking_consent THEN 'html_consent' ELSE 'html_no_consent' END,
              now() - interval '31 days'
       FROM recipients ORDER BY id""",
    """INSERT INTO links (campaign_id, url, name)
       SELECT 1, 'https://example.com/' || i, 'link ' || i FROM generate_series(1, 20) AS i""",
    # Clicks over the last 30 days: message and link spread by a multiplicative hash.
    """INSERT INTO clicks (id, link_id, message_id, clicked_at, kind, bot_reason)
       SELECT i, 1 + (i * 7919) % 20,
              CASE WHEN i % 10 < 2 THEN NULL ELSE 1 + (i * 2654435761) % $1 END,
              now() - interval '30 days' + (i % 2592000) * interval '1 second',
              CASE WHEN i % 10 = 9 THEN 'bot' ELSE 'human' END,
              CASE WHEN i % 10 = 9 THEN (ARRAY['HEAD request', 'known scanner or crawler agent',
                                              'many links at once'])[1 + i % 3] END
       FROM generate_series(1, $2) AS i""",
    """INSERT INTO opens (campaign_id, message_id, opened_at, kind)
       SELECT 1, 1 + (i * 2654435761) % $1, now() - interval '30 days' + i * interval '7 seconds',
              CASE WHEN i % 10 = 9 THEN 'bot' ELSE 'human' END
       FROM generate_series(1, $1 / 3) AS i""",
]


async def timed(runs: int, work) -> float:
    """Median milliseconds of work() over runs."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def old_report(conn: asyncpg.Connection, campaign_id: int) -> None:
    for query in (SQL.report_messages, SQL.report_links, SQL.report_unique_clickers,
                  SQL.report_opens, SQL.report_bot_reasons):  # fmt: skip
        await conn.fetch(query, campaign_id)


def backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one PostgreSQL backend, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # clock ticks (USER_HZ = 100)


async def write_path(conn: asyncpg.Connection, batches: int, triggers: bool) -> tuple[float, float]:
    """Median wall µs per click and backend CPU µs per click, batches of 200 clicks."""
    await conn.execute(f"SET session_replication_role = {'origin' if triggers else 'replica'}")
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    rng = random.Random(1)
    messages = await conn.fetchval("SELECT max(id) FROM outbox")
    walls, cpu_start = [], backend_cpu(pid)
    for _ in range(batches):
        now = datetime.now(UTC)
        batch = [Click(rng.randint(1, messages), rng.randint(1, 20), now, "human", None,
                       "192.0.2.1", "Mozilla/5.0") for _ in range(200)]  # fmt: skip
        started = time.perf_counter()
        await write_events(conn, batch)
        walls.append((time.perf_counter() - started) * 1e6 / 200)
    cpu = (backend_cpu(pid) - cpu_start) * 1e6 / (batches * 200)
    await conn.execute("SET session_replication_role = origin")
    return statistics.median(walls), cpu


async def run(args, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await schema.migrate(conn)
    today = datetime.now(UTC).date()
    await ensure_partitions(conn, today=today - timedelta(days=62), months_ahead=3)
    started = time.perf_counter()
    await conn.execute("SET session_replication_role = replica")
    for statement in SEED:
        needs = [args.messages, args.clicks][: ("$1" in statement) + ("$2" in statement)]
        await conn.execute(statement, *needs)
    await conn.execute("SET session_replication_role = origin")
    seeded = time.perf_counter() - started
    await rebuild_rollups(conn)
    rebuilt = time.perf_counter() - started - seeded
    await conn.execute("VACUUM ANALYZE")
    print(f"seeded {args.clicks:,} clicks over {args.messages:,} messages, 20 links, 30 days "
          f"in {seeded:.0f} s; rebuild_rollups() took {rebuilt:.1f} s")  # fmt: skip
    report = await campaign_report(conn, "bench")
    print(f"report: {report['clicks']}, {len(report['links'])} links")
    end = datetime.now(UTC)
    start = end - timedelta(days=30)

    async def series():
        return await campaign_series(conn, "bench", bucket="hour", start=start, end=end)

    assert len(await series()) == 30 * 24 + 1

    async def old_series():
        await conn.fetch(OLD_SERIES, 1, start)
        await conn.fetch(OLD_OPENS_SERIES, 1, start)

    rows = [
        ("campaign report", await timed(args.runs, lambda: campaign_report(conn, "bench")),
         await timed(args.old_runs, lambda: old_report(conn, 1))),
        ("30-day hourly series", await timed(args.runs, series),
         await timed(args.old_runs, old_series)),
    ]  # fmt: skip
    print(f"\n{'':24}{'rollups ms':>12}{'GROUP BY ms':>14}{'ratio':>9}   target")
    for name, new, old in rows:
        verdict = "met" if new < 100 else "MISSED"
        print(f"{name:24}{new:12.1f}{old:14.1f}{old / new:8.0f}x   < 100 ms: {verdict}")
    print(f"(medians: rollups of {args.runs} runs, GROUP BY of {args.old_runs})")

    off = await write_path(conn, args.batches, triggers=False)
    on = await write_path(conn, args.batches, triggers=True)
    print(f"\nclick write path, batches of 200 through write_events, median of {args.batches}:")
    print(f"{'':24}{'wall µs/click':>14}{'PG CPU µs/click':>17}")
    print(f"{'without rollups':24}{off[0]:14.1f}{off[1]:17.1f}")
    print(f"{'with rollup triggers':24}{on[0]:14.1f}{on[1]:17.1f}")
    print(f"{'difference':24}{on[0] - off[0]:14.1f}{on[1] - off[1]:17.1f}")
    await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--clicks", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--old-runs", type=int, default=1)
    parser.add_argument("--batches", type=int, default=300)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="fc-report-"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dsn = embedded_database_url(tmp)
        asyncio.run(run(args, dsn))
        return 0
    finally:
        server = database._embedded_servers.get(tmp / "pg")
        if server is not None:
            with contextlib.suppress(Exception):
                server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
