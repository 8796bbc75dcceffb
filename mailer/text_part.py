"""The text part generated from the HTML, converted once per layout instead of once per message.

Converting a 30 KB email costs ~1.5 ms (mailer/plain_text.py; bench/text_part.py), and every
message of a campaign is the same HTML but for a few values (a name, a city, a URL) and which
{% if %} branches were taken. So:

1. The HTML template is rendered through a twin whose literal pieces are replaced by short
   markers. Its output names the literal pieces used, in order (the *layout*), and the values
   between them; joining them gives the same HTML the template renders.
2. Once per layout, the converter converts the layout with each value replaced by a placeholder
   word (unwrapped: wrapping depends on the values' lengths), while watching where the
   placeholders go. It gives up on the layout where a value could change anything but the
   words it stands for: in a tag or attribute name, an entity, an unquoted attribute, an
   attribute the converter reads to decide (style, hidden, start), or a link whose form
   (label, URL or both) depends on its label or href.
3. Per message, each value must be *plain* (a letter first, single inner spaces, no markup,
   entity or control character), so it comes out of the converter as itself; then the
   placeholders are replaced and the text is wrapped line by line. Anything else (a value that
   is not plain, a template using macros, blocks, includes…) falls back to converting the
   message itself.

For recipients whose text links are tracked, a second conversion per layout also puts
placeholders in place of the trackable hrefs, which are then checked, per message, to be
the links the rewriter found in the real HTML.

tests/test_text_part.py checks the outcome against converting each message on the example,
the corpus and the benchmark's templates, for plain and awkward values.
"""

from __future__ import annotations

import bisect
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import jinja2
from jinja2 import nodes

from mailer.plain_text import READ_ATTRIBUTES, PlainTextConverter, finish, link_form, wrap_line
from mailer.rewrite import LinkSpot, find_links

# Layouts kept per campaign; a template with loops over values could make many.
MAX_LAYOUTS = 64
# Wrapped paragraphs kept per campaign (most are the same in every message).
MAX_WRAPPED = 20_000
_MARK = "\x00"
_FIRST_PIECE = 0xE000  # markers name literal pieces by private-use characters
_MAX_PIECES = 0xF8FF - _FIRST_PIECE
# Statements whose output goes straight to the template's output. Macros, call/filter/set
# blocks capture output (markers and all) to use it as a value; blocks, includes and imports
# bring in other render functions.
_PLAIN_STATEMENTS = (nodes.Output, nodes.If, nodes.For, nodes.With, nodes.Assign)
# A value the converter passes through unchanged wherever it stands in text: a letter first
# (no leading space to strip, no closing punctuation after a URL), no character of markup or
# entities, no control character (removed) and no white space but single inner spaces
# (collapsed, or a line break).
_PLAIN_VALUE = re.compile(r"[^\W\d_](?:[^\s&<>\"'\x00-\x1f\x7f\u00ad]| (?=\S))*")
# A tracked URL as written into the HTML (rewrite_links writes it as is).
_PLAIN_URL = re.compile(r"https?://[^\s&<>\"'\\\[\](){}]+")
_WEB = re.compile(r"^https?://", re.IGNORECASE)  # as mailer/plain_text.py's link_form reads it
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")


class _Unmarkable(Exception):
    """A value contains a marker character: this message takes the template's own render."""


def _finalize(value):
    text = value if isinstance(value, str) else str(value)
    if _MARK in text:
        raise _Unmarkable
    return value


@dataclass(frozen=True)
class Layout:
    """One message's HTML, as the literal pieces used (a key) and the values between them."""

    key: str
    values: tuple[str, ...]  # the non-empty values, in order


