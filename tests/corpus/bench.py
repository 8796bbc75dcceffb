"""Time find_links on the corpus templates (or on the HTML files given): fast path and exact loop.

    python tests/corpus/bench.py                 # every template here
    python tests/corpus/bench.py email.html ...  # other documents

Runs are interleaved so that a busy machine slows both alike; the minimum is the least disturbed
run, the median the usual one.
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mailer.rewrite import _find_links, find_links


def timed(function, html: str, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        function(html)
    return (time.perf_counter() - started) / repeat * 1000


def main() -> None:
    paths = [Path(arg) for arg in sys.argv[1:]] or sorted(Path(__file__).parent.glob("*.html"))
    exact = lambda html: _find_links(html, (), fast=False)  # noqa: E731
    print(f"{'document':28} {'bytes':>7} {'links':>5}  fast min / median    exact min / median")
    for path in paths:
        html = path.read_bytes().decode("utf-8")
        fast_ms: list[float] = []
        exact_ms: list[float] = []
        for _ in range(40):
            fast_ms.append(timed(find_links, html, 20))
            exact_ms.append(timed(exact, html, 2))
        print(
            f"{path.name:28} {len(html.encode()):7} {len(find_links(html)):5}"
            f"  {min(fast_ms):.3f} / {statistics.median(fast_ms):.3f} ms"
            f"   {min(exact_ms):.3f} / {statistics.median(exact_ms):.3f} ms"
        )


if __name__ == "__main__":
    main()
