"""Reading what the mailer produced, and running quickstart, as the tests need it."""

import asyncio
import base64
import contextlib
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tracker.tokens import Tokens

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


BAD_TOKEN_KINDS = (
    "changed tag",
    "other body, same tag",
    "truncated",
    "no tag",
    "empty tag",
    "invented",
    "non-ascii tag",
    "other key",
    "click token",
    "open token",
    "unknown recipient",
)


def bad_tokens(settings, recipient_id: int) -> dict[str, str]:
    """Preference tokens that must not work: altered, invented, another key, another purpose."""
    tokens = Tokens(settings.secret_keys)
    good = tokens.preferences.encode(recipient_id)
    body, _, tag = good.partition(".")
    bobs_body = tokens.preferences.encode(recipient_id + 1).partition(".")[0]
    flipped = tag[:-1] + ("A" if tag[-1] != "A" else "B")
    made = {
        "changed tag": f"{body}.{flipped}",
        "other body, same tag": f"{bobs_body}.{tag}",
        "truncated": good[:-3],
        "no tag": body,
        "empty tag": f"{body}.",
        "invented": "abcdef.AAAAAAAAAAAAAAAA",
        "non-ascii tag": f"{body}.%C3%A9t%C3%A9",
        "other key": Tokens((b"another-secret-key-0123456789ab",)).preferences.encode(recipient_id),
        "click token": tokens.click.encode(recipient_id, recipient_id),
        # One id, like a preference token: only the purpose tells them apart.
        "open token": tokens.opens.encode(recipient_id),
        "unknown recipient": tokens.preferences.encode(recipient_id + 1000),
    }
    assert tuple(made) == BAD_TOKEN_KINDS
    return made


@contextlib.asynccontextmanager
async def running_quickstart(env: dict, port: int):
    """`fairclick quickstart` as a real process, up once it printed its guide; yields
    (process, what it printed). Stopped with Ctrl-C at the end, and killed if it does not
    stop in time: never left running, holding its ports, for the tests after it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fairclick.cli", "quickstart", "--port", str(port), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    printed = []
    try:
        while not printed or "Ctrl-C stops everything" not in printed[-1]:
            # Generous: the first start creates the embedded database (initdb).
            line = await asyncio.wait_for(process.stdout.readline(), 240)
            assert line, "quickstart ended early: " + (await process.stderr.read()).decode()
            printed.append(line.decode())
        yield process, "".join(printed)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            process.kill()
            raise


def dkim_key(
    folder: Path, selector: str = "s1", domain: str = "example.com"
) -> tuple[bytes, Callable[..., bytes]]:
    """A new 2048-bit DKIM key (PEM) made by openssl, and a DNS lookup (dkimpy's dnsfunc)
    that publishes it under selector and domain, and knows no other name."""
    key = folder / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def lookup(name: bytes, timeout: float = 5) -> bytes:
        assert name == f"{selector}._domainkey.{domain}.".encode()
        return record

    return key.read_bytes(), lookup
