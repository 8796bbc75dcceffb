"""Find the trackable links of an HTML email and rewrite their href values in place."""

import functools
import html as htmllib
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html.entities import html5 as _ENTITIES


@dataclass(frozen=True, slots=True)
class LinkSpot:
    start: int  # offset of the first char of the raw href value (inside the quotes, if quoted)
    end: int  # offset just past the raw value (before the closing quote)
    url: str  # the raw value, entity-decoded and stripped
    name: str | None  # the tag's data-fairclick-name (decoded, stripped), None if absent or empty


# The scanner follows the HTML tokenizer (WHATWG "13.2.5") closely enough to see the tags a
# browser sees: a link the browser would not show must not be rewritten, and a quoted '>' or a
# comment must not make us rewrite bytes that are not an href value. Every regex below is free of
# ambiguous nested repetition, and every search either ends the scan or moves past what it read:
# linear. Case-insensitive patterns are ASCII-only: browsers fold only ASCII letters in names,
# so "</ſtyle>" (long s) does not end a <style>.
_WS = "\t\n\f\r "
# Group 1: "/" of an end tag; group 2: a tag name. Any '<' not matched here is text.
_MARKUP = re.compile(rf"<(?:(/?)([A-Za-z][^{_WS}/>]*)|!--|!\[CDATA\[|[!?/])")
# One attribute (group 1: name; 2, 3, 4: double-, single- or unquoted value) or, when group 1 is
# None, the tag's end. A quote left open swallows the rest of the document, as in a browser.
_ATTR = re.compile(
    rf"""[{_WS}/]*(?:([^{_WS}/>][^{_WS}/=>]*)[{_WS}]*"""
    rf"""(?:=[{_WS}]*(?:"([^"]*)"?|'([^']*)'?|([^{_WS}>]*)))?)?"""
)
_COMMENT_END = re.compile(r"--!?>")
# Elements whose content is text, not markup (<textarea> and <title> show it to the reader:
# rewriting there would change visible words). After <plaintext> everything is text.
_RAW_TEXT = "style script textarea title xmp iframe noembed noframes".split()
_CLOSERS = {name: re.compile(rf"</{name}[{_WS}/>]", re.IGNORECASE | re.ASCII) for name in _RAW_TEXT}
_LINK_TAGS = ("a", "area")
_WEB_URL = re.compile(r"https?://", re.IGNORECASE | re.ASCII)
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z0-9]+;?)")

# The fast path's patterns know tag and attribute names in lowercase only, as plain literals: a
# branch on a literal costs the regex engine one comparison, a case-insensitive one much more.
# A name with an uppercase letter stops them (the exact loop reads that tag); after such a tag,
# they read a lowercase copy of the document instead, the same character for character but for
# ASCII letters.
#
# Most tags are written under a strict grammar in which the tokenizer has only one way to go:
# attribute names of safe characters, values double-quoted, single-quoted or unquoted without
# quotes, '=', '<', '>' or '`', and "/?>" at the end. Where such a grammar matches, its parse is
# the browser's parse; where it does not, the exact attribute loop (_parse_attrs) decides. Each
# piece is decided by its first character, so the engine never has two ways to match.


def _repeat(pattern: str) -> str:
    """pattern repeated as often as it matches, never given back (as "(?:pattern)*+").

    Possessive quantifiers on groups are the faster form, but were broken before Python 3.11.5
    (gh-106052): an atomic group does the same there.
    """
    if sys.version_info >= (3, 11, 5):
        return f"(?:{pattern})*+"
    return f"(?>(?:{pattern})*)"


_NAME_CHARS = "-a-z0-9_:."
_VALUE = rf"""(?:"[^"]*+"|'[^']*+'|[^{_WS}"'=<>`]++)"""
# The attributes and the end of a tag whose name was just read, one loop per attribute with a
# value: names of _NAME_CHARS and whitespace, each name before a value followed by '=' (the
# browser's tokenizer then reads the names as attributes without a value, and the '=' as the
# start of the last one's value). A quote-less unquoted value ends at whitespace or '>'.
_TAG_REST = (
    _repeat(rf"""[{_WS}]*+[{_NAME_CHARS}][{_NAME_CHARS}{_WS}]*+=(?:"[^"]*+"|[{_WS}]*+{_VALUE})""")
    + rf"[{_NAME_CHARS}{_WS}]*+/?>"
)
_TAG_END = re.compile(_TAG_REST)
# The commonest case of _TAG_REST, for the walker to try first: ' name="value"' pairs.
_SIMPLE_REST = _repeat(r' [a-z][-a-z]*+="[^"]*+"') + "/?>"
_NAME_END = f"(?=[{_WS}/>])"


