"""Campaign reports: the numbers, and their table, CSV and JSON forms.

Every function takes an asyncpg connection first and reads the rollups the writers keep
(tracker/migrations/0006_rollups.sql) and small tables, never a scan of clicks or outbox.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg

from tracker.control_chars import visible
from tracker.errors import BadArgument, NotFound
from tracker.queries import load_queries

REPORTS = load_queries("tracker", "reports.sql")

LINK_COUNTS = ("total", "unique", "identified", "anonymous", "bot")
PENDING = ("queued", "sending", "deferred")
BUCKETS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
# The default range of a series ends at the last activity and spans at most this many buckets.
DEFAULT_BUCKETS = {"hour": 30 * 24, "day": 366}
# An asked-for range longer than this is refused (an API must not make a million rows).
MAX_BUCKETS = {"hour": 366 * 24, "day": 3660}
SERIES_COUNTS = (
    "clicks_human", "clicks_bot", "identified", "anonymous", "opens_human", "opens_bot"
)  # fmt: skip


async def _campaign(conn: asyncpg.Connection, name: str) -> asyncpg.Record:
    campaign = await conn.fetchrow(REPORTS.campaign_by_name, name)
    if campaign is None:
        raise NotFound(f"no campaign named {name!r}")
    return campaign


def _rate(numerator: int, denominator: int) -> dict:
    return {
        "value": numerator / denominator if denominator else None,
        "numerator": numerator,
        "denominator": denominator,
    }


def _messages(rows) -> dict:
    """One campaign's outbox counts (rows of status, format, audience, messages), added up."""
    by_status: Counter = Counter()
    sent_format: Counter = Counter()
    audience: Counter = Counter()
    consenting_delivered = 0
    for r in rows:
        by_status[r["status"]] += r["messages"]
        if r["status"] == "sent" and r["format"] in ("html", "text"):
            sent_format[r["format"]] += r["messages"]
        if r["status"] == "skipped":
            audience["skipped"] += r["messages"]
        else:
            # A row queued without an audience (before it was recorded, or by hand) counts
            # by the format it went out in, and as without consent: none can be shown.
            audience[r["audience"] or ("text" if r["format"] == "text" else "html_no_consent")] += (
                r["messages"]
            )
        if r["status"] == "sent" and r["format"] == "html" and r["audience"] == "html_consent":
            consenting_delivered += r["messages"]
    return {
        "queued": sum(by_status.values()),
        "sent": by_status["sent"],
        "failed": by_status["failed"],
        "pending": sum(by_status[s] for s in PENDING),
        "unknown": by_status["unknown"],
        "skipped": by_status["skipped"],
        "cancelled": by_status["cancelled"],
        "recipients": {"html": sent_format["html"], "text": sent_format["text"]},
        "audience": {
            k: audience[k] for k in ("html_consent", "html_no_consent", "text", "skipped")
        },
        "consenting_delivered": consenting_delivered,
    }


def _rates(messages: dict, human: int, unique: int, bot: int) -> dict:
    return {
        # Human clicks (identified and anonymous) per HTML message delivered: text-only mail
        # has nothing to click through us.
        "human_clicks_per_delivered_html": _rate(human, messages["recipients"]["html"]),
        # Recipients with at least one identified human click per HTML message delivered to
        # someone who consented to tracking when it was queued: only they can be counted.
        "unique_clickers_among_consenting": _rate(unique, messages["consenting_delivered"]),
        "bot_share": _rate(bot, human + bot),
    }


async def _outbox_by_campaign(conn: asyncpg.Connection, ids: list[int]) -> dict[int, dict]:
    rows: dict[int, list] = {i: [] for i in ids}
    for r in await conn.fetch(REPORTS.outbox_counts, ids):
        rows[r["campaign_id"]].append(r)
    return {i: _messages(rows[i]) for i in ids}


