"""Telling scanners and prefetchers from people, for clicks and opens.

Signals, cheapest first: a HEAD request; a user agent on the maintained crawler
list of the crawler-user-agents package; a hit on the hidden honeypot link of a
message (people cannot see it, scanners follow every href); and timing — many
different links of one message within a moment, or clicks within seconds of
delivery. The request's own signals are read here; the others are judged where a
batch of clicks is written (tracker/queries.sql record_clicks), against the recent
clicks of every tracker process and host sharing the database (the table
scan_window, tracker/migrations/0011_scan_window.sql), since a scanner's requests
may reach different processes, and only the database knows when the message went out.
"""

from __future__ import annotations

import time
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
# Clicks this close to a honeypot hit, before or after it, are the same scanner's. Also how
# long the shared window keeps a click (scan_window: and 5 s more until a sweep).
HONEYPOT_SECONDS = 60.0
# Clicks remembered per message: plenty for any burst or honeypot neighbourhood, and
# one token requested over and over (a retrying client, a flood) costs the same per
# click as any other instead of judging a minute of history each time.
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


class ScanDetector:
    """The clock the scan judgement times clicks by, and the judgement's limits.

    The clock is the wall clock (time.time), so that processes and hosts compare their
    clicks (keep hosts in NTP sync: a clock off by d seconds widens or narrows their
    shared windows by d); tests give their own. What the judgement remembers lives in the
    database for about a minute (scan_window: 65 s at most), never in one process's memory.
    """

    def __init__(self, *, clock=time.time):
        self.clock = clock

    def seen(self) -> float:
        """When a click is seen, in seconds on this detector's clock."""
        return self.clock()


# The scan judgement's parameters as the recording statement takes them ($12 to $18).
SCAN_PARAMETERS = (
    BURST_SECONDS,
    BURST_LINKS,
    HONEYPOT_SECONDS,
    REMEMBERED_CLICKS,
    HONEYPOT,
    AFTER_HONEYPOT,
    BURST,
)
