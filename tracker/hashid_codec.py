"""The hashids format, with the alphabet shuffles remembered: the same strings, much cheaper.

hashids reshuffles its alphabet (a Python loop over ~50 characters) for every number
of every token it encodes or decodes, and decoding encodes again to check the
result: that was a quarter of the click path's CPU and most of the mailer's token
cost. Each shuffle depends only on the alphabet before it and the token's first
character (its "lottery"), so the few dozen alphabets in use are computed once and
kept. Everything else — the strings produced and accepted — is hashids' own, using
the library's functions; tests/test_tokens.py checks it against `Hashids` itself.
"""

from __future__ import annotations

from functools import lru_cache

import hashids
from hashids import Hashids

# Keys are (alphabet, salt) pairs: one per lottery character and position in a token,
# plus the few of min_length padding. A few hundred strings of ~50 characters.
_reorder = lru_cache(maxsize=4096)(hashids._reorder)


class HashidCodec:
    def __init__(self, salt: str, min_length: int):
        reference = Hashids(salt=salt, min_length=min_length)
        self._salt = reference._salt
        self._min_length = reference._min_length
        self._alphabet = reference._alphabet
        self._separators = reference._separators
        self._guards = reference._guards
        self._separator_set = frozenset(self._separators)
        self._guard_set = frozenset(self._guards)

    def _alphabet_for(self, lottery: str, alphabet: str) -> str:
        return _reorder(alphabet, (lottery + self._salt + alphabet)[: len(alphabet)])

    def encode(self, *values: int) -> str:
        """As Hashids.encode: '' unless every value is a non-negative int."""
        if not values or not all(isinstance(v, int) and v >= 0 for v in values):
            return ""
        alphabet = self._alphabet
        size = len(alphabet)
        separators = self._separators
        values_hash = sum(v % (i + 100) for i, v in enumerate(values))
        lottery = alphabet[values_hash % size]
        parts = [lottery]
        for i, value in enumerate(values):
            alphabet = self._alphabet_for(lottery, alphabet)
            digits = []
            number = value
            while True:
                digits.append(alphabet[number % size])
                number //= size
                if not number:
                    break
            last = "".join(reversed(digits))
            parts.append(last)
            parts.append(separators[(value % (ord(last[0]) + i)) % len(separators)])
        encoded = "".join(parts[:-1])  # without the last separator
        if len(encoded) >= self._min_length:
            return encoded
        return hashids._ensure_length(
            encoded, self._min_length, alphabet, self._guards, values_hash
        )

    def decode(self, hashid: str) -> tuple[int, ...]:
        """As Hashids.decode: the numbers, or () unless encoding them gives `hashid` back."""
        if not hashid or not isinstance(hashid, str):
            return ()
        parts = _split(hashid, self._guard_set)
        core = parts[1] if 2 <= len(parts) <= 3 else parts[0]
        if not core:
            return ()
        lottery, core = core[0], core[1:]
        alphabet = self._alphabet
        size = len(alphabet)
        numbers = []
        for part in _split(core, self._separator_set):
            alphabet = self._alphabet_for(lottery, alphabet)
            number = 0
            for character in part:
                position = alphabet.find(character)
                if position < 0:
                    return ()
                number = number * size + position
            numbers.append(number)
        result = tuple(numbers)
        return result if self.encode(*result) == hashid else ()


def _split(text: str, splitters: frozenset[str]) -> list[str]:
    """hashids' split: the pieces between any of `splitters` (empty ones included)."""
    pieces = []
    start = 0
    for index, character in enumerate(text):
        if character in splitters:
            pieces.append(text[start:index])
            start = index + 1
    pieces.append(text[start:])
    return pieces
