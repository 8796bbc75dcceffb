"""Prometheus metrics of the tracker (one set per process; merged across --workers)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CLICKS = Counter("fairclick_clicks", "Clicks on tracked links", ["kind", "outcome"])
OPENS = Counter("fairclick_opens", "Open-pixel fetches", ["kind"])
REDIRECT_SECONDS = Histogram(
    "fairclick_redirect_seconds",
    "Time from request to 302, including the group commit",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_SIZE = Histogram(
    "fairclick_batch_size",
    "Events written per group commit",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
SPOOL_FILES = Gauge(
    "fairclick_spool_files",
    "Spool files waiting to be replayed into the database",
    multiprocess_mode="max",
)
LINK_CACHE = Counter("fairclick_link_cache", "Link target lookups", ["result"])
LINK_CACHE_HIT = LINK_CACHE.labels("hit")
LINK_CACHE_MISS = LINK_CACHE.labels("miss")
# labels() costs a lock and a dict lookup; every click needs one of these few children.
_CLICK_COUNTERS = {
    (kind, outcome): CLICKS.labels(kind, outcome)
    for kind in ("human", "bot")
    # invalid: a token that does not verify or names no such link (a 404); unavailable:
    # the link could not be looked up (a 503); refused: a click that could not be stored.
    for outcome in ("stored", "spooled", "invalid", "unavailable", "refused")
}


def click_counter(kind: str, outcome: str):
    return _CLICK_COUNTERS[(kind, outcome)]


def render() -> tuple[bytes, str]:
    """The exposition text: this process's metrics, or all workers' when they share a dir."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
