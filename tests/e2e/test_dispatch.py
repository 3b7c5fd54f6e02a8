"""Dispatch over real connections: round-robin, prefetch, requeue position, delivery tags, ack errors."""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions
import pytest
from pamqp import commands as C
from pamqp import frame as pframe

from tests.e2e.conftest import drain
from tests.e2e.raw import RawClient
from tests.e2e.test_basic import Collector, queue_state, settle, wait_got
from tests.helpers import ThreadBroker

pytestmark = pytest.mark.timeout(30)


def test_round_robin_over_three_consumers_on_three_connections(connect: Any) -> None:
    pub = connect().channel()
    pub.queue_declare("rr")
    workers = []
    for _ in range(3):
        c = connect()
        ch = c.channel()
        col = Collector()
        ch.basic_consume("rr", col, auto_ack=True)
        workers.append((c, col))
    for i in range(9):
        pub.basic_publish("", "rr", str(i).encode())
    for c, col in workers:
        wait_got(c, col, 3)
    for c, _ in workers:
        settle(c)
    got = [col.bodies for _, col in workers]
    assert got == [[b"0", b"3", b"6"], [b"1", b"4", b"7"], [b"2", b"5", b"8"]]


def test_round_robin_with_prefetch_one_like_the_tutorial(connect: Any) -> None:
    """Three workers, prefetch 1, manual ack: tasks spread evenly and a busy worker is skipped."""
    pub = connect().channel()
    pub.queue_declare("task_queue", durable=True)
    workers = []
    for _ in range(3):
        c = connect()
        ch = c.channel()
        ch.basic_qos(prefetch_count=1)
        col = Collector()
        ch.basic_consume("task_queue", col)
        workers.append((c, ch, col))
    for i in range(3):
        pub.basic_publish("", "task_queue", str(i).encode(), pika.BasicProperties(delivery_mode=2))
    for c, _, col in workers:
        wait_got(c, col, 1)
    assert [col.bodies for _, _, col in workers] == [[b"0"], [b"1"], [b"2"]]
    # Only worker 2 (index 1) finishes; the next task must go to it, the only one with room,
    # even though round-robin would pick worker 0 next.
    c1, ch1, col1 = workers[1]
    ch1.basic_ack(col1.tags[0])
    drain(c1, 0.05)
    pub.basic_publish("", "task_queue", b"3")
    wait_got(c1, col1, 2)
    for c, _, _ in workers:
        settle(c)
    assert [col.bodies for _, _, col in workers] == [[b"0"], [b"1", b"3"], [b"2"]]
    # Now worker 0 frees up, then worker 2: the backlog goes to each as it frees up.
    pub.basic_publish("", "task_queue", b"4")
    pub.basic_publish("", "task_queue", b"5")
    c0, ch0, col0 = workers[0]
    ch0.basic_ack(col0.tags[0])
    wait_got(c0, col0, 2)
    c2, ch2, col2 = workers[2]
    ch2.basic_ack(col2.tags[0])
    wait_got(c2, col2, 2)
    assert (col0.bodies[1], col2.bodies[1]) == (b"4", b"5")


def test_requeued_message_goes_back_to_its_original_position(ch: Any, broker: ThreadBroker) -> None:
    ch.queue_declare("pos")
    for i in range(5):
        ch.basic_publish("", "pos", str(i).encode())
    t0 = ch.basic_get("pos")[0].delivery_tag
    t1 = ch.basic_get("pos")[0].delivery_tag
    ch.basic_reject(t0, requeue=True)  # ready: 0r 2 3 4
    ch.basic_reject(t1, requeue=True)  # ready: 0r 1r 2 3 4 (after 0, not at the head)
    got = [ch.basic_get("pos", auto_ack=True) for _ in range(5)]
    assert [(b, m.redelivered) for m, _, b in got] == [
        (b"0", True),
        (b"1", True),
        (b"2", False),
        (b"3", False),
        (b"4", False),
    ]


def test_requeue_from_consumer_keeps_fifo_for_next_consumer(connect: Any) -> None:
    c = connect()
    ch = c.channel()
    ch.queue_declare("fifo")
    for i in range(6):
        ch.basic_publish("", "fifo", str(i).encode())
    ch.basic_qos(prefetch_count=3)
    col = Collector()
    tag = ch.basic_consume("fifo", col)
    wait_got(c, col, 3)
    ch.basic_cancel(tag)
    ch.basic_nack(col.tags[1], requeue=True)  # "1"
    ch.basic_nack(col.tags[2], requeue=True)  # "2"
    ch.basic_ack(col.tags[0])
    c2 = connect()
    ch2 = c2.channel()
    col2 = Collector()
    ch2.basic_consume("fifo", col2, auto_ack=True)
    wait_got(c2, col2, 5)
    assert [(b, r) for _, _, r, b in col2.got] == [
        (b"1", True),
        (b"2", True),
        (b"3", False),
        (b"4", False),
        (b"5", False),
    ]


