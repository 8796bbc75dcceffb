"""Telling scanners and prefetchers from people, for clicks and opens.

Signals, cheapest first: a HEAD request; a user agent on the maintained crawler
list of the crawler-user-agents package; a hit on the hidden honeypot link of a
message (people cannot see it, scanners follow every href); and timing — many
different links of one message within a moment. Clicks within seconds of delivery
are flagged where the click is written (tracker/queries.sql), since only the
database knows when the message went out.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache

import crawleruseragents

HONEYPOT = "honeypot link"
BURST = "many links at once"
AFTER_HONEYPOT = "same message as a honeypot hit"
HEAD = "HEAD request"
KNOWN_AGENT = "known scanner or crawler agent"
NO_AGENT = "no user agent"

# A person reads before clicking again; a scanner fetches every link in a moment.
BURST_LINKS = 3
BURST_SECONDS = 2.0
# How long a message stays suspect around a honeypot hit.
HONEYPOT_SECONDS = 60.0
# Clicks remembered per message: plenty for any burst or honeypot neighbourhood, and
# one token requested over and over (a retrying client, a flood) costs the same per
# click as any other instead of copying a minute of history each time.
REMEMBERED_CLICKS = 64


@lru_cache(maxsize=4096)
def agent_is_known_bot(user_agent: str) -> bool:
    """The crawler list is ~1,500 patterns (hundreds of µs a check); agents repeat a lot."""
    return crawleruseragents.is_crawler(user_agent)


def classify_request(method: str, user_agent: str | None) -> str | None:
    """The reason a request is a machine's, from the request alone; None if it looks human."""
    if method == "HEAD":
        return HEAD
    if not user_agent:
        return NO_AGENT
    if agent_is_known_bot(user_agent):
        return KNOWN_AGENT
    return None


@dataclass(slots=True)
class Seen:
    """One click as the detector saw it; key is its stored (id, clicked_at) once written."""

    at: float
    link_id: int
    key: tuple | None = None


@dataclass
class _Recent:
    clicks: deque[Seen] = field(default_factory=lambda: deque(maxlen=REMEMBERED_CLICKS))
    suspect_until: float = 0.0


@dataclass
class Verdict:
    seen: Seen  # this click; set seen.key after storing it
    reason: str | None  # why this click is a bot's, or None
    earlier: list[Seen] = field(default_factory=list)  # earlier clicks to mark as bot
    earlier_reason: str | None = None


class ScanDetector:
    """Per-message click timing, kept in memory for a minute at most and never stored.

    It sees the message id of anonymous clicks too: that is how an anonymous
    scanner burst is recognised without writing anything that links the clicks.
    """

    def __init__(self, *, clock=time.monotonic):
        self._clock = clock
        self._recent: dict[int, _Recent] = {}
        self._last_sweep = clock()

    def _sweep(self, now: float) -> None:
        """Forget messages with nothing recent, so memory follows the last minute's traffic."""
        if now - self._last_sweep < HONEYPOT_SECONDS:
            return
        self._last_sweep = now
        horizon = now - HONEYPOT_SECONDS
        stale = [
            message_id
            for message_id, r in self._recent.items()
            if r.suspect_until < now and (not r.clicks or r.clicks[-1].at < horizon)
        ]
        for message_id in stale:
            del self._recent[message_id]

    def judge(self, message_id: int, link_id: int, *, honeypot: bool) -> Verdict:
        now = self._clock()
        self._sweep(now)
        recent = self._recent.setdefault(message_id, _Recent())
        while recent.clicks and recent.clicks[0].at < now - HONEYPOT_SECONDS:
            recent.clicks.popleft()
        seen = Seen(now, link_id)
        earlier = list(recent.clicks)
        recent.clicks.append(seen)
        if honeypot:
            recent.suspect_until = now + HONEYPOT_SECONDS
            return Verdict(seen, HONEYPOT, earlier, AFTER_HONEYPOT)
        if recent.suspect_until > now:
            return Verdict(seen, AFTER_HONEYPOT)
        burst = [c for c in earlier if c.at >= now - BURST_SECONDS]
        if len({c.link_id for c in burst} | {link_id}) >= BURST_LINKS:
            return Verdict(seen, BURST, burst, BURST)
        return Verdict(seen, None)
