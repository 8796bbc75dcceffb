"""A choice made after the message was queued still counts: nobody is mailed who left meanwhile."""

from __future__ import annotations

from mailer.delivery import Delivery
from mailer.sending import prepare_composer, queue_campaign
from tracker.consent import change_choices, erase_recipient
from tracker.suppressions import suppress

PEOPLE = "email\nstays@example.com\nleaves@example.com\ncomplains@example.com\nerased@example.com\n"


async def test_people_who_leave_after_queueing_are_skipped_not_mailed(
    pool, settings, mailbox, add_recipients, make_campaign
):
    await add_recipients(PEOPLE)
    await make_campaign('<a href="https://example.com/x">x</a>')
    async with pool.acquire() as conn:
        await queue_campaign(conn, await prepare_composer(conn, settings, "c"))
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE status = 'queued'") == 4
        ids = {r["email"]: r["id"] for r in await conn.fetch("SELECT id, email FROM recipients")}
        await change_choices(
            conn, ids["leaves@example.com"], subscribed=False, source="one-click unsubscribe"
        )
        await suppress(conn, "complains@example.com", "complained")
        assert await erase_recipient(conn, ids["erased@example.com"])

    progress = await Delivery(pool, settings).run()

    assert [m["To"].addresses[0].addr_spec for m in mailbox.messages()] == ["stays@example.com"]
    assert progress.counts["sent"] == 1 and progress.counts["skipped"] == 3
    rows = await pool.fetch(
        "SELECT r.email, o.status, o.smtp_reply FROM outbox o"
        " LEFT JOIN recipients r ON r.id = o.recipient_id ORDER BY o.id"
    )
    outcomes = {r["email"]: (r["status"], r["smtp_reply"]) for r in rows}
    assert outcomes["stays@example.com"][0] == "sent"
    assert outcomes["leaves@example.com"] == ("skipped", "unsubscribed before sending")
    assert outcomes["complains@example.com"][0] == "skipped"
    assert "suppressed" in outcomes["complains@example.com"][1]
    assert outcomes[None] == ("skipped", "erased before sending")  # the erased person's row
