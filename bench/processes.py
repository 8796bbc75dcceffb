"""What both benchmarks need: child processes (own sessions, always ended) and machine facts."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
from pathlib import Path


class Processes:
    """Every child started by a benchmark, each in its own session, ended by its id."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen] = []

    def start(self, argv: list[str], *, log: Path, env: dict | None = None) -> subprocess.Popen:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C reaches us only; we end the children
            )
        self.live.append(proc)
        return proc

    def stop(
        self, proc: subprocess.Popen, *, how: int = signal.SIGTERM, grace: float = 30.0
    ) -> int:
        """Signal `how`, wait up to `grace` seconds, then SIGKILL; returns the exit code."""
        try:
            if proc.poll() is None:
                proc.send_signal(how)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    print(f"  ! pid {proc.pid} still running {grace:.0f} s after {how!r}: killing")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            # Anything the child left in its session (it should have none).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        finally:
            if proc in self.live:
                self.live.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in list(self.live):
            self.stop(proc, grace=10.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a child's log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"
