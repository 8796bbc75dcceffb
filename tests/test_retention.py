"""Retention: old clicks and opens are de-identified, older ones deleted, by whole months."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from tracker.errors import FairclickError
from tracker.partitions import ensure_partitions
from tracker.recorder import Click, Outcome, write_events
from tracker.retention import apply_retention

# Months before any partition the tracker creates for the real today, which no run may drop.
TODAY = date(2025, 6, 15)


@pytest.fixture
async def history(pool):
    """Identified clicks and opens on the 10th of Jan–Jun 2025, one message, one link."""
    async with pool.acquire() as conn:
        await ensure_partitions(conn, today=date(2025, 1, 1), months_ahead=5)
        campaign = await conn.fetchval(
            "INSERT INTO campaigns (name, subject_template, from_address, html_template,"
            " html_filename) VALUES ('r', 's', 'n@example.com', 'x', 'x') RETURNING id"
        )
        recipient = await conn.fetchval(
            "INSERT INTO recipients (email, tracking_consent) VALUES ('a@example.com', true)"
            " RETURNING id"
        )
        message = await conn.fetchval(
            "INSERT INTO outbox (campaign_id, recipient_id, status, format)"
            " VALUES ($1, $2, 'sent', 'html') RETURNING id",
            campaign,
            recipient,
        )
        link = await conn.fetchval(
            "INSERT INTO links (campaign_id, url) VALUES ($1, 'https://example.com/') RETURNING id",
            campaign,
        )
        await conn.execute(
            "INSERT INTO clicks (link_id, message_id, clicked_at, ip, user_agent)"
            " SELECT $1, $2, make_timestamptz(2025, m, 10, 12, 0, 0, 'UTC'), '192.0.2.0', 'UA'"
            " FROM generate_series(1, 6) AS m",
            link,
            message,
        )
        # One older click, from before the first partition: it sits in the default one.
        await conn.execute(
            "INSERT INTO clicks (link_id, message_id, clicked_at, ip, user_agent)"
            " VALUES ($1, $2, '2024-07-01 00:00+00', '192.0.2.0', 'UA')",
            link,
            message,
        )
        await conn.execute(
            "INSERT INTO opens (campaign_id, message_id, opened_at, ip, user_agent)"
            " SELECT $1, $2, make_timestamptz(2025, m, 10, 12, 0, 0, 'UTC'), '192.0.2.0', 'UA'"
            " FROM generate_series(1, 6) AS m",
            campaign,
            message,
        )
        yield conn
        for month in range(1, 7):  # leave the shared test database as it was
            for table in ("clicks", "opens"):
                await conn.execute(f"DROP TABLE IF EXISTS {table}_2025_{month:02d}")


async def _months(conn, table: str, column: str) -> dict[str, bool]:
    """Month → whether that month's row still names the message."""
    rows = await conn.fetch(
        f"SELECT to_char({column}, 'YYYY-MM') AS month, message_id IS NOT NULL AS identified,"
        f" ip IS NOT NULL OR user_agent IS NOT NULL AS personal FROM {table} ORDER BY {column}"
    )
    assert all(r["identified"] or not r["personal"] for r in rows)
    return {r["month"]: r["identified"] for r in rows}


async def test_de_identifies_whole_months_and_keeps_counting_them(history):
    result = await apply_retention(history, deidentify_after=3, today=TODAY)
    assert result.deidentified_before == date(2025, 3, 1)
    assert result.deidentified == {"clicks": 3, "opens": 2}
    assert await _months(history, "clicks", "clicked_at") == {
        "2024-07": False, "2025-01": False, "2025-02": False,
        "2025-03": True, "2025-04": True, "2025-05": True, "2025-06": True,
    }  # fmt: skip
    assert list((await _months(history, "opens", "opened_at")).values()) == [False] * 2 + [True] * 4
    again = await apply_retention(history, deidentify_after=3, today=TODAY)
    assert again.deidentified == {"clicks": 0, "opens": 0}


async def test_deletes_older_months_by_dropping_their_partitions(history):
    result = await apply_retention(history, deidentify_after=2, delete_after=4, today=TODAY)
    assert result.deleted_before == date(2025, 2, 1)
    assert sorted(result.dropped) == ["clicks_2025_01", "opens_2025_01"]
    assert result.deleted == {"clicks": 1, "opens": 0}  # the default partition's old row
    assert await _months(history, "clicks", "clicked_at") == {
        "2025-02": False, "2025-03": False, "2025-04": True, "2025-05": True, "2025-06": True,
    }  # fmt: skip
    assert await history.fetchval("SELECT to_regclass('clicks_2025_01')") is None
    # The click path's own statement still writes into a month that remains.
    message, link = await history.fetchrow("SELECT (SELECT id FROM outbox), (SELECT id FROM links)")
    at = datetime(2025, 2, 20, tzinfo=UTC)
    (result,) = await write_events(history, [Click(message, link, at, "human", None, None, None)])
    assert result.outcome is Outcome.STORED
    assert (
        await history.fetchval("SELECT count(*) FROM clicks_2025_02 WHERE clicked_at = $1", at) == 1
    )


@pytest.mark.parametrize(
    ("deidentify_after", "delete_after", "says"),
    [(0, None, "at least 1 month"), (3, 3, "more months than"), (3, 1, "more months than")],
)
async def test_bad_periods_are_refused_before_anything_changes(
    history, deidentify_after, delete_after, says
):
    with pytest.raises(FairclickError, match=says):
        await apply_retention(
            history, deidentify_after=deidentify_after, delete_after=delete_after, today=TODAY
        )
    assert list((await _months(history, "clicks", "clicked_at")).values()) == [True] * 7
