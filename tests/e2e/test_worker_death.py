"""A worker dies with unacked deliveries: they return to the queue and go to another worker at once.

The four ways: its channel closes, its connection closes, its TCP connection drops (RST or FIN)
without any AMQP close, and its heartbeats stop.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from pamqp import commands as C

from tests.e2e.raw import RawClient
from tests.e2e.test_basic import Collector, queue_state, wait_got
from tests.helpers import ThreadBroker, wait_for

pytestmark = pytest.mark.timeout(30)

N = 5
BODIES = [f"task {i}".encode() for i in range(N)]


def _survivor(connect: Any) -> tuple[Any, Any, Collector]:
    """A second worker, already consuming (prefetch 10) before the first one dies."""
    c = connect()
    ch = c.channel()
    ch.basic_qos(prefetch_count=10)
    col = Collector()
    ch.basic_consume("work", col)
    return c, ch, col


def _expect_redelivered_to(
    survivor: tuple[Any, Any, Collector], broker: ThreadBroker, within: float = 3.0
) -> float:
    c, ch, col = survivor
    t0 = time.monotonic()
    wait_got(c, col, N, timeout=within)
    elapsed = time.monotonic() - t0
    assert [(b, r) for _, _, r, b in col.got] == [(b, True) for b in BODIES]
    ch.basic_ack(0, multiple=True)
    assert wait_for(lambda: queue_state(broker, "work") == (0, 0))
    return elapsed


def _pika_worker_holding_all(connect: Any) -> tuple[Any, Any, Collector]:
    c = connect()
    ch = c.channel()
    ch.queue_declare("work", durable=True)
    col = Collector()
    ch.basic_consume("work", col)
    for b in BODIES:
        ch.basic_publish("", "work", b)
    wait_got(c, col, N)
    assert all(not r for _, _, r, _ in col.got)
    return c, ch, col


def test_channel_close_requeues_to_other_worker(connect: Any, broker: ThreadBroker) -> None:
    c, ch, _ = _pika_worker_holding_all(connect)
    survivor = _survivor(connect)
    assert queue_state(broker, "work") == (0, N)
    ch.close()
    assert _expect_redelivered_to(survivor, broker) < 1.0
    assert c.is_open


def test_channel_closed_by_error_requeues(connect: Any, broker: ThreadBroker) -> None:
    c, ch, _ = _pika_worker_holding_all(connect)
    survivor = _survivor(connect)
    ch.basic_ack(999)  # 406 closes the channel; its deliveries go back
    _expect_redelivered_to(survivor, broker)


def test_connection_close_requeues_to_other_worker(connect: Any, broker: ThreadBroker) -> None:
    c, _, _ = _pika_worker_holding_all(connect)
    survivor = _survivor(connect)
    c.close()
    assert _expect_redelivered_to(survivor, broker) < 1.0


def _raw_worker_holding_all(broker: ThreadBroker, connect: Any, heartbeat: int = 0) -> RawClient:
    pub = connect().channel()
    pub.queue_declare("work", durable=True)
    raw = RawClient(broker.port)
    raw.handshake(heartbeat=heartbeat)
    raw.open_channel(1)
    raw.send(1, C.Basic.Consume(queue="work", consumer_tag="doomed"))
    raw.expect(C.Basic.ConsumeOk)
    for b in BODIES:
        pub.basic_publish("", "work", b)
    for b in BODIES:
        deliver, _, body = raw.recv_message()
        assert (deliver.consumer_tag, deliver.redelivered, body) == ("doomed", False, b)
    assert queue_state(broker, "work") == (0, N)
    return raw


def test_socket_reset_without_close_requeues(connect: Any, broker: ThreadBroker) -> None:
    raw = _raw_worker_holding_all(broker, connect)
    survivor = _survivor(connect)
    raw.kill()  # SO_LINGER 0: RST, no AMQP close
    assert _expect_redelivered_to(survivor, broker) < 1.0


def test_socket_fin_without_close_requeues(connect: Any, broker: ThreadBroker) -> None:
    raw = _raw_worker_holding_all(broker, connect)
    survivor = _survivor(connect)
    raw.sock.shutdown(socket.SHUT_RDWR)  # FIN, no AMQP close
    try:
        assert _expect_redelivered_to(survivor, broker) < 1.0
    finally:
        raw.close()


def test_pika_socket_killed_requeues(connect: Any, broker: ThreadBroker) -> None:
    """A pika worker whose TCP socket is shut down under it: FIN, no AMQP close (RST: see the raw test)."""
    c, _, _ = _pika_worker_holding_all(connect)
    survivor = _survivor(connect)
    c._impl._transport._sock.shutdown(socket.SHUT_RDWR)
    assert _expect_redelivered_to(survivor, broker) < 1.0


def test_heartbeat_timeout_requeues(connect: Any, broker: ThreadBroker) -> None:
    raw = _raw_worker_holding_all(broker, connect, heartbeat=1)
    survivor = _survivor(connect)
    try:
        # The worker hangs: it says nothing. After two missed heartbeats (~2 s) the broker drops it.
        elapsed = _expect_redelivered_to(survivor, broker, within=5.0)
        assert 1.0 <= elapsed <= 4.0, elapsed
    finally:
        raw.close()


@pytest.mark.parametrize("how", ["channel", "connection", "socket"])
def test_deliveries_spread_to_remaining_workers_round_robin(
    connect: Any, broker: ThreadBroker, how: str
) -> None:
    """Two survivors with prefetch 1 each: the dead worker's backlog is shared as they ack."""
    c, ch, _ = _pika_worker_holding_all(connect)
    survivors = []
    for _ in range(2):
        sc = connect()
        sch = sc.channel()
        sch.basic_qos(prefetch_count=1)
        col = Collector()
        sch.basic_consume("work", col)
        survivors.append((sc, sch, col))
    kill: dict[str, Callable[[], None]] = {
        "channel": ch.close,
        "connection": c.close,
        "socket": lambda: c._impl._transport._sock.shutdown(socket.SHUT_RDWR),
    }
    kill[how]()
    got: list[bytes] = []
    deadline = time.monotonic() + 5
    while len(got) < N and time.monotonic() < deadline:
        for sc, sch, col in survivors:
            sc.process_data_events(time_limit=0.02)
            while col.got:
                _, tag, redelivered, body = col.got.pop(0)
                assert redelivered
                got.append(body)
                sch.basic_ack(tag)
    assert sorted(got) == BODIES
    assert wait_for(lambda: queue_state(broker, "work") == (0, 0))
