"""Creating and loading campaigns; a template that fails for anyone is refused before storing."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

from mailer.compose import Recipient, template_context
from mailer.message import parse_from_address
from mailer.queries import SQL
from mailer.rewrite import find_links
from mailer.templates import (
    CampaignTemplates,
    CompileFailed,
    Rendered,
    RenderFailed,
    RenderLimit,
    TemplateError,
)
from mailer.text_links import find_text_links
from tracker.errors import Conflict, FairclickError, NotFound, TemplateProblem
from tracker.organisation import NO_ORGANISATION, Organisation
from tracker.targets import idna_location

# Used to check templates when nobody is on the list yet.
SAMPLE_RECIPIENT = Recipient(0, "sample@example.com", "Sample Recipient", "html", False, {})
MAX_LISTED = 10


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FairclickError(f"{what} {path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise FairclickError(f"{what} {path}: not UTF-8 text (byte {exc.start})") from None


def compile_templates(campaign: asyncpg.Record | dict) -> CampaignTemplates:
    try:
        return CampaignTemplates(
            subject=campaign["subject_template"],
            html=campaign["html_template"],
            html_filename=campaign["html_filename"],
            text=campaign["text_template"],
            text_filename=campaign["text_filename"],
        )
    except CompileFailed as exc:
        raise TemplateProblem("the campaign's templates do not compile:\n" + str(exc)) from None


def check_renders(
    templates: CampaignTemplates,
    campaign_name: str,
    recipients: list[Recipient],
    preferences_url=lambda recipient: "https://preferences.invalid/p/sample",
    organisation: Organisation = NO_ORGANISATION,
) -> None:
    """Render for every recipient; raise TemplateProblem listing who fails and where."""
    failures: dict[TemplateError, list[str]] = {}
    stopped = ""
    for recipient in recipients:
        context = template_context(
            recipient, campaign_name, preferences_url(recipient), organisation
        )
        try:
            rendered = templates.render(context)
        except RenderFailed as exc:
            failures.setdefault(exc.error, []).append(recipient.email)
            if isinstance(exc.__cause__, RenderLimit):
                # Each such render spends the whole budget (about a second): checking a
                # long list would hold the command for hours.
                stopped = "\n(the others were not checked: the template runs past its limits)"
                break
            continue
        for error in _unredirectable_links(templates, rendered):
            failures.setdefault(error, []).append(recipient.email)
    if failures:
        lines = []
        for error, emails in failures.items():
            shown = ", ".join(emails[:MAX_LISTED])
            more = f" and {len(emails) - MAX_LISTED} more" if len(emails) > MAX_LISTED else ""
            lines.append(f"{error}\n    for {len(emails)} recipient(s): {shown}{more}")
        raise TemplateProblem("the campaign does not render:\n" + "\n".join(lines) + stopped)


# A URL whose host may not be ASCII: written so, or as a character reference (&#20363;).
_MAYBE_IDN_HOST = re.compile(r"://[^/?#\s\"'<>&\x80-\U0010ffff]*[&\x80-\U0010ffff]")


def _unredirectable_links(templates: CampaignTemplates, rendered: Rendered) -> list[TemplateError]:
    """Links the tracker could not send anyone to: a host with no IDNA form (☃.net).

    Refused now, before the link is registered, rather than found out at a click. Only a
    message with a host that may not be ASCII is searched: most have none.
    """
    links = []  # (file, url)
    if _MAYBE_IDN_HOST.search(rendered.html):
        links += [(templates.html_filename, spot.url) for spot in find_links(rendered.html)]
    if rendered.text and _MAYBE_IDN_HOST.search(rendered.text):
        text_file = templates.text_filename or "text"
        links += [(text_file, url) for _, _, url in find_text_links(rendered.text)]
    errors = []
    for filename, url in links:
        try:
            idna_location(url)
        except ValueError as exc:
            errors.append(TemplateError(filename, f"the link {url} cannot be followed: {exc}"))
    return errors


async def subscribed_recipients(conn: asyncpg.Connection) -> list[Recipient]:
    return [Recipient.from_record(r) for r in await conn.fetch(SQL.subscribed_recipients)]


async def create_campaign(
    conn: asyncpg.Connection,
    name: str,
    *,
    subject: str,
    from_address: str,
    html_path: Path,
    text_path: Path | None = None,
    organisation: Organisation = NO_ORGANISATION,
) -> int:
    """Store a campaign whose templates compile and render for everyone subscribed now."""
    if not name.strip():
        raise FairclickError("a campaign needs a name")
    parse_from_address(from_address)
    campaign = {
        "name": name,
        "subject_template": subject,
        "from_address": from_address,
        "html_template": _read(html_path, "--html"),
        "html_filename": str(html_path),
        "text_template": _read(text_path, "--text") if text_path else None,
        "text_filename": str(text_path) if text_path else None,
    }
    templates = compile_templates(campaign)
    recipients = await subscribed_recipients(conn) or [SAMPLE_RECIPIENT]
    check_renders(templates, name, recipients, organisation=organisation)
    campaign_id = await conn.fetchval(SQL.insert_campaign, *campaign.values())
    if campaign_id is None:
        raise FairclickError(f"a campaign named {name!r} already exists: choose another name")
    return campaign_id


async def load_campaign(conn: asyncpg.Connection, name: str) -> asyncpg.Record:
    campaign = await conn.fetchrow(SQL.campaign_by_name, name)
    if campaign is None:
        raise NotFound(f"no campaign named {name!r}: see `fairclick campaign create --help`")
    return campaign


async def set_status(conn: asyncpg.Connection, name: str, action: str) -> str:
    """pause, resume or cancel a campaign; returns its new status."""
    status = {"pause": "paused", "resume": "active", "cancel": "cancelled"}[action]
    async with conn.transaction():
        campaign = await load_campaign(conn, name)
        if campaign["status"] == "cancelled" and action != "cancel":
            raise Conflict(f"campaign {name!r} was cancelled; it cannot be {status} again")
        await conn.execute(SQL.set_campaign_status, name, status)
        if action == "cancel":
            # Queued and deferred messages will never go; what is sent stays sent.
            await conn.execute(SQL.cancel_outbox, campaign["id"])
    return status