def _link_rest(group: int) -> str:
    """The rest of a link tag, capturing its first href, data-fairclick and data-fairclick-name
    values, quotes included, as groups "hv", "ov" and "nv".

    Names and values follow each other as in _TAG_REST, but each name has its own loop here,
    after whitespace. The pattern's groups are numbered from group, since conditionals refer to
    them by number: once an attribute has occurred, a later one of that name falls to the generic
    alternative, as browsers keep the first of duplicate attributes.
    """
    equals = rf"[{_WS}]*+=[{_WS}]*+"
    attrs = []
    for name, key in (("href", "h"), ("data-fairclick-name", "n"), ("data-fairclick", "o")):
        attrs.append(
            rf"(?({group})(?!)|{name}(?P<{key}>)(?![{_NAME_CHARS}A-Z])"
            rf"(?:{equals}(?P<{key}v>{_VALUE}))?)"
        )
        group += 2
    generic = rf"[{_NAME_CHARS}]*+(?:{equals}{_VALUE})?"
    # Most names start with neither 'h' nor 'd': the first branch takes them at once.
    branches = [f"[a-ce-gi-z_:]{generic}", *attrs, f"[a-z_:]{generic}"]
    return _repeat(rf"[{_WS}]++(?:{'|'.join(branches)})") + rf"[{_WS}]*+/?>"


def _other_names(names: list[str], prefixes: tuple[str, ...] = ()) -> list[str]:
    """Branches that read a (lowercase) tag name that is none of names and starts with none of
    prefixes: one branch for each letter no such name starts with, and for the others a branch
    for each first two letters (three for a name's first two) that rule the names out.

    A name these branches miss (say "<st>" or "<noscript>") only stops the walker.
    """
    stop = {*names, *prefixes}
    branches = []
    for first in "tspiabdcfhmuoelnvgjkqrwxyz":  # roughly by how often email tags start so
        followers = {name[1] for name in stop if name[0] == first and len(name) > 1}
        if not any(name[0] == first for name in stop):
            branches.append(rf"{first}[^{_WS}/>]*+")
            continue
        branches.append(rf"{first}[^{_both_cases(followers)}{_WS}/>][^{_WS}/>]*+")
        for second in sorted(followers):
            if first + second in prefixes:
                continue
            thirds = {n[2] for n in stop if n[:2] == first + second and n[2:]}
            branches.append(
                rf"{first}{re.escape(second)}[^{_both_cases(thirds)}{_WS}/>][^{_WS}/>]*+"
            )
        if first not in stop:
            branches.append(first + _NAME_END)
    return branches


def _both_cases(letters: set[str]) -> str:
    """letters for a character class, in both cases: "sTyle" must not pass for another name."""
    return "".join(sorted({*letters, *(c.upper() for c in letters)}))


# A comment without "href" in it, which can hold no link even if Outlook shows it (its end as in
# _comment_end), and a doctype or other "<!" bogus comment (not "<!-" nor "<![": CDATA).
_NO_LINK_COMMENT = r"!--(?:-?>|" + _repeat(r"[^-hH]++|[hH](?![rR][eE][fF])|-(?!-!?>)") + r"--!?>)"
_ANY_CASE_HREF = re.compile("[hH][rR][eE][fF]")
_BOGUS_COMMENT = r"!(?![-\[])[^>]*+>"


