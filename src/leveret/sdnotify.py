"""systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram to $NOTIFY_SOCKET.

With ``Type=notify`` in the unit, systemd considers the service started when it gets ``READY=1``;
Leveret sends it once every listener is bound and recovery is done (packaging/leveret.service).
With ``WatchdogSec=`` set, systemd passes ``WATCHDOG_USEC`` and expects ``WATCHDOG=1`` more often than
that; :func:`watchdog_interval` says how often to send it (half the period, as sd_watchdog_enabled(3)
advises). Outside systemd (no $NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``); False when not run by systemd or the socket is gone."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # an abstract socket
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(state.encode("utf-8"))
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between two ``WATCHDOG=1``, or None when systemd asked for no watchdog (for this PID)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        period = int(usec) / 1_000_000
    except ValueError:
        return None
    return period / 2 if period > 0 else None
