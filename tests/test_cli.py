"""The `fairclick` command as a real subprocess: clear one-line errors, nothing half-done."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import free_port
from helpers import tracked_links

from tracker.tokens import Tokens, key_fingerprint

KEY = "cli-test-secret-key-0123456789ab"
PEOPLE = (
    "email,name,format,tracking_consent\n"
    "ann@example.com,Ann,html,yes\n"
    "bob@example.com,Bob,text,no\n"
    "cat@example.com,Cat,html,no\n"
    "dan@example.com,Dan,html,yes\n"
)
HTML = '<p>Hi {{ recipient.name }}</p>\n<a href="https://example.com/one">one</a>\n'


def environment(db_url, tmp_path, **env: str | None) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FAIRCLICK_")}
    environ |= {
        "FAIRCLICK_DATABASE_URL": db_url,
        "FAIRCLICK_DATA_DIR": str(tmp_path / "data"),
        "FAIRCLICK_SECRET_KEY": KEY,
        # Not the default 127.0.0.1:9180, which anything else on the machine may hold.
        "FAIRCLICK_OPS_LISTEN": "off",
    }
    for name, value in env.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return environ


@pytest.fixture
def fairclick(db_url, tmp_path):
    """Run `fairclick ARGS` with the test database; extra env values override (None unsets)."""

    def run(*args: str, timeout: float = 120, **env: str | None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "fairclick.cli", *args],
            env=environment(db_url, tmp_path, **env),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FAIRCLICK_SMTP_URL", "http://x"),
        ("FAIRCLICK_SMTP_URL", "smtp://mail.example.com:notaport"),
        ("FAIRCLICK_BASE_URL", "ftp://x"),
        ("FAIRCLICK_BASE_URL", "https://"),
        ("FAIRCLICK_SECRET_KEY", "short"),
        ("FAIRCLICK_SECRET_KEY", KEY + ",tooshort"),
    ],
)
@pytest.mark.parametrize("command", [["migrate"], ["report", "spring"]])
async def test_malformed_setting_is_one_clear_line(fairclick, variable, value, command):
    line = one_line_error(fairclick(*command, **{variable: value}))
    assert line.startswith("fairclick: ") and variable in line
    assert KEY not in line  # a key is never echoed


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("mysql://x@y/z", "not a PostgreSQL URL (scheme 'mysql')"),
        ("not a url", "not a PostgreSQL URL (no scheme)"),
        ("postgresql://fc:pw@127.0.0.1:99999/fc", "the port 99999 that is not a number"),
        ("postgresql://fc:s3cret/fc", "a port that is not a number"),  # host forgotten
        ("postgresql://fc:pw@[::1/fc", "malformed"),
    ],
)
@pytest.mark.parametrize("command", [["migrate"], ["serve", "--port", "1"], ["send", "c"]])
async def test_malformed_database_url_is_one_line_naming_it(fairclick, value, says, command):
    line = one_line_error(fairclick(*command, FAIRCLICK_DATABASE_URL=value))
    assert line.startswith("fairclick: FAIRCLICK_DATABASE_URL") and says in line
    assert "postgresql://" in line  # an example of a good one
    assert "s3cret" not in line and "pw@" not in line  # the password is never echoed


async def test_database_that_cannot_be_reached_is_one_line(fairclick, db_url, tmp_path):
    parts = urlsplit(db_url)
    missing_db = urlunsplit(parts._replace(path="/no_such_database"))
    for url, says in [
        (missing_db, 'database "no_such_database" does not exist'),
        (f"postgresql://fc@127.0.0.1:{free_port()}/fc", "nothing accepts connections there"),
        ("postgresql://fc@host.invalid/fc", "host name is unknown"),
    ]:
        line = one_line_error(fairclick("migrate", FAIRCLICK_DATABASE_URL=url))
        assert says in line and "FAIRCLICK_DATABASE_URL" in line


@pytest.mark.parametrize(
    ("missing", "present"),
    [
        ("FAIRCLICK_BASE_URL", {"FAIRCLICK_SMTP_URL": "smtp://127.0.0.1:1"}),
        ("FAIRCLICK_SMTP_URL", {"FAIRCLICK_BASE_URL": "http://127.0.0.1:1"}),
    ],
)
async def test_send_names_the_missing_setting(fairclick, pool, missing, present):
    line = one_line_error(fairclick("send", "spring", "--quiet", **present))
    assert f"{missing} is not set" in line
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


@pytest.fixture
def busy_port():
    """A port another process's socket holds (listening, without SO_REUSEPORT)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_serve_on_a_busy_port_is_one_line(fairclick, busy_port, workers):
    # Before, one worker printed a traceback; two were restarted forever.
    result = fairclick("serve", "--port", str(busy_port), "--workers", workers, timeout=60)
    line = one_line_error(result)
    assert f"cannot listen on 127.0.0.1:{busy_port} (Address already in use)" in line
    assert "choose another with --port" in line
    assert result.stdout == ""  # never claimed to be serving