def test_delivery_tags_are_per_channel_and_start_at_one(conn: Any) -> None:
    a = conn.channel()
    b = conn.channel()
    a.queue_declare("tags")
    for i in range(6):
        a.basic_publish("", "tags", str(i).encode())
    assert [a.basic_get("tags")[0].delivery_tag for _ in range(2)] == [1, 2]
    assert [b.basic_get("tags")[0].delivery_tag for _ in range(2)] == [1, 2]
    col = Collector()
    a.basic_consume("tags", col)
    wait_got(conn, col, 2)
    assert col.tags == [3, 4]  # get and deliver share the channel's counter
    # a fresh channel starts again at 1
    d = conn.channel()
    d.queue_declare("tags2")
    d.basic_publish("", "tags2", b"x")
    assert d.basic_get("tags2")[0].delivery_tag == 1


def test_delivery_tags_are_64_bit_on_the_wire(broker: ThreadBroker) -> None:
    """Tags are encoded as unsigned 64-bit; check the raw deliver frame's field width."""
    with RawClient(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send(1, C.Queue.Declare(queue="t64"))
        c.expect(C.Queue.DeclareOk)
        c.publish(1, b"x", routing_key="t64")
        c.send(1, C.Basic.Get(queue="t64"))
        raw = b""
        while len(raw) < 7 + 4 + 8:
            raw += c.sock.recv(4096)
        # type, channel, size, class 60, method 71, then the 64-bit delivery tag
        assert raw[7:11] == b"\x00\x3c\x00\x47"
        assert raw[11:19] == (1).to_bytes(8, "big")


# ---- acknowledgement errors ---------------------------------------------------------------------


UNKNOWN = "PRECONDITION_FAILED - unknown delivery tag {}"


def _ack_error(ch: Any, fn: Any) -> tuple[int, str]:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        fn()
        ch.queue_declare("", exclusive=True)  # a round trip to see the close
    return exc.value.reply_code, exc.value.reply_text


def test_ack_unknown_tag_closes_only_that_channel(connect: Any) -> None:
    c = connect()
    bad = c.channel()
    good = c.channel()
    good.queue_declare("ue")
    good.basic_publish("", "ue", b"x")
    other = connect().channel()
    assert _ack_error(bad, lambda: bad.basic_ack(99)) == (406, UNKNOWN.format(99))
    assert bad.is_closed and good.is_open and c.is_open
    m = good.basic_get("ue")[0]
    good.basic_ack(m.delivery_tag)
    other.queue_declare("ue", passive=True)


def test_double_ack_is_406(connect: Any, broker: ThreadBroker) -> None:
    c = connect()
    ch = c.channel()
    ch.queue_declare("dbl")
    ch.basic_publish("", "dbl", b"x")
    ch.basic_publish("", "dbl", b"y")
    m = ch.basic_get("dbl")[0]
    ch.basic_ack(m.delivery_tag)
    assert _ack_error(ch, lambda: ch.basic_ack(m.delivery_tag)) == (406, UNKNOWN.format(1))
    assert c.is_open
    assert queue_state(broker, "dbl") == (1, 0)


def test_ack_on_a_different_channel_is_406_and_the_delivery_survives(
    connect: Any, broker: ThreadBroker
) -> None:
    c = connect()
    owner = c.channel()
    stranger = c.channel()
    owner.queue_declare("wrong")
    owner.basic_publish("", "wrong", b"x")
    m = owner.basic_get("wrong")[0]
    assert m.delivery_tag == 1
    assert _ack_error(stranger, lambda: stranger.basic_ack(1)) == (406, UNKNOWN.format(1))
    assert owner.is_open
    assert queue_state(broker, "wrong") == (0, 1)
    owner.basic_ack(1)
    assert queue_state(broker, "wrong") == (0, 0)


def test_ack_multiple_below_outstanding_is_406(conn: Any) -> None:
    ch = conn.channel()
    ch.queue_declare("mb")
    for _ in range(3):
        ch.basic_publish("", "mb", b"x")
    for _ in range(3):
        ch.basic_get("mb")
    ch.basic_ack(2, multiple=True)  # 1, 2
    assert _ack_error(ch, lambda: ch.basic_ack(2, multiple=True)) == (406, UNKNOWN.format(2))


def test_events_after_an_error_in_the_same_batch_are_dropped_raw(broker: ThreadBroker) -> None:
    """ack(99), then more on the same channel in one write: only the close comes back for it."""
    with RawClient(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.open_channel(2)
        c.send_raw(
            pframe.marshal(C.Basic.Ack(delivery_tag=99), 1)
            + pframe.marshal(C.Queue.Declare(queue="after"), 1)
            + pframe.marshal(C.Basic.Ack(delivery_tag=5), 1)
            + pframe.marshal(C.Channel.Close(200, "client closing", 0, 0), 1)
            + pframe.marshal(C.Queue.Declare(queue="other"), 2)
        )
        close = c.expect(C.Channel.Close)
        assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (
            406,
            UNKNOWN.format(99),
            60,
            80,
        )
        ch, ok = c.recv()
        assert (ch, type(ok)) == (1, C.Channel.CloseOk)  # the crossing close is answered
        ch, ok = c.recv()
        assert (ch, type(ok)) == (2, C.Queue.DeclareOk)
        c.send(1, C.Channel.CloseOk())
        c.open_channel(1)  # the number is free again
        c.send(1, C.Queue.Declare(queue="after", passive=True))
        close = c.expect(C.Channel.Close)  # the dropped declare never happened
        assert close.reply_code == 404
