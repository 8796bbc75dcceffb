"""The suppression list: keyed hashes that keep erased, bounced and complaining people unmailed.

Real PostgreSQL (the hash is computed there), the real importer, sender, SMTP server and
command line. The Python HMAC here is the reference the database's one is held to.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from helpers import running_quickstart
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from test_cli import fairclick, one_line_error  # noqa: F401 - fairclick: a fixture

from mailer.queries import SQL
from mailer.sending import send_campaign
from tracker import schema
from tracker.consent import erase
from tracker.suppressions import suppress

PEOPLE = "email,name,city\nann@example.com,Ann,Oslo\nbob@example.com,Bob,Rome\n"
HTML = '<p>Hi {{ recipient.name }}</p><a href="https://example.com/one">one</a>'


def normalised(address: str) -> str:
    """The documented normalisation: strip, NFC, Unicode simple lower-case mapping per character.

    Simple mapping (one character to one, no context) as PostgreSQL's pg_c_utf8 applies
    it; Python's str.lower() is the full mapping, which differs only for U+0130 (İ) and
    the final-sigma context, hence one character at a time.
    """
    text = unicodedata.normalize("NFC", address.strip())
    return "".join("i" if c == "\u0130" else c.lower() for c in text)


def reference_hash(key: bytes, address: str) -> bytes:
    return hmac.new(key, normalised(address).encode("utf-8"), hashlib.sha256).digest()


async def sql_hashes(conn, addresses: list[str]) -> list[bytes]:
    return await conn.fetchval(
        "SELECT array_agg(suppression_hash(a) ORDER BY n) FROM unnest($1::text[])"
        " WITH ORDINALITY AS t(a, n)",
        addresses,
    )


async def hash_of(pool, address: str) -> bytes:
    return await pool.fetchval("SELECT suppression_hash($1)", address)


async def rows_quoting(pool, *needles: str) -> list[str]:
    """Every row of every table whose text holds one of the needles (case-insensitive)."""
    tables = await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
    )
    found = []
    for (table,) in tables:
        for needle in needles:
            rows = await pool.fetch(
                f"SELECT t::text FROM \"{table}\" t WHERE t::text ILIKE '%' || $1 || '%'",
                needle,
            )
            found += [f"{table}: {r[0]}" for r in rows]
    return found


# Addresses as people and lists write them: any characters Python's Unicode database
# knows (PostgreSQL's may be newer; characters assigned since have no agreed case yet),
# no NUL (text cannot hold it), surrounding whitespace, both cases.
_CHARS = st.characters(blacklist_categories=("Cs", "Cn", "Co"), blacklist_characters="\0")
ADDRESSES = st.builds(
    lambda space, local, domain, trailing: f"{space}{local}@{domain}{trailing}",
    st.sampled_from(["", " ", "\t", "\u00a0", "\u3000"]),
    st.text(_CHARS, min_size=1, max_size=20),
    st.text(_CHARS, min_size=1, max_size=20),
    st.sampled_from(["", " ", "\n", "\u2028"]),
)


@hsettings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(addresses=st.lists(ADDRESSES, min_size=1, max_size=20))
@example(addresses=["Ann@Example.COM", " ann@example.com\t", "JÖRG@Beispiel.de"])
@example(addresses=["ΣΑΣ@example.gr", "\u0130stanbul@example.com", "e\u0301@example.fr"])
@example(addresses=["STRASSE@x.de", "straße@x.de", "ǅ@x", "ﬃ@x", "Ω@x"])
async def test_sql_hash_is_hmac_sha256_of_the_normalised_address(pool, addresses):
    key = await pool.fetchval("SELECT key FROM suppression_key")
    async with pool.acquire() as conn:
        assert await sql_hashes(conn, addresses) == [reference_hash(key, a) for a in addresses]


async def test_one_address_however_it_is_written(pool):
    same = ["ann@example.com", "Ann@Example.COM", " ANN@example.com\n", "\u00a0ann@EXAMPLE.com"]
    assert len({await hash_of(pool, a) for a in same}) == 1
    assert await hash_of(pool, "jörg@example.de") == await hash_of(pool, "JÖRG@EXAMPLE.DE")
    # Composed and decomposed ö are one address (NFC).
    assert await hash_of(pool, "j\u00f6rg@example.de") == await hash_of(
        pool, "jo\u0308rg@example.de"
    )
    assert await hash_of(pool, "ann@example.com") != await hash_of(pool, "anne@example.com")
    assert len(await hash_of(pool, "ann@example.com")) == 32


@pytest.fixture
async def new_database(database_url):
    """Make fresh, empty databases on the test server (as many as asked); dropped afterwards."""
    _, server_url, _ = database_url
    admin = await asyncpg.connect(server_url)
    made: list[tuple[str, asyncpg.Connection]] = []

    async def make() -> asyncpg.Connection:
        name = f"fairclick_deploy_{secrets.token_hex(4)}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(urlunsplit(urlsplit(server_url)._replace(path=f"/{name}")))
        made.append((name, conn))
        return conn

    try:
        yield make
    finally:
        for name, conn in made:
            await conn.close()
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_each_deployment_has_its_own_key(new_database, pool):
    first, second = await new_database(), await new_database()
    for conn in (first, second):
        await schema.migrate(conn)
    hashes = [
        await conn.fetchval("SELECT suppression_hash('ann@example.com')")
        for conn in (first, second, pool)
    ]
    assert len(set(hashes)) == 3
    keys = [
        await conn.fetchval("SELECT key FROM suppression_key") for conn in (first, second, pool)
    ]
    assert len(set(keys)) == 3 and all(len(k) == 64 for k in keys)
    # Nor can the key be replaced or lost: every hash kept so far would stop matching.
    for statement in (
        "UPDATE suppression_key SET key = key",
        "DELETE FROM suppression_key",
        "TRUNCATE suppression_key",
    ):
        with pytest.raises(asyncpg.RaiseError, match="never changed or removed"):
            await first.execute(statement)


async def test_migration_hashes_the_addresses_kept_so_far_and_drops_them(new_database):
    conn = await new_database()
    await conn.execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for migration in schema.available_migrations():
        if migration.version < 4:
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2)", migration.version, migration.name
            )
    # As 567be3e kept them: the lower-cased address, the server's reply quoting it.
    await conn.execute(
        "INSERT INTO recipients (email) VALUES ('Nobody@Example.com'), ('ok@example.com');"
        "INSERT INTO suppressions (email, reason, created_at) VALUES"
        " ('nobody@example.com', '550 5.1.1 <nobody@example.com>: no such user',"
        "  '2026-01-02T03:04:05Z')"
    )
    applied = await schema.migrate(conn)
    assert 4 in [m.version for m in applied]
    rows = await conn.fetch("SELECT to_jsonb(s)::text AS row, s.* FROM suppressions s")
    assert [(r["reason"], r["created_at"].isoformat()) for r in rows] == [
        ("bounced", "2026-01-02T03:04:05+00:00")
    ]
    assert rows[0]["address_hash"] == await conn.fetchval(
        "SELECT suppression_hash('Nobody@Example.com')"
    )
    assert "nobody" not in rows[0]["row"].lower()
    columns = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'suppressions'"
    )
    assert sorted(c[0] for c in columns) == ["address_hash", "created_at", "reason"]
    # The statement that queues mail skips the converted entry.
    await conn.execute(
        "INSERT INTO campaigns (name, subject_template, from_address, html_template,"
        " html_filename) VALUES ('c', 's', 'f@example.com', 'h', 'h.html')"
    )
    await conn.execute(SQL.queue_campaign, await conn.fetchval("SELECT id FROM campaigns"))
    queued = await conn.fetch(
        "SELECT r.email FROM outbox o JOIN recipients r ON r.id = o.recipient_id"
    )
    assert [r[0] for r in queued] == ["ok@example.com"]


async def test_erased_person_is_never_mailed_again_and_no_address_is_kept(
    pool, settings, mailbox, add_recipients, make_campaign
):
    await add_recipients(PEOPLE)
    await make_campaign(HTML, name="first")
    await send_campaign(pool, settings, "first")
    async with pool.acquire() as conn:
        assert await erase(conn, "Ann@Example.com ")
    assert await rows_quoting(pool, "ann@example.com", "Oslo") == []
    assert [
        tuple(r) for r in await pool.fetch("SELECT address_hash, reason FROM suppressions")
    ] == [(await hash_of(pool, "ann@example.com"), "erased")]

    # The same list again: Ann is skipped and counted, Bob is already there.
    result = await add_recipients(PEOPLE.replace("ann@", "ANN@"))
    assert (result.imported, result.unchanged, result.suppressed) == (0, ["bob@example.com"], 1)
    assert await rows_quoting(pool, "ann@example.com") == []
    await make_campaign(HTML, name="second")
    progress = await send_campaign(pool, settings, "second")
    assert progress.counts["sent"] == 1
    assert [len(mailbox.for_address(a)) for a in ("ann@example.com", "bob@example.com")] == [1, 2]


async def test_suppressed_after_queueing_is_skipped_at_sending(
    pool, settings, mailbox, add_recipients, make_campaign
):
    """A complaint arriving while a campaign is queued: its message is skipped, not sent."""
    await add_recipients(PEOPLE)
    await make_campaign(HTML)
    async with pool.acquire() as conn:
        await conn.execute(SQL.queue_campaign, await conn.fetchval("SELECT id FROM campaigns"))
        assert await suppress(conn, "BOB@example.com", "complained") is None
        again = await suppress(conn, "bob@example.com", "operator")
    assert again is not None and again.reason == "complained"  # the first reason stays
    progress = await send_campaign(pool, settings, "c")
    assert (progress.counts["sent"], progress.counts["skipped"]) == (1, 1)
    assert mailbox.for_address("bob@example.com") == []
    assert (
        await pool.fetchval(
            "SELECT smtp_reply FROM outbox o JOIN recipients r ON r.id = o.recipient_id"
            " WHERE r.email = 'bob@example.com'"
        )
        == "address suppressed (complained)"
    )
    # A later campaign does not even queue him.
    await make_campaign(HTML, name="later")
    later = await send_campaign(pool, settings, "later")
    assert (later.counts["sent"], later.counts["skipped"]) == (1, 0)


def one_line(result, code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stderr == ""
    (line,) = result.stdout.splitlines()
    return line


async def test_suppression_commands(fairclick, write_file, pool):  # noqa: F811 - fixture
    listed = write_file("people.csv", PEOPLE)
    assert one_line(fairclick("suppression", "check", "ann@example.com"), 1) == (
        "ann@example.com is not suppressed"
    )
    assert one_line(
        fairclick("suppression", "add", "Ann@Example.com", "--reason", "complained"), 0
    ) == ("suppressed Ann@Example.com (complained): no campaign will mail it")
    line = one_line(fairclick("suppression", "add", "ann@example.com"), 0)
    assert line.startswith("ann@example.com is suppressed (complained on 20")
    assert line.endswith("; nothing changed")
    assert one_line(fairclick("suppression", "check", " ANN@example.com"), 0).startswith(
        "ANN@example.com is suppressed (complained on 20"
    )

    imported = fairclick("recipients", "import", str(listed))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.splitlines() == [
        f"imported 1 recipient(s) from {listed}",
        "1 suppressed address(es) skipped: they were erased, bounced or complained; "
        "see `fairclick suppression remove`",
    ]
    assert [r[0] for r in await pool.fetch("SELECT email FROM recipients")] == ["bob@example.com"]

    # Ann opted in again: the operator lifts it, and the next import brings her in.
    line = one_line(fairclick("suppression", "remove", "ann@example.com"), 0)
    assert line.startswith("lifted the suppression of ann@example.com (complained on 20")
    assert line.endswith("): it can be imported and mailed again")
    assert one_line(fairclick("suppression", "remove", "ann@example.com"), 1) == (
        "ann@example.com is not suppressed; nothing changed"
    )
    again = fairclick("recipients", "import", str(listed))
    assert again.stdout.splitlines()[0] == f"imported 1 recipient(s) from {listed}"
    assert "suppressed" not in again.stdout
    assert await pool.fetchval("SELECT count(*) FROM suppressions") == 0


@pytest.mark.parametrize(
    ("email", "problem"),
    [
        ("", "not an email address: ''"),
        ("ann.example.com", "not an email address: 'ann.example.com'"),
        ("ann@", "not an email address: 'ann@'"),
        ("ann\r\n@example.com", "control characters in the address 'ann\\r\\n@example.com'"),
        ("ann@例え.jp", "write the domain of 'ann@例え.jp' in its ASCII (xn--) form"),
        (os.fsdecode(b"\xffann@example.com"), "is not valid UTF-8"),
    ],
)
async def test_suppression_command_refuses_what_is_not_an_address(
    fairclick,  # noqa: F811 - the fixture
    pool,
    email,
    problem,
):
    for action in ("check", "add", "remove"):
        assert problem in one_line_error(fairclick("suppression", action, email))
    assert await pool.fetchval("SELECT count(*) FROM suppressions") == 0


async def quickstart_once(env: dict, port: int) -> str:
    """Run `fairclick quickstart` until it is up, stop it with Ctrl-C; what it printed."""
    async with running_quickstart(env, port) as (process, printed):
        pass
    err = (await process.stderr.read()).decode()
    # Its handler is in place before it says Ctrl-C stops everything: a clean stop.
    assert process.returncode == 0 and "Traceback" not in err, err
    return printed


@pytest.fixture
def data_dir():
    """Outside pytest's tmp folders: another pytest run resets their parent to 0700, which
    the embedded PostgreSQL's own user (when run as root) then cannot traverse."""
    folder = Path(tempfile.mkdtemp(prefix="fc-qs-"))
    yield folder / "data"
    shutil.rmtree(folder, ignore_errors=True)


async def test_quickstart_again_does_not_mail_an_erased_example_person(data_dir, tracker_port):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRCLICK_")}
    env["FAIRCLICK_DATA_DIR"] = str(data_dir)
    env["FAIRCLICK_OPS_LISTEN"] = "off"  # not 9180, which anything else may hold
    mail = data_dir / "mail"

    def mailed(address: str) -> int:
        return len(list(mail.glob(f"*-{address}.eml")))  # one file per envelope recipient

    first = await quickstart_once(env, tracker_port)
    assert "recipients: 3 imported, 0 already there, 0 suppressed" in first
    assert mailed("ada@example.com") == 1 and len(list(mail.glob("*.eml"))) == 3

    erased = subprocess.run(
        [sys.executable, "-m", "fairclick.cli", "erase", "ada@example.com"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert erased.returncode == 0, erased.stderr
    assert "a keyed hash of the address stays on the suppression list" in erased.stdout

    again = await quickstart_once(env, tracker_port)
    assert (
        "recipients: 0 imported, 2 already there, "
        "1 suppressed (erased, bounced or complained) skipped"
    ) in again
    assert "sent 0 now" in again
    assert mailed("ada@example.com") == 1 and len(list(mail.glob("*.eml"))) == 3