BAD_NUMBERS = [["--port", "70000"], ["--port", "-1"], ["--port", "0"], ["--port", "x"]]


@pytest.mark.parametrize(
    ("command", "args"),
    [("serve", a) for a in [*BAD_NUMBERS, ["--workers", "0"]]]
    + [("quickstart", a) for a in BAD_NUMBERS]
    + [("send", ["--processes", n, "c"]) for n in ("0", "-2", "two", "1e9", "100000")],
)
async def test_port_and_workers_out_of_range_are_refused_by_the_parser(fairclick, command, args):
    result = fairclick(command, *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: argument {args[0]}: " in result.stderr.strip().splitlines()[-1]


async def test_import_with_bad_rows_lists_each_and_imports_nothing(fairclick, write_file, pool):
    path = write_file(
        "people.csv",
        "email,name,format,tracking_consent\n"
        "ok@example.com,Ok,html,yes\n"  # 2
        "not-an-email,Bad,html,no\n"  # 3
        "fine@example.com,Fine,pdf,no\n"  # 4
        "OK@example.com,Dup,html,no\n"  # 5
        "also@example.com,Also,text,maybe\n"  # 6
        "last@example.com,Last,text,no\n",  # 7
    )
    result = fairclick("recipients", "import", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nothing was imported" in result.stderr and "imported" not in result.stdout
    flagged = sorted(int(n) for n in re.findall(rf"{path}:(\d+):", result.stderr))
    assert flagged == [3, 4, 5, 6]
    assert "'pdf'" in result.stderr and "'maybe'" in result.stderr and "line 2" in result.stderr
    assert await pool.fetchval("SELECT count(*) FROM recipients") == 0
    assert await pool.fetchval("SELECT count(*) FROM consent_events") == 0


async def test_import_of_good_rows(fairclick, write_file, pool):
    result = fairclick("recipients", "import", str(write_file("people.csv", PEOPLE)))
    assert result.returncode == 0, result.stderr
    assert "imported 4 recipient(s)" in result.stdout
    rows = await pool.fetch("SELECT email, format, tracking_consent FROM recipients ORDER BY id")
    assert [tuple(r) for r in rows][:2] == [
        ("ann@example.com", "html", True),
        ("bob@example.com", "text", False),
    ]


@pytest.mark.parametrize(
    ("content", "where", "what"),
    [
        (PEOPLE + 'eve@example.com,"Eve\r\nBcc: all@example.net",html,no\n', 6, "\\x0d"),
        (PEOPLE + "ct\x01rl@example.com,Ctrl,html,no\n", 6, "\\x01"),
        (PEOPLE + 'eve@example.com,"Eve,html,no\nfay@example.com,Fay,html,no\n', 6, "never closed"),
        ("email,name,email\nann@example.com,Ann,a@example.com\n", 1, "more than once"),
        (PEOPLE + "eve@example.com,E\u2028ve,html,no\nfay@example.com,Fay,pdf,no\n", 7, "'pdf'"),
        (PEOPLE + "eve@example.com,E\x00ve,html,no\n", 6, "NUL"),
        (PEOPLE + "eve@example.com," + "x" * 5_000_000 + ",html,no\n", 6, "longer than"),
        (PEOPLE.encode() + b"eve@example.com,\xff,html,no\n", 6, "not UTF-8"),
    ],
    ids=["crlf", "control", "unclosed", "header", "u2028", "nul", "5mb", "latin1"],
)
async def test_import_of_unmailable_rows_names_the_line_and_imports_nothing(
    fairclick, tmp_path, pool, content, where, what
):
    path = tmp_path / "people.csv"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    result = fairclick("recipients", "import", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("fairclick: ") and "nothing was imported" in result.stderr
    flagged = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:{where}: ")]
    assert len(flagged) == 1 and what in flagged[0], result.stderr
    assert len(result.stderr) < 1000
    assert await pool.fetchval("SELECT count(*) FROM recipients") == 0


async def test_from_with_an_encoded_line_break_is_one_line(fairclick, write_file, pool):
    html = write_file("p.html", HTML)
    sender = "=?utf-8?q?a=0D=0Ab?= <news@example.com>"
    line = one_line_error(
        fairclick(
            "campaign", "create", "p", "--subject", "Hi", "--from", sender, "--html", str(html)
        )
    )
    assert "--from '=?utf-8?q?a=0D=0Ab?= <news@example.com>' is not one email address" in line
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


async def test_preview_of_a_name_with_a_line_break_stored_in_the_database(
    fairclick, write_file, add_recipients, pool
):
    """The importer refuses it; a name written to the database another way is made safe."""
    await add_recipients(PEOPLE)
    html = write_file("p.html", HTML)
    created = fairclick("campaign", "create", "p", "--subject", "Hi {{ recipient.name }}",
                        "--from", "News <news@example.com>", "--html", str(html))  # fmt: skip
    assert created.returncode == 0, created.stderr
    update = "UPDATE recipients SET {} = $1 WHERE email = $2"
    await pool.execute(update.format("name"), "Ann\r\nBcc: all@example.net", "ann@example.com")
    base = {"FAIRCLICK_BASE_URL": "https://t.example.com"}
    result = fairclick("preview", "p", "--to", "ann@example.com", **base)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    headers = result.stdout.split("\n\n", 1)[0].splitlines()
    assert 'To: "Ann Bcc: all@example.net" <ann@example.com>' in headers
    assert "Subject: Hi Ann Bcc: all@example.net" in headers
    assert not any(h.startswith("Bcc") for h in headers)
    # An address no message can be written to: one line, not a traceback.
    await pool.execute(update.format("email"), "ct\x01rl@example.com", "bob@example.com")
    line = one_line_error(fairclick("preview", "p", "--to", "ct\x01rl@example.com", **base))
    assert "cannot address a message to 'ct\\x01rl@example.com'" in line


@pytest.mark.parametrize(
    ("html", "subject", "where"),
    [
        ("<p>Hi</p>\n<p>there</p>\n{% endfor %}\n", "Hello", "{html}:3"),
        ("<p>Hi</p>\n<p>{{ recipient.nmae.upper() }}</p>\n", "Hello", "{html}:2"),
        (HTML, "Hello {{ recipient.name", "subject:1"),
    ],
)
async def test_campaign_with_template_error_names_file_line_and_stores_nothing(
    fairclick, write_file, add_recipients, pool, html, subject, where
):
    await add_recipients(PEOPLE)
    path = write_file("spring.html", html)
    result = fairclick(
        "campaign",
        "create",
        "spring",
        "--subject",
        subject,
        "--from",
        "News <news@example.com>",
        "--html",
        str(path),
    )
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    assert where.format(html=path) in result.stderr
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


@pytest.fixture
async def reported_campaign(fairclick, write_file, add_recipients, pool):
    """Campaign 'spring': 3 sent (2 HTML, 1 text), 1 failed, and known clicks on two links."""
    await add_recipients(PEOPLE)
    result = fairclick(
        "campaign",
        "create",
        "spring",
        "--subject",
        "Spring news",
        "--from",
        "News <news@example.com>",
        "--html",
        str(write_file("spring.html", HTML)),
    )
    assert result.returncode == 0, result.stderr
    cid = await pool.fetchval("SELECT id FROM campaigns WHERE name = 'spring'")
    ids = {r["email"][:3]: r["id"] for r in await pool.fetch("SELECT id, email FROM recipients")}
    msg = {}
    for who, status, fmt in [
        ("ann", "sent", "html"),
        ("bob", "sent", "text"),
        ("cat", "sent", "html"),
        ("dan", "failed", None),
    ]:
        msg[who] = await pool.fetchval(
            "INSERT INTO outbox (campaign_id, recipient_id, status, format)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            cid,
            ids[who],
            status,
            fmt,
        )
    one, two = [
        await pool.fetchval(
            "INSERT INTO links (campaign_id, url, name) VALUES ($1, $2, $3) RETURNING id",
            cid,
            url,
            name,
        )
        for url, name in [("https://example.com/one", "one"), ("https://example.com/two", "")]
    ]
    clicks = [
        (one, msg["ann"], "human"),
        (one, msg["ann"], "human"),
        (one, None, "human"),
        (one, None, "bot"),
        (two, msg["ann"], "human"),
        (two, None, "bot"),
        (two, None, "bot"),
    ]
    await pool.executemany(
        "INSERT INTO clicks (link_id, message_id, kind) VALUES ($1, $2, $3)", clicks
    )
    return "spring"


async def test_report_json_has_documented_keys_and_counts(fairclick, reported_campaign):
    result = fairclick("report", reported_campaign, "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"campaign", "sent", "failed", "recipients", "clicks", "links"} <= report.keys()
    assert (report["campaign"], report["sent"], report["failed"]) == ("spring", 3, 1)
    assert report["recipients"] == {"html": 2, "text": 1}
    assert report["clicks"] == {"total": 4, "unique": 1, "identified": 3, "anonymous": 1, "bot": 3}
    counts = ("total", "unique", "identified", "anonymous", "bot")
    links = [(link["url"], link["name"], *(link[k] for k in counts)) for link in report["links"]]
    assert links == [
        ("https://example.com/one", "one", 3, 1, 2, 1, 1),
        ("https://example.com/two", "", 1, 1, 1, 0, 2),
    ]


async def test_report_csv_has_header_row(fairclick, reported_campaign):
    result = fairclick("report", reported_campaign, "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows == [
        ["url", "name", "total", "unique", "identified", "anonymous", "bot"],
        ["https://example.com/one", "one", "3", "1", "2", "1", "1"],
        ["https://example.com/two", "", "1", "1", "1", "0", "2"],
    ]


async def test_report_table_is_the_default(fairclick, reported_campaign):
    result = fairclick("report", reported_campaign)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Campaign spring"
    # These bot clicks were written without a reason, as rows from before reasons were kept.
    assert "  bot clicks by reason: 3 not recorded" in lines
    assert lines[-2].split() == ["https://example.com/one", "[one]", "3", "1", "2", "1", "1"]
    assert json.loads(fairclick("report", "spring", "--format", "json").stdout)["bot_reasons"] == {
        "not recorded": 3
    }


async def test_report_of_unknown_campaign(fairclick):
    assert "no campaign named 'nope'" in one_line_error(fairclick("report", "nope"))


async def test_erase_unknown_address_is_a_clear_error(fairclick, add_recipients, pool):
    await add_recipients(PEOPLE)
    line = one_line_error(fairclick("erase", "nobody@example.com"))
    assert "nobody@example.com" in line and "nobody with the address" in line
    assert await pool.fetchval("SELECT count(*) FROM recipients") == 4


async def test_erase_known_address(fairclick, add_recipients, pool):
    await add_recipients(PEOPLE)
    result = fairclick("erase", "BOB@example.com")
    assert result.returncode == 0, result.stderr
    emails = await pool.fetch("SELECT email FROM recipients ORDER BY id")
    assert [r["email"] for r in emails] == ["ann@example.com", "cat@example.com", "dan@example.com"]


async def test_migrate_on_migrated_database_is_up_to_date(fairclick, pool):
    before = await pool.fetchval("SELECT count(*) FROM schema_migrations")
    result = fairclick("migrate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "the database is up to date"
    assert await pool.fetchval("SELECT count(*) FROM schema_migrations") == before


async def test_retention_from_the_command_line(fairclick):
    result = fairclick("retention", "--de-identify-after", "12", "--delete-after", "24")
    assert result.returncode == 0, result.stderr
    assert "de-identified 0 click(s) and 0 open(s) from before" in result.stdout
    assert "monthly partitions dropped: none" in result.stdout
    bad = one_line_error(fairclick("retention", "--de-identify-after", "6", "--delete-after", "2"))
    assert "--delete-after (2) must be more months than --de-identify-after (6)" in bad


async def test_preview_prints_the_message_and_says_its_links_are_placeholders(
    fairclick, write_file, add_recipients
):
    await add_recipients(PEOPLE)
    html = write_file(
        "p.html", '<p>Hi {{ recipient.name }}</p><a href="https://example.com/x">x</a>'
    )
    created = fairclick("campaign", "create", "p", "--subject", "Hello", "--from",
                        "News <news@example.com>", "--html", str(html))  # fmt: skip
    assert created.returncode == 0, created.stderr
    result = fairclick(
        "preview", "p", "--to", "ann@example.com", FAIRCLICK_BASE_URL="https://t.example.com"
    )
    assert result.returncode == 0, result.stderr
    assert "Subject: Hello" in result.stdout and "/c/" in result.stdout
    assert "Traceback" not in result.stderr
    assert "placeholder tokens" in result.stderr and "record nothing" in result.stderr


async def test_preview_of_a_hostile_stored_template_is_one_line_and_runs_nothing(
    fairclick, add_recipients, pool, tmp_path
):
    """A template put into the database directly, past `campaign create`'s sandbox check."""
    await add_recipients(PEOPLE)
    marker = tmp_path / "ran"
    html = f"<p>Hi</p>\n{{{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}}}"
    await pool.execute(
        "INSERT INTO campaigns (name, subject_template, from_address, html_template,"
        " html_filename) VALUES ('hostile', 'Hi', 'news@example.com', $1, 'hostile.html')",
        html,
    )
    result = fairclick(
        "preview", "hostile", "--to", "ann@example.com", FAIRCLICK_BASE_URL="https://t.example.com"
    )
    assert "hostile.html:2: SecurityError" in one_line_error(result)
    assert not marker.exists()


def test_embedded_database_without_xdg_runtime_dir_prints_no_warning(tmp_path):
    """platformdirs warns when XDG_RUNTIME_DIR is unset; no command passes that on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAIRCLICK_", "XDG_"))}
    env |= {"FAIRCLICK_DATA_DIR": str(tmp_path / "d"), "PYTHONWARNINGS": "default"}
    for args in (["migrate"], ["report", "nope"]):
        result = subprocess.run(
            [sys.executable, "-m", "fairclick.cli", *args],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert "Warning" not in result.stderr, result.stderr
        assert result.returncode == (0 if args == ["migrate"] else 2), result.stderr


OTHER_KEY = "another-cli-secret-key-0123456789"


@pytest.fixture
def serve_briefly(db_url, tmp_path):
    """Start `fairclick serve` with env, wait until it listens, stop it; (stdout, stderr)."""

    def run(**env: str | None) -> tuple[str, str]:
        with subprocess.Popen(
            [sys.executable, "-m", "fairclick.cli", "serve", "--port", str(free_port())],
            env=environment(db_url, tmp_path, **env),
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ) as process:  # fmt: skip
            try:
                first = process.stdout.readline()  # printed once it listens
                assert "fairclick tracker on" in first, process.stderr.read()
            finally:
                process.send_signal(signal.SIGTERM)
                out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        return first + out, err

    return run


@pytest.fixture
async def campaign_to_send(add_recipients, make_campaign, mailbox, tracker_port):
    """Campaigns 'c' and 'd' and four recipients; the env `send` needs besides the key."""
    await add_recipients(PEOPLE)
    await make_campaign(HTML, name="c")
    await make_campaign(HTML, name="d")
    return {
        "FAIRCLICK_SMTP_URL": f"smtp://127.0.0.1:{mailbox.port}",
        "FAIRCLICK_BASE_URL": f"http://127.0.0.1:{tracker_port}",
    }


async def key_rows(pool) -> set[tuple[str, str]]:
    return {tuple(r) for r in await pool.fetch("SELECT fingerprint, role FROM key_fingerprints")}


async def test_send_with_a_key_the_tracker_does_not_verify_is_refused(
    fairclick, serve_briefly, campaign_to_send, pool, mailbox, tmp_path
):
    """Mail signed with another key than the tracker's answers 404 on every link: refused."""
    serve_briefly(FAIRCLICK_SECRET_KEY=OTHER_KEY)
    assert await key_rows(pool) == {(key_fingerprint(OTHER_KEY.encode()), "verifies")}

    line = one_line_error(fairclick("send", "c", "--quiet", **campaign_to_send))
    assert f"FAIRCLICK_SECRET_KEY signs with key {key_fingerprint(KEY.encode())}" in line
    assert f"the tracker verifies only {key_fingerprint(OTHER_KEY.encode())}" in line
    assert "Set FAIRCLICK_SECRET_KEY to the tracker's key" in line
    assert KEY not in line and OTHER_KEY not in line  # fingerprints, never keys
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert mailbox.messages() == []
    # A key generated in the data dir (FAIRCLICK_SECRET_KEY unset) is refused the same way.
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "secret_key").write_text("a-key-quickstart-generated-once-0123\n")
    line = one_line_error(
        fairclick("send", "c", "--quiet", FAIRCLICK_SECRET_KEY=None, **campaign_to_send)
    )
    assert "secret_key (FAIRCLICK_SECRET_KEY is not set) signs with key" in line
    # So are the other commands that sign links.
    assert "signs with key" in one_line_error(fairclick("preview", "c", "--to", "ann@example.com",
                                                        **campaign_to_send))  # fmt: skip
    assert "signs with key" in one_line_error(fairclick("worker", **campaign_to_send))
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0

    # With the tracker's key it goes out, and its links work on that tracker.
    sent = fairclick("send", "c", "--quiet", FAIRCLICK_SECRET_KEY=OTHER_KEY, **campaign_to_send)
    assert sent.returncode == 0, sent.stderr
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE status = 'sent'") == 4


async def test_rotation_signs_with_the_new_key_once_the_tracker_verifies_it(
    fairclick, serve_briefly, campaign_to_send, pool, mailbox
):
    # Step 1: the tracker verifies the new key too (the old one still first).
    serve_briefly(FAIRCLICK_SECRET_KEY=f"{KEY},{OTHER_KEY}")
    # Step 2: senders sign with the new key, still verifying the old.
    sent = fairclick(
        "send", "c", "--quiet", FAIRCLICK_SECRET_KEY=f"{OTHER_KEY},{KEY}", **campaign_to_send
    )
    assert sent.returncode == 0, sent.stderr
    html = mailbox.for_address("ann@example.com")[0].get_body(("html",)).get_content()
    token = tracked_links(html)[0].rpartition("/c/")[2]
    assert Tokens((OTHER_KEY.encode(),)).click.decode(token) is not None
    # Step 3: the tracker drops the old key: mail sent before with it is warned about.
    _out, err = serve_briefly(FAIRCLICK_SECRET_KEY=OTHER_KEY)
    assert "Warning" not in err and "Traceback" not in err and "signed with key" not in err


async def test_serve_warns_about_signing_keys_it_cannot_verify(
    fairclick, serve_briefly, campaign_to_send, pool
):
    # No tracker has started yet: nothing to check against, the signing key is recorded.
    sent = fairclick("send", "c", "--quiet", **campaign_to_send)
    assert sent.returncode == 0, sent.stderr
    assert await key_rows(pool) == {(key_fingerprint(KEY.encode()), "signs")}

    _out, err = serve_briefly(FAIRCLICK_SECRET_KEY=OTHER_KEY)
    warning = f"mail was signed with key {key_fingerprint(KEY.encode())}"
    assert [line for line in err.splitlines() if warning in line] == [
        f"fairclick: {warning} (last on {datetime.now(UTC):%Y-%m-%d}) that this tracker does "
        "not verify: its links and unsubscribe URLs answer 404. Add that key to "
        "FAIRCLICK_SECRET_KEY after the current one (the first signs, all verify), or set the "
        "senders' FAIRCLICK_SECRET_KEY to this tracker's"
    ]
    # Rotation done right: the tracker verifies the old key too, so no warning.
    _out, err = serve_briefly(FAIRCLICK_SECRET_KEY=f"{OTHER_KEY},{KEY}")
    assert warning not in err


def test_a_key_fingerprint_is_fixed_and_short_and_not_the_key():
    fingerprint = key_fingerprint(KEY.encode())
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint)
    assert fingerprint == key_fingerprint(KEY.encode()) != key_fingerprint(OTHER_KEY.encode())
    assert fingerprint not in hashlib.sha256(KEY.encode()).hexdigest()  # not a plain hash


async def test_campaign_list_and_show(fairclick, reported_campaign, pool):
    """`campaign list` and `campaign show`: the console's numbers, in a table or as JSON."""
    await pool.execute(
        "UPDATE outbox SET smtp_reply = '550 5.1.1 <dan@example.com>: no such user'"
        " WHERE status = 'failed'"
    )
    listing = json.loads(fairclick("campaign", "list", "--format", "json").stdout)
    assert listing["total"] == 1
    (spring,) = listing["campaigns"]
    assert (spring["name"], spring["queued"], spring["sent"], spring["failed"]) == (
        "spring",
        4,
        3,
        1,
    )
    assert spring["clicks"] == {"human": 4, "unique": 1, "bot": 3}
    assert spring["rates"]["human_clicks_per_delivered_html"] == {
        "value": 2.0,
        "numerator": 4,
        "denominator": 2,
    }
    table = fairclick("campaign", "list")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[1].split()[:2] == ["spring", "active"]

    shown = fairclick("campaign", "show", "spring")
    assert shown.returncode == 0, shown.stderr
    assert "        1  550 5.1.1 <dan@example.com>: no such user" in shown.stdout
    assert "    dan@example.com  failed  after 0 attempt(s)  550 5.1.1" in shown.stdout
    assert "human clicks per delivered html 200.0% (4/2)" in shown.stdout
    assert "bot clicks by reason: 3 not recorded" in shown.stdout
    data = json.loads(fairclick("campaign", "show", "spring", "--format", "json").stdout)
    assert data["failures"]["recipients"][0]["email"] == "dan@example.com"
    assert data["clicks"]["identified"] == 3

    # Names and replies reach the terminal with their control characters as escapes.
    await pool.execute("UPDATE campaigns SET name = 'spring\x1b]0;pwned\x07'")
    await pool.execute("UPDATE outbox SET smtp_reply = '550 \x1b[2J' WHERE status = 'failed'")
    for args in (["campaign", "list"], ["campaign", "show", "spring\x1b]0;pwned\x07"]):
        result = fairclick(*args)
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout and "\\x1b" in result.stdout
    assert "no campaign named 'nope'" in one_line_error(fairclick("campaign", "show", "nope"))
