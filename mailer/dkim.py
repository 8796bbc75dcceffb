"""Optional DKIM signing (dkimpy) of the headers a receiver and a one-click unsubscribe rely on."""

from __future__ import annotations

import dkim

from tracker.settings import DkimSettings

SIGNED_HEADERS = (
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
    b"MIME-Version",
    b"Content-Type",
)


def sign(message: bytes, settings: DkimSettings) -> bytes:
    """The message with a DKIM-Signature header in front."""
    header = dkim.sign(
        message,
        settings.selector.encode(),
        settings.domain.encode(),
        settings.private_key,
        include_headers=list(SIGNED_HEADERS),
    )
    return header + message
