"""Importing recipients: every bad row reported by line, nothing half-imported."""

from __future__ import annotations

import json

import pytest

from mailer.message import build_message, parse_from_address, wire_bytes
from tracker.errors import ImportRowsError
from tracker.recipients import import_recipients


async def test_bad_rows_are_reported_by_line_and_nothing_is_imported(pool, add_recipients):
    await add_recipients("email\nkeep@example.com\n", name="first.csv")
    csv_text = (
        "email,name,format,tracking_consent\n"  # line 1
        "ok@example.com,Ok,html,yes\n"  # line 2
        "not-an-address,Bad,html,no\n"  # line 3
        "ok2@example.com,Ok2,pdf,no\n"  # line 4
        "OK@example.com,Dup,text,no\n"  # line 5: duplicate of line 2
        "ok3@example.com,Ok3,text,maybe\n"  # line 6
        "ok4@example.com,Ok4,text,no,extra\n"  # line 7
    )
    with pytest.raises(ImportRowsError) as error:
        await add_recipients(csv_text, name="bad.csv")
    lines = [line for line, _ in error.value.problems]
    assert lines == [3, 4, 5, 6, 7]
    message = str(error.value)
    for expected in (
        "bad.csv:3: invalid email",
        "bad.csv:4: unknown format 'pdf'",
        "bad.csv:5: duplicate of line 2",
        "bad.csv:6: tracking_consent",
        "bad.csv:7: more fields",
    ):
        assert expected in message
    emails = [r["email"] for r in await pool.fetch("SELECT email FROM recipients")]
    assert emails == ["keep@example.com"]


async def test_defaults_are_html_and_no_consent_and_extra_columns_are_attributes(
    pool, add_recipients
):
    result = await add_recipients("email,company\nann@example.com,Acme\n")
    assert result.imported == 1
    row = await pool.fetchrow("SELECT format, tracking_consent, attributes FROM recipients")
    assert (row["format"], row["tracking_consent"]) == ("html", False)
    assert json.loads(row["attributes"]) == {"company": "Acme"}
    events = await pool.fetch("SELECT kind, value, source FROM consent_events ORDER BY id")
    assert [(e["kind"], e["value"]) for e in events] == [
        ("format", "html"),
        ("tracking", "not granted"),
    ]
    assert events[0]["source"] == "import:recipients.csv:2"


async def test_json_lines(pool, add_recipients):
    text = (
        '{"email": "j@example.com", "name": "J", "format": "text",'
        ' "tracking_consent": "no", "tier": 2}\n'
        "\n"
        '{"email": "k@example.com", "tracking_consent": true}\n'
    )
    result = await add_recipients(text, name="people.jsonl")
    assert result.imported == 2
    rows = {r["email"]: r for r in await pool.fetch("SELECT * FROM recipients")}
    assert rows["j@example.com"]["format"] == "text"
    assert json.loads(rows["j@example.com"]["attributes"]) == {"tier": 2}
    assert rows["k@example.com"]["tracking_consent"] is True


async def test_bad_json_lines_are_reported_by_line(pool, add_recipients):
    text = '{"email": "a@example.com"}\n{"email": \n["not", "an object"]\n'
    with pytest.raises(ImportRowsError) as error:
        await add_recipients(text, name="bad.jsonl")
    assert [line for line, _ in error.value.problems] == [2, 3]
    assert await pool.fetchval("SELECT count(*) FROM recipients") == 0


async def test_reimport_leaves_peoples_own_choices_alone(pool, add_recipients):
    await add_recipients("email,tracking_consent\nann@example.com,no\n")
    await pool.execute("UPDATE recipients SET unsubscribed_at = now()")
    result = await add_recipients(
        "email,tracking_consent\nANN@example.com,yes\nnew@example.com,no\n"
    )
    assert (result.imported, result.unchanged) == (1, ["ANN@example.com"])
    row = await pool.fetchrow(
        "SELECT tracking_consent, unsubscribed_at FROM recipients WHERE email = 'ann@example.com'"
    )
    assert row["tracking_consent"] is False and row["unsubscribed_at"] is not None


async def test_a_file_without_an_email_column_is_refused(pool, add_recipients):
    with pytest.raises(ImportRowsError, match="no 'email' column"):
        await add_recipients("mail,name\na@example.com,A\n")


GOOD = "email,name,format,tracking_consent\r\nann@example.com,Ann,html,yes\r\n"  # lines 1-2
GOOD_JSON = '{"email": "ann@example.com", "name": "Ann"}\n'  # line 1


