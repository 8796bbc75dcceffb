"""An append-only local file for clicks taken while PostgreSQL is unreachable.

Each process writes its own file and holds an exclusive lock on it while it does;
a file nobody holds (sealed, or left by a killed process) is ready to replay.
Every append is fsync'd before the redirect it stands for is answered.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SUFFIX = ".spool"


class Spool:
    def __init__(self, folder: Path):
        self.folder = folder
        self._file = None
        self._path: Path | None = None
        # Appends run in worker threads while seal() runs on the event loop.
        self._lock = threading.Lock()

    def append(self, rows: list[list]) -> None:
        """Write rows durably (one JSON array per line, fsync'd)."""
        with self._lock:
            self._append(rows)

    def _append(self, rows: list[list]) -> None:
        if self._file is None:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Spooled rows name messages, also of people without consent: readable by the
            # tracker's own user only, folder included (a folder from an older version,
            # made 0755, is tightened here).
            if stat.S_IMODE(self.folder.stat().st_mode) & 0o077:
                try:
                    self.folder.chmod(0o700)
                except PermissionError:  # someone else's folder: the files stay 0600
                    pass
            name = f"{os.getpid()}-{secrets.token_hex(6)}{SUFFIX}"
            self._path = self.folder / name
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL
            self._file = os.fdopen(os.open(self._path, flags, 0o600), "ab")
            fcntl.flock(self._file, fcntl.LOCK_EX)
            _fsync_dir(self.folder)
        data = b"".join(json.dumps(row, separators=(",", ":")).encode() + b"\n" for row in rows)
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    def seal(self) -> None:
        """Stop writing the current file, so it can be replayed; the next append starts anew."""
        with self._lock:
            if self._file is not None:
                fcntl.flock(self._file, fcntl.LOCK_UN)
                self._file.close()
                self._file = None
                self._path = None

    def depth(self) -> int:
        """Spool files waiting for replay (including the one being written)."""
        return len(list(self.folder.glob(f"*{SUFFIX}"))) if self.folder.is_dir() else 0

    @contextmanager
    def ready_files(self) -> Iterator[list[Path]]:
        """Spool files no process is writing, locked for the caller while it replays them."""
        held = []
        try:
            for path in sorted(self.folder.glob(f"*{SUFFIX}")) if self.folder.is_dir() else []:
                if path == self._path:
                    continue
                try:
                    f = open(path, "rb")
                except FileNotFoundError:
                    continue  # replayed by another process meanwhile
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    f.close()
                    continue
                if not path.exists():
                    f.close()
                    continue
                held.append((path, f))
            yield [path for path, _ in held]
        finally:
            for _, f in held:
                f.close()

    @staticmethod
    def read(path: Path) -> list[list]:
        rows = []
        for line in path.read_bytes().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                break  # a line cut short by a crash was never acknowledged
        return rows


def _fsync_dir(folder: Path) -> None:
    """Make the new file's name itself durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
