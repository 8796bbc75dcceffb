"""A local SMTP server that saves every message it receives as an .eml file (quickstart, tests)."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope


class SaveToFolder:
    """aiosmtpd handler: one .eml file per recipient of each message."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._numbers = itertools.count(len(list(folder.glob("*.eml"))) + 1)
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope: Envelope) -> str:
        for address in envelope.rcpt_tos:
            with self._lock:
                number = next(self._numbers)
            safe = "".join(c if c.isalnum() or c in "@.-_" else "_" for c in address)
            path = self.folder / f"{number:06d}-{safe}.eml"
            path.write_bytes(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


def start_capture_server(
    folder: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    handler: type = SaveToFolder,
    *,
    smtputf8: bool = True,
) -> Controller:
    """Start the server in its own thread; .port tells where it listens. Call .stop() to end.

    smtputf8: offer SMTPUTF8 (RFC 6531), so addresses like zoë@example.com are accepted.
    """
    controller = Controller(
        handler(folder), hostname=host, port=port or _free_port(host), enable_SMTPUTF8=smtputf8
    )
    controller.start()
    return controller


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