class LayoutTemplate:
    """The HTML template's twin: renders the same HTML, and says which layout it is."""

    def __init__(self, environment: jinja2.Environment, source: str, filename: str):
        """Raises ValueError for templates the twin cannot follow."""
        tree = environment.parse(source, filename, filename)
        for node in tree.find_all(nodes.Stmt):
            if not isinstance(node, _PLAIN_STATEMENTS):
                raise ValueError(f"{type(node).__name__} statements are not followed")
        pieces = []
        for data in tree.find_all(nodes.TemplateData):
            if len(pieces) >= _MAX_PIECES:
                raise ValueError("too many literal pieces")
            pieces.append(data.data)
            data.data = _MARK + chr(_FIRST_PIECE + len(pieces) - 1)
        if any(_MARK in piece for piece in pieces):
            raise ValueError("the template contains the marker character")
        twin_env = environment.overlay(finalize=_finalize)
        code = twin_env.compile(tree, filename, filename)
        self._twin = twin_env.template_class.from_code(twin_env, code, twin_env.make_globals(None))
        self._pieces = pieces

    def render(self, context: dict) -> tuple[str, Layout] | None:
        """(HTML, layout), or None where a value holds a marker (render the template instead)."""
        try:
            out = self._twin.render(context)
        except _Unmarkable:
            return None
        chunks = out.split(_MARK)
        pieces = self._pieces
        html = [chunks[0]]
        key = ["+" if chunks[0] else "-"]
        values = [chunks[0]] if chunks[0] else []
        for chunk in chunks[1:]:
            html.append(pieces[ord(chunk[0]) - _FIRST_PIECE])
            key.append(chunk[0])
            if len(chunk) > 1:
                value = chunk[1:]
                html.append(value)
                values.append(value)
                key.append("+")
        return "".join(html), Layout("".join(key), tuple(values))

    def layout_html(self, layout: Layout, placeholder: Callable[[int], str]) -> str:
        """The layout's HTML with placeholder(i) where its i-th value goes."""
        return "".join(
            placeholder(part) if isinstance(part, int) else part
            for part in self.layout_parts(layout)
        )

    def layout_parts(self, layout: Layout) -> list[str | int]:
        """The layout's literal pieces in order, with the index i where its i-th value goes."""
        out: list[str | int] = []
        count = 0
        for char in layout.key:
            if char == "-":
                continue
            if char == "+":
                out.append(count)
                count += 1
            else:
                out.append(self._pieces[ord(char) - _FIRST_PIECE])
        return out


@dataclass(frozen=True)
class _Converted:
    # The converter's text in runs of lines: a run without placeholders already wrapped
    # (False), a line with placeholders as it came, to fill in and wrap per message (True).
    runs: tuple[tuple[bool, str], ...]
    # (href, label, only images, form) of each link where href or label holds a placeholder:
    # how it is written (label, URL or both) depends on the values, so each message checks it.
    links: tuple[tuple[str | None, str, bool, str], ...]


class _WatchingConverter(PlainTextConverter):
    """The converter, noting where placeholders go and whether their values could matter."""

    def __init__(self, placeholder: re.Pattern[str], value: re.Pattern[str]):
        super().__init__()
        self.placeholder = placeholder
        self.value_words = value  # value words only: tracked URLs may stand unquoted, values not
        self.seen = 0
        self.unsafe: str | None = None
        self.links: list[tuple[str | None, str, bool, str]] = []

    def _count(self, text: str | None) -> int:
        return len(self.placeholder.findall(text)) if text else 0

    def handle_starttag(self, tag, attrs):
        raw = self.get_starttag_text() or ""
        found = self._count(raw)
        if found:
            self.seen += found
            if self.value_words.search(_QUOTED.sub("", raw)):
                self.unsafe = f"a value outside a quoted attribute in <{tag}>"
            elif any(name in READ_ATTRIBUTES and self._count(value) for name, value in attrs):
                self.unsafe = f"a value in an attribute <{tag}> is read for"
        super().handle_starttag(tag, attrs)

    def handle_data(self, data):
        self.seen += self._count(data)
        super().handle_data(data)

    def handle_comment(self, data):
        self.seen += self._count(data)  # comments are not in the text

    def link_written(self, href, label, only_images, form):
        if self._count(label) or (self._count(href) and not self._fixed_form(href, label)):
            self.links.append((href, label, only_images, form))

    def _fixed_form(self, href: str, label: str) -> bool:
        """Whether a link with this literal label and values in its href is written label: URL
        whatever the values: a web URL before the first value, and a label that the URL (or
        the URL without its scheme) cannot equal. Most links of most messages."""
        before = href[: self.placeholder.search(href).start()]
        if not label or not _WEB.match(before):
            return False
        return not label.startswith((before.rstrip("/"), _WEB.sub("", before).rstrip("/")))


