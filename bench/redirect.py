"""Click benchmark: the tracked redirect against a bare 302 and a naive INSERT per click.

1. an embedded PostgreSQL, migrated and seeded set-based: 10,000 recipients who consented
   to tracking, each sent one message an hour ago (so no click is "too soon after
   delivery"), 20 links; the 200,000 paths /c/TOKEN are written so that the message changes
   on every request: a message comes round again only after 10,000 requests, so the scan
   detector (3 links of one message in 2 s) stays quiet below ~10,000 requests/s;
2. throughput, --runs times, interleaved: each server on core 0 (taskset), loaded by wrk on
   core 1 (64 connections, a browser User-Agent, --warmup s unmeasured, then --duration s):
     tracked  `python -m fairclick.cli serve`, the product
     bare     bench/bare_server.py, a handler that only answers 302
     naive    bench/naive_server.py, the same decode and one awaited INSERT per click
   PostgreSQL on --postgres-core (default 0, sharing the server's core: the harshest
   layout). CPU per click of the server and of PostgreSQL, and every 302 wrk received must
   be a stored click (counted after SIGTERM, when the tracker has flushed its queue);
3. latency at a steady --rate (default 1,000 req/s) by bench/paced.py (open loop, from each
   request's scheduled time, as wrk2), the server on core 0, PostgreSQL and paced.py on
   core 1: p50/p90/p99/p99.9 of tracked and bare;
4. one table of medians, the ratios to bare, and the targets; --profile: one more tracked
   run under py-spy, and where its CPU goes.

    python bench/redirect.py            # 20 s per run, 3 runs of each: about 7 minutes
    python bench/redirect.py --quick    # 5 s per run
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from harness import (
    BENCH,
    Bench,
    Core,
    Target,
    cpu_seconds,
    free_port,
    machine,
    median,
    need,
    print_results,
    profile_summary,
    py_spy,
    wait_http,
)

SERVER_CORE, LOAD_CORE = 0, 1
SERVERS = ("tracked", "bare", "naive")
PACED = ("tracked", "bare")
CONNECTIONS = 64
RECIPIENTS, LINKS = 10_000, 20
SECRET_KEY = "bench-redirect-secret-key-0123456789"  # a throwaway key, for this bench only
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
MAX_P99_MS = 8.0  # issue 12: tracked p99 at a steady 1,000 req/s
SEED = [
    "INSERT INTO campaigns (name, subject_template, from_address, html_template, html_filename)"
    " VALUES ('bench', 'Bench', 'bench@example.com', '<p>bench</p>', 'bench.html')",
    "INSERT INTO recipients (email, name, format, tracking_consent) SELECT 'reader' || g ||"
    " '@example.com', 'Reader ' || g, 'html', true FROM generate_series(1, 10000) AS g",
    # Sent an hour ago: clicks now are not "too soon after delivery".
    "INSERT INTO outbox (campaign_id, recipient_id, status, format, attempts, sent_at)"
    " SELECT 1, id, 'sent', 'html', 1, now() - interval '1 hour' FROM recipients ORDER BY id",
    "INSERT INTO links (campaign_id, url, name) SELECT 1, 'https://example.com/articles/' || g"
    " || '?from=newsletter', 'link ' || g FROM generate_series(1, 20) AS g",
    "ANALYZE",
]
PROFILE_GROUPS = [  # where the tracked server's CPU goes: harness.profile_summary
    ("token decoding", ("tracker/tokens.py", "hashids")),
    ("scan and bot detection", ("ScanDetector", "tracker/bots.py")),
    ("recorder (queue, asyncpg, group commit)", ("tracker/recorder.py", "asyncpg/")),
    ("prometheus metrics", ("prometheus_client/",)),
    ("click handler (tracker/)", ("tracker/",)),
    ("aiohttp (parse, route, respond)", ("aiohttp/",)),
    ("asyncio event loop", ("asyncio/",)),
]


def seed(pg, tmp: Path) -> Path:
    async def work(conn):
        for sql in SEED:
            await conn.execute(sql)
        return [r[0] for r in await conn.fetch("SELECT id FROM outbox ORDER BY id")]

    messages = pg.sql(work)
    from tracker.tokens import Tokens

    codec = Tokens([SECRET_KEY.encode()]).click
    paths = tmp / "paths.txt"
    with paths.open("w") as f:  # the message changes on every request, the link every 10,000
        for link in range(1, LINKS + 1):
            f.writelines(f"/c/{codec.encode(m, link)}\n" for m in messages)
    return paths


def start_server(bench: Bench, name: str, env: dict):
    port = free_port()
    if name == "tracked":
        argv = [sys.executable, "-m", "fairclick.cli", "serve", "--port", str(port), "--quiet"]
    else:
        argv = [sys.executable, str(BENCH / f"{name}_server.py"), "--port", str(port)]
    proc = bench.start(argv, core=SERVER_CORE, env=env, name=name)
    wait_http(proc, f"http://127.0.0.1:{port}/healthz")
    return proc, port


def wrk(bench: Bench, port: int, seconds: float, paths: Path, start: int = 0) -> dict:
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout", "5s",
            "-H", f"User-Agent: {USER_AGENT}", "-s", str(BENCH / "redirect.lua"),
            f"http://127.0.0.1:{port}/", "--", str(paths), str(start)]  # fmt: skip
    done = bench.run(argv, core=LOAD_CORE, name="wrk")
    found = re.search(r"^BENCH (\{.*\})$", done.output, re.MULTILINE)
    if done.returncode or not found:
        sys.exit(f"wrk failed ({done.returncode}): {done.output[-1500:]}{done.errors[-500:]}")
    return json.loads(found[1])


def throughput(bench: Bench, name: str, env: dict, paths: Path, args, spy: Path | None = None):
    """One wrk run: req/s, server and PostgreSQL CPU per request, clicks lost."""
    pg = bench.pg
    pg.sql(lambda c: c.execute("TRUNCATE clicks; CHECKPOINT"))
    proc, port = start_server(bench, name, env)
    try:
        warm = wrk(bench, port, args.warmup, paths) if args.warmup else {"requests": 0}
        if spy:
            profiler = bench.start([py_spy(), "record", "--pid", str(proc.pid), "--gil",
                                    "--rate", "200", "--format", "raw", "--output", str(spy),
                                    "--duration", str(args.duration)], core=LOAD_CORE)  # fmt: skip
        core, server0, pg0 = Core(SERVER_CORE).start(), cpu_seconds(proc.pid), pg.cpu()
        r = wrk(bench, port, args.duration, paths, start=warm["requests"])
        server, postgres = cpu_seconds(proc.pid) - server0, pg.cpu() - pg0
        idle, wall = core.stop(), r["duration_us"] / 1e6
        if spy:
            profiler.wait(30)
    finally:
        bench.stop(proc)  # SIGTERM: the tracker writes every queued click before it exits
    acked = warm.get("status_302", 0) + r["status_302"]
    stored = pg.sql(lambda c: c.fetchval("SELECT count(*) FROM clicks")) if name != "bare" else 0
    on_core = server + (postgres if args.postgres_core == SERVER_CORE else 0)
    return {
        "rps": r["requests"] / wall, "server_us": 1e6 * server / r["requests"],
        "pg_us": 1e6 * postgres / r["requests"], "non_302": r["requests"] - r["status_302"],
        "lost": max(0, acked - stored) if name != "bare" else 0,
        "other": max(0.0, 1 - idle - on_core / wall),
    }  # fmt: skip


def paced(bench: Bench, name: str, env: dict, paths: Path, args) -> dict:
    bench.pg.sql(lambda c: c.execute("TRUNCATE clicks; CHECKPOINT"))
    proc, port = start_server(bench, name, env)
    try:
        argv = [sys.executable, str(BENCH / "paced.py"), "--url", f"http://127.0.0.1:{port}",
                "--paths", str(paths), "--rate", str(args.rate), "--duration", str(args.duration),
                "--warmup", str(args.warmup), "--user-agent", USER_AGENT]  # fmt: skip
        core, server0 = Core(SERVER_CORE).start(), cpu_seconds(proc.pid)
        done = bench.run(argv, core=LOAD_CORE, name="paced")
        other = 1 - core.stop() - (cpu_seconds(proc.pid) - server0) / done.wall
    finally:
        bench.stop(proc)
    if done.returncode:
        sys.exit(f"bench/paced.py failed: {done.errors[-1500:]}")
    return {**json.loads(done.output.strip().splitlines()[-1]), "other": max(0.0, other)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=20, help="measured seconds per run (20)")
    p.add_argument("--quick", action="store_true", help="5 s per run")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured seconds first (2)")
    p.add_argument("--runs", type=int, default=3, help="runs of each server (3)")
    p.add_argument("--rate", type=int, default=1000, help="paced requests/s (1000; 0: none)")
    p.add_argument("--postgres-core", type=int, choices=(0, 1), default=SERVER_CORE,
                   help="PostgreSQL's core during the wrk runs (0: with the server)")  # fmt: skip
    p.add_argument("--profile", action="store_true", help="one more tracked run under py-spy")
    args = p.parse_args()
    if args.quick:
        args.duration = 5
    need("wrk", "taskset", *(["py-spy"] if args.profile and not py_spy() else []))
    with Bench("redirect") as bench:
        print(f"machine: {machine()}")
        pg = bench.postgres(core=args.postgres_core)
        paths = seed(pg, bench.tmp)
        facts = pg.sql(
            lambda c: c.fetchrow(
                "SELECT version(), current_setting('fsync') AS fsync, current_setting("
                "'synchronous_commit') AS sync, current_setting('wal_sync_method') AS wal"
            )
        )
        print(f"{facts[0].split(' on ')[0]}: fsync {facts['fsync']}, synchronous_commit "
              f"{facts['sync']}, wal_sync_method {facts['wal']} (a click is durable before its"
              " 302: its latency includes a WAL flush)")  # fmt: skip
        env = bench.env(
            FAIRCLICK_DATABASE_URL=pg.dsn,
            FAIRCLICK_SECRET_KEY=SECRET_KEY,
            FAIRCLICK_DATA_DIR=str(bench.tmp / "data"),
            FAIRCLICK_OPS_LISTEN="off",
        )
        print(
            f"{RECIPIENTS:,} sent messages × {LINKS} links; servers on core {SERVER_CORE}, wrk"
            f" on core {LOAD_CORE} ({CONNECTIONS} connections), PostgreSQL on core "
            f"{args.postgres_core}; {args.duration} s per run after {args.warmup} s warm-up"
        )
        runs: dict[str, list[dict]] = {s: [] for s in SERVERS}
        for i in range(1, args.runs + 1):
            for name in SERVERS:  # interleaved: a slow patch of the machine hits all three
                r = throughput(bench, name, env, paths, args)
                runs[name].append(r)
                print(
                    f"run {i}/{args.runs} {name}: {r['rps']:,.0f} req/s, CPU/req server "
                    f"{r['server_us']:.0f} µs, PG {r['pg_us']:.0f} µs; non-302 {r['non_302']},"
                    f" lost {r['lost']}; core {SERVER_CORE} {r['other']:.0%} other",
                    flush=True,
                )

        lat: dict[str, list[dict]] = {s: [] for s in PACED}
        if args.rate:
            pg.pin(LOAD_CORE)
            for i in range(1, args.runs + 1):
                for name in PACED:
                    r = paced(bench, name, env, paths, args)
                    lat[name].append(r)
                    print(f"paced {i}/{args.runs} {name}: {r['rate_done']:,.0f} req/s, p50 "
                          f"{r['p50_ms']} p99 {r['p99_ms']} p99.9 {r['p999_ms']} ms, errors "
                          f"{r['errors']}, status {r['status']}; paced.py: "
                          f"{r['cpu_share']:.0%} of its core, sent ≤ {r['send_late_p99_ms']} ms "
                          f"late (p99); core {SERVER_CORE} {r['other']:.0%} other",
                          flush=True)  # fmt: skip
            pg.pin(args.postgres_core)

        def m(name: str, key: str, source=runs) -> float:
            return median(r[key] for r in source[name]) if source.get(name) else float("nan")

        cost = {s: m(s, "server_us") + m(s, "pg_us") for s in SERVERS}
        rows = [
            [
                s,
                m(s, "rps"),
                m(s, "rps") / m("bare", "rps"),
                f"{m(s, 'other'):.0%}",
                m(s, "server_us"),
                m(s, "pg_us"),
                cost[s] / cost["bare"],
                *(
                    m(s, k, lat) if lat.get(s) else "-"
                    for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms")
                ),
                f"{m(s, 'other', lat):.0%}" if lat.get(s) else "-",
            ]
            for s in SERVERS
        ]
        lost = sum(r["lost"] for rs in runs.values() for r in rs)
        targets = [Target("acknowledged clicks lost (302 sent, no row stored)", lost, 0, False)]
        if args.rate:
            targets.append(Target(f"tracked p99 at {args.rate:,} req/s", m("tracked", "p99_ms",
                                  lat), MAX_P99_MS, False, " ms"))  # fmt: skip
        ok = print_results(
            f"medians of {args.runs} runs; wrk: {args.duration} s, {CONNECTIONS} connections "
            f"(closed loop); paced: bench/paced.py at {args.rate:,} req/s (open loop)",
            ["server", "req/s", "÷ bare", "other", "server µs/req", "PG µs/req", "CPU ÷ bare",
             "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "other"],
            rows, targets,
            notes="\n".join([
                f"req/s, CPU per request (server, PostgreSQL): wrk runs, PostgreSQL on core "
                f"{args.postgres_core}.",
                f"p50-p99.9: latency from each request's scheduled time; the server alone on "
                f"core {SERVER_CORE}, PostgreSQL and paced.py on core {LOAD_CORE}.",
                f"other: the share of core {SERVER_CORE} used by neither the server nor "
                "PostgreSQL (other processes on the machine: noise), in the wrk and paced runs."]),
        )  # fmt: skip
        if args.profile:
            raw = bench.tmp / "py-spy.raw"
            throughput(bench, "tracked", env, paths, args, spy=raw)
            profile_summary(raw, PROFILE_GROUPS, m("tracked", "server_us"), "µs/req (server)")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
