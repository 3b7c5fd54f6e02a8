"""Durable declares wait for the store's fsync; the disk free-space alarm blocks publishers.

A broker in a thread, so the test can hold the store's sync callbacks and replace
the free-space probe, instead of filling a disk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
from pamqp import commands as C

from tests.durability.conftest import close_quietly
from tests.e2e.raw import RawClient
from tests.helpers import ThreadBroker, wait_for


class HeldSyncs:
    """Wraps a store: ``sync`` callbacks wait until :meth:`release`."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.held: list[Callable[[], None]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def sync(self, callback: Callable[[], None]) -> None:
        self.held.append(callback)

    def release(self) -> None:
        held, self.held = self.held, []
        for cb in held:
            cb()


@pytest.fixture
def tbroker() -> Iterator[ThreadBroker]:
    b = ThreadBroker().start()
    yield b
    b.stop()


def _params(port: int) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host="127.0.0.1", port=port, credentials=pika.PlainCredentials("guest", "guest"), socket_timeout=5,
        blocked_connection_timeout=20,
    )  # fmt: skip


def test_durable_declare_ok_waits_for_the_store(tbroker: ThreadBroker) -> None:
    assert tbroker.app.broker is not None
    held = HeldSyncs(tbroker.app.broker.store)
    tbroker.call(setattr, tbroker.app.broker, "store", held)
    conn = pika.BlockingConnection(_params(tbroker.port))
    ch = conn.channel()
    ch.queue_declare("transient", durable=False)  # no sync: answered at once
    assert held.held == []
    done = threading.Event()

    def declare() -> None:
        ch.exchange_declare("dx", "fanout", durable=True)
        done.set()

    t = threading.Thread(target=declare)
    t.start()
    wait_for(lambda: held.held, timeout=5)
    assert not done.wait(0.3), "declare-ok was sent before the store was synced"
    tbroker.call(held.release)
    t.join(5)
    assert done.is_set()
    close_quietly(conn)


def test_input_after_a_durable_declare_waits_in_order_and_nowait_is_not_held(tbroker: ThreadBroker) -> None:
    assert tbroker.app.broker is not None
    held = HeldSyncs(tbroker.app.broker.store)
    tbroker.call(setattr, tbroker.app.broker, "store", held)
    with RawClient(tbroker.port) as c:
        c.handshake()
        c.open_channel(1)
        # nowait: nothing to hold, the next reply comes at once
        c.send(1, C.Queue.Declare(queue="nw", durable=True, nowait=True))
        c.send(1, C.Queue.Declare(queue="t1"))
        assert c.expect(C.Queue.DeclareOk).queue == "t1"
        tbroker.call(held.release)
        # pipelined: the durable declare's -ok comes first, and only after the sync
        c.send(1, C.Queue.Declare(queue="d", durable=True))
        c.send(1, C.Queue.Declare(queue="t2"))
        c.send(1, C.Queue.Bind(queue="d", exchange="amq.direct", routing_key="k"))
        wait_for(lambda: held.held, timeout=5)
        with pytest.raises((TimeoutError, OSError)):
            c.recv(timeout=0.3)
        tbroker.call(held.release)
        assert c.expect(C.Queue.DeclareOk).queue == "d"
        assert c.expect(C.Queue.DeclareOk).queue == "t2"
        wait_for(lambda: held.held, timeout=5)  # the bind of a durable queue to a durable exchange
        tbroker.call(held.release)
        c.expect(C.Queue.BindOk)


def test_disk_alarm_blocks_publishers_and_serves_consumers(
    tbroker: ThreadBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="leveret.alarms")
    assert tbroker.app.server is not None
    server = tbroker.app.server
    free = [10**12]
    tbroker.call(setattr, server.disk_alarm, "probe", lambda: free[0])
    events: list[str] = []
    pub = pika.BlockingConnection(_params(tbroker.port))
    pub.add_on_connection_blocked_callback(lambda _c, f: events.append(f"blocked: {f.method.reason}"))
    pub.add_on_connection_unblocked_callback(lambda _c, _f: events.append("unblocked"))
    pch = pub.channel()
    pch.queue_declare("q")
    pch.basic_publish("", "q", b"before")
    cons = pika.BlockingConnection(_params(tbroker.port))
    cch = cons.channel()
    assert cch.basic_get("q", auto_ack=True)[2] == b"before"

    free[0] = 1000  # below the 50 MB default limit
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        pub.process_data_events(0.1)
    assert events == ["blocked: low on disk"]
    assert server.disk_alarm.active

    pch.basic_publish("", "q", b"during")  # sent, but the broker does not read it
    cch.basic_qos(prefetch_count=10)
    got: list[bytes] = []
    cch.basic_consume("q", lambda ch, m, _p, body: (got.append(body), ch.basic_ack(m.delivery_tag)))
    cons.process_data_events(1.0)
    assert got == []  # nothing came in from the blocked publisher
    # A connection that has not published is not blocked: it declares, gets, acks.
    other = pika.BlockingConnection(_params(tbroker.port))
    other.channel().queue_declare("q2")
    close_quietly(other)

    free[0] = 10**12
    deadline = time.monotonic() + 5
    while "unblocked" not in events and time.monotonic() < deadline:
        pub.process_data_events(0.1)
    assert events == ["blocked: low on disk", "unblocked"]
    alarm_logs = [r.getMessage() for r in caplog.records if r.name == "leveret.alarms"]
    assert len(alarm_logs) == 2 and "alarm set" in alarm_logs[0] and "alarm cleared" in alarm_logs[1]
    wait_for(lambda: (cons.process_data_events(0.05), got)[1], timeout=5)
    assert got == [b"during"]
    pch.confirm_delivery()
    pch.basic_publish("", "q", b"after")  # confirmed: publishing resumed
    wait_for(lambda: (cons.process_data_events(0.05), len(got) == 2)[1], timeout=5)
    assert got == [b"during", b"after"]
    close_quietly(pub)
    close_quietly(cons)
