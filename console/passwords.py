"""Admins' passwords: argon2id hashes (argon2-cffi), checked off the event loop.

A hash takes ~0.15 s of CPU and 64 MiB by design (argon2-cffi's defaults, RFC 9106's
second recommendation), so it runs in a thread: one login must not stall every request.
"""

from __future__ import annotations

import asyncio
import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from tracker.errors import FairclickError

MIN_LENGTH = 12
MAX_LENGTH = 1024  # longer is no safer, and only costs the server time

HASHER = PasswordHasher()  # argon2id, time cost 3, 64 MiB, parallelism 4
# At most this many hashes at once per process: a flood of login posts queues here instead
# of taking 64 MiB per thread of the default executor (up to 32 of them).
_HASHING = asyncio.Semaphore(4)


async def _in_thread(function, *args):
    async with _HASHING:
        return await asyncio.to_thread(function, *args)


def check_new_password(password: str) -> str:
    """The password if it is acceptable for an admin, else a one-line FairclickError."""
    if len(password) < MIN_LENGTH:
        raise FairclickError(
            f"the password is too short ({len(password)} characters): use at least {MIN_LENGTH}"
        )
    if len(password) > MAX_LENGTH:
        raise FairclickError(f"the password is too long: use at most {MAX_LENGTH} characters")
    return password


async def hash_password(password: str) -> str:
    return await _in_thread(HASHER.hash, password)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # Made once, with the same parameters: an unknown email costs what a wrong password costs.
    return HASHER.hash(secrets.token_urlsafe(16))


def _verify(stored: str | None, password: str) -> bool:
    # surrogatepass: a form's undecodable bytes still cost a verification (and never match).
    secret = password.encode("utf-8", "surrogatepass")
    try:
        return HASHER.verify(stored or _dummy_hash(), secret) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """Whether password matches the stored hash; None (no such admin) costs the same and fails."""
    if len(password) > MAX_LENGTH:  # never stored that long: fails, after the same work
        await _in_thread(_verify, None, password[:MAX_LENGTH])
        return False
    return await _in_thread(_verify, stored, password)


def needs_rehash(stored: str) -> bool:
    """Whether the hash was made with other parameters than today's (rehashed at login)."""
    return HASHER.check_needs_rehash(stored)
