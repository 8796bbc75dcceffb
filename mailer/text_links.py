"""Web links in a plain-text part, for the recipients whose consent lets us track them there."""

from __future__ import annotations

import re
from collections.abc import Callable

# A URL runs to whitespace or to a character that cannot end one in prose; closing
# punctuation right after it (a full stop, a bracket) belongs to the sentence.
_URL = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}>*_"


def find_text_links(text: str) -> list[tuple[int, int, str]]:
    """(start, end, url) of each http(s) URL in the text."""
    found = []
    for match in _URL.finditer(text):
        url = match[0]
        while url and url[-1] in _TRAILING:
            # Keep a closing bracket that has its opening one inside the URL.
            if url[-1] == ")" and url.count("(") >= url.count(")"):
                break
            url = url[:-1]
        if len(url) > len("https://"):
            found.append((match.start(), match.start() + len(url), url))
    return found


def replace_text_links(
    text: str, links: list[tuple[int, int, str]], replacement: Callable[[str], str | None]
) -> str:
    parts, copied = [], 0
    for start, end, url in links:
        new = replacement(url)
        if new is not None:
            parts += (text[copied:start], new)
            copied = end
    parts.append(text[copied:])
    return "".join(parts)