def _walker(*, in_head: bool, in_mso: bool) -> re.Pattern[str]:
    """A pattern that reads past text and strict tags of no interest, then a link tag.

    It reads comments without "href" and doctypes too, and stops at other comments, at "<?",
    at "</" not followed by a letter or '<' followed by something else, at a tag that starts or
    ends <head>, at a raw text element, and at any tag outside the strict grammar: the exact
    loop takes it from there. If it stopped at a link tag (<a>, <area>, and in an Outlook block
    also <v:...>) in the strict grammar, it reads that tag too: group "lt" is then its '<'.
    """
    if in_head:
        start_tags = _other_names(["body", *_RAW_TEXT, "plaintext"])
        end_tags = "|".join(_other_names(["head"]))
        link = "(?!)"
    else:
        start_tags = _other_names([*_LINK_TAGS, "head", *_RAW_TEXT, "plaintext"], ("v:",))
        end_tags = rf"[a-z][^{_WS}/>]*+"
        link = rf"(?:a|area){_NAME_END}"
        if in_mso:
            link += rf"|v:[^{_WS}/>]*+"
    # One branch per kind of name, each with the rest of its tag, is the cheapest dispatch for
    # the engine. End tags rarely have attributes: "</td>" is worth a branch of its own.
    rest = f"(?:{_SIMPLE_REST}|{_TAG_REST})"
    markup = "|".join(
        [
            rf"/(?:{end_tags})>",
            f"(?:{'|'.join(start_tags)}){rest}",
            rf"/(?:{end_tags}){_TAG_REST}",
            _NO_LINK_COMMENT,
            _BOGUS_COMMENT,
        ]
    )
    return re.compile(
        _repeat(rf"[^<]*+<(?:{markup})") + rf"[^<]*+(?:(?P<lt><)(?:{link}){_link_rest(2)})?"
    )


_WALKERS = {
    (in_head, in_mso): _walker(in_head=in_head, in_mso=in_mso)
    for in_head in (False, True)
    for in_mso in (False, True)
}
# The groups of the values of a link tag's href, data-fairclick and data-fairclick-name.
_LINK_LT, _HREF, _OFF, _NAME = (
    _WALKERS[False, False].groupindex[key] for key in ("lt", "hv", "ov", "nv")
)
# Non-ASCII characters whose lowercase is ASCII ("İ" also changes the length): a document with
# one has no lowercase copy for the walkers.
_FOLDS_TO_ASCII = ("\u0130", "\u212a")

# A downlevel-hidden conditional comment: "<!--[if mso]>" ... "<![endif]-->". Browsers see a
# comment; Outlook on Windows (Word's engine) shows the content when the condition holds.
_CONDITION = re.compile(r"\[if(?![A-Za-z0-9])([^\]]*)\]>", re.IGNORECASE | re.ASCII)
_ENDIF = "<![endif]"
_CONDITION_TOKEN = re.compile(
    rf"[{_WS}]*(?:([!&|()])|(gte|gt|lte|lt)(?![A-Za-z0-9])|([A-Za-z]+)|([0-9]+(?:\.[0-9]+)?))",
    re.IGNORECASE | re.ASCII,
)
# The "mso" versions of the Outlooks that read conditional comments (2000 to 365), with VML.
_OUTLOOK_VERSIONS = (9.0, 10.0, 11.0, 12.0, 14.0, 15.0, 16.0)

Attrs = dict[str, tuple[int, int]]  # lowercase attribute name -> (start, end) of its raw value


def find_links(html: str, *, skip_prefixes: tuple[str, ...] = ()) -> list[LinkSpot]:
    """The trackable links of an HTML document, in document order.

    Those are the http(s) hrefs of <a> and <area> tags a browser shows (not in comments, raw
    text or <head>), and inside Outlook's conditional comments ("<!--[if mso]>") also those of
    VML elements such as the <v:roundrect> of a bulletproof button.
    """
    return _find_links(html, tuple(skip_prefixes), fast=True)


def rewrite_links(
    html: str, spots: Iterable[LinkSpot], replacement: Callable[[LinkSpot], str | None]
) -> str:
    """html with each spot's raw value replaced by replacement(spot); None keeps that spot as is."""
    parts = []
    copied_to = last_end = 0
    for spot in spots:
        if spot.start < last_end or spot.end < spot.start:
            raise ValueError(f"spots out of order or overlapping at {spot.start}")
        last_end = spot.end
        new_value = replacement(spot)
        if new_value is not None:
            parts += (html[copied_to : spot.start], new_value)
            copied_to = spot.end
    parts.append(html[copied_to:])
    return "".join(parts)


