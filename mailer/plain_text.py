"""HTML to plain text for the text part: the words in reading order, no Markdown.

Links read `label: URL` (the URL alone when the label is empty, an image, or the URL itself;
the label alone for a mail address written as the label, or a link that goes nowhere a reader
could follow: no href, `#anchor`, `javascript:`). Lists are indented `  - item` and
`  1. item` lines, headings their own paragraph, table cells of one row one line (` | `
between them), images their alt text, code and preformatted text as written. What the HTML
hides (head, style, script, `display:none`, `visibility:hidden`, `hidden`, Outlook-only
conditional comments) is not in the text. Nothing is escaped: `*`, `_`, `#`, `[` stay as
written.

convert() gives unwrapped lines; wrap() wraps each line on its own at 78 columns (a URL or any
word longer than that is never split), so mailer/text_part.py can convert a layout once and
wrap each message after its values are filled in.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser, attrfind_tolerant, tagfind_tolerant

from mailer.rewrite import _decode_attr

WIDTH = 78
PRE = "\x01"  # starts a line of preformatted text: wrap() leaves it as it is
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\u00ad]")  # soft hyphens are invisible too
_SPACE = re.compile(r"\s+")
_HIDING_STYLE = re.compile(
    r"(?:^|;)\s*(?:display\s*:\s*none|visibility\s*:\s*hidden)\b", re.IGNORECASE
)
_WEB = re.compile(r"^https?://", re.IGNORECASE)
_CLOSING = ".,;:!?)]}'\"’”"
_LIST_START = re.compile(r" *(?:- |\d+\. )?")
VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
# Never shown: their content is not part of the message's text.
_SKIPPED = frozenset("head title style script template noframes".split())
# Elements whose content a browser shows as text, tags and all.
_RAW_TEXT = ("textarea", "xmp")
_MAX_INDENT = 24  # nesting deeper than this is not indented further (text, not a staircase)
_COMMENT_END = re.compile(r"--!?>")
# A blank line before and after.
_PARAGRAPHS = frozenset("p h1 h2 h3 h4 h5 h6 blockquote pre ul ol dl figure hr".split())
# A line of their own.
_BLOCKS = frozenset(
    "div li tr table thead tbody tfoot caption section article header footer nav aside main"
    " center dt dd figcaption form fieldset legend details summary address body html".split()
)
# Attributes the converter reads to decide (beyond href and alt, whose values it writes out).
READ_ATTRIBUTES = frozenset({"style", "hidden", "start"})


def link_form(href: str | None, label: str, only_images: bool) -> str:
    """How a link is written: 'label', 'url' or 'both' (label: URL)."""
    if href is None or not href or href.startswith("#") or href.lower().startswith("javascript:"):
        return "label"
    if only_images or not label:
        return "url"
    if label == href or (_WEB.match(href) and label.rstrip("/") == _WEB.sub("", href).rstrip("/")):
        return "url"
    if href.lower().startswith("mailto:") and label == href[7:].split("?", 1)[0]:
        return "label"
    return "both"


class _Element:
    __slots__ = ("hidden", "indent", "link", "pre", "tag")

    def __init__(self, tag: str, hidden: bool):
        self.tag = tag
        self.hidden = hidden
        self.indent = False  # pushed an indent
        self.link: _Link | None = None
        self.pre = False


class _Link:
    __slots__ = ("href", "pieces", "texts")

    def __init__(self, href: str | None):
        self.href = href
        self.pieces: list[str] = []
        self.texts = 0  # pieces that were text, not an image's alt


class PlainTextConverter(HTMLParser):
    """One conversion: convert() once per instance."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self._stack: list[_Element] = []
        self._open: dict[str, int] = {}  # open elements by tag
        self._lines: list[str] = []
        self._line: list[str] = []
        self._prefix = ""  # the current line's indentation (and bullet)
        self._indents = [""]  # indentation of the lines to come
        self._bullet: str | None = None  # the first line of a list item starts with it
        self._breaks = 0  # 1: a new line before the next text; 2: a blank line too
        self._separator = False  # a table cell began: " | " if the line goes on
        self._link: _Link | None = None
        self._lists: list[list[int | None]] = []  # per open list: [next number] or [None]
        self._pre = 0
        self._hidden = False
        self._after_word = False
        self._pre_start = False

    # ------------------------------------------------------------------ output

    def _break(self, n: int) -> None:
        if not n:
            return
        if self._link is not None:
            self._link.pieces.append(" ")  # a block inside a link: its label stays one line
            return
        self._after_word = False
        if self._line:
            self._end_line()
        self._separator = False
        self._breaks = max(self._breaks, n)

    def _end_line(self) -> None:
        self._after_word = False
        line = (self._prefix + "".join(self._line)).rstrip()
        self._lines.append(PRE + line if self._pre else line)
        self._line = []
        self._breaks = 1

    def _write(self, text: str) -> None:
        """Inline text, whitespace already collapsed."""
        if self._link is not None:
            self._link.pieces.append(text)
            if text and not text.isspace():
                self._link.texts += 1
            return
        if not self._line or self._line[-1].endswith(" "):
            text = text.lstrip(" ")
        if not text:
            return
        if self._after_word:
            self._after_word = False
            if self._line and not text.startswith(" ") and text[0] not in _CLOSING:
                text = " " + text  # a URL or an image's alt never runs into the next word
        if self._line:
            if self._separator:
                self._line[-1] = self._line[-1].rstrip(" ")
                text = " | " + text.lstrip(" ")
        else:
            if self._lines and self._breaks == 2:
                self._lines.append("")
            self._breaks = 0
            if self._bullet is not None:
                self._prefix = self._bullet
                self._bullet = None
            else:
                self._prefix = self._indents[-1]
        self._separator = False
        self._line.append(text)

    def _write_pre(self, text: str) -> None:
        if self._pre_start:
            self._pre_start = False
            if text.startswith("\n"):
                text = text[1:]  # the line break right after <pre> is not part of its text
        lines = text.split("\n")
        for i, line in enumerate(lines):
            if i:
                self._lines.append(PRE + (self._prefix + "".join(self._line)).rstrip())
                self._line = []
            if line or self._line:
                if not self._line:
                    if self._lines and self._breaks == 2:
                        self._lines.append("")
                    self._breaks = 0
                    self._prefix = self._indents[-1]
                self._line.append(line)

    # ------------------------------------------------------------------ parser events

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes: dict[str, str | None] = {}
        for name, value in attrs:
            attributes.setdefault(name, value)  # as in a browser, the first one counts
        if tag in VOID:
            if not self._hidden:
                self._void(tag, attributes)
            return
        if tag in _RAW_TEXT:
            self.set_cdata_mode(tag)  # its content is text, markup and all
        if tag == "li":
            self._close_open_item()
        elif tag == "a" and self._link is not None:
            self._end_link()  # an <a> inside an <a> closes the first (as the HTML parser does)
        hidden = self._hidden or tag in _SKIPPED or _hides(attributes)
        element = _Element(tag, hidden)
        self._stack.append(element)
        self._open[tag] = self._open.get(tag, 0) + 1
        self._hidden = hidden
        if hidden:
            return
        self._break(self._breaks_around(tag))
        if tag in ("ul", "ol"):
            start = attributes.get("start") if tag == "ol" else None
            self._lists.append([_number(start) if tag == "ol" else None])
        elif tag == "li":
            self._start_item(element)
        elif tag == "blockquote":
            self._indents.append(self._indents[-1][:_MAX_INDENT] + "  ")
            element.indent = True
        elif tag in ("td", "th"):
            self._separator = bool(self._line)
        elif tag == "pre":
            self._pre += 1
            self._pre_start = True
            element.pre = True
        elif tag == "a":
            self._link = element.link = _Link(self._href(attributes))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID or not self._open.get(tag):
            return  # an end tag with no open element: nothing to close (and no search)
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i].tag == tag:
                while len(self._stack) > i:
                    self._close(self._stack.pop())
                self._hidden = self._stack[-1].hidden if self._stack else False
                return

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        data = _CONTROL.sub("", data)
        if self._pre and self._link is None:
            self._write_pre(data)
        else:
            self._write(_SPACE.sub(" ", data))

    def parse_comment(self, i: int, report: bool = True) -> int:
        # Comments end as browsers end them: also at "--!>", and "<!-->" is an empty one.
        rawdata = self.rawdata
        for empty in ("<!-->", "<!--->"):
            if rawdata.startswith(empty, i):
                return i + len(empty)
        match = _COMMENT_END.search(rawdata, i + 4)
        if match is None:
            return -1
        if report:
            self.handle_comment(rawdata[i + 4 : match.start()])
        return match.end()

    def parse_html_declaration(self, i: int) -> int:
        # A browser reads "<![endif]-->" (any "<![" but CDATA) as a bogus comment ending at
        # the first ">"; the stdlib parser would give up on it and show it as text.
        rawdata = self.rawdata
        if rawdata.startswith("<![", i) and not rawdata.startswith("<![CDATA[", i):
            end = rawdata.find(">", i + 3)
            return -1 if end < 0 else end + 1
        return super().parse_html_declaration(i)

    # ------------------------------------------------------------------ elements

    def _void(self, tag: str, attributes: dict) -> None:
        if tag == "br":
            if self._link is not None:
                self._link.pieces.append(" ")
            elif self._line:
                self._end_line()
            elif self._lines:
                self._breaks = min(self._breaks + 1, 2)
            self._separator = False
        elif tag == "hr":
            self._break(2)
            self._write("-" * 20)
            self._break(2)
        elif tag in ("img", "area") and not _hides(attributes):
            alt = _SPACE.sub(" ", _CONTROL.sub("", attributes.get("alt") or "")).strip()
            if tag == "area":
                href = self._href(attributes)
                if href is not None and self._link is None:  # an image map's link
                    self._link = _Link(href)
                    self._link.pieces.append(alt)
                    self._link.texts = 1
                    self._end_link()
            elif self._link is not None:
                if alt:
                    self._link.pieces.append(f" {alt} ")
            elif alt:
                self._write(" " + alt)
                self._after_word = True

    def _href(self, attributes: dict) -> str | None:
        """The href as a browser reads it (and as the link rewriter does): the stdlib parser
        decodes "&copy=1" in a query to "©=1", a browser leaves it as written."""
        href = attributes.get("href")
        if href is None:
            return None
        raw = self.get_starttag_text() or ""
        if "&" in raw:
            at = tagfind_tolerant.match(raw, 1).end()
            while match := attrfind_tolerant.match(raw, at):
                if match.end() == at:
                    break
                at = match.end()
                if match[1].lower() == "href" and match[3] is not None:
                    value = match[3]
                    if value[:1] in "'\"" and value[:1] == value[-1:] and len(value) > 1:
                        value = value[1:-1]
                    href = _decode_attr(value)
                    break
        return _strip(href)

    def _close_open_item(self) -> None:
        if not self._open.get("li"):
            return
        # A new item closes the open one; looked for only near the top of the stack (a
        # browser stops at most elements too), so no document makes this quadratic.
        for i in range(len(self._stack) - 1, max(-1, len(self._stack) - 65), -1):
            tag = self._stack[i].tag
            if tag in ("ul", "ol"):
                return
            if tag == "li":
                while len(self._stack) > i:
                    self._close(self._stack.pop())
                self._hidden = self._stack[-1].hidden if self._stack else False
                return

    def _start_item(self, element: _Element) -> None:
        numbering = self._lists[-1] if self._lists else [None]
        if numbering[0] is None:
            mark = "- "
        else:
            mark = f"{numbering[0]}. "
            numbering[0] += 1
        base = self._indents[-1][:_MAX_INDENT]
        self._bullet = base + "  " + mark
        self._indents.append(base + "  " + " " * len(mark))
        element.indent = True

    def _close(self, element: _Element) -> None:
        self._open[element.tag] -= 1
        if element.hidden:
            return
        tag = element.tag
        if element.link is not None and element.link is self._link:
            self._end_link()
        if tag in ("ul", "ol") and self._lists:
            self._lists.pop()
        self._break(self._breaks_around(tag))
        if element.indent:
            self._indents.pop()
            self._bullet = None
        if element.pre:
            self._pre -= 1

    def _breaks_around(self, tag: str) -> int:
        if tag in ("ul", "ol") and self._lists:
            return 1  # a list in a list item: no blank line
        if tag in _PARAGRAPHS:
            return 2
        return 1 if tag in _BLOCKS else 0

    def _end_link(self) -> None:
        link, self._link = self._link, None
        label = _SPACE.sub(" ", "".join(link.pieces)).strip()
        form = link_form(link.href, label, link.texts == 0)
        self.link_written(link.href, label, link.texts == 0, form)
        if form == "label":
            self._write(label)
            return
        self._write(" " + link.href if form == "url" else label + ": " + link.href)
        self._after_word = True

    def link_written(self, href: str | None, label: str, only_images: bool, form: str) -> None:
        """Called for each link with what decided its form (mailer/text_part.py watches it)."""

    # ------------------------------------------------------------------ result

    def convert(self, html: str) -> str:
        """The text, unwrapped: one line per line of the result."""
        self.feed(html)
        self.close()
        while self._stack:
            self._close(self._stack.pop())
            self._hidden = self._stack[-1].hidden if self._stack else False
        if self._link is not None:
            self._end_link()
        if self._line:
            self._end_line()
        return "\n".join(self._lines)


