"""A message as it goes out: its bytes built once, in wire form, from prepared parts.

mailer/message.py's build_message makes the same message with the email package (an
EmailMessage: what previews show). Building and flattening that object cost ~0.45 ms a
message, most of it for headers and MIME framing that are the same in every message of a
campaign. Here the bytes are put together directly:

- headers that recur (From, a shared Subject, the Date of the current second, the constant
  MIME ones) are folded by the email package once and kept (bounded);
- headers made per message (To, Message-ID, List-Unsubscribe, a per-recipient Subject) are
  written directly where their value is plain ASCII that fits on one line: the email package
  writes such a value as it is (`Name: value`), which tests/test_outgoing.py checks over many
  values; anything else (a non-ASCII or quoted name, an SMTPUTF8 address, a long or encoded
  subject) is parsed and folded by the email package as before, so RFC 2047 encodings and
  header checks are its own;
- the bodies are encoded as mailer/message.py's body_transfer encodes them (7bit or
  quoted-printable), with CRLF line ends made by bytes.replace, and quoted-printable line
  by line, each line kept once encoded (most lines are the same in every message).

The bytes are the email package's own: tests/test_outgoing.py compares them with
build_message's over many awkward values.
"""

from __future__ import annotations

import re
import time
from binascii import b2a_qp
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, make_msgid
from functools import cached_property

from mailer.message import (
    _BOUNDARY,
    _BOUNDARY_BYTES,
    _QUOTED_PRINTABLE,
    _SEVEN_BIT,
    _SEVEN_BIT_BYTES,
    MAX_LINE,
    POLICY,
    POLICY_UTF8,
    UnsubscribeHeader,
    _soft_break_at_end,
    build_message,
    list_unsubscribe,
    needs_smtputf8,
)
from tracker.control_chars import one_line
from tracker.errors import FairclickError

MAX_HEADER_LINE = 78  # RFC 5322 2.1.1's SHOULD; the email package folds at it
# Values written as they are, without the email package, when the line fits: ASCII words
# of characters that need no quoting, encoding or escaping, single spaces between them.
# atext (RFC 5322 3.2.3): a display name of atext words is written unquoted.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_PLAIN_NAME = re.compile(rf"{_ATEXT}+(?: {_ATEXT}+)*")
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
# Unstructured text (a subject): printable ASCII, single spaces, and no "=?" (which the
# email package reads as the start of an RFC 2047 encoded word).
_PLAIN_TEXT = re.compile(r"(?!.*=\?)[!-~]+(?: [!-~]+)*")
# A Message-ID: make_msgid's "<digits.digits.digits@domain>".
_PLAIN_MESSAGE_ID = re.compile(r"<[0-9.]+@[A-Za-z0-9.-]+>")


class _FoldedLines:
    """Header lines as the email package folds them, kept for values that recur.

    At most LIMIT are kept; past it they are forgotten together, so a value made per
    recipient costs what it would and memory stays bounded.
    """

    LIMIT = 1000

    def __init__(self):
        self._lines: dict[tuple[str, object, bool], bytes] = {}

    def line(self, name: str, value, utf8: bool, key=None) -> bytes:
        """The folded line(s) of `name: value`, CRLF-ended; key stands for value where value
        cannot be a dictionary key (an Address)."""
        cache_key = (name, value if key is None else key, utf8)
        folded = self._lines.get(cache_key)
        if folded is None:
            if len(self._lines) >= self.LIMIT:
                self._lines.clear()
            folded = self._lines[cache_key] = fold(name, value, utf8)
        return folded


def fold(name: str, value, utf8: bool) -> bytes:
    """`name: value` as mailer/message.py's build_message + wire_bytes write it: parsed by the
    policy (which refuses CR/LF in a str value), folded by SMTP (SMTPUTF8 for a message to a
    non-ASCII address)."""
    name, header = (POLICY_UTF8 if utf8 else POLICY).header_store_parse(name, value)
    return (SMTPUTF8 if utf8 else SMTP).fold_binary(name, header)


