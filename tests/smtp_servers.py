"""Real SMTP servers (aiosmtpd) that behave the way real receivers sometimes do."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from mailer.capture import SaveToFolder


class RecordingServer(SaveToFolder):
    """Saves messages like the capture server and also counts connections and arrival times."""

    def __init__(self, folder: Path):
        super().__init__(folder)
        self.connections = 0
        self.arrivals: list[float] = []
        self.rcpt_attempts: list[str] = []
        self.mail_options: dict[str, list[str]] = {}  # recipient → MAIL FROM parameters
        self._count_lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self._count_lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpt_attempts.append(address)
        refusal = self.refuse(address)
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def refuse(self, address: str) -> str | None:
        return None

    async def handle_DATA(self, server, session, envelope):
        self.arrivals.append(time.monotonic())
        for address in envelope.rcpt_tos:
            self.mail_options[address] = list(envelope.mail_options)
        return await super().handle_DATA(server, session, envelope)


class RefusingServer(RecordingServer):
    """nobody@ does not exist; busy.example asks senders to slow down; later@ is greylisted."""

    def refuse(self, address: str) -> str | None:
        if address.startswith("nobody@"):
            return "550 5.1.1 <nobody@example.com>: Recipient address rejected: no such user"
        if address.endswith("@busy.example"):
            return "421 4.7.0 Too many messages from you, slow down"
        if address.startswith("later@"):
            return "450 4.2.0 Greylisted, try again later"
        return None


class DropsAfterData(RecordingServer):
    """Takes the message, then loses the connection before answering (RFC 1047's case)."""

    async def handle_DATA(self, server, session, envelope):
        await super().handle_DATA(server, session, envelope)
        server.transport.close()
        return "250 OK (never seen by the client)"


class SlowServer(RecordingServer):
    """Takes 20 ms per message, like a real relay, so a run can be interrupted halfway."""

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.02)
        return await super().handle_DATA(server, session, envelope)
