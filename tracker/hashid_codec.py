"""The hashids format, with the alphabet shuffles remembered: the same strings, much cheaper.

hashids reshuffles its alphabet (a Python loop over ~50 characters) for every number
of every token it encodes or decodes, and decoding encodes again to check the
result: that was a quarter of the click path's CPU and most of the mailer's token
cost. Each shuffle depends only on the alphabet before it and the token's first
character (its "lottery"), so the few dozen alphabets in use are computed once and
kept. Everything else — the strings produced and accepted — is hashids' own, using
the library's functions; tests/test_hashid_codec.py checks it against `Hashids` itself.
"""

from __future__ import annotations

import re

import hashids
from hashids import Hashids

# Alphabets remembered per lottery character: tokens carry one to two numbers. Longer
# strings (invented ones) are left to the library, so none can grow the memory.
MAX_CACHED_NUMBERS = 8


class HashidCodec:
    def __init__(self, salt: str, min_length: int):
        reference = self._reference = Hashids(salt=salt, min_length=min_length)
        self._salt = reference._salt
        self._min_length = reference._min_length
        self._alphabet = reference._alphabet
        self._separators = reference._separators
        self._guards = reference._guards
        self._guard_split = re.compile(f"[{re.escape(self._guards)}]").split
        self._separator_split = re.compile(f"[{re.escape(self._separators)}]").split
        # lottery character → the alphabets of a token's 1st, 2nd … number.
        self._chains: dict[str, list[str]] = {}

    def _alphabets(self, lottery: str, count: int) -> list[str]:
        chain = self._chains.setdefault(lottery, [])
        while len(chain) < count:
            before = chain[-1] if chain else self._alphabet
            salt = (lottery + self._salt + before)[: len(before)]
            chain.append(hashids._reorder(before, salt))
        return chain

    def encode(self, *values: int) -> str:
        """As Hashids.encode: '' unless every value is a non-negative int."""
        if not values:
            return ""
        if len(values) > MAX_CACHED_NUMBERS:
            return self._reference.encode(*values)
        values_hash = 0
        for i, value in enumerate(values):
            if not isinstance(value, int) or value < 0:
                return ""
            values_hash += value % (i + 100)
        size = len(self._alphabet)
        separators = self._separators
        lottery = self._alphabet[values_hash % size]
        chain = self._alphabets(lottery, len(values))
        encoded = lottery
        for i, value in enumerate(values):
            alphabet = chain[i]
            number, digit = divmod(value, size)
            last = alphabet[digit]
            while number:
                number, digit = divmod(number, size)
                last = alphabet[digit] + last
            encoded += last + separators[(value % (ord(last[0]) + i)) % len(separators)]
        encoded = encoded[:-1]  # without the last separator
        if len(encoded) >= self._min_length:
            return encoded
        return hashids._ensure_length(
            encoded, self._min_length, chain[len(values) - 1], self._guards, values_hash
        )

    def decode(self, hashid: str) -> tuple[int, ...]:
        """As Hashids.decode: the numbers, or () unless encoding them gives `hashid` back."""
        if not hashid or not isinstance(hashid, str):
            return ()
        parts = self._guard_split(hashid)
        core = parts[1] if 2 <= len(parts) <= 3 else parts[0]
        if not core:
            return ()
        pieces = self._separator_split(core[1:])
        if len(pieces) > MAX_CACHED_NUMBERS:
            return self._reference.decode(hashid)
        chain = self._alphabets(core[0], len(pieces))
        size = len(self._alphabet)
        numbers = []
        for alphabet, piece in zip(chain, pieces, strict=False):
            number = 0
            for character in piece:
                position = alphabet.find(character)
                if position < 0:
                    return ()
                number = number * size + position
            numbers.append(number)
        result = tuple(numbers)
        return result if self.encode(*result) == hashid else ()
