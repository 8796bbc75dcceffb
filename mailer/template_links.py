"""Which link of its campaign's template a rendered link is, and whether it is the recipient's.

A link is the same for everyone when its href and data-fairclick-name in the template source are
literal or read nothing but `campaign`: its `links` row holds the URL, as it always did. A link
that reads anything else ("?who={{ recipient.email|urlencode }}", a city as its name, a loop
variable) may differ per recipient, so its `links` row holds only what the template wrote, and
the URL rendered for one message belongs to that message (the message_links table): reports show
the template's link, erasure removes the rendered URL with the person.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import jinja2
from jinja2 import meta

from mailer.rewrite import written_links

_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_WHITESPACE = re.compile(r"\s+")
_WEB_URL = re.compile(r"https?://", re.IGNORECASE)
# The preference link is never tracked (its rendered URL is skipped by prefix).
_PREFERENCES_LINK = re.compile(r"\{\{-?\s*preferences_url\s*-?\}\}")
# A URL in a text template as written: from "http(s)://" or an expression, to whitespace.
_TEXT_LINK = re.compile(
    r"(?:https?://|(?=\{\{))(?:\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}|[^\s<>\"'`])+",
    re.IGNORECASE | re.DOTALL,
)
_TRAILING = ".,;:!?)]}>*_"  # as mailer/text_links.py: closing punctuation ends a sentence
# What every message of a campaign renders alike (template_context's campaign-wide names).
_CAMPAIGN_WIDE = frozenset({"campaign", "organisation"})
_SYNTAX = jinja2.Environment()  # noqa: S701 - parses only, renders nothing
# The links row of a rendered link that matches no link of the template (put there by a
# variable marked |safe, say): nothing says it is the same for everyone, so it is the message's.
UNWRITTEN = "(a link the template does not write)"


@dataclass(frozen=True, slots=True)
class LinkKey:
    """What names a campaign's links row (UNIQUE with the campaign)."""

    url: str
    name: str
    per_message: bool = False  # the redirect target is the message's (message_links)
    occurrence: int = 0  # the n-th rendering of one written link in one message


@dataclass(frozen=True)
class WrittenLink:
    """One link as the template source writes it."""

    url: str
    name: str
    url_pattern: re.Pattern[str] | None  # what the href may render to; None: literal
    name_pattern: re.Pattern[str] | None
    personal_url: bool  # may render differently for different recipients
    personal_name: bool
    literal_chars: int  # how specific the patterns are

    @classmethod
    def of(cls, url: str, name: str) -> WrittenLink:
        url_pattern, url_literal = _pattern(url)
        name_pattern, name_literal = _pattern(name)
        return cls(
            url,
            name,
            url_pattern,
            name_pattern,
            _personal(url, url_pattern),
            _personal(name, name_pattern),
            url_literal + name_literal,
        )

    def matches(self, url: str, name: str) -> bool:
        url_ok = self.url_pattern.fullmatch(url) if self.url_pattern else self.url == url
        name_ok = self.name_pattern.fullmatch(name) if self.name_pattern else self.name == name
        return bool(url_ok and name_ok)


def _pattern(written: str) -> tuple[re.Pattern[str] | None, int]:
    """A pattern for what written renders to (None if it has no Jinja), and its literal length.

    Literal pieces in order, anything between; whitespace may shrink or vanish ({%- -%}).
    """
    pieces = _JINJA.split(written)
    if len(pieces) == 1:
        return None, len(written)
    literal = [_WHITESPACE.sub(" ", piece) for piece in pieces]
    regex = ".*?".join(r"\s*".join(map(re.escape, piece.split(" "))) for piece in literal)
    return re.compile(regex, re.DOTALL), sum(len(piece.strip()) for piece in literal)


def _personal(written: str, pattern: re.Pattern[str] | None) -> bool:
    """Whether written may render differently per recipient: it reads more than `campaign` and
    `organisation` (or cannot be read alone, as an {% if %} begun outside the attribute)."""
    if pattern is None:
        return False
    try:
        names = meta.find_undeclared_variables(_SYNTAX.parse(written))
    except jinja2.TemplateSyntaxError:
        return True
    return not names <= _CAMPAIGN_WIDE


def trackable_as_written(url: str) -> bool:
    """Whether a written href can render to a tracked link."""
    return bool(_WEB_URL.match(url) or url.startswith("{{")) and not _PREFERENCES_LINK.fullmatch(
        url
    )


def is_preferences_link(url: str) -> bool:
    """Whether a written link is the recipient's preference link (never tracked)."""
    return bool(_PREFERENCES_LINK.fullmatch(url))


def written_text_links(source: str | None) -> list[str]:
    """The URLs of a text template as written (http(s) or an expression), in order."""
    links = []
    for match in _TEXT_LINK.finditer(source or ""):
        url = match[0]
        while url and url[-1] in _TRAILING and not url.endswith(("}}", "%}", "#}")):
            url = url[:-1]
        links.append(url)
    return links


class TemplateLinks:
    """The links of one template source, to name each rendered link's links row."""

    def __init__(self, written: list[WrittenLink]):
        self.written = written

    @classmethod
    def of_html(cls, source: str) -> TemplateLinks:
        return cls(
            [WrittenLink.of(u, n) for u, n in written_links(source) if trackable_as_written(u)]
        )

    @classmethod
    def of_text(cls, source: str | None) -> TemplateLinks:
        return cls(
            [WrittenLink.of(u, "") for u in written_text_links(source) if trackable_as_written(u)]
        )

    def matcher(self) -> LinkMatcher:
        """A matcher for the links of one rendered message."""
        return LinkMatcher(self.written)


@dataclass
class LinkMatcher:
    """Names the links rows of one message's rendered links, taken in document order."""

    written: list[WrittenLink]
    _cursor: int = 0
    _occurrences: dict[tuple[str, str], int] = field(default_factory=dict)

    def key(self, url: str, name: str) -> LinkKey:
        link = self._find(url, name)
        if link is None:
            return self._per_message(UNWRITTEN, "")
        shown_name = link.name if link.personal_name else name
        if link.personal_url:
            return self._per_message(link.url, shown_name)
        return LinkKey(url, shown_name)

    def _per_message(self, url: str, name: str) -> LinkKey:
        occurrence = self._occurrences.get((url, name), 0)
        self._occurrences[(url, name)] = occurrence + 1
        return LinkKey(url, name, per_message=True, occurrence=occurrence)

    def _find(self, url: str, name: str) -> WrittenLink | None:
        """The written link url and name render from: a literal one if any; else the most
        specific pattern that matches, the next in document order on a tie (so a loop's
        links keep to their own), falling back to the first."""
        best, best_rank = None, None
        for index, link in enumerate(self.written):
            if not link.matches(url, name):
                continue
            if link.url_pattern is None and link.name_pattern is None:
                return link
            rank = (link.literal_chars, index >= self._cursor, -index)
            if best_rank is None or rank > best_rank:
                best, best_rank = index, rank
        if best is None:
            return None
        self._cursor = best
        return self.written[best]
