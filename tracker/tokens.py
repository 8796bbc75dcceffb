"""Signed, purpose-bound tokens: hashids for the ids, an HMAC tag so none can be forged.

A click token names (message id, link id); a preference token names a recipient; a
mailbox token (mailbox link id, recipient id) is the one-time link mailed for a download
or an erasure, one purpose per action. Each purpose has its own hashids salt and its own
HMAC prefix, so a token made for one purpose is worthless for the others.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from collections.abc import Sequence

from tracker.hashid_codec import HashidCodec

# The id that previews put in their tokens (mailer/preview.py): no message, link or recipient
# has it, so whatever such a token reaches must answer as for no message at all.
PLACEHOLDER_ID = 0
# What a mailed one-time link can do (tracker/mailbox_links.py); each has its own codec.
MAILBOX_ACTIONS = ("download", "erase")
TAG_BYTES = 12  # 96 bits; a multiple of 3, so its base64 needs no "=" padding
_SEPARATOR = "."
_URLSAFE = bytes.maketrans(b"+/", b"-_")
# RFC 2104's inner and outer pads, applied to the key by translate.
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class _KeyedSha256:
    """HMAC-SHA256 (RFC 2104) of one key and message prefix, its two hash states made once.

    hmac.HMAC.copy() builds a Python object per token; copying the two hashlib states is
    the same computation with a third of the overhead (tested equal to hmac.new).
    """

    def __init__(self, key: bytes, prefix: bytes):
        if len(key) > hashlib.sha256().block_size:
            key = hashlib.sha256(key).digest()
        key = key.ljust(hashlib.sha256().block_size, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._inner.update(prefix)
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class TokenCodec:
    def __init__(self, purpose: str, secret_keys: Sequence[bytes], id_count: int):
        if not secret_keys:
            raise ValueError("at least one secret key is needed")
        prefix = purpose.encode() + b":"
        # HMAC keyed (and fed the purpose) once per key; each token copies that state.
        self._keyed = tuple(_KeyedSha256(key, prefix) for key in secret_keys)
        self._ids = HashidCodec(f"fairclick:{purpose}", min_length=6)
        self._id_count = id_count

    def _tag(self, keyed: _KeyedSha256, body: str) -> bytes:
        """The tag as it is written in the token (12 bytes → 16 base64 characters, no '=')."""
        mac = keyed.digest(body.encode())[:TAG_BYTES]
        return binascii.b2a_base64(mac, newline=False).translate(_URLSAFE)

    def encode(self, *ids: int) -> str:
        if len(ids) != self._id_count:
            raise ValueError(f"expected {self._id_count} ids, got {len(ids)}")
        body = self._ids.encode(*ids)
        return body + _SEPARATOR + self._tag(self._keyed[0], body).decode()

    def decode(self, token: str) -> tuple[int, ...] | None:
        """The ids in a genuine token, or None for anything altered, truncated or invented."""
        body, sep, tag = token.partition(_SEPARATOR)
        if not sep or not body or not tag:
            return None
        # Every key verifies, so a rotated-out key keeps old mail working. Compared as
        # bytes: compare_digest refuses non-ASCII str, and a URL may carry anything.
        given = tag.encode("utf-8", "surrogateescape")
        if not any(hmac.compare_digest(self._tag(k, body), given) for k in self._keyed):
            return None
        # decode re-encodes and returns () unless that gives back `body`
        # exactly, so an altered body never decodes to other ids.
        ids = self._ids.decode(body)
        if len(ids) != self._id_count:
            return None
        return ids


class Tokens:
    """The codecs of one deployment, built from its secret keys."""

    def __init__(self, secret_keys: Sequence[bytes]):
        self.click = TokenCodec("click", secret_keys, id_count=2)
        self.preferences = TokenCodec("preferences", secret_keys, id_count=1)
        self.opens = TokenCodec("open", secret_keys, id_count=1)
        # A download link never erases, nor an erase link downloads: a purpose each.
        self.mailbox = {
            action: TokenCodec(f"mailbox {action}", secret_keys, id_count=2)
            for action in MAILBOX_ACTIONS
        }


def key_fingerprint(key: bytes) -> str:
    """A short name for a key that reveals nothing about it: an HMAC under the key itself.

    Recorded in the database so processes can tell whether they share keys; knowing it
    helps nobody forge a token (it is the key's MAC of a constant, not of any token).
    """
    return hmac.new(key, b"fairclick key fingerprint", hashlib.sha256).hexdigest()[:16]
