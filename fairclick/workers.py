"""`fairclick serve --workers N`: N tracker processes sharing one port (SO_REUSEPORT).

The parent only supervises: it starts the workers, restarts one that dies, and on
SIGTERM/SIGINT passes the signal on and waits for each to flush and exit.
Workers share nothing but PostgreSQL (and the data dir's spool folder, whose
files any worker may replay). Only the first worker serves the operators' listener
(FAIRCLICK_OPS_LISTEN): its /metrics merges all workers' counters through
PROMETHEUS_MULTIPROC_DIR.

Each worker tells the parent through a pipe that it listens, or in one line why it
cannot. A worker that cannot start at first (the port is taken, say) ends the command
with that line: starting another would only fail the same way. Once all listened, a
worker that dies (or a replacement that cannot start) is replaced after a pause,
unless workers keep dying: more than CRASH_LIMIT deaths in CRASH_WINDOW_SECONDS end
the command too.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable

from tracker.errors import FairclickError

RESTART_PAUSE_SECONDS = 1.0
STOP_TIMEOUT_SECONDS = 90
# More deaths than this within the window is a fault no restart mends.
CRASH_LIMIT = 5
CRASH_WINDOW_SECONDS = 60.0
_READY = b"ready"
_ERROR = b"error "


class StartReport:
    """A worker's side of the pipe: "ready", or "error LINE" if it cannot start."""

    def __init__(self, fd: int):
        self._fd: int | None = fd

    def _say(self, line: str) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, line.encode("utf-8", "replace") + b"\n")
            os.close(self._fd)
        except OSError:
            pass  # the supervisor is gone; nobody to tell
        self._fd = None

    def ready(self) -> None:
        self._say(_READY.decode())

    def failed(self, exc: FairclickError) -> bool:
        """Pass a start-up error on (True); False if the worker was already listening."""
        if self._fd is None:
            return False
        self._say(_ERROR.decode() + " ".join(str(exc).split()))
        return True


class _Worker:
    """One worker process and what it has said through its pipe so far."""

    def __init__(self, command: list[str], env: dict[str, str]):
        read_fd, write_fd = os.pipe()
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and args
                [*command, "--ready-fd", str(write_fd)],
                env=env,
                pass_fds=(write_fd,),
                # A group of its own: a terminal's Ctrl-C reaches only the supervisor, which
                # passes one SIGTERM on. A second signal in the middle of a worker's flush
                # would end it there (aiohttp's GracefulExit again, or the default action).
                process_group=0,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.fd: int | None = read_fd
        self.said = b""
        self.told_to_stop = False

    def read(self) -> bool:
        """Take what the worker wrote; False at the end of the pipe."""
        data = os.read(self.fd, 4096) if self.fd is not None else b""
        self.said += data
        return bool(data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    @property
    def ready(self) -> bool:
        return self.said.startswith(_READY)

    @property
    def error(self) -> str | None:
        if self.said.startswith(_ERROR):
            return self.said[len(_ERROR) :].decode("utf-8", "replace").strip()
        return None


def serve_workers(
    host: str, port: int, count: int, note: str = "", on_ready: Callable[[], None] | None = None
) -> int:
    # Prometheus counters of all workers are merged through files in this folder.
    metrics_dir = tempfile.mkdtemp(prefix="fairclick-metrics-")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    command = [sys.executable, "-m", "fairclick.cli", "serve", "--host", host]
    command += ["--port", str(port), "--quiet"]
    stopping = False
    selector = selectors.DefaultSelector()
    workers: list[_Worker] = []

    def start_worker(index: int) -> _Worker:
        # One operators' listener for all: the others would only find its port taken.
        own = env if index == 0 else {**env, "FAIRCLICK_OPS_LISTEN": "off"}
        worker = _Worker(command, own)
        selector.register(worker.fd, selectors.EVENT_READ, worker)
        return worker

    def forget(worker: _Worker) -> None:
        """Read what an exited worker said (its end of the pipe is closed, so it ends)."""
        if worker.fd is not None:
            selector.unregister(worker.fd)
            while worker.read():
                pass
            worker.close()

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        for worker in workers:
            # Once each: a worker told twice stops in the middle of its flush.
            if worker.process.poll() is None and not worker.told_to_stop:
                worker.told_to_stop = True
                worker.process.send_signal(signal.SIGTERM)

    def stop_all() -> list[int]:
        stop(signal.SIGTERM, None)
        codes = []
        for worker in workers:
            try:
                codes.append(worker.process.wait(STOP_TIMEOUT_SECONDS))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                codes.append(worker.process.wait())
            forget(worker)
        return codes

    def give_up(line: str, code: int) -> int:
        stop_all()
        print(f"fairclick: {line}", file=sys.stderr, flush=True)
        return code

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    crashes: deque[float] = deque()
    announced = False
    try:
        workers.extend(start_worker(i) for i in range(count))
        while not stopping:
            for key, _events in selector.select(timeout=0.2):
                if not key.data.read():
                    selector.unregister(key.fd)
                    key.data.close()
            for i, worker in enumerate(workers):
                if stopping or worker.process.poll() is None:
                    continue
                forget(worker)
                failed = worker.error or (
                    f"a worker exited ({worker.process.returncode}) before it could "
                    f"listen on {host}:{port}; its error is above"
                )
                if not announced and not worker.ready:
                    return give_up(failed, 2)
                if not worker.ready:  # a replacement that could not start: a death too
                    print(f"fairclick: {failed}", file=sys.stderr, flush=True)
                now = time.monotonic()
                crashes.append(now)
                while crashes[0] < now - CRASH_WINDOW_SECONDS:
                    crashes.popleft()
                if len(crashes) > CRASH_LIMIT:
                    return give_up(
                        f"workers died {len(crashes)} times within {CRASH_WINDOW_SECONDS:g} s; "
                        "stopped all of them (their errors are above)",
                        1,
                    )
                print(
                    f"fairclick: worker {worker.process.pid} exited "
                    f"({worker.process.returncode}); starting another",
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(RESTART_PAUSE_SECONDS)
                workers[i] = start_worker(i)
            if not announced and all(w.ready for w in workers):
                announced = True
                print(
                    f"fairclick tracker on http://{host}:{port}, {count} workers (Ctrl-C stops)"
                    + note,
                    flush=True,
                )
                if on_ready is not None:
                    on_ready()
        codes = stop_all()
        # -SIGTERM: the worker was still starting, before it could take a single request
        # (its own handler is in place before it binds the port), so nothing was lost.
        return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        selector.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