async def campaign_report(conn: asyncpg.Connection, name: str) -> dict:
    """The report as the JSON API shapes it (keys may be added, never renamed).

    audience splits every queued message: html_consent (HTML, the recipient had granted
    tracking consent when it was queued), html_no_consent (HTML, without consent: its clicks
    are anonymous), text (text-only: nothing tracked), skipped (never sent: the recipient
    unsubscribed, was erased or suppressed before delivery). rates give each value with its
    numerator and denominator (value None when the denominator is 0).
    """
    campaign = await _campaign(conn, name)
    campaign_id = campaign["id"]
    messages = (await _outbox_by_campaign(conn, [campaign_id]))[campaign_id]
    links = await conn.fetch(REPORTS.link_counts, campaign_id)
    clicks = await conn.fetchrow(REPORTS.campaign_clicks, [campaign_id])
    unique = clicks["unique"] if clicks else 0
    opens = await conn.fetchrow(REPORTS.opens, campaign_id)
    bot_reasons = await conn.fetch(REPORTS.bot_reasons, campaign_id)
    human = sum(r["total"] for r in links)
    bot = sum(r["bot"] for r in links)
    return {
        "campaign": name,
        "status": campaign["status"],
        "created_at": campaign["created_at"].isoformat(),
        "queued": messages["queued"],
        "sent": messages["sent"],
        "failed": messages["failed"],
        "pending": messages["pending"],
        # Connection lost after DATA: maybe delivered, never resent automatically.
        "unknown": messages["unknown"],
        "skipped": messages["skipped"],
        "cancelled": messages["cancelled"],
        "recipients": messages["recipients"],
        "audience": messages["audience"],
        "clicks": {
            "total": human,
            "unique": unique,
            "identified": sum(r["identified"] for r in links),
            "anonymous": sum(r["anonymous"] for r in links),
            "bot": bot,
        },
        # Why clicks were counted as bots' (tracker/bots.py, TOO_SOON_REASON), most first:
        # a marketer testing their own mail with curl, or at once, sees it here.
        "bot_reasons": {r["reason"]: r["clicks"] for r in bot_reasons},
        # Opens come only from recipients who consented (the pixel is in no one else's mail),
        # so they say little about a campaign as a whole; machine opens are counted apart.
        "opens": dict(opens),
        "rates": _rates(messages, human, unique, bot),
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


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _bucket_start(at: datetime, bucket: str) -> datetime:
    at = _utc(at).replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0) if bucket == "day" else at