# A link tag's value spans: href, data-fairclick (or None), data-fairclick-name (or None).
LinkTag = tuple[tuple[int, int], tuple[int, int] | None, tuple[int, int] | None]


@dataclass
class ScanMap:
    """What an exact scan of a document read, for mailer/layout_links.py.

    inert: spans whose characters the scan only skipped (text, quoted attribute values, raw
    text away from any '<'), so that any other characters without '<', '"' or "'" in their
    place would be scanned the same way; link_tags: the (href, data-fairclick,
    data-fairclick-name) value spans of every link tag with an href, tracked or not.
    """

    inert: list[tuple[int, int]] = field(default_factory=list)
    link_tags: list[LinkTag] = field(default_factory=list)


def map_document(html: str) -> ScanMap:
    """The ScanMap of html (exact scan; Outlook blocks' content is left out of inert)."""
    scan = _Scan(html, (), [], fast=False)
    scan.map = ScanMap()
    scan.run(0, len(html), in_head=False, in_mso=False)
    return scan.map


def written_link_tags(html: str) -> list[tuple[str, bool, str]]:
    """(href, switched off by data-fairclick="off", data-fairclick-name) of every link tag with
    an href, decoded and stripped, whatever the href holds, in document order: the link tags
    find_links reads, whether they track or not (mailer/link_check.py lists them all)."""
    return [
        (_attr_value(html, href), _attr_value(html, off).lower() == "off", _attr_value(html, name))
        for href, off, name in map_document(html).link_tags
    ]


def written_links(html: str) -> list[tuple[str, str]]:
    """(href, data-fairclick-name) of every link tag with an href that is not switched off,
    decoded and stripped, whatever the href holds: a template's links as written, Jinja and all."""
    return [(href, name) for href, off, name in written_link_tags(html) if not off]


def link_spot_at(html: str, tag: LinkTag, skip_prefixes: tuple[str, ...]) -> LinkSpot | None:
    """The spot of a link tag (its spans in html) if it tracks, as find_links would give it."""
    (start, end), off, name = tag
    url = _web_url(html[start:end])
    if url is None or url.startswith(skip_prefixes):
        return None
    if _attr_value(html, off).lower() == "off":
        return None
    return _link_spot(start, end, url, _attr_value(html, name) or None)


def _find_links(html: str, skip_prefixes: tuple[str, ...], *, fast: bool) -> list[LinkSpot]:
    """find_links; fast=False parses every attribute of every tag (the reference for tests)."""
    spots: list[LinkSpot] = []
    _Scan(html, skip_prefixes, spots, fast=fast).run(0, len(html), in_head=False, in_mso=False)
    return spots


