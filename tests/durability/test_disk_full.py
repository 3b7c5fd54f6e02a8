"""A real disk that fills up: a ``leveret server`` subprocess on a 64 MiB tmpfs and a ballast file.

The broker must hold what it could not write, say so (health check 503, alarm, log), and
write it and confirm it once space returns; never confirm what is not on disk, never
write a clean-stop marker over writes it lost. Needs root to mount the tmpfs (CI runs as
root); skipped with that reason otherwise.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
import pytest

from leveret.app import CLEAN_STOP_MARKER
from tests.durability.conftest import close_quietly, connect, recovery
from tests.durability.test_kill import kill9
from tests.helpers import ProcessBroker, in_thread, wait_for
from tests.http_client import http_request

Start = Callable[..., ProcessBroker]
PERSISTENT = pika.BasicProperties(delivery_mode=2)
LIMIT = "4000000"  # the repro: --disk-free-limit 4000000 on 64 MiB
BIG = 6_000_000  # more than the disk has left once the ballast is in: this write fails


@pytest.fixture
def data_dir(small_disk: Path) -> Path:
    """Overrides the durability suite's: the brokers of ``start`` are killed before the unmount."""
    return small_disk / "data"


def free(disk: Path) -> int:
    st = os.statvfs(disk)
    return st.f_bavail * st.f_frsize


def fill(disk: Path, leave: int) -> Path:
    """A ballast file that leaves about ``leave`` bytes free."""
    ballast = disk / "ballast"
    with open(ballast, "ab") as f:
        f.write(bytes(max(0, free(disk) - leave)))
    return ballast


def health(b: ProcessBroker) -> tuple[int, Any]:
    status, body, _ = http_request(f"http://127.0.0.1:{b.http_port}/api/healthchecks/node", "GET")
    return status, body


def drain(b: ProcessBroker, queue: str) -> list[tuple[bytes, bool]]:
    conn = connect(b)
    ch = conn.channel()
    got = []
    for method, _props, body in ch.consume(queue, inactivity_timeout=0.5):
        if method is None:
            break
        got.append((body[:20], method.redelivered))
        ch.basic_ack(method.delivery_tag)
    close_quietly(conn)
    return got


def stall(b: ProcessBroker, disk: Path) -> tuple[pika.BlockingConnection, threading.Thread, list[object], Path]:
    """Leave 1 MB free and publish BIG with a confirm: the write fails, the store holds it.

    The alarm probe sees 1 MB + the unused WAL reservation (4 MiB on this disk), above the
    limit, so it is the write that finds the disk full, as in the issue.
    """
    conn = connect(b)
    ch = conn.channel()
    ch.confirm_delivery()
    ballast = fill(disk, 1_000_000)
    t, out = in_thread(lambda: ch.basic_publish("", "q", b"big" + bytes(BIG), PERSISTENT))
    wait_for(lambda: health(b)[0] == 503, timeout=10)
    return conn, t, out, ballast


