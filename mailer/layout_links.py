"""find_links once per layout: each message then only shifts the offsets and reads its hrefs.

Every message of a campaign is the same HTML but for a few values (see mailer/text_part.py:
the twin template gives each message's layout, its literal pieces in order, and its values).
Scanning 30 KB for links costs ~250 µs a message; the links are where the layout puts them.

Exactness, per layout: the layout's HTML, with a placeholder word in place of each value, is
scanned by the rewriter's exact loop, which reports the spans whose characters it only skipped
over (rewrite.map_document: text, quoted attribute values, raw text away from a '<'). A value
inside such a span, holding no '<', '"' or "'", is scanned exactly as the placeholder is: the
same tags, attributes and comments are found, at offsets shifted by the difference in length.
A value anywhere else (a tag or attribute name, an unquoted value, a comment, an Outlook
block) could change what is found, so it is not replaced: its value becomes part of the
cache key, and the scan is of the layout with that value in place (a campaign-wide value,
such as the campaign's name in a link, costs one scan). Each link tag's href and
data-fairclick(-name) values are then read from the message's own HTML, so a value inside an
href gives that message's URL, decoded and checked as find_links does.

tests/test_layout_links.py checks the outcome against find_links on the example, the corpus and
the benchmark's templates, for plain and awkward values, and on generated templates.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from mailer.rewrite import LinkSpot, find_links, link_spot_at, map_document
from mailer.text_part import Layout, LayoutTemplate

# Layouts, and keyed value sets per layout, kept per campaign.
MAX_LAYOUTS = 64
MAX_KEYED = 64
# A replaced value holding one of these could end a quoted value or start markup.
_UNSCANNED = re.compile("[<\"']")
_Placed = tuple[int, int, int, int] | None


@dataclass(frozen=True)
class _Plan:
    """The links of a layout (with its keyed values), as offsets in the scanned HTML."""

    replaced: tuple[int, ...]  # indexes of the values replaced by placeholders, in order
    placeholder_lengths: tuple[int, ...]
    # Per link tag, its href, data-fairclick and data-fairclick-name value spans as (start,
    # placeholders before it, end, placeholders before it), or None: each offset moves by the
    # length differences of the replaced values before it.
    tags: tuple[tuple[_Placed, _Placed, _Placed], ...]


class LayoutLinks:
    """find_links for messages rendered through one twin template, per layout."""

    def __init__(self, twin: LayoutTemplate, placeholder: str):
        self.twin = twin
        self._word = placeholder.format  # "{}" becomes the value's index
        self._keyed: dict[str, frozenset[int]] = {}  # layout key -> values in the cache key
        self._plans: dict[tuple, _Plan | None] = {}

    def find(
        self, html: str, layout: Layout | None, skip_prefixes: tuple[str, ...] = ()
    ) -> list[LinkSpot]:
        """find_links(html, skip_prefixes=…) for html the twin rendered as layout."""
        spots = None if layout is None else self._from_plan(html, layout, skip_prefixes)
        return spots if spots is not None else find_links(html, skip_prefixes=skip_prefixes)

    def _from_plan(
        self, html: str, layout: Layout, skip_prefixes: tuple[str, ...]
    ) -> list[LinkSpot] | None:
        keyed = self._keyed.get(layout.key)
        if keyed is None:
            if len(self._keyed) >= MAX_LAYOUTS:
                return None
            keyed = self._keyed[layout.key] = self._settle_keyed(layout)
        values = layout.values
        key = (layout.key, tuple(values[i] for i in sorted(keyed)))
        if key in self._plans:
            plan = self._plans[key]
        elif len(self._plans) >= MAX_LAYOUTS * MAX_KEYED:
            return None
        else:
            plan = self._plans[key] = self._plan(layout, keyed)
        if plan is None:
            return None
        shifts = [0]
        for i, length in zip(plan.replaced, plan.placeholder_lengths, strict=True):
            value = values[i]
            if _UNSCANNED.search(value):
                return None
            shifts.append(shifts[-1] + len(value) - length)
        spots = []
        for href, off, name in plan.tags:
            tag = (_moved(href, shifts), _moved(off, shifts), _moved(name, shifts))
            spot = link_spot_at(html, tag, skip_prefixes)
            if spot is not None:
                spots.append(spot)
        return spots

    def _settle_keyed(self, layout: Layout) -> frozenset[int]:
        """Values that cannot be replaced by placeholders (keyed), for this layout."""
        keyed: frozenset[int] = frozenset()
        for _ in range(len(layout.values) + 1):
            html, slots = self._scanned_html(layout, keyed)
            loose = _outside_inert(map_document(html).inert, slots)
            if not loose:
                break
            keyed |= loose
        return keyed

    def _plan(self, layout: Layout, keyed: frozenset[int]) -> _Plan | None:
        html, slots = self._scanned_html(layout, keyed)
        scan_map = map_document(html)
        if _outside_inert(scan_map.inert, slots):
            return None  # these keyed values moved another value out of the inert spans
        replaced = tuple(sorted(slots))
        ends = [slots[i][1] for i in replaced]

        def placed(span):
            """The span with, for each end, the number of placeholders before it."""
            if span is None:
                return None
            start, end = span
            return (start, bisect.bisect_right(ends, start), end, bisect.bisect_right(ends, end))

        tags = tuple(tuple(placed(span) for span in tag) for tag in scan_map.link_tags)
        return _Plan(
            replaced=replaced,
            placeholder_lengths=tuple(slots[i][1] - slots[i][0] for i in replaced),
            tags=tags,
        )

    def _scanned_html(
        self, layout: Layout, keyed: frozenset[int]
    ) -> tuple[str, dict[int, tuple[int, int]]]:
        """The layout's HTML with keyed values in place and placeholders for the others, and
        where each placeholder is (value index -> span)."""
        out = []
        at = 0
        slots = {}
        for part in self.twin.layout_parts(layout):
            if isinstance(part, int):
                if part in keyed:
                    part_text = layout.values[part]
                else:
                    part_text = self._word(part)
                    slots[part] = (at, at + len(part_text))
            else:
                part_text = part
            out.append(part_text)
            at += len(part_text)
        return "".join(out), slots


def _outside_inert(inert: list[tuple[int, int]], slots: dict[int, tuple[int, int]]) -> set[int]:
    """The placeholders not wholly inside one inert span."""
    return {
        index
        for index, (start, end) in slots.items()
        if not any(s <= start and end <= e for s, e in inert)
    }


def _moved(placed: _Placed, shifts: list[int]) -> tuple[int, int] | None:
    if placed is None:
        return None
    start, before_start, end, before_end = placed
    return start + shifts[before_start], end + shifts[before_end]
