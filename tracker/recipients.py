"""Importing recipients from CSV or JSON lines: all rows valid, or nothing imported."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from tracker.errors import FairclickError, ImportRowsError
from tracker.queries import SQL
from tracker.suppressions import suppressed_positions

# Deliberately plain: one @, no spaces, a dot in the domain. Full RFC 5322 syntax
# allows addresses no mail system delivers to; a typo is far more likely.
_EMAIL = re.compile(
    r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_KNOWN = {"email", "name", "format", "tracking_consent"}
_YES = {"yes": True, "no": False}


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
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FairclickError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise FairclickError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json") or text.lstrip().startswith("{"):
        return _read_json_lines(path, text)
    return _read_csv(path, text)


def _read_json_lines(path: Path, text: str) -> tuple[list[tuple[int, dict]], Problems]:
    records, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
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


def _read_csv(path: Path, text: str) -> tuple[list[tuple[int, dict]], Problems]:
    reader = csv.DictReader(text.splitlines(keepends=True), restkey="\0extra")
    if not reader.fieldnames or "email" not in [f.strip().lower() for f in reader.fieldnames]:
        raise ImportRowsError(str(path), [(1, "the header row has no 'email' column")])
    records, problems = [], []
    for record in reader:
        # line_num is where the record ended; a record spans lines only with quoted newlines.
        number = reader.line_num
        if "\0extra" in record:
            problems.append((number, "more fields than the header row has columns"))
            continue
        records.append((number, {k.strip().lower(): v for k, v in record.items() if k}))
    return records, problems


def validate(path: Path, records: list[tuple[int, dict]], problems: Problems) -> list[RecipientRow]:
    """Rows ready to store, or ImportRowsError listing every problem of the file by line."""
    rows, problems, seen = [], list(problems), {}
    for number, record in records:
        email = str(record.get("email") or "").strip()
        fmt = str(record.get("format") or "html").strip().lower()
        consent = record.get("tracking_consent")
        consent = "no" if consent in (None, "") else consent
        consent = {True: "yes", False: "no"}.get(consent, str(consent).strip().lower())
        row_problems = []
        if not _EMAIL.match(email):
            row_problems.append(f"invalid email address {email!r}")
        elif email.lower() in seen:
            row_problems.append(f"duplicate of line {seen[email.lower()]} ({email})")
        else:
            seen[email.lower()] = number
        if fmt not in ("html", "text"):
            row_problems.append(f"unknown format {fmt!r} (use html or text)")
        if consent not in _YES:
            row_problems.append(f"tracking_consent must be yes or no, not {consent!r}")
        if row_problems:
            problems.append((number, "; ".join(row_problems)))
            continue
        attributes = {k: v for k, v in record.items() if k not in _KNOWN and v is not None}
        rows.append(
            RecipientRow(
                line=number,
                email=email,
                name=str(record.get("name") or "").strip(),
                format=fmt,
                tracking_consent=_YES[consent],
                attributes=attributes,
            )
        )
    if problems:
        raise ImportRowsError(str(path), sorted(problems))
    return rows


async def import_recipients(conn: asyncpg.Connection, path: Path) -> ImportResult:
    """Import every row of the file in one transaction, or none if any row is invalid.

    People already on the list are left as they are: their own choices on the
    preference page outrank whatever a later import file says. Suppressed addresses
    (tracker.suppressions) are skipped and counted: an old list never brings back
    someone who was erased, bounced or complained.
    """
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
            await conn.execute(SQL.log_consent_event, recipient_id, "format", row.format, source)
            await conn.execute(
                SQL.log_consent_event,
                recipient_id,
                "tracking",
                "granted" if row.tracking_consent else "not granted",
                source,
            )
    return ImportResult(imported=imported, unchanged=unchanged, suppressed=len(suppressed))
