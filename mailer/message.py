"""MIME messages built with the email package's SMTP policy, so no value can inject a header."""

from __future__ import annotations

import binascii
import re
import secrets
import time
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, make_msgid
from io import BytesIO

from tracker.control_chars import first_control, one_line
from tracker.errors import FairclickError


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, each header class made once instead of once per header.

    HeaderRegistry builds a new class with type() for every header it is asked for; with
    a dozen headers per message that was a tenth of the MIME cost. Parsing, checking and
    folding are the registry's own, unchanged.
    """

    def __init__(self):
        super().__init__()
        self._made: dict[str, type] = {}

    def __getitem__(self, name):
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made


# The SMTP policy (CRLF, 78-column folding, header checks), with the registry above.
POLICY = SMTP.clone(header_factory=_HeaderClasses())
# RFC 6532, for a recipient whose address has a non-ASCII local part: their To header is
# written in UTF-8, and the message goes only to servers offering SMTPUTF8 (RFC 6531).
POLICY_UTF8 = POLICY.clone(utf8=True)


def needs_smtputf8(address: str) -> bool:
    """Whether mail to this address needs SMTPUTF8: a non-ASCII local part (an IDN
    domain alone can go as punycode, and the import takes ASCII domains only)."""
    return not address.isascii()


# "=_" never occurs in quoted-printable text (an "=" there is followed by a hex digit or a
# line break), and a 7bit body holding it goes quoted-printable (body_transfer), so no body
# line can be taken for the boundary, and one per process will do: the generator need not
# search both bodies for a collision, as it does for a boundary it makes up itself.
_BOUNDARY = f"=_fairclick_{secrets.token_hex(12)}"
_BOUNDARY_BYTES = _BOUNDARY.encode()


class _PreparedHeaders:
    """Headers parsed by the policy and folded once, then set on many messages.

    Constant ones (MIME-Version, Content-Type …) are kept for good; recurring ones (a
    campaign's From and Subject, the Date of the current second) are kept until
    RECURRING_LIMIT distinct ones have been seen, then forgotten together, so a subject
    made per recipient costs what it did and memory stays bounded.
    """

    RECURRING_LIMIT = 1000

    def __init__(self):
        self._folded: dict[int, tuple[object, bytes]] = {}
        self._recurring: dict[tuple[str, object], tuple[str, object]] = {}

    def make(self, name: str, value) -> tuple[str, object]:
        name, header = POLICY.header_store_parse(name, value)
        # The header object is kept in the entry, so its id is not reused while it is here.
        self._folded[id(header)] = (header, POLICY.fold_binary(name, header))
        return name, header

    def recurring(self, name: str, value, key=None) -> tuple[str, object]:
        """(name, header) for value, prepared once while it keeps coming back; key stands
        for value where value cannot be a dictionary key (an Address)."""
        key = (name, value if key is None else key)
        prepared = self._recurring.get(key)
        if prepared is None:
            if len(self._recurring) >= self.RECURRING_LIMIT:
                for _, header in self._recurring.values():
                    self._folded.pop(id(header), None)
                self._recurring.clear()
            prepared = self._recurring[key] = self.make(name, value)
        return prepared

    def folded(self, header) -> bytes | None:
        entry = self._folded.get(id(header))
        return entry[1] if entry is not None and entry[0] is header else None


_PREPARED = _PreparedHeaders()
_MIME_VERSION = _PREPARED.make("MIME-Version", "1.0")
_ONE_CLICK = _PREPARED.make("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
_ALTERNATIVE = _PREPARED.make("Content-Type", f'multipart/alternative; boundary="{_BOUNDARY}"')
_QUOTED_PRINTABLE = _PREPARED.make("Content-Transfer-Encoding", "quoted-printable")
_SEVEN_BIT = _PREPARED.make("Content-Transfer-Encoding", "7bit")
# RFC 5322 2.1.1: at most 998 characters on a line. Plain ASCII text within it travels
# as it is (7bit). "From " at a line start is left to quoted-printable too, as some
# mailbox software would otherwise turn it into ">From ".
MAX_LINE = 998
_SEVEN_BIT_BYTES = b"\t\n" + bytes(range(0x20, 0x7F))
_TEXT_TYPES = {
    subtype: _PREPARED.make("Content-Type", f'text/{subtype}; charset="utf-8"')
    for subtype in ("plain", "html")
}


# A URL that can stand between RFC 2369's angle brackets as it is: printable ASCII but
# space, '<' and '>'.
PLAIN_URL = re.compile(r"[!-;=?-~]+")
MAX_WIRE_LINE = 998  # RFC 5322 2.1.1's MUST, without the CRLF


class UnsubscribeHeader(str):
    """List-Unsubscribe's `<url>`, on the line after the name when it does not fit on the first.

    The email package folds it so while the URL fits on a line of its own, but writes a
    longer one as RFC 2047 encoded words (=?utf-8?q?=3Chttps=3A//…?=), which no mail client
    reads as a URL in this structured field (RFC 2047 5), so one-click unsubscribe (RFC
    8058) would be lost for a long base URL. Set on an EmailMessage, the policy uses this
    fold instead of its own.
    """

    name = "List-Unsubscribe"
    defects = ()

    def fold(self, *, policy) -> str:
        line = f"{self.name}: {self}"
        if len(line) <= policy.max_line_length:
            return line + policy.linesep
        return f"{self.name}:{policy.linesep} {self}{policy.linesep}"


def list_unsubscribe(url: str) -> str:
    """The List-Unsubscribe value for url (an UnsubscribeHeader where it is a plain URL)."""
    value = f"<{url}>"
    if PLAIN_URL.fullmatch(url) and len(value) < MAX_WIRE_LINE:
        return UnsubscribeHeader(value)
    return value  # refused by the settings' check of the base URL; the package's fold


def _from_header(sender: Address) -> tuple[str, object]:
    """The From header of a campaign's sender (a campaign has one)."""
    return _PREPARED.recurring("From", sender, key=(sender.display_name, sender.addr_spec))


_last_date: list = [None, None]  # [second, (name, header)]


def _date_header(second: int | None = None) -> tuple[str, object]:
    """Date (RFC 5322 writes it to the second): made once for all messages of a second."""
    second = int(time.time()) if second is None else second
    if _last_date[0] != second:
        when = format_datetime(datetime.fromtimestamp(second, UTC))
        _last_date[:] = [second, _PREPARED.recurring("Date", when)]
    return _last_date[1]


def parse_from_address(value: str) -> Address:
    """One address, with optional display name, e.g. 'News <news@example.com>'."""
    try:
        header = POLICY.header_factory("From", value)
        addresses = getattr(header, "addresses", ())
        defects = header.defects
    except ValueError:  # an RFC 2047 encoded-word that decodes to CR or LF, for one
        addresses, defects = (), True
    # A control character that survived parsing (an encoded \x01, say) would reach every
    # recipient's From line and the operator's terminal.
    if (
        len(addresses) != 1
        or defects
        or not addresses[0].domain
        or first_control(addresses[0].display_name + addresses[0].addr_spec) is not None
    ):
        raise FairclickError(
            f"--from {value!r} is not one email address: use e.g. --from 'News <news@example.com>'"
        )
    return addresses[0]


def body_transfer(text: str, *, ends_message: bool = False) -> tuple[tuple[str, object], str]:
    """(Content-Transfer-Encoding header, payload) of a UTF-8 text body.

    The decoded body is the text, line breaks read as CRLF (the canonical form of text):
    lines are split at CR and LF as EmailMessage.set_content does, and no line break is
    added. One before a boundary belongs to the boundary (RFC 2046 5.1.1); a body that
    ends the message (ends_message) and has no final line break ends in a quoted-printable
    soft break instead, since SMTP ends the data with one.

    Plain ASCII in lines of at most MAX_LINE characters travels as it is (7bit): an email
    builder's HTML mostly is, and then needs no encoding (b2a_qp runs at ~80 MB/s: ~0.4 ms
    per 30 KB). Anything else is quoted-printable by binascii's C encoder, ~4x faster than
    the email package's own: it escapes '=', non-ASCII bytes, trailing spaces and tabs,
    and a line that is a lone '.', and breaks lines over 76 characters.
    """
    encoded = text.encode("utf-8")
    lines = encoded.splitlines()
    body = b"\n".join(lines)
    open_end = bool(body) and not encoded.endswith((b"\n", b"\r"))
    if not open_end:
        body += b"\n" if lines else b""
    if (
        not (open_end and ends_message)
        and max(map(len, lines), default=0) <= MAX_LINE
        and not body.translate(None, _SEVEN_BIT_BYTES)  # C speed: a regex took 0.4 ms
        and not body.startswith(b"From ")
        and b"\nFrom " not in body
        and _BOUNDARY_BYTES not in body
    ):
        return _SEVEN_BIT, body.decode("ascii")
    payload = binascii.b2a_qp(body, istext=True).decode("ascii")
    if open_end and ends_message:
        payload = _soft_break_at_end(payload)
    return _QUOTED_PRINTABLE, payload


def _soft_break_at_end(payload: str) -> str:
    """Quoted-printable text ending in a soft line break ('=' and a line break: nothing)."""
    head, _, last = payload.rpartition("\n")
    if len(last) >= 76:  # room for the '=' (b2a_qp writes at most 76 per line)
        # Its last character, or escape, goes on a line of its own ('=' starts an escape:
        # a literal one is written '=3D').
        cut = len(last) - 3 if last[-3] == "=" else len(last) - 1
        last = last[:cut] + "=\n" + last[cut:]
    return (head + "\n" if head else "") + last + "=\n"


def _text_part(message: MIMEPart, text: str, subtype: str, *, ends_message: bool) -> None:
    message.set_raw(*_TEXT_TYPES[subtype])
    encoding, payload = body_transfer(text, ends_message=ends_message)
    message.set_raw(*encoding)
    message.set_payload(payload)


def build_message(
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
) -> EmailMessage:
    """text/plain alone when html is None, else multipart/alternative (text, then HTML).

    message_id and date (a Unix second) are made here unless given.

    unsubscribe_url None: a message the person asked for (a mailbox link), not a list's,
    so without List-Unsubscribe.

    A name or subject holding control characters (the importer refuses them, but a row
    written to the database another way may hold CR/LF) goes on one line, each run of them
    a space; an address that cannot be written is a FairclickError for this message.
    """
    to_name = one_line(to_name)
    subject = one_line(subject)
    try:
        if needs_smtputf8(to_email):
            msg = EmailMessage(policy=POLICY_UTF8)
            # Address refuses to parse a non-ASCII local part whatever the policy; given as
            # parts it is quoted where needed, and CR/LF are still refused.
            local, _, to_domain = to_email.rpartition("@")
            to = Address(display_name=to_name, username=local, domain=to_domain)
        else:
            msg = EmailMessage(policy=POLICY)
            to = Address(display_name=to_name, addr_spec=to_email)
    except ValueError as exc:  # header defects are ValueErrors too
        raise FairclickError(f"cannot address a message to {to_email!r}: {exc}") from None
    # Headers the same in many messages are set as parsed and folded once (set_raw: they
    # were made by the policy's header_store_parse); the others are parsed here.
    msg.set_raw(*_from_header(sender))
    msg["To"] = to
    msg.set_raw(*_PREPARED.recurring("Subject", subject))
    msg.set_raw(*_date_header(date))
    msg["Message-ID"] = message_id or make_msgid(domain=domain)
    if unsubscribe_url is not None:
        msg["List-Unsubscribe"] = list_unsubscribe(unsubscribe_url)
        msg.set_raw(*_ONE_CLICK)
    msg.set_raw(*_MIME_VERSION)
    if html is None:
        _text_part(msg, text, "plain", ends_message=True)
        return msg
    msg.set_raw(*_ALTERNATIVE)
    for body, subtype in ((text, "plain"), (html, "html")):
        part = MIMEPart(policy=POLICY)
        _text_part(part, body, subtype, ends_message=False)
        msg.attach(part)
    return msg


class _WireGenerator(BytesGenerator):
    """BytesGenerator that writes an ASCII body with bare LF lines in one piece, and the
    constant headers as folded once.

    The stock generator writes a body line by line (three calls per line, ~1,300 per
    message) and folds every header every time; the bytes are the same.
    """

    def _write_headers(self, msg):
        for name, value in msg.raw_items():
            folded = None if self.policy.utf8 else _PREPARED.folded(value)
            self._fp.write(folded if folded is not None else self.policy.fold_binary(name, value))
        self.write(self._NL)

    def _handle_text(self, msg):
        payload = msg._payload
        if (
            isinstance(payload, str)
            and not self._mangle_from_
            and payload.isascii()
            and "\r" not in payload
        ):
            self._fp.write(payload.replace("\n", self._NL).encode("ascii"))
        else:
            super()._handle_text(msg)


def wire_bytes(message) -> bytes:
    """The message as sent: the same bytes as message.as_bytes(policy=SMTP), made faster
    (SMTPUTF8 for a message built for a non-ASCII address). Every line ends in CRLF.

    An OutgoingMessage (mailer/outgoing.py) is built as these bytes: its data."""
    if not isinstance(message, EmailMessage):
        return message.data
    out = BytesIO()
    policy = SMTPUTF8 if message.policy.utf8 else SMTP
    _WireGenerator(out, mangle_from_=False, policy=policy).flatten(message)
    return out.getvalue()
