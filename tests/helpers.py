"""Reading what the mailer produced, as the tests need it."""

import re
from pathlib import Path

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


ROOT = Path(__file__).resolve().parent.parent
# Campaign templates as marketing writes them: the example, the benchmark's, the corpus.
EMAIL_TEMPLATES = [
    ROOT / "templates/email/example/welcome.html",
    ROOT / "bench/mailer_sample.html",
    *sorted((ROOT / "tests/corpus").glob("*.html")),
]
