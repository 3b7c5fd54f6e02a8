"""The disk free-space alarm: block publishers while the data directory's disk is nearly full.

As RabbitMQ's ``disk_free_limit``: below the limit, every connection that publishes
gets ``connection.blocked`` (if its client asked for it in its capabilities) and the
server stops reading from it, so nothing more comes in; deliveries to consumers and
confirms of what was already received go on. When space returns: ``connection.unblocked``
and reading resumes. The server's periodic tick calls :meth:`DiskAlarm.check`; the
probe (a ``statvfs``) runs at most once per ``interval``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("leveret.alarms")


class DiskAlarm:
    """``probe()`` returns free bytes; the alarm is set while that is below ``limit``.

    ``limit`` 0 or ``probe`` None disables the alarm. ``probe`` is a plain attribute:
    tests replace it to simulate a full disk. An exception from the probe is logged
    and leaves the alarm as it was.
    """

    __slots__ = ("limit", "probe", "interval", "active", "_next", "_failed")

    def __init__(self, limit: int, probe: Callable[[], int] | None, interval: float = 1.0) -> None:
        self.limit = limit
        self.probe = probe
        self.interval = interval
        self.active = False
        self._next = 0.0
        self._failed = False

    def check(self, now: float) -> bool:
        """Probe the disk if due; return True if the alarm changed state (read :attr:`active`)."""
        if now < self._next or self.probe is None or self.limit <= 0:
            return False
        self._next = now + self.interval
        try:
            free = self.probe()
        except Exception as exc:
            if not self._failed:
                log.warning("cannot read free disk space: %s", exc)
            self._failed = True
            return False
        self._failed = False
        low = free < self.limit
        if low == self.active:
            return False
        self.active = low
        if low:
            log.warning(
                "disk free space alarm set: %d bytes free, limit %d; publishers are blocked", free, self.limit
            )
        else:
            log.warning(
                "disk free space alarm cleared: %d bytes free, limit %d; publishers resume", free, self.limit
            )
        return True


def free_bytes(path: Path) -> int:
    """Free bytes, for unprivileged users, on the file system holding ``path`` (or its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free
