"""Consumer acknowledgement timeout over real sockets (pika), with a short timeout."""

from __future__ import annotations

import threading
import time
from typing import Any

import pika
import pika.exceptions
import pytest

from tests.helpers import ThreadBroker

TIMEOUT_MS = 1500


def _conn(b: ThreadBroker) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))


def _wait_closed(conn: pika.BlockingConnection, ch: Any, seconds: float = 5.0) -> tuple[Any, float]:
    """Pump the connection until the broker closes ``ch``; returns (ChannelClosedByBroker, when)."""
    closed: list[tuple[Any, float]] = []
    ch._impl.add_on_close_callback(lambda _ch, exc: closed.append((exc, time.monotonic())))
    deadline = time.monotonic() + seconds
    while not closed and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.02)
    assert closed, "channel was not closed by the broker"
    exc, when = closed[0]
    assert isinstance(exc, pika.exceptions.ChannelClosedByBroker)
    return exc, when


def test_stuck_worker_is_closed_and_its_task_goes_to_another(broker_factory: Any) -> None:
    b = broker_factory(consumer_timeout=TIMEOUT_MS)
    stuck = _conn(b)
    sch = stuck.channel()
    sch.queue_declare("tasks", durable=True)
    sch.basic_qos(prefetch_count=1)
    got: list[tuple[bytes, float]] = []
    sch.basic_consume("tasks", lambda ch, m, p, body: got.append((body, time.monotonic())))
    other_ch_on_same_conn = stuck.channel()  # other channels of the connection keep working

    pub = _conn(b)
    pub.channel().basic_publish("", "tasks", b"task-1")
    stuck.process_data_events(time_limit=0.5)
    assert [g[0] for g in got] == [b"task-1"]
    delivered_at = got[0][1]

    exc, closed_at = _wait_closed(stuck, sch)
    assert exc.reply_code == 406
    assert exc.reply_text == (
        f"PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: {TIMEOUT_MS} ms. "
        "This timeout value can be configured, see consumers doc guide to learn more"
    )
    delay = closed_at - delivered_at - TIMEOUT_MS / 1000
    assert 0 <= delay < 1.0, f"closed {delay:.3f}s after the deadline"

    # the same connection's other channel still works
    other_ch_on_same_conn.queue_declare("side")
    # another worker gets the task, redelivered
    worker = _conn(b)
    wch = worker.channel()
    method, _, body = wch.basic_get("tasks")
    assert body == b"task-1" and method.redelivered
    wch.basic_ack(method.delivery_tag)
    for c in (stuck, pub, worker):
        c.close()


def test_worker_that_acks_in_time_is_never_closed(broker_factory: Any) -> None:
    b = broker_factory(consumer_timeout=800)
    conn = _conn(b)
    ch = conn.channel()
    ch.queue_declare("tasks")
    ch.basic_qos(prefetch_count=1)
    done: list[bytes] = []

    def work(c: Any, m: Any, p: Any, body: bytes) -> None:
        time.sleep(0.3)  # well inside the timeout, many times over
        c.basic_ack(m.delivery_tag)
        done.append(body)

    ch.basic_consume("tasks", work)
    for i in range(6):
        ch.basic_publish("", "tasks", b"%d" % i)
    deadline = time.monotonic() + 10
    while len(done) < 6 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    assert len(done) == 6 and ch.is_open
    conn.close()


def test_per_queue_timeout_argument_wins_when_smaller(broker_factory: Any) -> None:
    b = broker_factory(consumer_timeout=60_000)
    conn = _conn(b)
    ch = conn.channel()
    ch.queue_declare("short", arguments={"x-consumer-timeout": 500})
    ch.basic_publish("", "short", b"x")
    ch.basic_consume("short", lambda *a: None)
    exc, _ = _wait_closed(conn, ch)
    assert "Timeout value used: 500 ms" in exc.reply_text
    conn.close()


def test_per_consumer_timeout_argument(broker_factory: Any) -> None:
    b = broker_factory(consumer_timeout=None)
    conn = _conn(b)
    ch = conn.channel()
    ch.queue_declare("q")
    ch.basic_publish("", "q", b"x")
    ch.basic_consume("q", lambda *a: None, arguments={"x-consumer-timeout": 400})
    exc, _ = _wait_closed(conn, ch)
    assert "Timeout value used: 400 ms" in exc.reply_text
    conn.close()


def test_bad_timeout_argument_is_refused_at_declare(broker: ThreadBroker) -> None:
    conn = _conn(broker)
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.queue_declare("q", arguments={"x-consumer-timeout": "60000"})
    assert info.value.reply_code == 406 and "x-consumer-timeout" in info.value.reply_text
    ch = conn.channel()
    ch.queue_declare("q")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.basic_consume("q", lambda *a: None, arguments={"x-consumer-timeout": -5})
    assert info.value.reply_code == 406 and "x-consumer-timeout" in info.value.reply_text
    conn.close()


def test_no_ack_consumers_are_exempt(broker_factory: Any) -> None:
    b = broker_factory(consumer_timeout=300)
    conn = _conn(b)
    ch = conn.channel()
    ch.queue_declare("q")
    got: list[bytes] = []
    ch.basic_consume("q", lambda c, m, p, body: got.append(body), auto_ack=True)
    ch.basic_publish("", "q", b"x")
    for _ in range(20):
        conn.process_data_events(time_limit=0.05)
    assert got == [b"x"] and ch.is_open
    conn.close()


def test_cancel_mode_cancels_consumer_and_keeps_channel(broker_factory: Any) -> None:
    b = broker_factory(consumer_timeout=500, consumer_timeout_action="cancel")
    conn = _conn(b)
    ch = conn.channel()
    ch.queue_declare("q")
    cancelled = threading.Event()
    ch.add_on_cancel_callback(lambda frame: cancelled.set())
    ch.basic_consume("q", lambda *a: None)
    ch.basic_publish("", "q", b"task")
    for _ in range(60):
        conn.process_data_events(time_limit=0.05)
        if cancelled.is_set():
            break
    assert cancelled.is_set()
    assert ch.is_open
    method, _, body = ch.basic_get("q")  # requeued, same channel still usable
    assert body == b"task" and method.redelivered
    ch.basic_ack(method.delivery_tag)
    conn.close()
