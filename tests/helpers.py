"""Reading what the mailer produced, as the tests need it."""

import re

_TRACKED = re.compile(r"""href=["']?(http://127\.0\.0\.1:\d+/c/[^"'\s>]+)""")
_HONEYPOT = re.compile(r'<a href="([^"]+)" style="display:none !important" aria-hidden="true"')
_PIXEL = re.compile(r'<img src="(http://127\.0\.0\.1:\d+/o/[^"]+\.gif)"')


def tracked_links(html: str) -> list[str]:
    """The tracked links a person can see and click (the hidden honeypot left out)."""
    hidden = set(_HONEYPOT.findall(html))
    return [link for link in _TRACKED.findall(html) if link not in hidden]


def honeypot_links(html: str) -> list[str]:
    return _HONEYPOT.findall(html)


def pixels(html: str) -> list[str]:
    return _PIXEL.findall(html)