class _Scan:
    """One scan of a document: appends its links to spots."""

    def __init__(
        self, html: str, skip_prefixes: tuple[str, ...], spots: list[LinkSpot], *, fast: bool
    ) -> None:
        self.html = html
        self.skip_prefixes = skip_prefixes
        self.spots = spots
        self.fast = fast
        self.text = html  # what the walkers read: html, or its lowercase copy
        self.lowered = False
        self.map: ScanMap | None = None  # filled by map_document's scan (fast=False)

    def lower(self) -> None:
        """Let the walkers read a lowercase copy of the document from now on."""
        self.lowered = True
        html = self.html
        if not html.isascii() and any(c in html for c in _FOLDS_TO_ASCII):
            self.fast = False  # the copy would differ in more than case: the exact loop alone
        else:
            self.text = html.lower()

    def run(self, pos: int, end: int, *, in_head: bool, in_mso: bool) -> None:
        """Scan html[pos:end], as if the document ended at end, from the data state."""
        html = self.html
        while True:
            if self.fast:
                # Each match reads on from the last: links, until the walker stops elsewhere.
                for walked in _WALKERS[in_head, in_mso].finditer(self.text, pos, end):
                    if walked.start(_LINK_LT) < 0:
                        pos = walked.end()
                        break
                    self.add_walked(walked)
                else:
                    return
            match = _MARKUP.search(html, pos, end)
            mapped = self.map is not None and not in_mso
            if mapped:
                self.map.inert.append((pos, match.start() if match else end))
            if match is None:
                return
            pos = match.end()
            if match.group(2) is None:
                if match.group() == "<!--":
                    text_end, pos = _comment_end(html, pos, end)
                    # (A comment the document ends in is no Outlook block: it has no end.)
                    block = pos <= end and _outlook_block(html, match.end(), text_end)
                    if block and _ANY_CASE_HREF.search(html, *block):
                        self.run(*block, in_head=in_head, in_mso=True)
                else:  # CDATA, or a doctype, "<?...>", "</>", "</3": all bogus comments to us
                    pos = _past(html, "]]>" if match.group() == "<![CDATA[" else ">", pos, end)
                if pos > end:  # the document ends in the comment
                    return
                continue
            tag = _ascii_lower(match.group(2))
            is_start = not match.group(1)
            is_link = (
                is_start
                and not in_head
                and (tag in _LINK_TAGS or (in_mso and tag.startswith("v:")))
            )
            # The walker has tried a link tag already, under a grammar as strict as _TAG_REST.
            if self.fast and not is_link and (tag_end := _TAG_END.match(self.text, pos, end)):
                pos = tag_end.end()
            else:
                attrs, pos = _parse_attrs(html, pos, end, self.map.inert if mapped else None)
                if pos > end:
                    return
                if is_link and "href" in attrs:
                    if self.map is not None:
                        self.map.link_tags.append(
                            (attrs["href"], attrs.get("data-fairclick"),
                             attrs.get("data-fairclick-name"))
                        )  # fmt: skip
                    self.add(*attrs["href"], attrs)
            if self.fast and not self.lowered:
                written = html[match.start() : pos]
                if written != written.lower():  # uppercase names stop the walkers
                    self.lower()
            if not is_start:
                in_head = in_head and tag != "head"
                continue
            # Head content is never shown; a <body> implies the head ended without </head>.
            in_head = tag == "head" or (in_head and tag != "body")
            if tag in _CLOSERS:
                closer = _CLOSERS[tag].search(html, pos, end)
                if mapped:
                    _map_raw_text(self.map, html, pos, closer.start() if closer else end, tag)
                pos = closer.start() if closer else end
            elif tag == "plaintext":
                return

    def add_walked(self, match: re.Match[str]) -> None:
        """Add the link of a tag the walker read (its values' spans include the quotes)."""
        start, end = match.span(_HREF)
        if start < 0:
            return
        html = self.html
        if html[start] in "\"'":
            start, end = start + 1, end - 1
        raw = html[start:end]
        url = _WEB_URLS.get(raw, _UNKNOWN)
        if url is _UNKNOWN:
            url = _web_url(raw)
        if url is None or url.startswith(self.skip_prefixes):
            return
        name = None
        if match.start(_OFF) >= 0 or match.start(_NAME) >= 0:
            if _attr_value(html, _unquoted(html, match.span(_OFF))).lower() == "off":
                return
            name = _attr_value(html, _unquoted(html, match.span(_NAME))) or None
        self.spots.append(_link_spot(start, end, url, name))

    def add(self, start: int, end: int, attrs: Attrs) -> None:
        """Add the href html[start:end] of a link tag with attributes attrs if it tracks."""
        url = _web_url(self.html[start:end])
        if url is None or url.startswith(self.skip_prefixes):
            return
        if _attr_value(self.html, attrs.get("data-fairclick")).lower() == "off":
            return
        name = _attr_value(self.html, attrs.get("data-fairclick-name")) or None
        self.spots.append(_link_spot(start, end, url, name))


_WEB_URLS: dict[str, str | None] = {}
_UNKNOWN = object()


def _web_url(raw: str) -> str | None:
    """The URL of a raw href value (decoded, stripped) if it is a web URL, else None.

    Remembered: a mailer finds the same links in message after message.
    """
    try:
        return _WEB_URLS[raw]
    except KeyError:
        pass
    url: str | None = _decode_attr(raw).strip()
    if not _WEB_URL.match(url):
        url = None
    if len(_WEB_URLS) >= 4096:
        _WEB_URLS.clear()
    _WEB_URLS[raw] = url
    return url


