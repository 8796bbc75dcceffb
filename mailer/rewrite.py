"""Find the trackable links of an HTML email and rewrite their href values in place."""

import html as htmllib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
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
# nested repetition, and every search either ends the scan or moves past what it read: linear.
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
# rewriting there would change visible words).
_RAW_TEXT = "style script textarea title xmp iframe noembed noframes".split()
_CLOSERS = {name: re.compile(rf"</{name}[{_WS}/>]", re.IGNORECASE) for name in _RAW_TEXT}
_WEB_URL = re.compile(r"https?://", re.IGNORECASE)
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z0-9]+;?)")

Attrs = dict[str, tuple[int, int]]  # lowercase attribute name -> (start, end) of its raw value


def find_links(html: str, *, skip_prefixes: tuple[str, ...] = ()) -> list[LinkSpot]:
    """The trackable links of an HTML document, in document order."""
    skip_prefixes = tuple(skip_prefixes)
    spots = []
    for tag, attrs in _start_tags(html):
        if tag not in ("a", "area") or "href" not in attrs:
            continue
        start, end = attrs["href"]
        url = _decode_attr(html[start:end]).strip()
        if not _WEB_URL.match(url) or url.startswith(skip_prefixes):
            continue
        if _attr_value(html, attrs, "data-fairclick").lower() == "off":
            continue
        name = _attr_value(html, attrs, "data-fairclick-name") or None
        spots.append(LinkSpot(start, end, url, name))
    return spots


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


def _start_tags(html: str) -> Iterator[tuple[str, Attrs]]:
    """(lowercase name, attributes) of each start tag outside comments, raw text and <head>."""
    in_head = False
    pos = 0
    while match := _MARKUP.search(html, pos):
        pos = match.end()
        if match.group(2) is None:
            if match.group() == "<!--":
                pos = _comment_end(html, pos)
            else:  # CDATA, or a doctype, "<?...>", "</>", "</3": all bogus comments to us
                pos = _past(html, "]]>" if match.group() == "<![CDATA[" else ">", pos)
            continue
        tag = _ascii_lower(match.group(2))
        attrs, pos = _parse_attrs(html, pos)
        if pos > len(html):
            return
        if match.group(1):
            in_head = in_head and tag != "head"
            continue
        # Head content is never shown; a <body> implies the head ended without </head>.
        in_head = tag == "head" or (in_head and tag != "body")
        if not in_head:
            yield tag, attrs
        if tag in _CLOSERS:
            closer = _CLOSERS[tag].search(html, pos)
            pos = closer.start() if closer else len(html)


def _parse_attrs(html: str, pos: int) -> tuple[Attrs, int]:
    """The attributes of the tag whose name ends at pos, and the offset after its '>'.

    That offset is past the end of html when the document ends inside the tag: browsers drop
    such a tag.
    """
    attrs: Attrs = {}
    while (match := _ATTR.match(html, pos)).group(1) is not None:
        pos = match.end()
        # lastindex is the value's group, or 1 (the name) when the attribute has no value.
        span = match.span(match.lastindex) if match.lastindex > 1 else (pos, pos)
        # Browsers keep the first of duplicate attributes.
        attrs.setdefault(_ascii_lower(match.group(1)), span)
    return attrs, match.end() + 1


def _comment_end(html: str, pos: int) -> int:
    """Offset after the comment whose text starts at pos (past the end if it never closes)."""
    if html.startswith(">", pos):  # "<!-->" is an empty comment
        return pos + 1
    if html.startswith("->", pos):  # and so is "<!--->"
        return pos + 2
    match = _COMMENT_END.search(html, pos)
    return match.end() if match else len(html) + 1


def _past(html: str, marker: str, pos: int) -> int:
    """Offset after the next marker from pos (past the end if there is none)."""
    found = html.find(marker, pos)
    return found + len(marker) if found >= 0 else len(html) + 1


def _ascii_lower(name: str) -> str:
    # Only ASCII letters fold: str.lower() would turn the Kelvin sign into "k".
    return name.lower() if name.isascii() else name


def _attr_value(html: str, attrs: Attrs, name: str) -> str:
    start, end = attrs.get(name, (0, 0))
    return _decode_attr(html[start:end]).strip()


def _decode_attr(raw: str) -> str:
    """raw with character references decoded the way browsers decode them in an attribute value.

    Unlike html.unescape, a legacy entity without ';' followed by '=' or a letter or digit stays
    as it is, so a query such as "?a=1&region=eu" keeps its "&reg" instead of becoming "®".
    """
    return _CHARREF.sub(_decode_ref, raw) if "&" in raw else raw


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
