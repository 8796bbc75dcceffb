"""Importing recipients: every bad row reported by line, nothing half-imported."""

from __future__ import annotations

import json

import pytest

from tracker.errors import ImportRowsError


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
