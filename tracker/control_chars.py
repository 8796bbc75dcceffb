"""Control, escape and bidi characters: refused on import, made visible on output."""

from __future__ import annotations

import re

# C0 (tab, CR and LF included), DEL, C1, and the Unicode line and paragraph separators
# (str.splitlines and many viewers break lines on those two): no place in an address or a
# name that goes into a header.
_CONTROL = "\x00-\x1f\x7f-\x9f\u2028\u2029"
CONTROL = re.compile(f"[{_CONTROL}]")
_CONTROL_RUN = re.compile(f"[{_CONTROL}]+")
# What must not reach a terminal or a spreadsheet raw: the above (ESC starts terminal
# commands) and the bidi embeddings, overrides and isolates, which reorder the text shown
# after them (U+202A-202E, U+2066-2069: the "Trojan Source" characters).
_UNSAFE = re.compile(f"[{_CONTROL}\u202a-\u202e\u2066-\u2069]")


def first_control(text: str) -> str | None:
    """The first control character in text, as a visible escape, or None."""
    found = CONTROL.search(text)
    return None if found is None else _escape(found)


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """text with each control, escape or bidi character written as its escape (ESC as \\x1b,
    U+202E as \\u202e), so what it shows is what it holds and it stays on one line."""
    return _UNSAFE.sub(_escape, text)


def one_line(text: str) -> str:
    """text with every run of control characters made one space (a header's display name)."""
    return _CONTROL_RUN.sub(" ", text).strip() if CONTROL.search(text) else text
