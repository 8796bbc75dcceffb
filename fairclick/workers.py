"""`fairclick serve --workers N`: N tracker processes sharing one port (SO_REUSEPORT).

The parent only supervises: it starts the workers, restarts one that dies, and on
SIGTERM/SIGINT passes the signal on and waits for each to flush and exit.
Workers share nothing but PostgreSQL (and the data dir's spool folder, whose
files any worker may replay). Only the first worker serves the operators' listener
(FAIRCLICK_OPS_LISTEN): its /metrics merges all workers' counters through
PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

RESTART_PAUSE_SECONDS = 1.0
STOP_TIMEOUT_SECONDS = 90


def serve_workers(host: str, port: int, count: int, note: str = "") -> int:
    # Prometheus counters of all workers are merged through files in this folder.
    metrics_dir = tempfile.mkdtemp(prefix="fairclick-metrics-")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    command = [sys.executable, "-m", "fairclick.cli", "serve", "--host", host]
    command += ["--port", str(port), "--reuse-port", "--quiet"]
    stopping = False

    def start_worker(index: int) -> subprocess.Popen:
        # One operators' listener for all: the others would only find its port taken.
        own = env if index == 0 else {**env, "FAIRCLICK_OPS_LISTEN": "off"}
        return subprocess.Popen(command, env=own)  # noqa: S603 - our own interpreter and args

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)

    workers = [start_worker(i) for i in range(count)]
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    announce = f"fairclick tracker on http://{host}:{port}, {count} workers (Ctrl-C stops)"
    print(announce + note, flush=True)
    try:
        while not stopping:
            for i, worker in enumerate(workers):
                if worker.poll() is not None and not stopping:
                    print(
                        f"fairclick: worker {worker.pid} exited ({worker.returncode}); "
                        "starting another",
                        file=sys.stderr,
                        flush=True,
                    )
                    time.sleep(RESTART_PAUSE_SECONDS)
                    workers[i] = start_worker(i)
            time.sleep(0.2)
        codes = []
        for worker in workers:
            try:
                codes.append(worker.wait(STOP_TIMEOUT_SECONDS))
            except subprocess.TimeoutExpired:
                worker.kill()
                codes.append(worker.wait())
        # -SIGTERM: the worker was still starting, before it could take a single request
        # (its own handler is in place before it binds the port), so nothing was lost.
        return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)