def _unquoted(html: str, span: tuple[int, int]) -> tuple[int, int] | None:
    """The span of a value without its quotes, from the span of the value as written."""
    start, end = span
    if start < 0:
        return None
    return (start + 1, end - 1) if html[start] in "\"'" else span


def _attr_value(html: str, span: tuple[int, int] | None) -> str:
    return _decode_attr(html[span[0] : span[1]]).strip() if span else ""


_new_object = object.__new__
_SET_SPOT_FIELDS = tuple(
    getattr(LinkSpot, field).__set__ for field in ("start", "end", "url", "name")
)


def _link_spot(start: int, end: int, url: str, name: str | None) -> LinkSpot:
    """LinkSpot(start, end, url, name) in half the time: a frozen dataclass's __init__ sets each
    field through object.__setattr__, this sets its slots directly."""
    spot = _new_object(LinkSpot)
    set_start, set_end, set_url, set_name = _SET_SPOT_FIELDS
    set_start(spot, start)
    set_end(spot, end)
    set_url(spot, url)
    set_name(spot, name)
    return spot


def _map_raw_text(scan_map: ScanMap, html: str, pos: int, stop: int, tag: str) -> None:
    """Raw text html[pos:stop] as inert spans: none within a possible closer ("</tag" and one
    more character) from a '<' on, since characters there decide whether it closes."""
    reach = len(tag) + 3
    while (lt := html.find("<", pos, stop)) >= 0:
        scan_map.inert.append((pos, lt))
        pos = lt + reach
    if pos < stop:
        scan_map.inert.append((pos, stop))


def _parse_attrs(
    html: str, pos: int, end: int, quoted: list[tuple[int, int]] | None = None
) -> tuple[Attrs, int]:
    """The attributes of the tag whose name ends at pos, and the offset after its '>'.

    That offset is past end when the document (html[:end]) ends inside the tag: browsers drop
    such a tag. With quoted, the spans of quoted values are appended to it.
    """
    attrs: Attrs = {}
    while (match := _ATTR.match(html, pos, end)).group(1) is not None:
        pos = match.end()
        # lastindex is the value's group, or 1 (the name) when the attribute has no value.
        span = match.span(match.lastindex) if match.lastindex > 1 else (pos, pos)
        if quoted is not None and match.lastindex in (2, 3):
            quoted.append(span)
        # Browsers keep the first of duplicate attributes.
        attrs.setdefault(_ascii_lower(match.group(1)), span)
    return attrs, match.end() + 1


def _comment_end(html: str, pos: int, end: int) -> tuple[int, int]:
    """(end of the text, offset after the comment) of the comment whose text starts at pos.

    A comment that never closes runs to end, and the offset after it is past end.
    """
    if html.startswith(">", pos, end):  # "<!-->" is an empty comment
        return pos, pos + 1
    if html.startswith("->", pos, end):  # and so is "<!--->"
        return pos, pos + 2
    match = _COMMENT_END.search(html, pos, end)
    return (match.start(), match.end()) if match else (end, end + 1)


def _outlook_block(html: str, pos: int, text_end: int) -> tuple[int, int] | None:
    """(start, end) of the content of a conditional comment Outlook shows, else None.

    The comment text html[pos:text_end] must be a whole "[if condition]>...<![endif]" (closed
    where the browser closes the comment) and the condition must hold for some Outlook.
    """
    match = _CONDITION.match(html, pos, text_end)
    if match is None or text_end - match.end() < len(_ENDIF):
        return None
    if html[text_end - len(_ENDIF) : text_end].lower() != _ENDIF:
        return None
    if not _shown_by_outlook(match.group(1)):
        return None
    return match.end(), text_end - len(_ENDIF)


