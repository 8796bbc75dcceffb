"""Delivery: SMTP replies handled as a marketer expects, connections reused, rate kept, DKIM."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from dataclasses import replace

import dkim
import pytest
from conftest import Mailbox
from helpers import dkim_key
from smtp_servers import DropsAfterData, RecordingServer, RefusingServer

from mailer.campaigns import set_status
from mailer.capture import start_capture_server
from mailer.compose import LinkRegistry
from mailer.delivery import Delivery, RateLimiter, SentMarks
from mailer.sending import prepare_composer, queue_campaign, send_campaign
from tracker.errors import FairclickError
from tracker.settings import DkimSettings, SmtpTarget

HTML = '<p>Hi {{ recipient.name }}</p><a href="https://example.com/x">x</a>'


@pytest.fixture
def server(tmp_path, settings):
    """Start one of the servers above; returns (handler, settings pointing at it)."""
    controllers = []

    def start(kind=RecordingServer, smtputf8=True, **overrides):
        folder = tmp_path / f"smtp{len(controllers)}"
        controller = start_capture_server(folder, handler=kind, smtputf8=smtputf8)
        controllers.append(controller)
        target = SmtpTarget("127.0.0.1", controller.port, use_tls=False)
        return controller.handler, replace(settings, smtp=target, **overrides)

    yield start
    for controller in controllers:
        controller.stop()


async def statuses(pool, campaign="c") -> dict[str, str]:
    rows = await pool.fetch(
        "SELECT r.email, m.status FROM outbox m JOIN recipients r ON r.id = m.recipient_id"
        " JOIN campaigns c ON c.id = m.campaign_id WHERE c.name = $1",
        campaign,
    )
    return {r["email"]: r["status"] for r in rows}


def people(n: int, domain: str = "example.com") -> str:
    return "email\n" + "".join(f"p{i}@{domain}\n" for i in range(n))


async def test_refusals_slow_down_suppress_and_retry(pool, server, add_recipients, make_campaign):
    handler, settings = server(RefusingServer, smtp_connections=1)  # one order of events
    await add_recipients(
        "email\nok@example.com\nnobody@example.com\nlater@example.com\n"
        "a@busy.example\nb@busy.example\n"
    )
    await make_campaign(HTML)
    progress = await send_campaign(pool, settings, "c")
    assert await statuses(pool) == {
        "ok@example.com": "sent",
        "nobody@example.com": "failed",
        "later@example.com": "deferred",
        "a@busy.example": "deferred",
        "b@busy.example": "deferred",
    }
    assert progress.counts["sent"] == 1 and progress.counts["deferred"] == 3
    # busy.example said "slow down" once; its second message waited instead of asking again.
    assert sum(a.endswith("@busy.example") for a in handler.rcpt_attempts) == 1
    reply = await pool.fetchval(
        "SELECT smtp_reply FROM outbox m JOIN recipients r ON r.id = m.recipient_id"
        " WHERE r.email = 'nobody@example.com'"
    )
    assert "5.1.1" in reply
    # The list keeps the keyed hash of the address and why, not the address or the reply.
    suppressed = await pool.fetch("SELECT to_jsonb(s)::text AS row, s.* FROM suppressions s")
    assert [(r["address_hash"], r["reason"]) for r in suppressed] == [
        (await pool.fetchval("SELECT suppression_hash('nobody@example.com')"), "bounced")
    ]
    assert "nobody" not in suppressed[0]["row"]
    # The next campaign does not even queue the address that does not exist.
    await make_campaign(HTML, name="next")
    await send_campaign(pool, settings, "next")
    assert "nobody@example.com" not in await statuses(pool, "next")
    assert len(await statuses(pool, "next")) == 4


async def test_lost_connection_after_data_is_unknown_and_never_resent(
    pool, server, add_recipients, make_campaign
):
    handler, settings = server(DropsAfterData)
    await add_recipients("email\nonce@example.com\n")
    await make_campaign(HTML)
    first = await send_campaign(pool, settings, "c")
    again = await send_campaign(pool, settings, "c")
    assert first.counts["unknown"] == 1 and again.done == 0
    assert await statuses(pool) == {"once@example.com": "unknown"}
    assert len(handler.arrivals) == 1


async def test_connections_are_reused(pool, server, add_recipients, make_campaign):
    handler, settings = server(RecordingServer, smtp_connections=2)
    await add_recipients(people(30))
    await make_campaign(HTML)
    progress = await send_campaign(pool, settings, "c")
    assert progress.counts["sent"] == 30
    assert handler.connections <= 3  # two senders, plus the reachability check


def test_the_rate_limiter_spaces_slots_evenly_and_never_catches_up_in_a_burst():
    now = [100.0]
    limiter = RateLimiter(40, clock=lambda: now[0])
    slots = [limiter.reserve() for _ in range(12)]  # twelve senders asking at once
    assert slots == pytest.approx([100.0 + i / 40 for i in range(12)])
    now[0] = 200.0  # an idle while: the missed slots are not sent all at once now
    assert [limiter.reserve() for _ in range(3)] == pytest.approx([200.0, 200.025, 200.05])
    assert RateLimiter(0).interval == 0  # no limit


async def test_every_message_waits_for_a_slot_of_the_one_shared_limiter(
    pool, server, add_recipients, make_campaign
):
    handler, settings = server(RecordingServer, smtp_connections=4, smtp_rate=40)
    await add_recipients(people(12))
    await make_campaign(HTML)
    async with pool.acquire() as conn:
        campaign = await prepare_composer(conn, settings, "c")
        await queue_campaign(conn, campaign)
    delivery = Delivery(pool, settings, campaign_id=campaign.campaign["id"])
    assert delivery.rate.interval == 1 / 40
    # The same limiter on a clock that stands still: the slots it hands out show how many
    # sends asked for one, whatever the load on the machine did to the wall clock.
    delivery.rate = RateLimiter(40, clock=lambda: 100.0)
    progress = await delivery.run()
    assert progress.counts["sent"] == 12 and len(handler.arrivals) == 12
    assert delivery.rate.reserve() == pytest.approx(100.0 + 12 / 40)  # twelve slots taken


async def test_two_senders_share_the_outbox_without_doubles(
    pool, server, add_recipients, make_campaign
):
    handler, settings = server(RecordingServer)
    await add_recipients(people(120))
    await make_campaign(HTML)
    campaign_id = await pool.fetchval("SELECT id FROM campaigns")
    async with pool.acquire() as conn:
        await queue_campaign(conn, await prepare_composer(conn, settings, "c"))
    workers = [Delivery(pool, settings, campaign_id=campaign_id) for _ in range(2)]
    results = await asyncio.gather(*(w.run() for w in workers))
    assert all(r.counts["sent"] > 0 for r in results)  # both really worked
    assert sum(r.counts["sent"] for r in results) == 120
    received = sorted(m.name.split("-", 1)[1] for m in handler.folder.glob("*.eml"))
    assert len(received) == len(set(received)) == 120


async def test_paused_and_cancelled_campaigns_are_not_delivered(
    pool, server, add_recipients, make_campaign
):
    handler, settings = server(RecordingServer)
    await add_recipients(people(3))
    await make_campaign(HTML)
    async with pool.acquire() as conn:
        await set_status(conn, "c", "pause")
    with pytest.raises(FairclickError, match="paused"):
        await send_campaign(pool, settings, "c")
    async with pool.acquire() as conn:
        await set_status(conn, "c", "resume")
    assert (await send_campaign(pool, settings, "c")).counts["sent"] == 3
    await add_recipients("email\nlate@example.com\n", name="late.csv")
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO outbox (campaign_id, recipient_id)"
            " SELECT (SELECT id FROM campaigns), max(id) FROM recipients"
        )
        await set_status(conn, "c", "cancel")
        with pytest.raises(FairclickError, match="cancelled"):
            await set_status(conn, "c", "resume")
    assert (await statuses(pool))["late@example.com"] == "cancelled"
    assert len(handler.arrivals) == 3


async def test_dkim_signature_verifies(pool, server, tmp_path, add_recipients, make_campaign):
    key, dns = dkim_key(tmp_path)
    dkim_settings = DkimSettings("example.com", "s1", key)
    handler, settings = server(RecordingServer, dkim=dkim_settings)
    # The second address has UTF-8 headers (SMTPUTF8): its signature must verify too.
    await add_recipients('email,name\nzoe@example.com,"Zoë Ünïcode"\nzoë@example.com,Zoë\n')
    await make_campaign(HTML, subject="Grüße {{ recipient.name }}")
    await send_campaign(pool, settings, "c")

    messages = sorted(handler.folder.glob("*.eml"))
    assert len(messages) == 2
    for path in messages:
        raw = path.read_bytes()
        assert raw.startswith(b"DKIM-Signature:")
        signed = raw.split(b"\r\n\r\n", 1)[0].split(b"h=", 1)[1].split(b";", 1)[0].lower()
        for header in (b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe",
                       b"list-unsubscribe-post"):  # fmt: skip
            assert header in signed.replace(b" ", b"").replace(b"\r\n", b"").split(b":")
        assert dkim.verify(raw, dnsfunc=dns), path.name
        assert not dkim.verify(raw.replace(b"Hi ", b"Hi!"), dnsfunc=dns)


async def test_text_part_links_tracked_only_with_consent(
    pool, server, add_recipients, make_campaign
):
    handler, settings = server(RecordingServer)
    await add_recipients("email,tracking_consent\nyes@example.com,yes\nno@example.com,no\n")
    await make_campaign(
        HTML, text="Read https://example.com/x.\nPreferences: {{ preferences_url }}\n"
    )
    await send_campaign(pool, settings, "c")
    texts = {
        m["To"].addresses[0].addr_spec: m.get_body(("plain",)).get_content()
        for m in Mailbox(handler.folder, 0).messages()
    }
    assert f"{settings.base_url}/c/" in texts["yes@example.com"]
    assert "https://example.com/x." not in texts["yes@example.com"]
    assert "Read https://example.com/x." in texts["no@example.com"]
    assert "/c/" not in texts["no@example.com"]
    assert f"{settings.base_url}/p/" in texts["yes@example.com"]  # preferences stay as they are


async def test_an_address_with_non_ascii_before_the_at_goes_with_smtputf8(
    pool, server, add_recipients, make_campaign
):
    handler, settings = server(RecordingServer)
    await add_recipients("email,name\nzoë@example.com,Zoë\nann@example.com,Ann\n")
    await make_campaign(HTML)
    progress = await send_campaign(pool, settings, "c")
    assert progress.counts["sent"] == 2
    assert handler.mail_options == {"zoë@example.com": ["SMTPUTF8"], "ann@example.com": []}
    raw = next(handler.folder.glob("*zoë@example.com.eml")).read_bytes()
    headers = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")  # RFC 6532: UTF-8 headers
    assert "\r\nTo: Zoë <zoë@example.com>\r\n" in headers
    message = email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)
    assert message["To"].addresses[0].addr_spec == "zoë@example.com"
    assert "Hi Zoë" in message.get_body(("html",)).get_content()
    ann = next(handler.folder.glob("*ann@example.com.eml")).read_bytes()
    ann.split(b"\r\n\r\n", 1)[0].decode("ascii")  # everyone else's headers stay ASCII


async def test_without_smtputf8_that_message_fails_alone_and_says_why(
    pool, server, add_recipients, make_campaign
):
    handler, settings = server(RecordingServer, smtputf8=False)
    await add_recipients("email\nzoë@example.com\nann@example.com\n")
    await make_campaign(HTML)
    progress = await send_campaign(pool, settings, "c")
    assert (progress.counts["failed"], progress.counts["sent"]) == (1, 1)
    assert await statuses(pool) == {"zoë@example.com": "failed", "ann@example.com": "sent"}
    reply = await pool.fetchval("SELECT smtp_reply FROM outbox WHERE status = 'failed'")
    assert "does not offer SMTPUTF8" in reply and "zoë@example.com" in reply
    assert handler.rcpt_attempts == ["ann@example.com"]  # never offered to the server


async def test_unreachable_smtp_server_is_one_clear_error(
    pool, settings, add_recipients, make_campaign
):
    await add_recipients(people(2))
    await make_campaign(HTML)
    nowhere = replace(settings, smtp=SmtpTarget("127.0.0.1", 9, use_tls=False))
    started = time.monotonic()
    with pytest.raises(FairclickError, match="FAIRCLICK_SMTP_URL"):
        await send_campaign(pool, nowhere, "c")
    assert time.monotonic() - started < 30
    assert set((await statuses(pool)).values()) == {"queued"}  # nothing lost, nothing half-sent


async def test_the_next_message_waits_for_the_last_ones_mark(
    pool, server, add_recipients, make_campaign, monkeypatch
):
    """Composing runs ahead, transmitting does not: while a sent message's mark is not yet
    committed, the connection sends nothing else (a kill -9 then doubles one at most)."""
    handler, settings = server(RecordingServer, smtp_connections=1)
    await add_recipients(people(3))
    await make_campaign(HTML)
    # The first mark is held at the door until the test opens it (PostgreSQL stays real).
    door, knocked = asyncio.Event(), asyncio.Event()
    execute = SentMarks._execute

    async def held_execute(self, columns):
        knocked.set()
        await door.wait()
        await execute(self, columns)

    monkeypatch.setattr(SentMarks, "_execute", held_execute)
    sending = asyncio.create_task(send_campaign(pool, settings, "c"))
    await asyncio.wait_for(knocked.wait(), 10)
    await asyncio.sleep(0.3)  # time enough for a second message, were one allowed
    assert len(handler.rcpt_attempts) == 1
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE status = 'sent'") == 0
    door.set()
    progress = await asyncio.wait_for(sending, 30)
    assert progress.counts["sent"] == 3
    assert sorted(handler.rcpt_attempts) == ["p0@example.com", "p1@example.com", "p2@example.com"]


async def test_the_next_message_is_composed_while_this_one_goes_out(
    pool, server, add_recipients, make_campaign, monkeypatch
):
    """A connection prepares its next message while it transmits one and waits for that one's
    mark: the sending core composes during the round trips instead of idling."""
    handler, settings = server(RecordingServer, smtp_connections=1)
    await add_recipients(people(3))
    await make_campaign(HTML)
    door = asyncio.Event()
    execute, prepare = SentMarks._execute, Delivery._prepare
    prepared: list[int] = []

    async def held_execute(self, columns):
        await door.wait()
        await execute(self, columns)

    async def recorded_prepare(self, row, person):
        result = await prepare(self, row, person)
        prepared.append(row["id"])
        return result

    monkeypatch.setattr(SentMarks, "_execute", held_execute)
    monkeypatch.setattr(Delivery, "_prepare", recorded_prepare)
    sending = asyncio.create_task(send_campaign(pool, settings, "c"))
    try:
        # The first message is out and its mark held: the second waits for it, composed,
        # and the third is composed meanwhile too.
        async with asyncio.timeout(10):
            while len(prepared) < 3:
                await asyncio.sleep(0.01)
        assert len(handler.rcpt_attempts) == 1
    finally:
        door.set()  # a failure above must not leave the send holding the pool
        progress = await asyncio.wait_for(sending, 30)
    assert progress.counts["sent"] == 3 and len(prepared) == 3
    assert sorted(handler.rcpt_attempts) == ["p0@example.com", "p1@example.com", "p2@example.com"]


async def test_a_message_that_cannot_be_built_is_logged_without_the_address(
    pool, server, add_recipients, make_campaign, caplog
):
    _, settings = server(RecordingServer)
    await add_recipients("email,name\nann@example.com,Ann\nzed@example.com,Zed\n")
    # An address no header can carry (stored by an older version, say): that message fails
    # alone. (A name with line breaks is mended into one line: test_message.py.)
    await pool.execute(
        "UPDATE recipients SET email = 'zed\r\nBcc: x@example.com' WHERE name = 'Zed'"
    )
    await make_campaign(HTML)
    progress = await send_campaign(pool, settings, "c")
    assert (progress.counts["failed"], progress.counts["sent"]) == (1, 1)
    # The reason is kept where erasure finds it (the outbox row), not in a log.
    assert "not built" in caplog.text and "zed" not in caplog.text.lower()


async def test_a_row_that_comes_back_behind_the_claims_is_still_sent(
    pool, server, add_recipients, make_campaign
):
    """Claims read on from the last id claimed; a row that returns below it (a dead sender's
    lease lapsing, a deferral coming due) is found when they start again from the start."""
    handler, settings = server(RecordingServer, send_lease_seconds=1)
    await add_recipients(people(20))
    await make_campaign(HTML)
    async with pool.acquire() as conn:
        await queue_campaign(conn, await prepare_composer(conn, settings, "c"))
    # Another sender took the first row and died with it: its lease lapses in a second.
    first = await pool.fetchval("SELECT min(id) FROM outbox")
    await pool.execute(
        "UPDATE outbox SET status = 'sending', attempts = 1,"
        " lease_until = now() + interval '1 second' WHERE id = $1",
        first,
    )
    delivery = Delivery(pool, settings, campaign_id=await pool.fetchval("SELECT id FROM campaigns"))
    progress = await asyncio.wait_for(delivery.run(), 30)
    assert progress.counts["sent"] == 20
    assert sorted(handler.rcpt_attempts) == sorted(f"p{i}@example.com" for i in range(20))
    assert set((await statuses(pool)).values()) == {"sent"}


async def test_marks_of_all_connections_share_a_statement(
    pool, server, add_recipients, make_campaign, monkeypatch
):
    """A statement (and a commit: ~0.4 ms of PostgreSQL) per message was most of the sender's
    database work: each sender's mark waits, while it composes its next message, for the
    others', and one statement writes them."""
    _, settings = server(RecordingServer, smtp_connections=4)
    await add_recipients(people(40))
    await make_campaign(HTML)
    sizes = []
    execute = SentMarks._execute

    async def counted(self, columns):
        sizes.append(len(columns[0]))
        await execute(self, columns)

    monkeypatch.setattr(SentMarks, "_execute", counted)
    progress = await send_campaign(pool, settings, "c")
    assert progress.counts["sent"] == 40 and sum(sizes) == 40
    assert len(sizes) <= 20, sizes  # 4 a statement when all goes to plan; 1.3 before


async def test_a_link_several_senders_ask_for_at_once_is_stored_once(pool, make_campaign):
    """Four senders composing their first messages together stored each link four times."""
    campaign_id = await make_campaign(HTML)
    registry = LinkRegistry(campaign_id)
    statements = []

    class Counting:  # the real pool, counting the statements and holding each a moment
        async def fetchval(self, *args):
            statements.append(args[0])
            await asyncio.sleep(0.05)
            return await pool.fetchval(*args)

    ids = await asyncio.gather(
        *(registry.id_for(Counting(), "https://example.com/y", "") for _ in range(4))
    )
    assert len(set(ids)) == 1 and len(statements) == 1
    stored = await pool.fetch("SELECT id FROM links WHERE url = 'https://example.com/y'")
    assert [r["id"] for r in stored] == ids[:1]
