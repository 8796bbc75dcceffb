"""Clicks and opens live in monthly partitions, created ahead, so a month can be dropped whole."""

from __future__ import annotations

from datetime import date

from tracker.partitions import MONTHS_AHEAD, ensure_partitions


async def test_months_ahead_are_created_once_and_rows_land_in_their_month(pool):
    async with pool.acquire() as conn:
        created = await ensure_partitions(conn, today=date(2031, 11, 20))
        again = await ensure_partitions(conn, today=date(2031, 11, 20))
        expected = [f"{t}_{m}" for m in ("2031_11", "2031_12", "2032_01", "2032_02") for t in
                    ("clicks", "opens")]  # fmt: skip
        assert sorted(created) == sorted(expected) and len(expected) == 2 * (MONTHS_AHEAD + 1)
        assert again == []
        await conn.execute(
            "INSERT INTO campaigns (name, subject_template, from_address, html_template,"
            " html_filename) VALUES ('p', 's', 'n@example.com', 'x', 'x')"
        )
        link = await conn.execute(
            "INSERT INTO links (campaign_id, url) SELECT id, 'https://example.com/' FROM campaigns"
        )
        assert link == "INSERT 0 1"
        await conn.execute(
            "INSERT INTO clicks (link_id, clicked_at)"
            " SELECT id, '2032-01-15 12:00+00'::timestamptz FROM links"
            " UNION ALL SELECT id, '2040-01-01 00:00+00'::timestamptz FROM links"
        )
        homes = await conn.fetch(
            "SELECT tableoid::regclass::text AS part FROM clicks ORDER BY clicked_at"
        )
        assert [h["part"] for h in homes] == ["clicks_2032_01", "clicks_default"]
        for table in expected:  # leave the shared test database as it was
            await conn.execute(f"DROP TABLE {table}")
