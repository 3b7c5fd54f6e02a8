"""Backpressure: a consumer that does not read, a memory high watermark, a lagging store.

Memory stays bounded (the broker stops writing to a full socket; messages wait in their queue) and
publishers are paused while an alarm is on, while consumers keep being served.
"""

from __future__ import annotations

import time
from typing import Any

import pika
import pytest
from pamqp import commands as C

from tests.e2e.conftest import params
from tests.e2e.raw import RawClient
from tests.helpers import ThreadBroker, wait_for
from tests.witness import Witness

pytestmark = pytest.mark.timeout(90)

N = 20_000
BODY = b"x" * 1024


def server_conn(broker: ThreadBroker, product: str) -> Any:
    conns = broker.call(lambda: list(broker.app.server.connections))  # type: ignore[union-attr]
    return next(c for c in conns if c.client_properties.get("product") == product)


def queue_depth(broker: ThreadBroker, name: str) -> tuple[int, int]:
    def depth() -> tuple[int, int]:
        q = broker.app.broker.vhosts["/"].queues[name]  # type: ignore[union-attr]
        return len(q.ready), len(q.consumers)

    return broker.call(depth)  # type: ignore[no-any-return]


def test_consumer_that_does_not_read_is_paused_and_its_messages_stay_queued(broker: ThreadBroker) -> None:
    pub = pika.BlockingConnection(params(broker.port))
    pch = pub.channel()
    pch.queue_declare("slow")
    with Witness(broker.port), RawClient(broker.port, rcvbuf=16384) as c:
        c.handshake()
        c.open_channel(1)
        c.send(1, C.Basic.Consume(queue="slow", consumer_tag="lazy", no_ack=True))
        c.expect(C.Basic.ConsumeOk)
        for _ in range(N):  # the consumer reads nothing from here on
            pch.basic_publish("", "slow", BODY)
        srv = server_conn(broker, "leveret-e2e-raw")
        wait_for(lambda: srv.paused, timeout=10)
        time.sleep(0.5)
        ready, consumers = queue_depth(broker, "slow")
        buffered = broker.call(lambda: srv.transport.get_write_buffer_size())
        assert consumers == 1 and ready > N // 2, ready  # most messages wait in the queue, not in buffers
        assert buffered < 2 * 1024 * 1024, buffered  # the connection's output is bounded
        assert broker.call(lambda: all(ch.model.paused for ch in srv.channels.values()))
        # now read everything: writing resumes and every message arrives once
        got = 0
        deadline = time.monotonic() + 30
        while got < N:
            assert time.monotonic() < deadline, f"only {got} of {N} delivered; broker: {_state(broker, srv)}"
            _, f = c.recv(timeout=10)
            got += isinstance(f, C.Basic.Deliver)
        assert not srv.paused
        assert queue_depth(broker, "slow")[0] == 0
    pub.close()


def _state(broker: ThreadBroker, srv: Any) -> dict[str, Any]:
    """What the broker holds for a stalled consumer connection (for the failure message)."""

    def read() -> dict[str, Any]:
        t = srv.transport
        q = broker.app.broker.vhosts["/"].queues["slow"]  # type: ignore[union-attr]
        return {
            "paused": srv.paused, "channels_paused": [ch.model.paused for ch in srv.channels.values()],
            "ready": len(q.ready), "can_take": [c.can_take() for c in q.consumers],
            "transport_buffer": t.get_write_buffer_size(), "out_bytes": srv.out_bytes,
            "flush_scheduled": srv.flush_scheduled, "closing": t.is_closing(),
        }  # fmt: skip

    return broker.call(read)  # type: ignore[no-any-return]


def _blocked_events(conn: pika.BlockingConnection) -> list[str]:
    events: list[str] = []
    conn.add_on_connection_blocked_callback(lambda _c, m: events.append(f"blocked: {m.method.reason}"))
    conn.add_on_connection_unblocked_callback(lambda _c, m: events.append("unblocked"))
    return events


@pytest.mark.parametrize("source", ["memory", "backlog"])
def test_alarm_blocks_publishers_and_consumers_keep_being_served(broker: ThreadBroker, source: str) -> None:
    server = broker.app.server
    assert server is not None
    consumer = pika.BlockingConnection(params(broker.port))
    cch = consumer.channel()
    cch.queue_declare("work")
    pub = pika.BlockingConnection(params(broker.port))
    events = _blocked_events(pub)
    pch = pub.channel()
    for i in range(10):
        pch.basic_publish("", "work", str(i).encode())
    wait_for(lambda: queue_depth(broker, "work")[0] == 10)

    # the alarm goes off: memory above the watermark, or the store lagging
    if source == "memory":
        broker.call(setattr, server.memory_alarm, "limit", 1)
    else:
        broker.call(setattr, server.backlog_alarm, "probe", lambda: 10**9)
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        pub.process_data_events(time_limit=0.1)
    assert events == [f"blocked: {'low on memory' if source == 'memory' else 'store backlog'}"]
    for i in range(10, 20):
        pch.basic_publish("", "work", str(i).encode())  # written to the socket, but not read by the broker
    time.sleep(0.5)
    assert queue_depth(broker, "work")[0] == 10
    got = [int(cch.basic_get("work", auto_ack=True)[2]) for _ in range(10)]  # consumers are still served
    assert got == list(range(10))

    # the alarm clears: unblocked, and what was held is read
    if source == "memory":
        broker.call(setattr, server.memory_alarm, "limit", 1 << 50)
    else:
        broker.call(setattr, server.backlog_alarm, "probe", lambda: 0)
    deadline = time.monotonic() + 5
    while len(events) < 2 and time.monotonic() < deadline:
        pub.process_data_events(time_limit=0.1)
    assert events[1:] == ["unblocked"]
    wait_for(lambda: queue_depth(broker, "work")[0] == 10)
    assert [int(cch.basic_get("work", auto_ack=True)[2]) for _ in range(10)] == list(range(10, 20))
    pub.close()
    consumer.close()


def test_memory_watermark_setting() -> None:
    from leveret.server.alarms import memory_limit

    assert memory_limit(0) == 0
    assert memory_limit(5_000_000) == 5_000_000
    total = memory_limit(1.0)
    assert total > 0 and abs(memory_limit(0.4) - 0.4 * total) < 4096
