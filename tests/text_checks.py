"""What a plain-text part must not have: Markdown the HTML did not already have as text.

Used by tests/test_plain_text.py and by bench/text_part.py to count each converter's faults.
"""

from __future__ import annotations

import html as htmllib
import re

from mailer.rewrite import find_links

_INLINE_LINK = re.compile(r"!?\[[^\]\n]*\]\([^)\n]*\)")
_REFERENCE = re.compile(r"^\s*\[\d+\]:\s", re.MULTILINE)
_HEADING = re.compile(r"^\s*(#{1,6}\s+\S.*)$", re.MULTILINE)
_STAR_BULLET = re.compile(r"^\s*([*+]\s+\S.*)$", re.MULTILINE)
# Markers a Markdown writer adds: emphasis, code, escapes, autolinks, link and image syntax.
_MARKERS = ("**", "__", "`", "\\", "<http", "<mailto", "](", "![")
_WS = re.compile(r"\s+")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def _source_text(html: str) -> str:
    """The HTML with entities decoded and white space collapsed: where text "as written" is."""
    return _WS.sub(" ", htmllib.unescape(html))


def markdown_findings(text: str, html: str) -> list[str]:
    """Each piece of Markdown syntax in text that the HTML's own text does not hold."""
    source = _source_text(html)
    found = []
    for match in _INLINE_LINK.finditer(text):
        if _WS.sub(" ", match[0]) not in source:
            found.append(f"link syntax {match[0][:60]!r}")
    found += [f"reference {m[0].strip()!r}" for m in _REFERENCE.finditer(text)]
    for pattern, what in ((_HEADING, "heading"), (_STAR_BULLET, "bullet")):
        for match in pattern.finditer(text):
            if _WS.sub(" ", match[1]).strip() not in source:
                found.append(f"{what} {match[1][:60]!r}")
    for marker in _MARKERS:
        added = text.count(marker) - source.count(marker)
        if added > 0:
            found.append(f"{added} x {marker!r}")
    return found


def longest_line(text: str) -> int:
    """The longest line that is not a single unbreakable word (a URL)."""
    return max((len(line) for line in text.splitlines() if " " in line.strip()), default=0)


def visible_link_urls(html: str) -> list[str]:
    """The web URLs of the links find_links sees outside comments (Outlook-only blocks)."""
    comments = [(m.start(), m.end()) for m in _COMMENT.finditer(html)]
    return [
        spot.url
        for spot in find_links(html)
        if spot.url.lower().startswith(("http://", "https://"))
        and not any(start < spot.start < end for start, end in comments)
    ]
