"""Importing recipients from CSV or JSON lines: all rows valid, or nothing imported."""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import asyncpg

from tracker.consent import log_event
from tracker.control_chars import first_control
from tracker.errors import FairclickError, ImportRowsError
from tracker.minors import child_problem
from tracker.queries import SQL
from tracker.suppressions import suppressed_positions
from tracker.wordings import Proof, Wording, import_default

# Deliberately plain: a dot-atom local part (RFC 5322 atext, or any printable non-ASCII
# character: SMTPUTF8, RFC 6531), an ASCII domain of LDH labels with a dot in it. No quoted
# local parts and no comments: what the email package's Address writes as given, so every
# imported address can be put in a To header and an RCPT TO (mailer/message.py).
_ATOM = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+")
# RFC 5321 4.5.3.1: 64 octets for the local part, 254 for a path's address.
MAX_LOCAL_OCTETS = 64
MAX_ADDRESS_OCTETS = 254
# One cap for every field of either format, below the csv module's own field limit
# (131,072), so the error is the same for both.
MAX_FIELD = 100_000
_KNOWN = {"email", "name", "format", "tracking_consent"}
_YES = {"yes": True, "no": False}
# RFC 4180 line breaks only. str.splitlines also breaks on \v, \f, \x1c-\x1e, \x85, U+2028
# and U+2029, which would split a row inside a field and shift every later line number.
_LINE_BREAK = re.compile(r"(?<=\n)|(?<=\r)(?!\n)")
# How much of a bad value an error shows.
SHOWN = 60


@dataclass(frozen=True)
class RecipientRow:
    line: int
    email: str
    name: str = ""
    format: str = "html"
    tracking_consent: bool = False
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportResult:
    imported: int
    unchanged: list[str]
    # Rows skipped because the address is on the suppression list (erased, bounced, complained).
    suppressed: int = 0


Problems = list[tuple[int, str]]


