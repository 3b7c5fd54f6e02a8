"""The disk free-space alarm: block publishers while the data directory's disk is nearly full.

As RabbitMQ's ``disk_free_limit``: below the limit, every connection that publishes
gets ``connection.blocked`` (if its client asked for it in its capabilities) and the
server stops reading from it, so nothing more comes in; deliveries to consumers and
confirms of what was already received go on. When space returns: ``connection.unblocked``
and reading resumes. The server's periodic tick calls :meth:`DiskAlarm.check`; the
probe (a ``statvfs``) runs at most once per ``interval``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("leveret.alarms")


class DiskAlarm:
    """``probe()`` returns free bytes; the alarm is set while that is below ``limit``.

    ``limit`` 0 or ``probe`` None disables the probe. ``probe`` is a plain attribute:
    tests replace it to simulate a full disk. An exception from the probe is logged
    and leaves the alarm as it was. Two faster inputs than the periodic probe:
    :meth:`note` (free bytes the store's writer measured after a batch) and
    :attr:`store_failure` (set while the store cannot write: the alarm holds, whatever
    the probe says, so publishers stay blocked until writes get through again).
    """

    __slots__ = ("limit", "probe", "interval", "active", "_next", "_failed", "store_failure")
    reason = "low on disk"

    def __init__(self, limit: int, probe: Callable[[], int] | None, interval: float = 1.0) -> None:
        self.limit = limit
        self.probe = probe
        self.interval = interval
        self.active = False
        self._next = 0.0
        self._failed = False
        self.store_failure: str | None = None

    def check(self, now: float) -> bool:
        """Probe the disk if due; return True if the alarm changed state (read :attr:`active`)."""
        if now < self._next:
            return False
        self._next = now + self.interval
        if self.probe is None or self.limit <= 0:
            return self._set(self.store_failure is not None, None)
        try:
            free = self.probe()
        except Exception as exc:
            if not self._failed:
                log.warning("cannot read free disk space: %s", exc)
            self._failed = True
            return False
        self._failed = False
        return self._set(free < self.limit or self.store_failure is not None, free)

    def note(self, free: int) -> bool:
        """A measurement taken elsewhere (the store, after a write): apply it now; True if changed."""
        if self.limit <= 0:
            return False
        return self._set(free < self.limit or self.store_failure is not None, free)

    def set_store_failure(self, reason: str | None) -> bool:
        """The store cannot write (``reason``) or can again (None); True if the alarm changed.

        Clearing it probes again at the next :meth:`check`, which decides whether the alarm lifts.
        """
        self.store_failure = reason
        self._next = 0.0
        if reason is not None:
            return self._set(True, None)
        return False

    def _set(self, low: bool, free: int | None) -> bool:
        if low == self.active:
            return False
        self.active = low
        if low and self.store_failure is not None:
            log.warning("disk alarm set: %s; publishers are blocked", self.store_failure)
        elif low:
            log.warning(
                "disk free space alarm set: %s bytes free, limit %d; publishers are blocked", free, self.limit
            )
        elif free is None:
            log.warning("disk alarm cleared: the store writes again; publishers resume")
        else:
            log.warning(
                "disk free space alarm cleared: %s bytes free, limit %d; publishers resume", free, self.limit
            )
        return True


def free_bytes(path: Path) -> int:
    """Free bytes, for unprivileged users, on the file system holding ``path`` (or its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


class MemoryAlarm:
    """RabbitMQ's memory high watermark: set while the broker's resident memory is above ``limit`` bytes.

    Same interface as :class:`DiskAlarm` (``check(now)``, ``active``, a replaceable ``probe`` returning
    bytes in use). ``limit`` 0 disables it. Cheap enough (one read of /proc/self/statm) to run every tick.

    The tick alone can be outrun: a client can send hundreds of megabytes in half a second. So
    connections report what they read (:meth:`note`, a counter and a comparison); once the bytes
    read since the last probe could have used up the room left under the limit (or
    :data:`MAX_UNMEASURED`), :meth:`note` returns True and the caller checks the alarms at once.
    Connections report what they let go when they close (:meth:`freed`); the next check hands it
    back to the OS.
    """

    __slots__ = ("limit", "probe", "active", "_failed", "trim", "_trimmed_at", "_unmeasured", "_room", "_freed")
    reason = "low on memory"
    MAX_UNMEASURED = 16 << 20  # bytes read between two probes at most
    MIN_UNMEASURED = 1 << 20  # not more often than once per this many bytes read
    FREED_TRIM = 1 << 20  # bytes freed by closed connections worth a malloc_trim

    def __init__(self, limit: int, probe: Callable[[], int] | None) -> None:
        self.limit = limit
        self.probe = probe
        self.active = False
        self._failed = False
        # While the alarm is set, hand freed heap back to the OS before measuring: glibc keeps
        # freed message bodies mapped, so resident memory would otherwise never fall.
        self.trim: Callable[[], object] | None = _malloc_trim()
        self._trimmed_at = -1e9
        self._unmeasured = 0  # bytes read since the last probe
        self._room = self.MIN_UNMEASURED  # bytes that may be read before the next probe
        self._freed = 0  # bytes closed connections let go since the last trim

    def note(self, nbytes: int) -> bool:
        """``nbytes`` were just read from a client: True if the alarms should be checked now."""
        self._unmeasured += nbytes
        return self._unmeasured >= self._room and self.probe is not None and self.limit > 0

    def freed(self, nbytes: int) -> None:
        """A closed connection let ``nbytes`` of buffered input go (trimmed at the next check)."""
        self._freed += nbytes

    def check(self, now: float) -> bool:
        if self.trim is not None and self._freed >= self.FREED_TRIM:
            self._freed = 0
            self._trimmed_at = now
            self.trim()
        if self.probe is None or self.limit <= 0:
            return False
        if self.active and self.trim is not None and now - self._trimmed_at >= 2.0:
            self._trimmed_at = now
            self.trim()
        try:
            used = self.probe()
        except Exception as exc:
            if not self._failed:
                log.warning("cannot read memory use: %s", exc)
            self._failed = True
            return False
        self._failed = False
        self._unmeasured = 0
        self._room = max(self.MIN_UNMEASURED, min(self.MAX_UNMEASURED, (self.limit - used) // 2))
        high = used > self.limit
        if high == self.active:
            return False
        self.active = high
        log.warning(
            "memory resource limit alarm %s: %d bytes used, high watermark %d; publishers %s",
            "set" if high else "cleared", used, self.limit, "are blocked" if high else "resume",
        )  # fmt: skip
        return True


class BacklogAlarm:
    """Flow control: set while the store's writer lags by more than ``limit`` operations, cleared when it
    is back under half of that. ``probe`` is the store's ``pending()``. ``limit`` 0 disables it."""

    __slots__ = ("limit", "probe", "active")
    reason = "store backlog"

    def __init__(self, limit: int, probe: Callable[[], int] | None) -> None:
        self.limit = limit
        self.probe = probe
        self.active = False

    def check(self, now: float) -> bool:
        if self.probe is None or self.limit <= 0:
            return False
        pending = self.probe()
        high = pending > self.limit if not self.active else pending > self.limit // 2
        if high == self.active:
            return False
        self.active = high
        log.info("store backlog %d operations: publishers %s", pending, "paused" if high else "resumed")
        return True


class Alarms:
    """Several alarm sources behind one switch: publishers are blocked while any source is active.

    ``check(now)`` checks every source and returns True when the combined state changed;
    :attr:`reason` names the active sources for ``connection.blocked``.
    """

    __slots__ = ("sources", "active")

    def __init__(self, *sources: DiskAlarm | MemoryAlarm | BacklogAlarm) -> None:
        self.sources = sources
        self.active = False

    def check(self, now: float) -> bool:
        for s in self.sources:
            s.check(now)
        active = any(s.active for s in self.sources)
        changed = active != self.active
        self.active = active
        return changed

    @property
    def reason(self) -> str:
        return ", ".join(getattr(s, "reason", "low on disk") for s in self.sources if s.active) or "low on disk"


def memory_limit(watermark: float) -> int:
    """The watermark in bytes: a fraction of RAM when <= 1 (RabbitMQ's relative form), else bytes."""
    if watermark <= 0:
        return 0
    if watermark > 1:
        return int(watermark)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0
    return int(total * watermark)


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0), or None where there is no glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return lambda: trim(0)


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
