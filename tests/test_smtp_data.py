"""send_data(client, smtp_data(message)) is client.data(message): the same bytes reach a real
server, and the same replies and failures come back the same way.

send_data is the one place that uses aiosmtplib below its documented API (SMTP.protocol);
these tests pin it against SMTP.data, so an aiosmtplib upgrade that changes either shows here.
"""

from __future__ import annotations

import asyncio
import random

import aiosmtplib
import dkim
import pytest
from aiosmtpd.controller import Controller
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from conftest import free_port
from helpers import dkim_key

from mailer.dkim import sign
from mailer.smtp_data import send_data, smtp_data
from tracker.settings import DkimSettings

MESSAGES = [
    b"Subject: dots\r\n\r\n.\r\n..\r\n.starts with a dot\r\nmiddle . dot\r\n. \r\n",
    b".first line starts with a dot\r\n\r\nbody\r\n",
    b"Subject: line ends\r\n\r\nlone\rCR, lone\nLF, CRLF\r\n\n\r.after a lone CR\n.",
    b"Subject: no line break at the end\r\n\r\nlast line",
    b"",
    b"Subject: x\r\n\r\n" + b"long line " * 90 + b"\r\n.\r\n",
]


def aiosmtplib_data(message: bytes) -> bytes:
    """What aiosmtplib's DATA command writes (aiosmtplib/protocol.py)."""
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"


def test_smtp_data_is_what_aiosmtplib_writes():
    for message in MESSAGES:
        assert smtp_data(message) == aiosmtplib_data(message), message
    chunks = [b"\r", b"\n", b"\r\n", b".", b"..", b"x", b" "]
    rng = random.Random(12)
    for _ in range(20_000):
        message = b"".join(rng.choices(chunks, k=rng.randrange(12)))
        assert smtp_data(message) == aiosmtplib_data(message), message


def test_crlf_leaves_line_ends_alone_and_still_stuffs_dots():
    message = b"Subject: x\r\n\r\n.a\r\n..b\r\nc\r\n"
    assert smtp_data(message, crlf=True) == aiosmtplib_data(message)
    assert smtp_data(b".a\r\n", crlf=True) == b"..a\r\n.\r\n"


class Server:
    """aiosmtpd, keeping what each DATA brought (as received, dots unstuffed), replying as told."""

    def __init__(self):
        self.received: list[bytes] = []
        self.reply = "250 OK"
        self.delay = 0.0
        self.drop = False

    async def handle_DATA(self, server, session, envelope):
        self.received.append(envelope.original_content)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.drop:
            server.transport.close()
        return self.reply


@pytest.fixture
def smtpd():
    handler = Server()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


async def transaction(port: int, message: bytes, *, ours: bool, timeout: float = 5):
    """MAIL, RCPT, then DATA through SMTP.data or send_data: (reply or error, still connected)."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=timeout)
    await client.connect()
    try:
        await client.mail("from@example.com")
        await client.rcpt("to@example.net")
        try:
            if ours:
                response = await send_data(client, smtp_data(message))
            else:
                response = await client.data(message)
            outcome = ("reply", response.code, response.message)
        except aiosmtplib.SMTPResponseException as exc:
            outcome = (type(exc).__name__, exc.code, exc.message)
        except aiosmtplib.SMTPException as exc:
            outcome = (type(exc).__name__, str(exc))
        return outcome, client.is_connected
    finally:
        client.close()


async def test_the_same_bytes_reach_the_server(smtpd):
    handler, port = smtpd
    for message in MESSAGES:
        for ours in (False, True):
            outcome, connected = await transaction(port, message, ours=ours)
            assert outcome == ("reply", 250, "OK") and connected
        theirs, mine = handler.received[-2:]
        assert mine == theirs, message
        # What arrives is the message with CRLF line ends: the server takes the dots out.
        assert mine == normalize_message_line_endings(message), message


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ({"reply": "554 5.6.0 Message refused"}, ("SMTPDataError", 554, "5.6.0 Message refused")),
        ({"reply": "451 4.3.0 Try later"}, ("SMTPDataError", 451, "4.3.0 Try later")),
        ({"drop": True}, ("SMTPServerDisconnected", "Unexpected EOF received")),
        ({"delay": 1.0}, ("SMTPReadTimeoutError", "Timed out waiting for server response")),
    ],
)
async def test_replies_and_failures_after_the_data_come_back_the_same(smtpd, setup, expected):
    handler, port = smtpd
    for name, value in setup.items():
        setattr(handler, name, value)
    results = [
        await transaction(port, MESSAGES[0], ours=ours, timeout=0.3 if "delay" in setup else 5)
        for ours in (False, True)
    ]
    assert results[0] == results[1]
    outcome, connected = results[1]
    assert outcome == expected
    # A refusal keeps the connection; a lost or timed-out one is closed (SMTP.data's rule).
    assert connected == ("reply" in setup)


class ScriptedServer:
    """A bare SMTP server on this test's event loop that answers DATA itself as it is told."""

    def __init__(self, data_reply: bytes):
        self.data_reply = data_reply
        self.writers: list[asyncio.StreamWriter] = []

    async def session(self, reader, writer):
        self.writers.append(writer)
        writer.write(b"220 scripted\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            writer.write(
                b"250 scripted\r\n" if verb == b"EHLO"
                else self.data_reply if verb == b"DATA"
                else b"250 OK\r\n"
            )  # fmt: skip
            await writer.drain()
            if verb == b"DATA" and self.data_reply.startswith(b"421"):
                break  # 421: the server closes the channel
        writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"554 5.5.1 No valid recipients\r\n", ("SMTPDataError", 554, "5.5.1 No valid recipients")),
        (b"421 4.3.2 Shutting down\r\n", ("SMTPDataError", 421, "4.3.2 Shutting down")),
    ],
)
async def test_a_refused_data_command_comes_back_the_same(reply, expected):
    async with ScriptedServer(reply) as server:
        results = [await transaction(server.port, b"x\r\n", ours=ours) for ours in (False, True)]
    assert [outcome for outcome, _ in results] == [expected, expected]
    assert results[0][1] == results[1][1]


async def test_a_dkim_signature_made_before_stuffing_verifies_at_the_server(smtpd, tmp_path):
    key, dns = dkim_key(tmp_path)
    settings = DkimSettings("example.com", "s1", key)
    message = (
        b"From: news@example.com\r\nTo: to@example.net\r\nSubject: dots\r\n\r\n"
        b".a line starting with a dot\r\n..and two\r\n.\r\nend\r\n"
    )
    signed = sign(message, settings)
    handler, port = smtpd
    outcome, _ = await transaction(port, signed, ours=True)
    assert outcome[0] == "reply"
    received = handler.received[-1]
    assert received == signed
    assert dkim.verify(received, dnsfunc=dns)