_FOLDED = _FoldedLines()
_TEXT_TYPES = {
    subtype: {
        utf8: fold("Content-Type", f'text/{subtype}; charset="utf-8"', utf8)
        for utf8 in (False, True)
    }
    for subtype in ("plain", "html")
}
_ENCODINGS = {
    str(header): {utf8: fold(name, header, utf8) for utf8 in (False, True)}
    for name, header in (_SEVEN_BIT, _QUOTED_PRINTABLE)
}
_CONSTANT = {
    key: {utf8: fold(name, value, utf8) for utf8 in (False, True)}
    for key, name, value in (
        ("mime", "MIME-Version", "1.0"),
        ("one-click", "List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("alternative", "Content-Type", f'multipart/alternative; boundary="{_BOUNDARY}"'),
    )
}
_BOUNDARY_LINE = b"--" + _BOUNDARY.encode() + b"\r\n"
_NEXT_PART = b"\r\n" + _BOUNDARY_LINE
_LAST_BOUNDARY = b"\r\n--" + _BOUNDARY.encode() + b"--\r\n"


def _short(line: str) -> bytes | None:
    """line + CRLF as bytes if it fits in MAX_HEADER_LINE, else None."""
    return (line + "\r\n").encode("ascii") if len(line) <= MAX_HEADER_LINE else None


def to_line(to_email: str, to_name: str, utf8: bool) -> bytes:
    """The To line; an address that cannot be written is a FairclickError."""
    if not utf8 and _PLAIN_ADDRESS.fullmatch(to_email):
        if not to_name:
            line = _short(f"To: {to_email}")
        elif _PLAIN_NAME.fullmatch(to_name):
            line = _short(f"To: {to_name} <{to_email}>")
        else:
            line = None
        if line is not None:
            return line
    try:
        if utf8:
            # Address refuses to parse a non-ASCII local part whatever the policy; given as
            # parts it is quoted where needed, and CR/LF are still refused.
            local, _, domain = to_email.rpartition("@")
            to = Address(display_name=to_name, username=local, domain=domain)
        else:
            to = Address(display_name=to_name, addr_spec=to_email)
        return fold("To", to, utf8)
    except ValueError as exc:  # header defects are ValueErrors too
        raise FairclickError(f"cannot address a message to {to_email!r}: {exc}") from None


def subject_line(subject: str, utf8: bool) -> bytes:
    if _PLAIN_TEXT.fullmatch(subject) and (line := _short(f"Subject: {subject}")):
        return line
    return _FOLDED.line("Subject", subject, utf8)


def message_id_line(message_id: str, utf8: bool) -> bytes:
    if _PLAIN_MESSAGE_ID.fullmatch(message_id):
        if line := _short(f"Message-ID: {message_id}"):
            return line
        # The email package puts a msg-id too long for the first line on the next one.
        if len(message_id) + 1 <= MAX_HEADER_LINE:
            return f"Message-ID:\r\n {message_id}\r\n".encode("ascii")
    return fold("Message-ID", message_id, utf8)


def list_unsubscribe_line(url: str, utf8: bool) -> bytes:
    """`List-Unsubscribe: <url>`; a URL too long for the first line goes on the next one
    (mailer/message.py's UnsubscribeHeader says why, however long)."""
    value = list_unsubscribe(url)
    if isinstance(value, UnsubscribeHeader):
        return value.fold(policy=SMTP).encode("ascii")
    return fold("List-Unsubscribe", value, utf8)


_last_date: list = [None, None]  # [second, {utf8: line}]


def date_line(second: int, utf8: bool) -> bytes:
    """Date (RFC 5322 writes it to the second): folded once for all messages of a second."""
    if _last_date[0] != second:
        when = format_datetime(datetime.fromtimestamp(second, UTC))
        _last_date[:] = [second, {flag: fold("Date", when, flag) for flag in (False, True)}]
    return _last_date[1][utf8]


class _QuotedPrintableLines:
    """Quoted-printable by line, each line encoded once while it keeps coming back.

    binascii.b2a_qp starts every line afresh (its state is the length of the output line),
    and treats a line followed by a line break the same wherever it stands: the encoding of
    a text is the encodings of its lines, joined. Most lines are the same in every message
    of a campaign (b2a_qp runs at ~100 MB/s: ~0.3 ms per 33 KB newsletter); the ones with a
    tracked link or a name are new each time. At most LIMIT are kept, then all forgotten.
    """

    LIMIT = 20_000

    def __init__(self):
        self._lines: dict[bytes, bytes] = {}

    def encode(self, lines: list[bytes], open_end: bool) -> bytes:
        """b2a_qp(b"\\n".join(lines) + b"\\n", istext=True) with CRLF line ends; without the
        last line break when open_end."""
        cache = self._lines
        if len(cache) + len(lines) > self.LIMIT:
            cache.clear()
        last = lines.pop() if open_end else None
        out = []
        for line in lines:
            encoded = cache.get(line)
            if encoded is None:
                encoded = cache[line] = b2a_qp(line + b"\n", istext=True).replace(b"\n", b"\r\n")
            out.append(encoded)
        if last is not None:
            # Not followed by a line break: b2a_qp escapes white space at the very end of the
            # data, and breaks the line for it, not as it does before a line break.
            out.append(b2a_qp(last, istext=True).replace(b"\n", b"\r\n"))
        return b"".join(out)


_QUOTED_PRINTABLE_LINES = _QuotedPrintableLines()
_SEVEN_BIT_OR_CR = _SEVEN_BIT_BYTES + b"\r"
_FROM_LINE = re.compile(rb"\nFrom ")  # a literal search, ~5x faster than `in` here


def payload(text: str, *, ends_message: bool) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, encoded body with CRLF line ends): mailer/message.py's
    body_transfer, as bytes (its docstring says what is chosen and why)."""
    encoded = text.encode("utf-8")
    has_cr = b"\r" in encoded
    open_end = bool(encoded) and not encoded.endswith((b"\n", b"\r"))
    if (
        not (open_end and ends_message)
        and text.isascii()
        and not encoded.translate(None, _SEVEN_BIT_OR_CR)  # a CR is a line break here
        and not encoded.startswith(b"From ")
        and not _FROM_LINE.search(encoded)
        and not (has_cr and b"\rFrom " in encoded)
        and _BOUNDARY_BYTES not in encoded
    ):
        if not has_cr:
            if _lines_fit(encoded):
                # Lines split at LF alone and joined again: the text itself.
                return "7bit", encoded.replace(b"\n", b"\r\n")
        else:
            lines = encoded.splitlines()  # at CR, LF and CRLF, as body_transfer
            if max(map(len, lines)) <= MAX_LINE:
                body = b"\r\n".join(lines)
                return "7bit", body + b"\r\n" if not open_end else body
    lines = encoded.splitlines()
    body = _QUOTED_PRINTABLE_LINES.encode(lines, open_end)
    if open_end and ends_message:
        body = (
            _soft_break_at_end(body.decode("ascii").replace("\r\n", "\n"))
            .replace("\n", "\r\n")
            .encode("ascii")
        )
    return "quoted-printable", body


def _lines_fit(encoded: bytes) -> bool:
    """Whether no line of encoded (LF line ends) is longer than MAX_LINE: found by jumping
    to the last line break within MAX_LINE + 1 bytes of each line start, a few dozen steps
    for a newsletter instead of a look at each of its hundreds of lines."""
    start, end = 0, len(encoded)
    while end - start > MAX_LINE:
        last_break = encoded.rfind(b"\n", start, start + MAX_LINE + 1)
        if last_break < 0:
            return False  # MAX_LINE + 1 bytes from a line start without a break
        start = last_break + 1
    return True


def _body(text: str, subtype: str, utf8: bool, *, ends_message: bool) -> bytes:
    """A text part: its Content-Type and Content-Transfer-Encoding, a blank line, the body."""
    encoding, body = payload(text, ends_message=ends_message)
    return b"".join((_TEXT_TYPES[subtype][utf8], _ENCODINGS[encoding][utf8], b"\r\n", body))


@dataclass(frozen=True, eq=False)
class OutgoingMessage:
    """One recipient's message: `data` is what goes after DATA, before dot-stuffing (and what
    DKIM signs): CRLF line ends, headers folded, bodies encoded.

    A sender reads `message["From"]` and `message["Message-ID"]` as from an EmailMessage;
    whatever else an EmailMessage offers (get_body, walk, as_string: previews) comes from
    .email, the same message built by the email package.
    """

    data: bytes
    sender: Address
    message_id: str
    smtputf8: bool
    _fields: dict

    def __getitem__(self, name: str):
        key = name.lower()
        if key == "from":
            return _FROM_HEADERS.get(self.sender)
        if key == "message-id":
            return self.message_id
        return self.email[name]

    @cached_property
    def email(self) -> EmailMessage:
        """This message as an EmailMessage (built by the email package, with the same Date and
        Message-ID): the same bytes."""
        return build_message(**self._fields)

    def __getattr__(self, name: str):
        if name in _EMAIL_READERS:
            return getattr(self.email, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


# What callers that read a composed message use of EmailMessage (previews, the console).
_EMAIL_READERS = frozenset(
    {"get_body", "walk", "iter_parts", "get_content_type", "get_all", "items", "keys",
     "as_string", "as_bytes", "policy", "is_multipart"}
)  # fmt: skip


class _FromHeaders:
    """The parsed From header (with .addresses) of each sender: a campaign has one."""

    def __init__(self):
        self._headers: dict[tuple[str, str], object] = {}

    def get(self, sender: Address):
        key = (sender.display_name, sender.addr_spec)
        header = self._headers.get(key)
        if header is None:
            if len(self._headers) >= _FoldedLines.LIMIT:
                self._headers.clear()
            header = self._headers[key] = POLICY.header_factory("From", sender)
        return header


_FROM_HEADERS = _FromHeaders()


def build_outgoing(
    *,
    sender: Address,
    to_email: str,
    to_name: str,
    subject: str,
    text: str,
    html: str | None,
    domain: str,
    unsubscribe_url: str | None,
    message_id: str | None = None,
    date: int | None = None,
) -> OutgoingMessage:
    """build_message's message (same arguments), as bytes: see the module's docstring.

    message_id and date (a Unix second) are made here unless given (tests give them).
    """
    to_name = one_line(to_name)
    subject = one_line(subject)
    message_id = message_id or make_msgid(domain=domain)
    date = int(time.time()) if date is None else date
    utf8 = needs_smtputf8(to_email)
    lines = [
        _FOLDED.line("From", sender, utf8, key=(sender.display_name, sender.addr_spec)),
        to_line(to_email, to_name, utf8),
        subject_line(subject, utf8),
        date_line(date, utf8),
        message_id_line(message_id, utf8),
    ]
    if unsubscribe_url is not None:
        lines += (list_unsubscribe_line(unsubscribe_url, utf8), _CONSTANT["one-click"][utf8])
    lines.append(_CONSTANT["mime"][utf8])
    if html is None:
        lines.append(_body(text, "plain", utf8, ends_message=True))
    else:
        lines += (
            _CONSTANT["alternative"][utf8],
            b"\r\n",
            _BOUNDARY_LINE,
            _body(text, "plain", utf8, ends_message=False),
            _NEXT_PART,
            _body(html, "html", utf8, ends_message=False),
            _LAST_BOUNDARY,
        )
    fields = {
        "sender": sender,
        "to_email": to_email,
        "to_name": to_name,
        "subject": subject,
        "text": text,
        "html": html,
        "domain": domain,
        "unsubscribe_url": unsubscribe_url,
        "message_id": message_id,
        "date": date,
    }
    return OutgoingMessage(b"".join(lines), sender, message_id, utf8, fields)
