"""Which secret keys the deployment's trackers verify, and which keys senders sign with.

Only fingerprints are kept (tracker.tokens.key_fingerprint), never keys. A tracker
records the keys it verifies when it starts; a command about to sign links checks
its signing key (the first of FAIRCLICK_SECRET_KEY) against the keys of the most
recently started tracker, so mail whose every link and unsubscribe URL would answer
404 is refused before anything is queued. Until a tracker has started there is
nothing to check against: the signing key is recorded, and the first tracker to start
warns about any it cannot verify.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg

from tracker.errors import ConfigError
from tracker.queries import SQL
from tracker.settings import SECRET_KEY_FILE, Settings
from tracker.tokens import key_fingerprint

log = logging.getLogger(__name__)

# A tracker warns about signing keys used this recently that it does not verify: mail
# that old is still read and clicked. Keys older than that count as retired.
WARN_ABOUT_SIGNING_KEYS_DAYS = 90


def key_source(settings: Settings) -> str:
    """Where settings' signing key comes from, for messages (before with_secret_keys)."""
    if settings.secret_keys:
        return "FAIRCLICK_SECRET_KEY"
    return f"the key in {settings.data_dir / SECRET_KEY_FILE} (FAIRCLICK_SECRET_KEY is not set)"


async def record_tracker_keys(conn: asyncpg.Connection, keys: Sequence[bytes]) -> list[str]:
    """Record the keys a starting tracker verifies; warn about recent signing keys it cannot."""
    mine = [key_fingerprint(key) for key in keys]
    async with conn.transaction():  # one transaction: one last_seen for the whole set
        for fingerprint in mine:
            await conn.execute(SQL.record_key_fingerprint, fingerprint, "verifies")
    warnings = [
        f"mail was signed with key {row['fingerprint']} (last on {row['last_seen']:%Y-%m-%d}) "
        "that this tracker does not verify: its links and unsubscribe URLs answer 404. "
        "Add that key to FAIRCLICK_SECRET_KEY after the current one (the first signs, all "
        "verify), or set the senders' FAIRCLICK_SECRET_KEY to this tracker's"
        for row in await conn.fetch(SQL.recent_signing_keys, WARN_ABOUT_SIGNING_KEYS_DAYS)
        if row["fingerprint"] not in mine
    ]
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


async def check_signing_key(
    conn: asyncpg.Connection, keys: Sequence[bytes], *, source: str, record: bool = True
) -> None:
    """Refuse (ConfigError) to sign with a key the deployment's tracker does not verify.

    source says where the key came from, for the message; record=False checks only
    (preview signs nothing that is sent).
    """
    signing = key_fingerprint(keys[0])
    verified = [row["fingerprint"] for row in await conn.fetch(SQL.keys_trackers_verify)]
    if verified and signing not in verified:
        raise ConfigError(
            f"{source} signs with key {signing}, but the tracker verifies only "
            f"{', '.join(verified)}: every link and unsubscribe URL in this mail would answer "
            "404, so nothing was queued. Set FAIRCLICK_SECRET_KEY to the tracker's key, or, to "
            "rotate keys, add this key to the tracker's FAIRCLICK_SECRET_KEY (after its current "
            "one) and restart it first"
        )
    if record:
        await conn.execute(SQL.record_key_fingerprint, signing, "signs")