def test_a_full_disk_holds_confirms_until_space_returns_and_loses_nothing(start: Start, small_disk: Path) -> None:
    b = start("--disk-free-limit", LIMIT)
    conn = connect(b)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("q", durable=True)
    for i in range(10):
        ch.basic_publish("", "q", b"m%d" % i, PERSISTENT)
    close_quietly(conn)

    pub, t_pub, published, ballast = stall(b, small_disk)
    status, body = health(b)
    # BIG goes to a segment file: the write() of it finds the disk full (SQLite would say "disk is full").
    assert status == 503 and body["status"] == "failed" and "No space left" in body["reason"], body
    # A durable declare from another connection waits for the disk too (it is not lost, not refused).
    other = connect(b)
    t_decl, declared = in_thread(lambda: other.channel().queue_declare("made-while-full", durable=True))
    # Consumers go on while the store cannot write.
    cons = connect(b)
    cch = cons.channel()
    method, _, taken = cch.basic_get("q", auto_ack=True)
    assert taken == b"m0" and method is not None and not method.redelivered
    time.sleep(1.0)
    assert published == [] and declared == [], "nothing is confirmed before it is written"
    log = "".join(b.log)
    assert "lack of disk space" in log and "disk alarm set" in log

    ballast.unlink()
    t_pub.join(15)
    t_decl.join(15)
    assert published == [None], published  # basic_publish returned: the broker confirmed it
    assert len(declared) == 1 and not isinstance(declared[0], Exception), declared
    wait_for(lambda: health(b) == (200, {"status": "ok"}), timeout=10)
    wait_for(lambda: "writes resumed" in "".join(b.log), timeout=10)  # the log line may trail the health check
    # Confirms keep coming after the stall (the store is not dead).
    pch = pub.channel()
    pch.confirm_delivery()
    pch.basic_publish("", "q", b"after", PERSISTENT)
    for c in (pub, other, cons):
        close_quietly(c)

    assert b.terminate() == 0
    assert (small_disk / "data" / CLEAN_STOP_MARKER).exists(), "everything was written: a clean stop"
    b = start("--disk-free-limit", LIMIT)
    got = drain(b, "q")
    expected = [(b"m%d" % i, False) for i in range(1, 10)] + [(b"big" + bytes(17), False), (b"after", False)]
    assert got == expected
    check = connect(b)
    check.channel().queue_declare("made-while-full", durable=True, passive=True)
    close_quietly(check)


def test_no_clean_stop_marker_over_a_store_that_could_not_write(start: Start, small_disk: Path) -> None:
    b = start("--disk-free-limit", LIMIT)
    conn = connect(b)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("q", durable=True)
    ch.basic_publish("", "q", b"m0", PERSISTENT)
    close_quietly(conn)

    _pub, t_pub, published, ballast = stall(b, small_disk)
    cons = connect(b)
    method, _, taken = cons.channel().basic_get("q", auto_ack=True)  # its removal cannot be written
    assert taken == b"m0" and method is not None and not method.redelivered
    close_quietly(cons)
    assert b.terminate() == 0  # still no space: the store gives up what it holds
    t_pub.join(10)
    assert len(published) == 1 and isinstance(published[0], Exception), "closed, never confirmed"
    assert not (small_disk / "data" / CLEAN_STOP_MARKER).exists()
    log = "".join(b.log)
    assert "were NOT written" in log and "not a clean stop" in log

    ballast.unlink()
    b = start("--disk-free-limit", LIMIT)
    # m0 was taken, but that was never written: it comes back, flagged as possibly seen.
    assert drain(b, "q") == [(b"m0", True)]


def test_default_limit_on_a_64_mib_disk_starts_without_alarm_and_takes_publishes(
    start: Start, small_disk: Path
) -> None:
    b = start()  # default --disk-free-limit 50 MB
    time.sleep(1.2)  # the alarm's first probes have run
    conn = connect(b, blocked_connection_timeout=5)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("q", durable=True)
    for i in range(20):
        ch.basic_publish("", "q", bytes(100_000) + b"%d" % i, PERSISTENT)  # confirmed, never blocked
    close_quietly(conn)
    assert "alarm set" not in "".join(b.log)
    assert health(b) == (200, {"status": "ok"})


def test_a_broker_killed_with_a_full_wal_starts_again_on_a_full_disk(start: Start, small_disk: Path) -> None:
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("q", durable=True)
    for i in range(20):  # 600 KB: in the WAL (below the segment threshold), not checkpointed yet
        ch.basic_publish("", "q", b"%d " % i + bytes(30_000), PERSISTENT)
    close_quietly(conn)
    kill9(b)
    fill(small_disk, 0)  # recovery's checkpoint cannot grow the main file
    b = start()
    log = "".join(b.log)
    assert "no disk space to checkpoint" in log
    assert recovery(b)[:2] == (1, 20)
    got = drain(b, "q")  # consumers are served (their acks fit in the WAL already allocated)
    assert [int(body.split(b" ")[0]) for body, _ in got] == list(range(20))