@functools.lru_cache(maxsize=256)
def _shown_by_outlook(condition: str) -> bool:
    """Whether a conditional comment's condition holds for some version of Outlook on Windows.

    The grammar is Internet Explorer's: "!", "&", "|", parentheses, and terms such as "mso",
    "gte mso 9" or "IE 7". Outlook knows "mso" (its version) and "vml"; any other feature is
    false there. A condition that does not parse, or is longer than any real one, is not shown.
    """
    if len(condition) > 200:  # (the parser recurses once per parenthesis or "!")
        return False
    if not any(word.lower() in ("mso", "vml") for word in re.findall("[A-Za-z]+", condition)):
        return False  # e.g. "[if IE]", "[if !IE]": not meant for Outlook
    tokens = []
    pos = 0
    while pos < len(condition.rstrip(_WS)):
        match = _CONDITION_TOKEN.match(condition, pos)
        if match is None:
            return False
        tokens.append((match.lastindex, match.group(match.lastindex).lower()))
        pos = match.end()
    for version in _OUTLOOK_VERSIONS:
        parser = _ConditionParser(tokens, {"mso": version, "vml": 1.0})
        try:
            if parser.parse():
                return True
        except ValueError:
            return False
    return False


class _ConditionParser:
    """Evaluates tokens of a condition (group, text) for one set of known feature versions."""

    SYMBOL, COMPARISON, FEATURE, VERSION = 1, 2, 3, 4

    def __init__(self, tokens: list[tuple[int, str]], features: dict[str, float]) -> None:
        self.tokens = tokens
        self.features = features
        self.pos = 0

    def parse(self) -> bool:
        value = self.either()
        if self.pos != len(self.tokens):
            raise ValueError("trailing tokens")
        return value

    def peek(self) -> tuple[int, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (0, "")

    def take(self, kind: int) -> str:
        token_kind, text = self.peek()
        if token_kind != kind:
            raise ValueError("unexpected token")
        self.pos += 1
        return text

    def either(self) -> bool:
        value = self.both()
        while self.peek() == (self.SYMBOL, "|"):
            self.pos += 1
            value = self.both() or value
        return value

    def both(self) -> bool:
        value = self.term()
        while self.peek() == (self.SYMBOL, "&"):
            self.pos += 1
            value = self.term() and value
        return value

    def term(self) -> bool:
        if self.peek() == (self.SYMBOL, "!"):
            self.pos += 1
            return not self.term()
        if self.peek() == (self.SYMBOL, "("):
            self.pos += 1
            value = self.either()
            self.take(self.SYMBOL)  # only ")" can follow a complete expression
            return value
        comparison = self.take(self.COMPARISON) if self.peek()[0] == self.COMPARISON else ""
        feature = self.features.get(self.take(self.FEATURE))
        wanted = float(self.take(self.VERSION)) if self.peek()[0] == self.VERSION else None
        if comparison and wanted is None:
            raise ValueError("a comparison needs a version")
        if feature is None or wanted is None:
            return feature is not None
        if comparison == "":
            return int(feature) == int(wanted) if wanted.is_integer() else feature == wanted
        return {
            "lt": feature < wanted,
            "lte": feature <= wanted,
            "gt": feature > wanted,
            "gte": feature >= wanted,
        }[comparison]


def _past(html: str, marker: str, pos: int, end: int) -> int:
    """Offset after the next marker in html[pos:end] (past end if there is none)."""
    found = html.find(marker, pos, end)
    return found + len(marker) if found >= 0 else end + 1


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(name: str) -> str:
    # Only ASCII letters fold: str.lower() would turn the Kelvin sign into "k".
    return name.lower() if name.isascii() else name.translate(_ASCII_LOWER)


def _decode_attr(raw: str) -> str:
    """raw with character references decoded the way browsers decode them in an attribute value.

    Unlike html.unescape, a legacy entity without ';' followed by '=' or a letter or digit stays
    as it is, so a query such as "?a=1&region=eu" keeps its "&reg" instead of becoming "®".
    """
    if "&" not in raw:
        return raw
    # "&amp;" is the only reference in most URLs; it means "&" whatever follows it.
    if "&" not in raw.replace("&amp;", ""):
        return raw.replace("&amp;", "&")
    return _CHARREF.sub(_decode_ref, raw)


def _decode_ref(match: re.Match[str]) -> str:
    ref = match.group(1)
    if ref.startswith("#"):
        return htmllib.unescape(match.group())
    if ref.endswith(";"):
        return _ENTITIES.get(ref, match.group())
    next_char = match.string[match.end() : match.end() + 1]
    if ref in _ENTITIES and next_char != "=":  # a legacy entity, e.g. "&amp" or "&copy"
        return _ENTITIES[ref]
    return match.group()
