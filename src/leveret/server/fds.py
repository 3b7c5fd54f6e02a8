"""File descriptors: every client connection holds one, and at the process's limit the listener can no
longer accept (the client waits in the backlog and times out) while the store may fail to open a file.

RabbitMQ shows ``fd_used`` / ``fd_total`` and its docs ask for 65,536 or more. Here:

* at start the soft limit is raised to the hard one (at most :data:`WANTED`), as a service manager's
  ``LimitNOFILE`` would, and the limit in force is logged; below :data:`LOW` it is a warning that
  says how to raise it;
* :class:`FdWatch` counts the descriptors in use (``/proc/self/fd``) at most every ``interval``
  seconds from the server's tick and logs a warning when they pass 90% of the limit (once, until
  they fall below 80% again), so "clients time out connecting" has a line in the log to match.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

log = logging.getLogger("leveret.fds")

WANTED = 1_048_576  # raise the soft limit this far, if the hard limit allows
LOW = 4096
HIGH, CLEAR = 0.9, 0.8


def raise_limit(wanted: int = WANTED) -> int:
    """Raise the soft RLIMIT_NOFILE toward ``wanted`` (never above the hard limit); return the limit
    in force (0 when unknown) and log it."""
    if resource is None:  # pragma: no cover
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("file descriptor limit raised from %d to %d (each client connection takes one)", soft, target)
            soft = target
        except (ValueError, OSError) as exc:
            log.info("file descriptor limit %d could not be raised to %d: %s", soft, target, exc)
    limit = int(soft) if soft != resource.RLIM_INFINITY else WANTED
    if limit < LOW:
        log.warning(
            "file descriptor limit is %d: at most about %d client connections; raise it (ulimit -n 65536, or "
            "LimitNOFILE=65536 in the systemd unit)", limit, max(limit - 64, 0),
        )  # fmt: skip
    return limit


def used() -> int | None:
    """Descriptors open in this process, None where /proc is not there. At the limit itself the count
    cannot be taken (it needs a descriptor): OSError EMFILE, for :class:`FdWatch` to report."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # the listing's own
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise
        return None


def limit() -> int | None:
    if resource is None:  # pragma: no cover
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


class FdWatch:
    """Warns when the descriptors in use near the limit; ``probe`` and ``limit_of`` are replaceable.
    ``used`` and ``limit`` are the last counts taken (None before the first), for the management API:
    counting reads /proc, which is not done per request."""

    __slots__ = ("probe", "limit_of", "interval", "high", "used", "limit", "_next")

    def __init__(self, probe: Callable[[], int | None] = used, limit_of: Callable[[], int | None] = limit,
                 interval: float = 5.0) -> None:  # fmt: skip
        self.probe = probe
        self.limit_of = limit_of
        self.interval = interval
        self.high = False
        self.used: int | None = None
        self.limit: int | None = None
        self._next = 0.0

    def check(self, now: float) -> None:
        if now < self._next:
            return
        self._next = now + self.interval
        try:
            n, lim = self.probe(), self.limit_of()
        except OSError as exc:  # EMFILE: no descriptor left even to count them
            if not self.high:
                self.high = True
                log.warning(
                    "cannot count open file descriptors (%s): the limit of %s is reached; new connections wait "
                    "in the backlog or fail; raise the limit (ulimit -n, LimitNOFILE=) or set --max-connections "
                    "below it", exc.strerror, self.limit_of(),
                )  # fmt: skip
            return
        self.used, self.limit = n, lim
        if n is None or not lim:
            return
        if not self.high and n >= HIGH * lim:
            self.high = True
            log.warning(
                "%d of %d file descriptors in use: new connections will wait or fail once none are left; "
                "raise the limit (ulimit -n, LimitNOFILE=) or --max-connections below it", n, lim,
            )  # fmt: skip
        elif self.high and n < CLEAR * lim:
            self.high = False
            log.info("%d of %d file descriptors in use: below the warning level again", n, lim)