@dataclass
class Message:
    """What a composer knows of one message's HTML: enough to ask for its text part."""

    html: str
    layout: Layout | None


class TextPart:
    """The text part of each message, from per-layout conversions of one HTML template."""

    def __init__(
        self,
        environment: jinja2.Environment,
        source: str,
        filename: str,
        html_to_text: Callable[[str], str],
    ):
        self.html_to_text = html_to_text
        try:
            self.twin: LayoutTemplate | None = LayoutTemplate(environment, source, filename)
        except Exception:  # whatever stops the twin, converting each message is always right
            self.twin = None
        nonce = secrets.token_hex(4)
        while nonce in source:
            nonce = secrets.token_hex(4)
        # Placeholder words: a letter first, letters and digits only, unlike any template text.
        self._value_word = f"Fcv{nonce}v{{}}z".format
        self._link_word = f"Fcl{nonce}l{{}}z".format
        self._words = re.compile(rf"Fc([vl]){nonce}[vl](\d+)z")
        self._value_words = re.compile(rf"Fcv{nonce}v\d+z")
        self._after_ampersand = re.compile(rf"&[#\w]*Fcv{nonce}v\d+z")
        # (layout key, skip_prefixes of the tracked conversion, None for the plain one)
        self._converted: dict[tuple, _Converted | None] = {}
        self._link_spots: dict[tuple, list[LinkSpot]] = {}
        self._wrapped: dict[str, str] = {}
        self._splits: dict[str, tuple[list[str], list[tuple[bool, int]]]] = {}
        self._offset_plans: dict[str, tuple[list[int], list[tuple[int, int]]]] = {}

    def render(self, context: dict) -> tuple[str, Layout] | None:
        """(HTML, layout) through the twin, or None: render the template itself (which also
        reports a render error with its file and line)."""
        if self.twin is None:
            return None
        try:
            return self.twin.render(context)
        except Exception:
            return None

    # ------------------------------------------------------------------ per layout

    def _convert(
        self, layout: Layout, tracked: bool, skip_prefixes: tuple[str, ...]
    ) -> _Converted | None:
        key = (layout.key, skip_prefixes if tracked else None)
        if key in self._converted:
            return self._converted[key]
        if len(self._converted) >= MAX_LAYOUTS:
            return None  # a template with very many layouts: each message converted
        html = self.twin.layout_html(layout, self._value_word)
        if tracked:
            spots = find_links(html, skip_prefixes=skip_prefixes)
            self._link_spots[key] = spots
            html = _replace_spots(html, spots, self._link_word)
        converter = _WatchingConverter(self._words, self._value_words)
        text = converter.convert(html)
        expected = len(self._words.findall(html))
        # A value right after "&" and letters could end up in an entity ("&co" + "py…").
        entity = self._after_ampersand.search(html)
        if converter.unsafe is None and converter.seen == expected and entity is None:
            converted = _Converted(self._runs(text), tuple(converter.links))
        else:
            converted = None  # each message of this layout converted on its own
        self._converted[key] = converted
        return converted

    # ------------------------------------------------------------------ per message

    def text(
        self,
        message: Message,
        *,
        links: tuple[list[LinkSpot], Callable[[LinkSpot], str]] | None = None,
        rewritten_html: str | None = None,
        skip_prefixes: tuple[str, ...] = (),
    ) -> str:
        """What html_to_text gives for the message's HTML, or with `links` for the HTML
        rewritten_html whose spots (found in the message's HTML) carry the tracked URLs."""
        derived = self._derive(message, links, skip_prefixes)
        if derived is not None:
            return derived
        return self.html_to_text(rewritten_html if links is not None else message.html)

    def _derive(self, message, links, skip_prefixes) -> str | None:
        layout = message.layout
        if layout is None or not all(_PLAIN_VALUE.fullmatch(v) for v in layout.values):
            return None
        converted = self._convert(layout, links is not None, skip_prefixes)
        if converted is None:
            return None
        values = list(layout.values)
        urls: list[str] = []
        if links is not None:
            spots, tracked = links
            layout_spots = self._link_spots[(layout.key, skip_prefixes)]
            if len(spots) != len(layout_spots):
                return None
            fill = self._filler(values, ())
            at = self._real_offset(layout)
            for spot, ours in zip(spots, layout_spots, strict=True):
                # The spots found in the layout must be the message's, tag for tag (a value
                # in an href or a data-fairclick can decide whether a tag is tracked: then
                # the same URLs may stand on other tags) and value for value.
                if at(ours.start) != spot.start or fill(ours.url) != spot.url or (
                    (fill(ours.name) if ours.name else ours.name) != spot.name
                ):
                    return None
                url = tracked(spot)
                if not _PLAIN_URL.fullmatch(url):
                    return None
                urls.append(url)
        fill = self._filler(values, urls)
        for href, label, only_images, form in converted.links:
            if link_form(href and fill(href), fill(label), only_images) != form:
                return None
        return finish(
            "\n".join(self._wrap(fill(run)) if filled else run for filled, run in converted.runs)
        )

    def _runs(self, text: str) -> tuple[tuple[bool, str], ...]:
        runs: list[tuple[bool, str]] = []
        fixed: list[str] = []
        for line in text.split("\n"):
            if self._words.search(line):
                if fixed:
                    runs.append((False, "\n".join(map(wrap_line, fixed))))
                    fixed = []
                runs.append((True, line))
            else:
                fixed.append(line)
        if fixed:
            runs.append((False, "\n".join(map(wrap_line, fixed))))
        return tuple(runs)

    def _real_offset(self, layout: Layout) -> Callable[[int], int]:
        """Maps an offset in the layout's placeholder HTML to the message's HTML."""
        plan = self._offset_plans.get(layout.key)
        if plan is None:
            # Where each placeholder ends in the layout's HTML, and which value it holds.
            ends, words, offset = [], [], 0
            for part in self.twin.layout_parts(layout):
                if isinstance(part, int):
                    word = len(self._value_word(part))
                    offset += word
                    ends.append(offset)
                    words.append((part, word))
                else:
                    offset += len(part)
            plan = (ends, words)
            if len(self._offset_plans) < MAX_LAYOUTS:
                self._offset_plans[layout.key] = plan
        ends, words = plan
        shifts, shift, values = [], 0, layout.values
        for part, word in words:
            shift += len(values[part]) - word
            shifts.append(shift)
        # Placeholders ending at or before the offset have moved it.
        return lambda at: at + (shifts[i - 1] if (i := bisect.bisect_right(ends, at)) else 0)

    def _filler(self, values: list[str], urls: list[str]) -> Callable[[str], str]:
        """text with each placeholder word replaced by its value or URL.

        The texts filled are the layout's (its lines, hrefs, labels), the same in every
        message of the layout: each is split at its placeholders once and kept.
        """
        splits = self._splits

        def fill(text: str) -> str:
            split = splits.get(text)
            if split is None:
                if len(splits) >= MAX_WRAPPED:
                    splits.clear()
                pieces = self._words.split(text)  # literal, kind, number, literal …
                kinds, numbers = pieces[1::3], pieces[2::3]
                slots = [(k == "v", int(n)) for k, n in zip(kinds, numbers, strict=True)]
                split = splits[text] = (pieces[0::3], slots)
            literals, slots = split
            if not slots:
                return text
            out = [literals[0]]
            for (is_value, number), literal in zip(slots, literals[1:], strict=True):
                out += ((values if is_value else urls)[number], literal)
            return "".join(out)

        return fill

    def _wrap(self, text: str) -> str:
        """wrap(text), remembering wrapped lines (most are the same in every message)."""
        out = []
        cache = self._wrapped
        for line in text.split("\n"):
            done = cache.get(line)
            if done is None:
                done = wrap_line(line)
                if len(cache) < MAX_WRAPPED:
                    cache[line] = done
            out.append(done)
        return "\n".join(out)


def _replace_spots(html: str, spots: list[LinkSpot], word: Callable[[int], str]) -> str:
    parts, copied = [], 0
    for i, spot in enumerate(spots):
        parts += (html[copied : spot.start], word(i))
        copied = spot.end
    parts.append(html[copied:])
    return "".join(parts)
