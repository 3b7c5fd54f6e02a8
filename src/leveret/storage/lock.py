"""One broker process per data directory.

Two brokers writing one SQLite file would each believe it owns the messages; the
second must refuse to start. :class:`DataDirLock` takes an exclusive ``flock`` on
``<data_dir>/leveret.lock`` and writes its PID into the file so the refusal can
name the holder. The kernel drops the lock when the process dies, even by
``kill -9``, so a stale lock file never blocks a restart; the file itself is left in
place (deleting it would let two processes lock two different inodes).

POSIX only (``fcntl``).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_FILE = "leveret.lock"


class DataDirLocked(RuntimeError):
    """The data directory is locked by another process; ``pid`` is its PID if known."""

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f"process {pid}" if pid is not None else "another process (PID unknown)"
        super().__init__(f"data directory {path} is in use by {holder}; is another leveret running?")
        self.path = path
        self.pid = pid


class DataDirLock:
    """Exclusive, non-blocking lock on a data directory; use as a context manager.

    :meth:`acquire` creates the directory if needed and raises :class:`DataDirLocked`
    if another process holds the lock (in the same process, a second lock on the
    same directory through another ``DataDirLock`` also fails: ``flock`` locks are
    per open file). :meth:`release` is idempotent.
    """

    __slots__ = ("_fd", "path")

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this DataDirLock")
        self.path.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC is Python's default: a child process (e.g. a spawned tool) must
        # not inherit, and so keep, our lock.
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataDirLocked(self.path, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # Empty the file first, so a reader never sees our PID as the holder
            # after we are gone; closing the descriptor releases the lock.
            os.ftruncate(fd, 0)
            os.close(fd)

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    # The holder may be between flock and pwrite: an empty or partial file is "unknown".
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (ValueError, UnicodeDecodeError):
        return None
