"""Children under 13 (privacy policy section 7): refused at import, erased at once on discovery.

An import with a child's row fails as a whole, names the line and the column only, and
stores nothing anywhere (every table of the database is checked). `fairclick erase EMAIL
--minor` leaves only the suppression hash (reason minor) and a count of such erasures.
"""

# ruff: noqa: F811 - `fairclick` is test_cli's fixture, imported to be used by name
from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from helpers import tracked_links
from test_cli import fairclick  # noqa: F401 - the fixture, used by name

from tracker.errors import ImportRowsError
from tracker.minors import child_problem
from tracker.recipients import validate

ADULTS = "email,name,format,tracking_consent,{col}\nann@example.com,Ann,html,yes,{adult}\n"
CHILD = "kid@example.com,Kiddo Zebedee,html,yes,{child}\n"
TODAY = date.today()
TEN_YEARS_AGO = date(TODAY.year - 10, 1, 1)
# Tables that hold no person, ever: the key of the suppression hashes, the migrations.
NOT_ABOUT_PEOPLE = {"suppression_key", "schema_migrations"}


async def every_table(pool) -> dict[str, list[str]]:
    """Every row of every table of the database, as text (partitions and rollups included)."""
    names = [
        r[0]
        for r in await pool.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1"
        )
    ]
    return {
        name: [r[0] for r in await pool.fetch(f'SELECT t::text FROM "{name}" t')]
        for name in names
        if name not in NOT_ABOUT_PEOPLE
    }


