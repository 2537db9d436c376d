"""Advisory file locks (``flock``) shared by every spendwatch process on one machine.

Two uses:

* ``RWFileLock`` guards the DuckDB store file, fairly (see its docstring). DuckDB lets one
  process write *or* several read a file, never both, and fails at once instead of waiting.
  Taking a shared (readers) or exclusive
  (writer) ``flock`` before connecting turns that failure into an orderly wait, so the CLI keeps
  working while the daemon runs: each side holds the store only for one short unit of work.
* ``SingletonLock`` is held for the whole life of a daemon so a second daemon on the same store
  refuses to start (two schedulers on one store would send every digest twice).

``flock`` locks belong to an open file description, so two threads of one process that each open
the lock file also exclude each other; the kernel drops the lock if the process dies.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_POLL_SECONDS = 0.02
_MAX_POLL_SECONDS = 0.05


class LockTimeout(Exception):
    """The lock was not granted within the timeout."""


def _acquire(fd: int, operation: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = _POLL_SECONDS
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockTimeout from None
            time.sleep(delay)
            delay = min(delay * 2, _MAX_POLL_SECONDS)


class RWFileLock:
    """A fair readers/writer lock on ``path`` (created if missing).

    ``flock`` alone is not fair: a writer that loads month after month re-takes the lock the moment
    it lets go, and a waiting reader (the CLI) could starve. So every entrant first takes a turnstile
    (``path`` + ``.turnstile``) exclusively, then the lock itself, then lets the turnstile go. A
    waiter holding the turnstile is next in line: nobody can overtake it, and it waits at most for
    the unit of work in progress.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.turnstile = path.with_name(path.name + ".turnstile")

    @contextmanager
    def hold(self, *, exclusive: bool, timeout: float) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        gate = os.open(self.turnstile, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _acquire(gate, fcntl.LOCK_EX, timeout)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                _acquire(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, max(0.0, deadline - time.monotonic()))
            except BaseException:
                os.close(fd)
                raise
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
            os.close(gate)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class SingletonLock:
    """An exclusive, non-blocking lock held until ``release`` (or process exit).

    The holder's pid is written into the file so the refusal message can name it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockTimeout(self.holder()) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def daemon_lock_path(store_path: Path) -> Path:
    """The daemon's one-per-store lock file beside the store (snapshot restores take it too)."""
    return store_path.with_name(store_path.name + ".daemon.lock")
