"""Before sending: every link of a campaign's templates as written, and whether it is tracked.

The answer comes from the rewriter's own rules (mailer/rewrite.py reads the link tags, decodes
and strips their hrefs, honours data-fairclick="off"; mailer/template_links.py knows the
preference link and which links differ per recipient), so the check cannot disagree with send:
tests/test_link_check.py compares it with the links rewritten in messages really sent.

"Tracked" means: rewritten to BASE/c/TOKEN in the HTML part of an HTML recipient's message
(and, for a recipient who consented, in its text part too). A text-only recipient's message
has no tracked link at all.
"""

from __future__ import annotations

import re

import asyncpg

from mailer.campaigns import SAMPLE_RECIPIENT, load_campaign
from mailer.compose import Recipient, template_context
from mailer.queries import SQL
from mailer.rewrite import written_link_tags
from mailer.template_links import WrittenLink, is_preferences_link, written_text_links
from mailer.templates import CampaignTemplates, CompileFailed, RenderFailed
from mailer.text_links import find_text_links
from tracker.control_chars import visible

# How the rewriter's rules name a link it leaves alone.
OFF = 'data-fairclick="off"'
MAILTO = "mailto"
TEL = "tel"
ANCHOR = "anchor"
NOT_WEB = "not http(s)"
PREFERENCES = "preference link"
# A tracked link whose URL is rendered per recipient: its URL belongs to the message and is
# erased with the person; reports show it as written.
PERSONAL = "personal (per-recipient URL)"
# A link whose href starts with an expression: only what it renders to decides.
RENDERED = "tracked where it renders to an http(s) URL"

# The text template's bare expressions are tried on this many of the campaign's recipients.
SAMPLES = 20
_SAMPLE_PREFERENCES = "https://preferences.invalid/p/sample"
_JINJA_START = re.compile(r"\{[{%#]")
_WEB_URL = re.compile(r"https?://", re.IGNORECASE | re.ASCII)
_PREFERENCES_START = re.compile(r"\{\{-?\s*preferences_url\s*-?\}\}")


def _untracked_reason(url: str, *, off: bool, preferences_prefix: str | None) -> str | None:
    """Why send leaves a link written so as it is, or None when it rewrites it."""
    if off:
        return OFF
    if is_preferences_link(url) or _PREFERENCES_START.match(url):
        return PREFERENCES
    if preferences_prefix and url.startswith(preferences_prefix):
        return PREFERENCES
    # What the href renders to begins with what is written before its first expression.
    literal = _JINJA_START.split(url, maxsplit=1)[0]
    if _WEB_URL.match(url) or (not literal and _JINJA_START.match(url)):
        return None
    lowered = literal.lower()
    if lowered.startswith("mailto:"):
        return MAILTO
    if lowered.startswith("tel:"):
        return TEL
    if literal.startswith("#"):
        return ANCHOR
    return NOT_WEB


def _checked(part: str, position: int, url: str, name: str, *, off: bool, prefix) -> dict:
    reason = _untracked_reason(url, off=off, preferences_prefix=prefix)
    tracked = reason is None
    written = WrittenLink.of(url, name)
    personal = tracked and written.personal_url
    notes = []
    if personal:
        notes.append(PERSONAL)
    if tracked and not _WEB_URL.match(url):
        notes.append(RENDERED)
    return {
        "part": part,
        "position": position,
        "url": url,
        "name": name,
        "tracked": tracked,
        "reason": reason,
        "personal": personal,
        "note": "; ".join(notes) or None,
    }


def _may_render_a_link(expression: str, campaign_name: str, recipients: list[Recipient]) -> bool:
    """Whether an expression a text template writes where a URL may be ("{{ x }}") renders to
    an http(s) URL for one of the recipients, or cannot be told (it renders for none of them:
    a loop's variable, say). "Dear {{ recipient.name }}," is text, not a link."""
    try:
        templates = CampaignTemplates(
            subject="", html="", html_filename="link", text=expression, text_filename="link"
        )
    except CompileFailed:  # part of a block ({% for %} … {% endfor %}) alone: cannot tell
        return True
    rendered_for_anyone = False
    for recipient in recipients:
        context = template_context(recipient, campaign_name, _SAMPLE_PREFERENCES)
        try:
            text = templates.render(context).text or ""
        except RenderFailed:
            continue
        rendered_for_anyone = True
        if find_text_links(text):
            return True
    return not rendered_for_anyone


def check_template_links(
    html: str,
    text: str | None = None,
    *,
    base_url: str | None = None,
    campaign_name: str = "",
    recipients: list[Recipient] | None = None,
) -> list[dict]:
    """The check of a campaign's HTML template and text template (if any), as written.

    recipients (default: a sample one) try the text template's bare expressions.
    """
    prefix = f"{base_url.rstrip('/')}/p/" if base_url else None
    links = [
        _checked("html", position, url, name, off=off, prefix=prefix)
        for position, (url, off, name) in enumerate(written_link_tags(html), start=1)
    ]
    samples = recipients or [SAMPLE_RECIPIENT]
    text_links = [
        url
        for url in written_text_links(text)
        if not url.startswith("{")
        or _PREFERENCES_START.match(url)
        or _may_render_a_link(url, campaign_name, samples)
    ]
    links += [
        _checked("text", position, url, "", off=False, prefix=prefix)
        for position, url in enumerate(text_links, start=1)
    ]
    return links


async def check_links(
    conn: asyncpg.Connection, campaign_name: str, *, base_url: str | None = None
) -> list[dict]:
    """Every link of the campaign's templates as written, in order, tracked or why not.

    Each: part ("html" or "text"), position (1-based within its part), url and name
    (data-fairclick-name, "" if none) as written, tracked, reason (why not tracked, else
    None), personal (its URL differs per recipient), note. Raises NotFound for no campaign.
    """
    campaign = await load_campaign(conn, campaign_name)
    recipients = [
        Recipient.from_record(r) for r in await conn.fetch(SQL.sample_recipients, SAMPLES)
    ]
    return check_template_links(
        campaign["html_template"],
        campaign["text_template"],
        base_url=base_url,
        campaign_name=campaign_name,
        recipients=recipients,
    )


def as_table(campaign_name: str, links: list[dict]) -> str:
    """The check for a terminal: written URLs and names with control, escape and bidi
    characters shown as escapes, so none of them acts on the terminal."""
    lines = [f"Links of campaign {visible(campaign_name)}"]
    parts = {link["part"] for link in links}
    if "html" in parts or not links:
        lines.append(
            "  tracked: rewritten in HTML recipients' mail; text-only recipients get every link "
            "as written"
        )
    header = ["part", "#", "tracked", "name", "url", "why"]
    rows = [
        [
            link["part"],
            str(link["position"]),
            "yes" if link["tracked"] else "no",
            visible(link["name"]),
            visible(link["url"]),
            link["reason"] or link["note"] or "",
        ]
        for link in links
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append(("  " + "  ".join([*cells, row[-1]])).rstrip())
    if not links:
        lines.append("  (the templates have no links)")
    return "\n".join(lines) + "\n"
