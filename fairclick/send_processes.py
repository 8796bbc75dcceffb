"""`fairclick send NAME --processes N`: N sender processes sharing the campaign's outbox.

The parent queues the campaign once, starts N-1 child processes (`send NAME` with hidden
options: deliver only, report progress through a pipe) and delivers as the Nth itself.
They share the outbox the way any senders do (FOR UPDATE SKIP LOCKED and leases), each
with its own database pool and FAIRCLICK_SMTP_CONNECTIONS SMTP connections.

FAIRCLICK_SMTP_RATE is the rate of the whole command: each process sends at rate / N,
so the relay sees the rate it was promised however many processes there are.

A child that dies is reported; the rows it held return to the outbox when their lease
lapses (FAIRCLICK_SEND_LEASE_SECONDS) and the others send them (the parent ends only when
no row of the campaign is left in flight), so a death loses nothing and doubles at most
the message each of its connections was transmitting. Ctrl-C or SIGTERM stops every
process: each finishes and records the messages in hand, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import asyncpg

from mailer.delivery import Delivery, SendProgress
from mailer.queries import SQL
from tracker.settings import Settings

MAX_PROCESSES = 32
REPORT_INTERVAL_SECONDS = 0.1


def share_rate(settings: Settings, processes: int) -> Settings:
    """Each of `processes` senders gets its share of the configured rate (0 = no limit)."""
    return replace(settings, smtp_rate=settings.smtp_rate / processes)


class ProgressReport:
    """A child's side of the pipe: its counts as a JSON line, at most 10 times a second."""

    def __init__(self, fd: int):
        self._fd: int | None = fd
        self._last = 0.0

    def __call__(self, progress: SendProgress) -> None:
        now = time.monotonic()
        if now - self._last >= REPORT_INTERVAL_SECONDS:
            self._last = now
            self._write(progress)

    def _write(self, progress: SendProgress) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, json.dumps(dict(progress.counts)).encode() + b"\n")
        except OSError:
            self.close()  # the parent is gone: nobody to tell

    def finish(self, progress: SendProgress) -> None:
        self._write(progress)
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


async def deliver_as_child(
    pool: asyncpg.Pool, settings: Settings, campaign_id: int, share: int, report_fd: int
) -> SendProgress:
    """One child of `send --processes N`: deliver the campaign's due messages, report counts."""
    report = ProgressReport(report_fd)
    delivery = Delivery(
        pool, share_rate(settings, share), campaign_id=campaign_id, on_progress=report
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, delivery.stop)
    try:
        progress = await delivery.run()
    finally:
        report.finish(delivery.progress)
    return progress


class _Child:
    def __init__(self, number: int, process: asyncio.subprocess.Process, reader):
        self.number = number
        self.process = process
        self.reader = reader
        self.counts: Counter = Counter()
        self.told_to_stop = False

    async def follow(self, on_report: Callable[[], None]) -> None:
        """Read the child's reports until its end of the pipe closes (it exited)."""
        while line := await self.reader.readline():
            with contextlib.suppress(ValueError):
                self.counts = Counter(json.loads(line))
                on_report()

    def stop(self) -> None:
        if self.process.returncode is None and not self.told_to_stop:
            self.told_to_stop = True  # once: a second signal is not needed, it finishes anyway
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)


async def _start_child(number: int, name: str, processes: int) -> _Child:
    read_fd, write_fd = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fairclick.cli", "send", name, "--quiet",
            "--share-of", str(processes), "--report-fd", str(write_fd),
            pass_fds=(write_fd,),
            stdout=asyncio.subprocess.DEVNULL,
            # A group of its own: a terminal's Ctrl-C reaches only the parent, which passes
            # one SIGTERM on.
            process_group=0,
        )  # fmt: skip
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb")
    )
    return _Child(number, process, reader)


def _death(child: _Child, settings: Settings) -> str | None:
    code = child.process.returncode
    # -SIGTERM after we told it to stop: it was still starting, before its handler was in
    # place and so before it claimed anything.
    if code == 0 or (child.told_to_stop and code == -signal.SIGTERM):
        return None
    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    return (
        f"sender process {child.number} (pid {child.process.pid}) {how}; the messages it held "
        f"went back to the outbox after the {settings.send_lease_seconds:g} s lease and the "
        "other processes sent them"
    )


async def send_with_processes(
    pool: asyncpg.Pool,
    settings: Settings,
    name: str,
    campaign_id: int,
    processes: int,
    *,
    on_progress: Callable[[SendProgress], None] | None = None,
) -> tuple[SendProgress, list[int], list[str]]:
    """Deliver with `processes` senders (this one and processes-1 children).

    Returns the counts of all of them, the messages each sent (this process first) and one
    line for each child that died.
    """
    delivery = Delivery(pool, share_rate(settings, processes), campaign_id=campaign_id)
    children: list[_Child] = []
    overall = SendProgress()

    async with pool.acquire() as conn:  # before any child claims a row
        due = await conn.fetchval(SQL.due_messages, campaign_id)

    def update() -> None:
        overall.counts = delivery.progress.counts + sum((c.counts for c in children), Counter())
        # Rows a dead sender held and this one took over count once more, as they do in
        # one process (Delivery's claimer).
        overall.total = max(due, delivery.progress.total, overall.done)
        if on_progress is not None:
            on_progress(overall)

    delivery.on_progress = lambda _own: update()

    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def stop_all() -> None:
        delivery.stop()
        for child in children:
            child.stop()
        for sig in signals:  # a second Ctrl-C interrupts at once, as it always did
            loop.remove_signal_handler(sig)

    for sig in signals:
        loop.add_signal_handler(sig, stop_all)
    followers = []
    try:
        for number in range(2, processes + 1):
            child = await _start_child(number, name, processes)
            children.append(child)
            followers.append(asyncio.create_task(child.follow(update)))
        try:
            await delivery.run()
        finally:
            if sys.exc_info()[0] is not None:
                stop_all()  # this one failed: the others stop too
            await asyncio.gather(*(child.process.wait() for child in children))
            await asyncio.gather(*followers, return_exceptions=True)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        for child in children:  # only if this was cancelled while they ran
            if child.process.returncode is None:
                child.process.kill()
    update()
    deaths = [line for child in children if (line := _death(child, settings))]
    sent = [delivery.progress.counts["sent"], *(c.counts["sent"] for c in children)]
    return overall, sent, deaths