async def campaign_series(
    conn: asyncpg.Connection,
    name: str,
    *,
    bucket: str = "hour",
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[dict]:
    """Clicks and opens per hour or day (UTC), every bucket from start to end included, zeros
    filled in. Without start and end: from the first to the last activity, the last 30 days
    of it at most for hours (366 for days); nothing yet gives []. Naive times are UTC."""
    if bucket not in BUCKETS:
        raise BadArgument(f"unknown bucket {bucket!r}: use 'hour' or 'day'")
    campaign = await _campaign(conn, name)
    step = BUCKETS[bucket]
    if start is None or end is None:
        first, last = await conn.fetchrow(REPORTS.activity_range, campaign["id"])
        if first is None:
            return []
        if end is None:
            end = last if start is None else max(last, _utc(start))
        if start is None:
            start = max(first, _utc(end) - step * (DEFAULT_BUCKETS[bucket] - 1))
    start, end = _bucket_start(start, bucket), _bucket_start(end, bucket)
    if end < start:
        raise BadArgument("the series ends before it starts")
    if (end - start) / step + 1 > MAX_BUCKETS[bucket]:
        raise BadArgument(f"a series of {bucket}s spans {MAX_BUCKETS[bucket]} buckets at most")
    rows = await conn.fetch(REPORTS.series, campaign["id"], bucket, start, end)
    return [
        {"at": r["at"].astimezone(UTC).isoformat(), **{k: r[k] for k in SERIES_COUNTS}}
        for r in rows
    ]


async def campaign_failures(
    conn: asyncpg.Connection, name: str, *, limit: int = 100, offset: int = 0
) -> dict:
    """Failed and unknown (lost after DATA) messages: grouped by the server's reply as stored,
    and listed (email None once the person was erased or unsubscribed) in the order they
    were queued."""
    if limit < 0 or offset < 0:
        raise BadArgument("limit and offset cannot be negative")
    campaign = await _campaign(conn, name)
    by_reply = await conn.fetch(REPORTS.failures_by_reply, campaign["id"])
    recipients = await conn.fetch(REPORTS.failed_messages, campaign["id"], limit, offset)
    return {
        "by_reply": [{"reply": r["reply"], "messages": r["messages"]} for r in by_reply],
        "recipients": [
            {
                "email": r["email"],
                "status": r["status"],
                "reply": r["reply"],
                "attempts": r["attempts"],
                "at": r["at"].isoformat() if r["at"] else None,
            }
            for r in recipients
        ],
        "total": sum(r["messages"] for r in by_reply),
    }


async def campaign_list(conn: asyncpg.Connection, *, limit: int = 50, offset: int = 0) -> dict:
    """Campaigns at a glance, newest first, a page at a time."""
    if limit < 0 or offset < 0:
        raise BadArgument("limit and offset cannot be negative")
    page = await conn.fetch(REPORTS.campaign_page, limit, offset)
    total = page[0]["total"] if page else await conn.fetchval(REPORTS.campaign_count)
    ids = [r["id"] for r in page]
    messages = await _outbox_by_campaign(conn, ids)
    clicks = {r["campaign_id"]: r for r in await conn.fetch(REPORTS.campaign_clicks, ids)}
    campaigns = []
    for r in page:
        m = messages[r["id"]]
        c = clicks.get(r["id"])
        human, unique, bot = (c["human"], c["unique"], c["bot"]) if c else (0, 0, 0)
        campaigns.append(
            {
                "name": r["name"],
                "status": r["status"],
                "created_at": r["created_at"].isoformat(),
                **{k: m[k] for k in ("queued", "sent", "failed", "unknown", "pending")},
                "recipients": m["recipients"],
                "clicks": {"human": human, "unique": unique, "bot": bot},
                "rates": _rates(m, human, unique, bot),
            }
        )
    return {"campaigns": campaigns, "total": total}


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


FAILURE_COLUMNS = ("email", "status", "reply", "attempts", "at")


def failures_as_csv(failures: dict) -> str:
    """The failed recipients (campaign_failures) as formula-safe CSV."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FAILURE_COLUMNS)
    for row in failures["recipients"]:
        writer.writerow(csv_cell(row[k] if row[k] is not None else "") for k in FAILURE_COLUMNS)
    return out.getvalue()


def _shown_rate(rate: dict) -> str:
    if rate["value"] is None:
        return f"- ({rate['numerator']}/0)"
    return f"{rate['value']:.1%} ({rate['numerator']}/{rate['denominator']})"


def list_as_table(listing: dict) -> str:
    """campaign_list for a terminal (names with control characters shown as escapes)."""
    header = ["campaign", "status", "created", "queued", "sent", "failed", "unknown",
              "html", "text", "human", "unique", "bot"]  # fmt: skip
    rows = [
        [
            visible(c["name"]),
            c["status"],
            c["created_at"][:16].replace("T", " "),
            *map(
                str,
                (
                    c["queued"],
                    c["sent"],
                    c["failed"],
                    c["unknown"],
                    c["recipients"]["html"],
                    c["recipients"]["text"],
                    c["clicks"]["human"],
                    c["clicks"]["unique"],
                    c["clicks"]["bot"],
                ),
            ),
        ]
        for c in listing["campaigns"]
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]
    lines.append(f"({len(rows)} of {listing['total']} campaigns, newest first)")
    return "\n".join(lines) + "\n"


def show_as_table(report: dict, failures: dict) -> str:
    """One campaign for a terminal: delivery, failures by reply and who, clicks, audience,
    rates with their denominators, then the per-link table of as_table."""
    audience = report["audience"]
    lines = [
        f"Campaign {visible(report['campaign'])}: {report['status']}, "
        f"created {report['created_at'][:16].replace('T', ' ')}",
        f"  delivery: {report['queued']} queued, {report['sent']} sent, {report['failed']} "
        f"failed, {report['unknown']} unknown (maybe delivered, not resent), "
        f"{report['pending']} pending, {report['skipped']} skipped, "
        f"{report['cancelled']} cancelled",
        f"  audience when queued: {audience['html_consent']} HTML with tracking consent, "
        f"{audience['html_no_consent']} HTML without, {audience['text']} text-only, "
        f"{audience['skipped']} skipped (unsubscribed, erased or suppressed before sending)",
        "  rates: "
        + ", ".join(f"{k.replace('_', ' ')} {_shown_rate(v)}" for k, v in report["rates"].items()),
        f"  failures ({failures['total']}) by server reply:",
    ]
    for group in failures["by_reply"]:
        reply = visible(group["reply"]) if group["reply"] is not None else "(erased)"
        lines.append(f"    {group['messages']:>6}  {reply}")
    if failures["recipients"]:
        lines.append("  failed recipients:")
    for r in failures["recipients"]:
        who = visible(r["email"]) if r["email"] is not None else "(erased or unsubscribed)"
        reply = visible(r["reply"]) if r["reply"] is not None else ""
        lines.append(f"    {who}  {r['status']}  after {r['attempts']} attempt(s)  {reply}")
    if len(failures["recipients"]) < failures["total"]:
        lines.append(f"    … and {failures['total'] - len(failures['recipients'])} more")
    # The clicks, bot reasons, opens and links as `fairclick report` shows them.
    lines.extend(as_table(report).splitlines()[3:])
    return "\n".join(lines) + "\n"
