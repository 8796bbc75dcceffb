"""Campaign reports: the numbers, and their table, CSV and JSON forms."""

from __future__ import annotations

import csv
import io
import json

import asyncpg

from tracker.control_chars import visible
from tracker.errors import NotFound
from tracker.queries import SQL

LINK_COUNTS = ("total", "unique", "identified", "anonymous", "bot")


async def campaign_report(conn: asyncpg.Connection, name: str) -> dict:
    """The report as the JSON API shapes it (keys may be added, never renamed)."""
    campaign_id = await conn.fetchval(SQL.campaign_id_by_name, name)
    if campaign_id is None:
        raise NotFound(f"no campaign named {name!r}")
    messages = await conn.fetchrow(SQL.report_messages, campaign_id)
    links = await conn.fetch(SQL.report_links, campaign_id)
    unique = await conn.fetchval(SQL.report_unique_clickers, campaign_id)
    opens = await conn.fetchrow(SQL.report_opens, campaign_id)
    bot_reasons = await conn.fetch(SQL.report_bot_reasons, campaign_id)
    return {
        "campaign": name,
        "sent": messages["sent"],
        "failed": messages["failed"],
        "pending": messages["pending"],
        # Connection lost after DATA: maybe delivered, never resent automatically.
        "unknown": messages["unknown"],
        "skipped": messages["skipped"],
        "recipients": {"html": messages["html"], "text": messages["text"]},
        "clicks": {
            "total": sum(r["total"] for r in links),
            "unique": unique,
            "identified": sum(r["identified"] for r in links),
            "anonymous": sum(r["anonymous"] for r in links),
            "bot": sum(r["bot"] for r in links),
        },
        # Why clicks were counted as bots' (tracker/bots.py, TOO_SOON_REASON), most first:
        # a marketer testing their own mail with curl, or at once, sees it here.
        "bot_reasons": {r["reason"]: r["clicks"] for r in bot_reasons},
        # Opens come only from recipients who consented (the pixel is in no one else's mail),
        # so they say little about a campaign as a whole; machine opens are counted apart.
        "opens": dict(opens),
        # The hidden honeypot link is no link of the campaign's: its hits count as bots only.
        # A link whose URL differs per recipient shows as the template wrote it (per_recipient).
        "links": [
            {
                "url": r["url"],
                "name": r["name"],
                "per_recipient": r["per_message"],
                **{k: r[k] for k in LINK_COUNTS},
            }
            for r in links
            if r["purpose"] == "content"
        ],
    }


def as_json(report: dict) -> str:
    return json.dumps(report, indent=2)


# OWASP's CSV injection advice: a spreadsheet takes a cell starting with one of these
# for a formula (=HYPERLINK(…), a DDE call); a leading single quote makes it text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A text value as a CSV cell that neither runs as a formula nor writes raw control
    characters (each shown as its escape, as in the table); numbers as they are."""
    if not isinstance(value, str):
        return value
    value = visible(value)
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def as_csv(report: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["url", "name", *LINK_COUNTS])
    for link in report["links"]:
        writer.writerow(map(csv_cell, [link["url"], link["name"], *(link[k] for k in LINK_COUNTS)]))
    return out.getvalue()


def as_table(report: dict) -> str:
    """The report for a terminal: names and URLs with control, escape and bidi characters
    shown as escapes (\\x1b, \\u202e), so none of them acts on the terminal."""
    clicks = report["clicks"]
    lines = [
        f"Campaign {visible(report['campaign'])}",
        f"  sent {report['sent']}   failed {report['failed']}   pending {report['pending']}   "
        f"unknown {report['unknown']} (maybe delivered, not resent)   skipped {report['skipped']}",
        f"  recipients: {report['recipients']['html']} HTML, {report['recipients']['text']} "
        "text-only (text-only mail carries no tracked links)",
        f"  clicks: {clicks['total']} total, {clicks['unique']} unique recipients, "
        f"{clicks['identified']} identified, {clicks['anonymous']} anonymous, {clicks['bot']} bot",
        "  bot clicks by reason: "
        + (
            ", ".join(f"{n} {visible(reason)}" for reason, n in report["bot_reasons"].items())
            or "none"
        ),
        f"  opens (consenting recipients only): {report['opens']['total']} total, "
        f"{report['opens']['unique']} unique, {report['opens']['bot']} by machines",
        "",
    ]
    header = ["link", *LINK_COUNTS]
    rows = [
        [
            visible(link["url"] + (f" [{link['name']}]" if link["name"] else "")),
            *map(str, (link[k] for k in LINK_COUNTS)),
        ]
        for link in report["links"]
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  " + "  ".join(cells))
    if not rows:
        lines.append("  (no links yet: links are registered when messages are sent)")
    return "\n".join(lines) + "\n"