def _hides(attributes: dict) -> bool:
    if "hidden" in attributes:
        return True
    style = attributes.get("style")
    return bool(style) and _HIDING_STYLE.search(style) is not None


def _strip(href: str) -> str:
    # As browsers read an href: without surrounding white space.
    return href.strip(" \t\n\f\r")


def _number(start: str | None) -> int:
    try:
        return int((start or "1").strip())
    except ValueError:
        return 1


def wrap_line(line: str) -> str:
    """One line wrapped at WIDTH between words; continuation lines aligned after a bullet."""
    if line.startswith(PRE):
        return line[1:]
    if len(line) <= WIDTH:
        return line
    head = _LIST_START.match(line).end()
    hang = " " * head
    words = line[head:].split(" ")
    out = []
    current = line[:head] + words[0]
    for word in words[1:]:
        if len(current) + 1 + len(word) <= WIDTH:
            current += " " + word
        else:
            out.append(current)
            current = hang + word
    out.append(current)
    return "\n".join(out)


def wrap(text: str) -> str:
    return "\n".join(wrap_line(line) for line in text.split("\n"))


def finish(text: str) -> str:
    """The text part as sent: no blank lines around it, one line break at its end."""
    return text.strip("\n") + "\n"


def html_to_text(html: str) -> str:
    """The text part of an HTML message."""
    return finish(wrap(PlainTextConverter().convert(html)))
