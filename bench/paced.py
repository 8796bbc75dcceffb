"""Open-loop paced HTTP load, measured as wrk2 does: latency from each request's scheduled time.

Requests are scheduled at a fixed rate (1000 req/s = one every 1 ms) and sent over K
keep-alive connections. A free connection takes the next scheduled request, waits for its
time and sends it; when every connection is busy (the server stalls), the requests due in
the meantime wait and each is charged from its own scheduled time, so a stall counts
against every request it delayed (no coordinated omission).

    python bench/paced.py --url http://127.0.0.1:8081 --paths paths.txt --rate 1000 \
        --duration 20 --warmup 5 [--connections 32] [--user-agent UA]

PATHS: one request path per line (e.g. /c/TOKEN), used round-robin. Prints one JSON line:
rate_asked, rate_done, requests, errors, status ({code: n}), p50_ms … p999_ms, max_ms,
send_late_p99_ms (how late this generator sent requests whose connection was free in time:
its own share of the latency, not the server's),
cpu_per_request_us (this process's CPU per measured request) and cpu_share (of one core).
Requests scheduled during --warmup are sent but not counted. Plain HTTP/1.1 over asyncio
streams: a response needs Content-Length or chunked encoding (as aiohttp sends).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import sys
import time
import urllib.parse

TIMEOUT = 10.0  # seconds for one response before it counts as an error
DRAIN = 10.0  # seconds after the end to answer requests already scheduled
EARLY = 0.0005  # seconds: see connection()


class Load:
    """The schedule, shared by every connection, and what was measured."""

    def __init__(self, requests: list[bytes], rate: float, warmup: float, duration: float):
        self.requests = requests
        self.interval = 1.0 / rate
        self.start = time.monotonic() + 0.1
        self.measure_from = self.start + warmup
        self.end = self.measure_from + duration
        self.next = 0  # index of the next request to schedule
        self.latencies: list[float] = []
        self.late: list[float] = []  # the generator's own lag: see record()
        self.status: collections.Counter = collections.Counter()
        self.errors = 0
        self.last_done = self.measure_from

    def take(self) -> tuple[float, bytes] | None:
        """The next request and its scheduled time, or None when the schedule has ended."""
        due = self.start + self.next * self.interval
        if due >= self.end:
            return None
        request = self.requests[self.next % len(self.requests)]
        self.next += 1
        return due, request

    def record(self, due: float, sent: float, status: int | None, ahead: bool) -> None:
        """A response (or an error) to the request scheduled at `due` and sent at `sent`.

        ahead: a connection took it before it was due, so any lateness of its send is the
        generator's (its timer, its event loop), not a server that kept every connection busy.
        """
        if due < self.measure_from:
            return
        now = time.monotonic()
        self.last_done = now
        if status is None:
            self.errors += 1
        else:
            self.status[status] += 1
            if ahead:
                self.late.append(max(0.0, sent - due))
            # From the scheduled time; from the send if the timer woke us a little early.
            self.latencies.append(now - min(due, sent))


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; returns (status, keep the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked, close = 0, False, lines[0].startswith(b"HTTP/1.0")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = value.strip().lower() == b"close"
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, not close


async def connection(load: Load, host: str, port: int, deadline: float) -> None:
    reader = writer = None
    while (taken := load.take()) is not None:
        due, request = taken
        delay = due - time.monotonic()
        if delay > EARLY:
            # The event loop's timers have 1 ms steps (epoll), rounded up: aim half a step
            # early, so that sends land within ±0.5 ms of their time rather than 0–1 ms late.
            await asyncio.sleep(delay - EARLY)
        sent = time.monotonic()
        if sent > deadline:
            load.record(due, sent, None, False)  # never sent: the server fell too far behind
            continue
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            async with asyncio.timeout(TIMEOUT):
                status, keep = await read_response(reader)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError):  # fmt: skip
            status, keep = None, False
        load.record(due, sent, status, delay > 0)
        if not keep and writer is not None:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def percentile(ordered: list[float], q: float) -> float:
    """Nearest rank, in ms."""
    if not ordered:
        return 0.0
    return 1000 * ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


async def run(args: argparse.Namespace, paths: list[str]) -> dict:
    url = urllib.parse.urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    extra = f"User-Agent: {args.user_agent}\r\n" if args.user_agent else ""
    requests = [
        f"GET {p} HTTP/1.1\r\nHost: {url.netloc}\r\n{extra}\r\n".encode("latin-1") for p in paths
    ]
    load = Load(requests, args.rate, args.warmup, args.duration)
    gc.collect()
    gc.freeze()  # the paths list stays out of every collection
    cpu_before = wall_before = None

    async def measure_cpu() -> None:
        nonlocal cpu_before, wall_before
        await asyncio.sleep(max(0.0, load.measure_from - time.monotonic()))
        cpu_before, wall_before = time.process_time(), time.monotonic()

    meter = asyncio.create_task(measure_cpu())
    deadline = load.end + DRAIN
    await asyncio.gather(*(connection(load, host, port, deadline) for _ in range(args.connections)))
    await meter
    cpu = time.process_time() - cpu_before
    wall = time.monotonic() - wall_before
    done = len(load.latencies)
    ordered = sorted(load.latencies)
    return {
        "rate_asked": args.rate,
        "rate_done": round(done / max(args.duration, load.last_done - load.measure_from), 1),
        "requests": done,
        "errors": load.errors,
        "status": {str(k): v for k, v in sorted(load.status.items())},
        "p50_ms": round(percentile(ordered, 0.50), 3),
        "p90_ms": round(percentile(ordered, 0.90), 3),
        "p99_ms": round(percentile(ordered, 0.99), 3),
        "p999_ms": round(percentile(ordered, 0.999), 3),
        "max_ms": round(1000 * ordered[-1], 3) if ordered else 0.0,
        "send_late_p99_ms": round(1000 * sorted(load.late)[int(0.99 * len(load.late))], 3)
        if load.late
        else 0.0,
        "cpu_per_request_us": round(1e6 * cpu / max(1, done + load.errors), 1),
        "cpu_share": round(cpu / wall, 3) if wall else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://HOST:PORT (paths come from --paths)")
    parser.add_argument("--paths", required=True, help="file: one request path per line")
    parser.add_argument("--rate", type=float, default=1000, help="requests/s (default 1000)")
    parser.add_argument("--duration", type=float, default=20, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5, help="unmeasured seconds first")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--user-agent", default="", help="User-Agent header (default none)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0 or args.connections < 1:
        parser.error("--rate, --duration and --connections must be positive, --warmup ≥ 0")
    try:
        with open(args.paths) as f:
            paths = [line.strip() for line in f if line.strip()]
    except OSError as e:
        sys.exit(f"paced.py: cannot read --paths: {e}")
    if not paths:
        sys.exit(f"paced.py: no paths in {args.paths}")
    print(json.dumps(asyncio.run(run(args, paths))), flush=True)


if __name__ == "__main__":
    main()