@pytest.mark.parametrize(
    ("column", "adult", "child"),
    [
        ("age", "40", "12"),
        ("age", "13", "0"),
        ("under_13", "no", "yes"),
        ("under_13", "", "TRUE"),
        ("minor", "0", "1"),
        ("birth_date", "1980-01-31", TEN_YEARS_AGO.isoformat()),
        ("date_of_birth", "1980-01-31", (TODAY - timedelta(days=1)).isoformat()),
        ("dob", "", TEN_YEARS_AGO.isoformat()),
    ],
)
async def test_a_childs_row_is_refused_by_line_and_nothing_is_stored(
    fairclick,
    write_file,
    pool,
    column,
    adult,
    child,
):
    text = ADULTS.format(col=column, adult=adult) + CHILD.format(child=child)
    path = write_file("people.csv", text + "bob@example.com,Bob,text,no,\n")
    result = fairclick("recipients", "import", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nothing was imported" in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith(f"{path}:")]
    assert line == (
        f"{path}:3: refused: marks a child under 13 (column {column}); "
        "nothing about this person is kept"
    )
    # Nothing about the child (nor anyone else of the file) anywhere: not a row, not a wording.
    for table, rows in (await every_table(pool)).items():
        assert rows == [], table
    for said in (result.stdout, result.stderr):
        assert "kid@" not in said and "Kiddo" not in said


async def test_a_childs_json_line_is_refused_too(fairclick, write_file, pool):
    path = write_file(
        "people.jsonl",
        json.dumps({"email": "ann@example.com"})
        + "\n"
        + json.dumps({"email": "kid@example.com", "under_13": True})
        + "\n"
        + json.dumps({"email": "cub@example.com", "age": 7})
        + "\n",
    )
    result = fairclick("recipients", "import", str(path))
    assert result.returncode == 2
    flagged = [x for x in result.stderr.splitlines() if x.startswith(f"{path}:")]
    assert [x.split(":")[1] for x in flagged] == ["2", "3"]
    assert "kid@" not in result.stderr and "cub@" not in result.stderr
    assert await pool.fetchval("SELECT count(*) FROM recipients") == 0


def test_thirteen_today_is_not_a_child_and_unreadable_ages_are_errors():
    born = date(2013, 6, 1)
    assert child_problem({"birth_date": "2013-06-01"}, born.replace(year=2026)) is None
    assert "child" in child_problem({"birth_date": "2013-06-01"}, date(2026, 5, 31))
    assert child_problem({"birth_date": "2012-02-29"}, date(2025, 3, 1)) is None
    assert "child" in child_problem({"birth_date": "2012-02-29"}, date(2025, 2, 28))
    assert child_problem({"age": 13}, TODAY) is None
    assert child_problem({"age": ""}, TODAY) is None and child_problem({}, TODAY) is None
    for record, says in (
        ({"age": "twelve"}, "column age must be a whole number"),
        ({"age": True}, "column age must be a whole number"),
        ({"minor": "perhaps"}, "column minor must be yes or no"),
        ({"dob": "01/02/2015"}, "column dob must be a date written YYYY-MM-DD"),
    ):
        problem = child_problem(record, TODAY)
        assert problem.startswith(says) and str(next(iter(record.values()))) not in problem


def test_a_childs_row_is_nobodys_first_occurrence(tmp_path):
    """A later row with the child's address is not called their duplicate (it would show it)."""
    records = [
        (2, {"email": "kid@example.com", "age": "9"}),
        (3, {"email": "kid@example.com", "name": "Other"}),
    ]
    with pytest.raises(ImportRowsError) as caught:
        validate(tmp_path / "x.csv", records, [])
    assert [line for line, _ in caught.value.problems] == [2]


HTML = (
    "<p>Hi {{ recipient.name }}</p>"
    '<a href="https://example.com/?who={{ recipient.email|urlencode }}">mine</a>'
)


async def test_erase_minor_leaves_only_the_hash_and_the_count(
    fairclick,
    add_recipients,
    make_campaign,
    deliver,
    mailbox,
    tracker,
    http,
    pool,
):
    await add_recipients(
        "email,name,format,tracking_consent,city\n"
        "kid@example.com,Kiddo Zebedee,html,yes,Quixotown\n"
        "ann@example.com,Ann,html,yes,Oslo\n"
    )
    await make_campaign(HTML, name="spring")
    await deliver("spring")
    for message in mailbox.messages():
        (link,) = tracked_links(message.get_body(("html",)).get_content())
        async with http.get(link, allow_redirects=False) as resp:
            assert resp.status == 302
    assert await pool.fetchval("SELECT count(*) FROM clicks WHERE message_id IS NOT NULL") == 2
    before = await every_table(pool)
    result = fairclick("erase", "Kid@Example.com", "--minor")
    assert result.returncode == 0, result.stderr
    assert "kid@" not in result.stdout.lower()
    after = await every_table(pool)
    # Nothing names the child or their city, in any table.
    for table, rows in after.items():
        for row in rows:
            for trace in ("kid@example.com", "kid%40example.com", "Kiddo", "Quixotown"):
                assert trace not in row, (table, row)
    assert [tuple(r) for r in await pool.fetch("SELECT reason FROM suppressions")] == [("minor",)]
    assert await pool.fetchval(
        "SELECT address_hash = suppression_hash('kid@example.com') FROM suppressions"
    )
    assert [
        tuple(r) for r in await pool.fetch("SELECT day, reason, erasures FROM erasure_counts")
    ] == [(TODAY, "minor", 1)]
    # Ann is untouched; the child's click stays only as a count.
    assert await pool.fetchval("SELECT count(*) FROM clicks WHERE message_id IS NOT NULL") == 1
    assert before["recipients"] != after["recipients"] and len(after["recipients"]) == 1
    # An old list never brings the child back.
    reimport = await add_recipients("email\nkid@example.com\n", name="old.csv")
    assert (reimport.imported, reimport.suppressed) == (0, 1)


async def test_erase_minor_of_an_address_not_held_still_suppresses_it(fairclick, pool):
    result = fairclick("erase", "cub@example.com", "--minor")
    assert result.returncode == 0, result.stderr
    assert (
        await pool.fetchval(
            "SELECT reason FROM suppressions"
            " WHERE address_hash = suppression_hash('cub@example.com')"
        )
        == "minor"
    )
    assert await pool.fetchval("SELECT count(*) FROM erasure_counts") == 0
    plain = fairclick("erase", "cub@example.com")  # without --minor: nobody held, as before
    assert plain.returncode == 2


async def test_every_erasure_is_counted_by_reason_without_the_person(
    fairclick,
    add_recipients,
    pool,
):
    await add_recipients("email\nann@example.com\nbob@example.com\n")
    assert fairclick("erase", "ann@example.com").returncode == 0
    assert fairclick("erase", "bob@example.com", "--minor").returncode == 0
    rows = await pool.fetch("SELECT reason, erasures FROM erasure_counts ORDER BY reason")
    assert [tuple(r) for r in rows] == [("minor", 1), ("operator", 1)]
    reasons = await pool.fetch("SELECT reason FROM suppressions ORDER BY reason")
    assert [r[0] for r in reasons] == ["erased", "minor"]
