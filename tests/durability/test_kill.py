"""kill -9: nothing confirmed is lost, nothing acked comes back (but for the documented window).

Publishers and consumers run in their own processes (:mod:`tests.durability.clients`)
and write what the broker confirmed to a file as they go; the broker is SIGKILLed
mid-stream, started again on the same data dir, and the queue drained.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from tests.durability.conftest import close_quietly, connect, recovery
from tests.helpers import ProcessBroker, wait_for
from tests.wal import wal_end

Start = Callable[..., ProcessBroker]


def client(*args: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.durability.clients", *map(str, args)])


def lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    text = path.read_text()
    return text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]  # drop a torn last line


def drain(b: ProcessBroker, queue: str) -> list[tuple[int, bool]]:
    """Consume ``queue`` to the end, acking; return (id, redelivered) in delivery order."""
    conn = connect(b)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=500)
    got = []
    for method, _props, body in ch.consume(queue, inactivity_timeout=0.3):
        if method is None:
            break
        got.append((int(body), method.redelivered))
        ch.basic_ack(method.delivery_tag)
    close_quietly(conn)
    return got


def kill9(b: ProcessBroker) -> None:
    assert b.proc is not None
    os.kill(b.proc.pid, signal.SIGKILL)
    b.proc.wait(10)


def test_kill9_mid_stream_loses_no_confirmed_publish(start: Start, tmp_path: Path) -> None:
    b = start()
    conn = connect(b)
    conn.channel().queue_declare("stream", durable=True)
    close_quietly(conn)
    confirmed_file = tmp_path / "confirmed"
    for cycle in range(3):
        first = cycle * 1_000_000
        pub = client("publish", b.port, "stream", confirmed_file, first, 1_000_000)
        threshold = len(lines(confirmed_file)) + 1500 + 700 * cycle  # somewhere mid-stream
        wait_for(lambda n=threshold: len(lines(confirmed_file)) >= n, timeout=20)
        kill9(b)
        assert pub.wait(10) == 0
        confirmed = [int(x) for x in lines(confirmed_file) if int(x) >= first]
        t0 = time.monotonic()
        b = start()
        queues, messages, seconds = recovery(b)
        got = drain(b, "stream")
        print(f"cycle {cycle}: {len(confirmed)} confirmed, {messages} recovered in {seconds:.3f} s "
              f"(kill to serving: {time.monotonic() - t0:.2f} s)")  # fmt: skip
        ids = [i for i, _ in got]
        assert queues == 1 and messages == len(got)
        assert len(ids) == len(set(ids)), "duplicates"
        assert ids == sorted(ids), "out of order"
        assert all(i >= first for i in ids), "a message drained in an earlier cycle came back"
        # Nothing was delivered before the kill, but after a crash the broker cannot know that
        # for sure (delivered marks trail deliveries), so every recovered message is flagged.
        assert all(r for _, r in got), "after kill -9 every recovered message is flagged redelivered"
        missing = set(confirmed) - set(ids)
        assert not missing, f"{len(missing)} confirmed messages lost, e.g. {sorted(missing)[:5]}"
        # Unconfirmed but written is fine; anything beyond what was published is not.
        assert ids[-1] < first + len(confirmed) + 256 + 1


def test_kill9_with_consumers_acking(start: Start, tmp_path: Path) -> None:
    """Acks go to the journal in the batch after they arrive: the documented window.

    An ack that was journalled never comes back. The acker proves which acks were
    journalled by publishing a persistent marker on the same connection after them and
    waiting for its confirm (the broker handles one connection's frames in order, and
    the confirm means everything queued to the store before it is fsynced). Acks after
    the last confirmed marker are in the window: those messages may come back, once,
    as they were not settled on disk. After a crash every recovered message is flagged
    redelivered (delivery marks are journalled like acks), so none of them looks new.
    """
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("tasks", durable=True)
    ch.queue_declare("barrier", durable=True)
    close_quietly(conn)
    confirmed_file, acked_file = tmp_path / "confirmed", tmp_path / "acked"
    pub = client("publish", b.port, "tasks", confirmed_file, 0, 1_000_000)
    ackers = [client("ack", b.port, "tasks", tmp_path / f"acked{n}") for n in range(2)]
    wait_for(lambda: len(lines(confirmed_file)) >= 3000, timeout=20)
    wait_for(lambda: sum(len(lines(tmp_path / f"acked{n}")) for n in range(2)) >= 500, timeout=10)
    kill9(b)
    assert pub.wait(10) == 0
    for a in ackers:
        assert a.wait(10) == 0
    confirmed = {int(x) for x in lines(confirmed_file)}
    durably_acked: set[int] = set()
    window: set[int] = set()
    for n in range(2):
        pending: list[int] = []
        for line in lines(tmp_path / f"acked{n}"):
            if line == "b":
                durably_acked.update(pending)
                pending = []
            else:
                pending.append(int(line.split()[1]))
        window.update(pending)
    del acked_file
    b = start()
    got = drain(b, "tasks")
    ids = [i for i, _ in got]
    back = set(ids)
    print(f"{len(confirmed)} confirmed, {len(durably_acked)} acked before a marker, {len(window)} in the window, "
          f"{len(back & window)} of those came back ({sum(r for i, r in got if i in window)} flagged redelivered), "
          f"{len(got)} drained")  # fmt: skip
    assert len(ids) == len(back), "duplicates"
    assert ids == sorted(ids), "out of order"
    assert not back & durably_acked, "a message whose ack was journalled came back"
    missing = confirmed - back - durably_acked - window
    assert not missing, f"{len(missing)} confirmed messages lost, e.g. {sorted(missing)[:5]}"
    # After the crash, everything recovered is flagged redelivered: an acked message that comes
    # back (the window) never looks like a first delivery.
    assert all(r for _, r in got), "a recovered message came back with redelivered=false after kill -9"


def test_durable_declare_survives_kill9_right_after_the_ok(start: Start) -> None:
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.exchange_declare("dx", "direct", durable=True)
    ch.queue_declare("dq", durable=True)
    ch.queue_bind("dq", "dx", "rk")
    kill9(b)  # right after bind-ok: no later sync, no graceful close
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.exchange_declare("dx", "direct", passive=True)
    ch.queue_declare("dq", passive=True)
    ch.confirm_delivery()
    ch.basic_publish("dx", "rk", b"routed", pika.BasicProperties(delivery_mode=2))
    assert ch.basic_get("dq", auto_ack=True)[2] == b"routed"
    close_quietly(conn)


def test_a_committed_transaction_survives_kill9_right_after_commit_ok(start: Start) -> None:
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("txq", durable=True)
    ch.tx_select()
    for i in range(20):
        ch.basic_publish("", "txq", b"%d" % i, pika.BasicProperties(delivery_mode=2))
    ch.tx_commit()
    kill9(b)  # right after commit-ok: no later sync, no graceful close
    b = start()
    conn = connect(b)
    ch = conn.channel()
    got = [ch.basic_get("txq", auto_ack=True)[2] for _ in range(21)]
    assert got == [b"%d" % i for i in range(20)] + [None]
    close_quietly(conn)


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_torn_wal_tail_recovers(start: Start, data_dir: Path, damage: str) -> None:
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("torn", durable=True)
    ch.confirm_delivery()
    for i in range(200):  # one commit (one fsync) per message: many commits in the WAL
        ch.basic_publish("", "torn", str(i).encode(), pika.BasicProperties(delivery_mode=2))
    kill9(b)
    wal = data_dir / "leveret.db-wal"
    size = wal_end(wal)  # the file is preallocated: its frames end before it does
    assert size > 100_000
    with open(wal, "r+b") as f:
        if damage == "truncate":
            f.truncate(size - 1000)  # the last frame is torn (and the zeros after it gone)
        else:
            f.seek(size - 3000)  # garbage over the last frame(s): checksums no longer match
            f.write(os.urandom(3000))
    b = start()
    queues, messages, _ = recovery(b)
    got = drain(b, "torn")
    assert queues == 1
    assert [i for i, _ in got] == list(range(messages))  # a prefix: only the torn tail is dropped
    assert 190 <= messages < 200


def test_second_broker_on_the_same_data_dir_exits_naming_the_holder(start: Start, data_dir: Path) -> None:
    b = start()
    assert b.proc is not None
    t0 = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "leveret", "server", "--amqp-port", "0", "--http-port", "off",
         "--prometheus-port", "off", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert second.returncode != 0
    out = second.stdout + second.stderr
    assert f"in use by process {b.proc.pid}" in out
    assert "Traceback" not in out
    assert time.monotonic() - t0 < 10
    # The first broker is unharmed.
    conn = connect(b)
    conn.channel().queue_declare("still-here", durable=True)
    close_quietly(conn)
    with pytest.raises(ChannelClosedByBroker):
        conn = connect(b)
        conn.channel().queue_declare("nope", passive=True)