def read_rows(path: Path) -> tuple[list[tuple[int, dict]], Problems]:
    """(line, record) pairs and unreadable lines, from CSV with a header row or JSON lines."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FairclickError(f"{path}: no such file") from None
    except OSError as exc:
        raise FairclickError(f"{path}: cannot be read ({exc.strerror})") from None
    data = data.removeprefix(b"\xef\xbb\xbf")  # a byte order mark, as spreadsheets write
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = len(split_lines(data[: exc.start].decode("utf-8") + "x"))
        raise ImportRowsError(
            str(path), [(line, f"not UTF-8 text (byte {exc.start}): save the file as UTF-8")]
        ) from None
    lines = split_lines(text)
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json") or text.lstrip().startswith("{"):
        return _read_json_lines(lines)
    return _read_csv(path, lines)


def split_lines(text: str) -> list[str]:
    """text's lines with their endings, broken at CRLF, LF or CR only (RFC 4180)."""
    lines = _LINE_BREAK.split(text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def _shown(value: str) -> str:
    """A value for an error line: quoted, escaped, and cut short if long."""
    return repr(value[:SHOWN]) + (f"… ({len(value)} characters)" if len(value) > SHOWN else "")


def _read_json_lines(lines: list[str]) -> tuple[list[tuple[int, dict]], Problems]:
    records, problems = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((number, f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(record, dict):
            problems.append((number, "not a JSON object"))
            continue
        records.append((number, record))
    return records, problems


def _read_csv(path: Path, lines: list[str]) -> tuple[list[tuple[int, dict]], Problems]:
    problems: Problems = []
    for number, line in enumerate(lines, start=1):
        if "\0" in line:
            problems.append((number, "contains a NUL character (\\x00)"))
    # strict: a quote that closes where no field ends is an error, not text that runs on.
    reader = csv.reader((line.replace("\0", "\ufffd") for line in lines), strict=True)
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for row in reader:
            if row:  # a blank line is [] and is skipped
                rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        if "field limit" in str(exc):
            problem = f"a field is longer than {MAX_FIELD} characters"
        elif "end of data" in str(exc):
            problem = (
                "a quoted field opened in this row is never closed "
                "(it would swallow every row after it)"
            )
        else:
            problem = f"a quoted field opened in this row is not closed properly ({exc})"
        raise ImportRowsError(str(path), sorted([*problems, (start, problem)])) from None
    if not rows:
        raise ImportRowsError(str(path), [(1, "the header row has no 'email' column")])
    header_line, header = rows.pop(0)
    names = [name.strip().lower() for name in header]
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        shown = ", ".join(repr(n) for n in repeated)
        problems.append((header_line, f"column {shown} appears more than once in the header row"))
    elif "email" not in names:
        problems.append((header_line, "the header row has no 'email' column"))
    if any(line == header_line for line, _ in problems):  # no columns to read rows by
        raise ImportRowsError(str(path), sorted(problems))
    records = []
    for number, row in rows:
        if len(row) > len(names):
            problems.append((number, "more fields than the header row has columns"))
            continue
        # Missing trailing fields are absent (None), as csv.DictReader has them.
        values = [*row, *[None] * (len(names) - len(row))]
        records.append((number, {n: v for n, v in zip(names, values, strict=True) if n}))
    return records, problems


def _strings(value):
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _field_problems(record: dict) -> list[str]:
    """What no field of any column may hold: NUL (PostgreSQL stores no NUL in text or
    jsonb) and more than MAX_FIELD characters."""
    found = []
    strings = list(_strings(record))
    if any("\0" in s for s in strings):
        found.append("contains a NUL character (\\x00)")
    if any(len(s) > MAX_FIELD for s in strings):
        found.append(f"a field is longer than {MAX_FIELD} characters")
    return found


def email_problem(email: str) -> str | None:
    """Why email cannot be mailed as written, or None."""
    control = first_control(email)
    if control is not None:
        return f"invalid email address {_shown(email)} (control character {control})"
    if not _EMAIL.fullmatch(email):
        return f"invalid email address {_shown(email)}"
    local = email.rpartition("@")[0]
    odd = [c for c in local if not c.isascii() and unicodedata.category(c)[0] in "CZ"]
    if odd:
        return f"invalid email address {_shown(email)} (character {odd[0]!a} in the local part)"
    if len(local.encode()) > MAX_LOCAL_OCTETS or len(email.encode()) > MAX_ADDRESS_OCTETS:
        return (
            f"invalid email address {_shown(email)} (longer than {MAX_LOCAL_OCTETS} bytes "
            f"before the @ or {MAX_ADDRESS_OCTETS} in all)"
        )
    return None


def validate(
    path: Path, records: list[tuple[int, dict]], problems: Problems, *, today: date | None = None
) -> list[RecipientRow]:
    """Rows ready to store, or ImportRowsError listing every problem of the file by line."""
    rows, problems, seen = [], list(problems), {}
    today = today or date.today()
    for number, record in records:
        row_problems = _field_problems(record)
        if row_problems:  # no more checks on values that large or that broken
            problems.append((number, "; ".join(row_problems)))
            continue
        # A child's row (tracker/minors.py): its line and the column, and not one more word,
        # so not even this error shows anything about them; it is not a duplicate's "first".
        child = child_problem(record, today)
        if child is not None:
            problems.append((number, child))
            continue
        # Checked before stripping: str.strip() removes \x1c-\x1f, \x85 and U+2028 too.
        raw_email = str(record.get("email") or "")
        raw_name = str(record.get("name") or "")
        email = raw_email.strip(" ")
        fmt = str(record.get("format") or "html").strip().lower()
        consent = record.get("tracking_consent")
        consent = "no" if consent in (None, "") else consent
        consent = {True: "yes", False: "no"}.get(consent, str(consent).strip().lower())
        problem = email_problem(email)
        if problem is not None:
            row_problems.append(problem)
        elif email.lower() in seen:
            row_problems.append(f"duplicate of line {seen[email.lower()]} ({email})")
        else:
            seen[email.lower()] = number
        if (control := first_control(raw_name)) is not None:
            row_problems.append(f"control character {control} in the name {_shown(raw_name)}")
        if fmt not in ("html", "text"):
            row_problems.append(f"unknown format {_shown(fmt)} (use html or text)")
        if consent not in _YES:
            row_problems.append(f"tracking_consent must be yes or no, not {_shown(consent)}")
        if row_problems:
            problems.append((number, "; ".join(row_problems)))
            continue
        attributes = {k: v for k, v in record.items() if k not in _KNOWN and v is not None}
        rows.append(
            RecipientRow(
                line=number,
                email=email,
                name=raw_name.strip(" "),
                format=fmt,
                tracking_consent=_YES[consent],
                attributes=attributes,
            )
        )
    if problems:
        raise ImportRowsError(str(path), sorted(problems))
    return rows


async def import_recipients(
    conn: asyncpg.Connection, path: Path, *, proof: Proof | None = None
) -> ImportResult:
    """Import every row of the file in one transaction, or none if any row is invalid.

    People already on the list are left as they are: their own choices on the
    preference page outrank whatever a later import file says. Suppressed addresses
    (tracker.suppressions) are skipped and counted: an old list never brings back
    someone who was erased, bounced or complained. proof (tracker.wordings.import_proof):
    the wording the people were shown where their consent was collected, the policy in
    force, who imported; without one, the default wording naming the file.
    """
    if proof is None:
        wording = Wording("import", import_default(path.name))
        proof = Proof("import", {"format": wording, "tracking": wording})
    rows = validate(path, *read_rows(path))
    imported, unchanged = 0, []
    async with conn.transaction():
        suppressed = await suppressed_positions(conn, [row.email for row in rows])
        for position, row in enumerate(rows):
            if position in suppressed:
                continue
            recipient_id = await conn.fetchval(
                SQL.insert_recipient,
                row.email,
                row.name,
                row.format,
                row.tracking_consent,
                json.dumps(row.attributes),
            )
            if recipient_id is None:
                unchanged.append(row.email)
                continue
            imported += 1
            source = f"import:{path.name}:{row.line}"
            await log_event(conn, recipient_id, "format", row.format, source, proof)
            tracking = "granted" if row.tracking_consent else "not granted"
            await log_event(conn, recipient_id, "tracking", tracking, source, proof)
    return ImportResult(imported=imported, unchanged=unchanged, suppressed=len(suppressed))
