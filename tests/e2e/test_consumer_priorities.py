"""Consumer priorities (`x-priority` on basic.consume), as RabbitMQ 3.10 (reference 6.6): a message
goes to the highest-priority consumer that has room in its prefetch window, never waits for a full
one, and equal priorities take turns. AMQP only: bench/conformance_vs_rabbitmq.py runs it against
RabbitMQ too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika
import pytest

from tests.helpers import wait_for

Connect = Callable[..., pika.BlockingConnection]


def consumer(connect: Connect, queue: str, priority: int | None, prefetch: int = 1) -> tuple[Any, list[Any]]:
    conn = connect()
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    got: list[Any] = []
    args = None if priority is None else {"x-priority": priority}
    ch.basic_consume(queue, lambda c, m, p, b: got.append((m.delivery_tag, b)), arguments=args)
    return conn, got


def test_highest_priority_with_room_first_as_rabbitmq_probed(connect: Connect) -> None:
    """RabbitMQ's probe: consumers at -5, none (0) and 10, prefetch 1 each, 5 messages: 10 gets m0,
    0 gets m1, -5 gets m2; after 10 acks, it gets m3."""
    setup = connect()
    sch = setup.channel()
    sch.queue_declare("cp")
    low, got_low = consumer(connect, "cp", -5)
    mid, got_mid = consumer(connect, "cp", None)
    high, got_high = consumer(connect, "cp", 10)
    for i in range(5):
        sch.basic_publish("", "cp", b"m%d" % i)

    def pump() -> bool:
        for c in (low, mid, high):
            c.process_data_events(time_limit=0.02)
        return len(got_low) + len(got_mid) + len(got_high) >= 3

    wait_for(pump, timeout=10)
    assert [b for _, b in got_high] == [b"m0"] and [b for _, b in got_mid] == [b"m1"]
    assert [b for _, b in got_low] == [b"m2"]
    for conn in (low, mid, high):
        conn.close()
    setup.close()


def test_after_an_ack_the_highest_priority_gets_the_next(connect: Connect) -> None:
    setup = connect()
    sch = setup.channel()
    sch.queue_declare("cp2")
    conns = []
    chans: dict[int, Any] = {}
    got: dict[int, list[bytes]] = {-5: [], 0: [], 10: []}
    for prio in (-5, 0, 10):
        conn = connect()
        ch = conn.channel()
        ch.basic_qos(prefetch_count=1)
        ch.basic_consume("cp2", lambda c, m, p, b, prio=prio: got[prio].append(b) or chans.__setitem__(prio, (c, m)),
                         arguments={"x-priority": prio})  # fmt: skip
        conns.append(conn)
    for i in range(5):
        sch.basic_publish("", "cp2", b"m%d" % i)

    def pump(total: int) -> bool:
        for c in conns:
            c.process_data_events(time_limit=0.02)
        return sum(map(len, got.values())) >= total

    wait_for(lambda: pump(3), timeout=10)
    assert got == {10: [b"m0"], 0: [b"m1"], -5: [b"m2"]}
    ch10, m10 = chans[10]
    ch10.basic_ack(m10.delivery_tag)
    wait_for(lambda: pump(4), timeout=10)
    assert got[10] == [b"m0", b"m3"], got
    for c in conns:
        c.close()
    setup.close()


def test_equal_priorities_take_turns_and_a_busy_high_one_is_not_waited_for(connect: Connect) -> None:
    setup = connect()
    sch = setup.channel()
    sch.queue_declare("cp3")
    a, got_a = consumer(connect, "cp3", 5, prefetch=100)
    b, got_b = consumer(connect, "cp3", 5, prefetch=100)
    c, got_c = consumer(connect, "cp3", 1, prefetch=100)
    for i in range(40):
        sch.basic_publish("", "cp3", b"%d" % i)

    def pump() -> bool:
        for conn in (a, b, c):
            conn.process_data_events(time_limit=0.02)
        return len(got_a) + len(got_b) + len(got_c) >= 40

    wait_for(pump, timeout=10)
    assert len(got_a) == 20 and len(got_b) == 20 and got_c == []  # the two 5s alternate, 1 gets nothing
    for conn in (a, b, c):
        conn.close()
    setup.close()


def test_a_non_integer_priority_is_refused(connect: Connect) -> None:
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("cp-q")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.basic_consume("cp-q", lambda *a: None, arguments={"x-priority": "high"})
    assert info.value.reply_code == 406
    assert info.value.reply_text == (
        "PRECONDITION_FAILED - invalid arg 'x-priority' for queue 'cp-q' in vhost '/': \"expected integer, got longstr\""
    )
    conn.close()