UNMAILABLE = [
        # CR/LF in a quoted name: a header injection waiting for the To line.
        ("crlf.csv", GOOD + 'cat@example.com,"Cat\r\nBcc: all@example.net",html,no\r\n',
         [(3, "control character \\x0d in the name")]),
        ("ctrl.csv", GOOD + "ct\x01rl@example.com,Ctrl,html,no\n",
         [(3, "invalid email address 'ct\\x01rl@example.com' (control character \\x01)")]),
        ("esc.csv", GOOD + "esc@example.com,\x1b[31mRed,html,no\n",
         [(3, "control character \\x1b in the name")]),
        ("dots.csv", GOOD + "a..b@example.com,A,html,no\nback\\slash@example.com,B,html,no\n",
         [(3, "invalid email address 'a..b@example.com'"), (4, "invalid email address")]),
        # An unclosed quote would swallow every row after it.
        ("unclosed.csv", GOOD + 'cat@example.com,"Cat,html,no\ndan@example.com,Dan,html,no\n',
         [(3, "never closed")]),
        ("runs-on.csv", GOOD + 'cat@example.com,"Cat\ndan@example.com,"Dan",html,no\n',
         [(3, "not closed properly")]),
        ("twice.csv", "email,name,email\nann@example.com,Ann,bob@example.com\n",
         [(1, "column 'email' appears more than once")]),
        ("twice-case.csv", "Email,name, EMAIL\nann@example.com,Ann,bob@example.com\n",
         [(1, "column 'email' appears more than once")]),
        # U+2028 and \x1c are line breaks to str.splitlines, not to RFC 4180: the row stays
        # one row, and the next row's line number stays true.
        ("u2028.csv", GOOD + "cat@example.com,Ca\u2028t,html,no\ndan@example.com,Dan,pdf,no\n",
         [(3, "control character \\u2028 in the name"), (4, "unknown format 'pdf'")]),
        ("fs.csv", GOOD + "cat@example.com,Ca\x1ct,html,no\ndan@example.com,Dan,pdf,no\n",
         [(3, "control character \\x1c in the name"), (4, "unknown format 'pdf'")]),
        ("nul.csv", GOOD + "cat@example.com,C\x00at,html,no\n", [(3, "NUL character")]),
        ("huge.csv", GOOD + "cat@example.com," + "x" * 5_000_000 + ",html,no\n",
         [(3, "a field is longer than 100000 characters")]),
        ("big.csv", GOOD + "cat@example.com," + "x" * 100_001 + ",html,no\n",
         [(3, "a field is longer than 100000 characters")]),
        ("latin1.csv", (GOOD + "cat@example.com,Ren\xe9,html,no\n").encode("latin-1"),
         [(3, "not UTF-8 text")]),
        # JSON lines: the same rules.
        ("crlf.jsonl", GOOD_JSON + '{"email": "cat@example.com", "name": "Cat\\r\\nBcc: x"}\n',
         [(2, "control character \\x0d in the name")]),
        ("ctrl.jsonl", GOOD_JSON + '{"email": "ct\\u0001rl@example.com"}\n',
         [(2, "control character \\x01")]),
        ("u2028.jsonl", GOOD_JSON + '{"email": "cat@example.com", "name": "Ca\u2028t"}\n{"x\n',
         [(2, "control character \\u2028 in the name"), (3, "not valid JSON")]),
        ("nul.jsonl", GOOD_JSON + '{"email": "cat@example.com", "city": "A\\u0000B"}\n',
         [(2, "NUL character")]),
        ("huge.jsonl", GOOD_JSON + '{"email": "cat@example.com", "name": "' + "x" * 5_000_000
         + '"}\n', [(2, "a field is longer than 100000 characters")]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "problems"), UNMAILABLE, ids=[case[0] for case in UNMAILABLE]
)
async def test_rows_that_cannot_be_mailed_are_refused_by_line(
    pool, tmp_path, name, content, problems
):
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    with pytest.raises(ImportRowsError) as error:
        async with pool.acquire() as conn:
            await import_recipients(conn, path)
    assert [line for line, _ in error.value.problems] == [line for line, _ in problems]
    for (_, got), (_, expected) in zip(error.value.problems, problems, strict=True):
        assert expected in got
    assert len(str(error.value)) < 1000  # a 5 MB value is not echoed back
    # The valid row before the bad one is not imported either.
    assert await pool.fetchval("SELECT count(*) FROM recipients") == 0


async def test_every_imported_address_and_name_can_be_mailed(pool, add_recipients):
    result = await add_recipients(
        "email,name,address\n"
        'o\'brien+tag@mail.example.com,Ó Briain,"1 Main St\nDublin"\n'  # lines 2-3
        "δοκιμή@example.com,Δοκιμή,\n"  # line 4: SMTPUTF8
        "a.b-c_d@example.co.uk, Spaced ,\n"  # line 5
    )
    assert result.imported == 3
    rows = await pool.fetch("SELECT email, name, attributes FROM recipients ORDER BY id")
    assert [r["name"] for r in rows] == ["Ó Briain", "Δοκιμή", "Spaced"]
    assert json.loads(rows[0]["attributes"]) == {"address": "1 Main St\nDublin"}
    sources = await pool.fetch("SELECT DISTINCT source FROM consent_events ORDER BY source")
    # Line numbers are where each row begins, true after a row that spans two lines.
    assert [s["source"] for s in sources] == [f"import:recipients.csv:{n}" for n in (2, 4, 5)]
    for row in rows:
        message = build_message(
            sender=parse_from_address("News <news@example.com>"),
            to_email=row["email"],
            to_name=row["name"],
            subject="Hi",
            text="Hi",
            html=None,
            domain="example.com",
            unsubscribe_url="https://t.example.com/p/x",
        )
        assert row["email"].encode() in wire_bytes(message)
