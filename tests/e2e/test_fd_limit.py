"""File descriptors: the broker raises its soft limit at start and logs it, warns when the descriptors in
use near the limit (where the listener silently stops accepting), and serves again once they are freed."""

from __future__ import annotations

import resource
import socket
import time
from pathlib import Path

import pika
import pytest

from leveret.server.fds import FdWatch
from tests.helpers import ProcessBroker, wait_for


def test_soft_limit_is_raised_and_nearing_the_limit_is_logged(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"hard file descriptor limit is {hard}: nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # inherited by the broker
    try:
        b = ProcessBroker(tmp_path).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    socks: list[socket.socket] = []
    try:
        assert wait_for(lambda: any("file descriptor limit raised from 256 to" in line for line in b.log))
        assert b.proc is not None
        resource.prlimit(b.proc.pid, resource.RLIMIT_NOFILE, (120, 120))
        for _ in range(115):  # well past 90% of 120; the rest wait in the listen backlog
            s = socket.create_connection(("127.0.0.1", b.port))
            s.sendall(b"AMQP\x00\x00\x09\x01")
            socks.append(s)
        warned = ("of 120 file descriptors in use", "the limit of 120 is reached")  # near it, or at it
        assert wait_for(lambda: any(w in line for line in b.log for w in warned), timeout=15), b.log[-5:]
        for s in socks:
            s.close()
        socks.clear()
        assert wait_for(lambda: any("below the warning level again" in line for line in b.log), timeout=15)
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port, connection_attempts=5,
                                                                 retry_delay=0.5))  # fmt: skip
        ch = conn.channel()
        ch.queue_declare("after")
        conn.close()
        assert b.proc.poll() is None
    finally:
        for s in socks:
            s.close()
        b.terminate()


def test_watch_warns_once_per_crossing(caplog: pytest.LogCaptureFixture) -> None:
    n = [10]
    w = FdWatch(probe=lambda: n[0], limit_of=lambda: 100, interval=1.0)
    now = time.monotonic()
    with caplog.at_level("INFO", logger="leveret.fds"):
        w.check(now)
        n[0] = 95
        w.check(now + 0.5)  # not due yet
        assert not w.high
        w.check(now + 1)
        w.check(now + 2)
        assert w.high and sum("95 of 100" in r.getMessage() for r in caplog.records) == 1
        n[0] = 85
        w.check(now + 3)  # between the levels: still high
        assert w.high
        n[0] = 50
        w.check(now + 4)
        assert not w.high
