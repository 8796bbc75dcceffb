"""A one-line progress bar for `fairclick send`, written to stderr."""

from __future__ import annotations

import sys
import time

from mailer.delivery import SendProgress

WIDTH = 30


class ProgressBar:
    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.interactive = self.stream.isatty()
        self._last_drawn = 0.0

    def line(self, p: SendProgress) -> str:
        total = max(p.total, 1)
        filled = int(WIDTH * min(p.done, total) / total)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = p.done / elapsed
        eta = (p.total - p.done) / rate if rate > 0 and p.total > p.done else 0
        c = p.counts
        return (
            f"[{'#' * filled}{'.' * (WIDTH - filled)}] {p.done}/{p.total}  "
            f"sent {c['sent']}  deferred {c['deferred']}  failed {c['failed']}  "
            f"skipped {c['skipped']}  unknown {c['unknown']}  {rate:.1f}/s  ETA {eta:.0f}s"
        )

    def __call__(self, p: SendProgress) -> None:
        now = time.monotonic()
        finished = p.done >= p.total
        # Redraw at most 10 times a second; when not a terminal, only every 10% (logs stay short).
        if self.interactive and (finished or now - self._last_drawn >= 0.1):
            self.stream.write("\r" + self.line(p))
            self._last_drawn = now
        elif not self.interactive and (finished or p.done % max(p.total // 10, 1) == 0):
            self.stream.write(self.line(p) + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
