"""Dispatch, prefetch, acks and requeue on the model, no sockets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from leveret.errors import ChannelError, ReplyCode
from tests.model.conftest import World


def test_round_robin_over_consumers(world: World) -> None:
    ch, sink = world.channel()
    world.declare(ch)
    for tag in ("a", "b", "c"):
        world.broker.consume(ch, "q", tag, no_ack=False, exclusive=False, arguments={})
    for i in range(6):
        world.publish(b"%d" % i)
    assert [t for t, *_ in sink.delivered] == ["a", "b", "c", "a", "b", "c"]
    assert [tag for _, tag, *_ in sink.delivered] == [1, 2, 3, 4, 5, 6]  # per channel, from 1


def test_prefetch_sends_next_to_consumer_with_room(world: World) -> None:
    ch1, s1 = world.channel()
    ch2, s2 = world.channel()
    world.declare(ch1)
    for ch in (ch1, ch2):
        ch.set_qos(1, False)
        world.broker.consume(ch, "q", "w", no_ack=False, exclusive=False, arguments={})
    for i in range(4):
        world.publish(b"%d" % i)
    assert s1.bodies() == [b"0"] and s2.bodies() == [b"1"]
    ch2.ack(1, False)  # worker 2 finished first: it gets the next one
    assert s2.bodies() == [b"1", b"2"] and s1.bodies() == [b"0"]
    q = world.broker.vhosts["/"].queues["q"]
    assert (len(q.ready), q.unacked) == (1, 2)


def test_global_prefetch_is_shared_by_the_channel(world: World) -> None:
    ch, sink = world.channel()
    world.declare(ch)
    ch.set_qos(2, True)
    world.broker.consume(ch, "q", "a", no_ack=False, exclusive=False, arguments={})
    world.broker.consume(ch, "q", "b", no_ack=False, exclusive=False, arguments={})
    for i in range(5):
        world.publish(b"%d" % i)
    assert len(sink.delivered) == 2
    ch.ack(2, True)
    assert len(sink.delivered) == 4


def test_new_qos_applies_to_existing_consumers(world: World) -> None:
    ch, sink = world.channel()
    world.declare(ch)
    ch.set_qos(1, False)
    world.broker.consume(ch, "q", "a", no_ack=False, exclusive=False, arguments={})
    for i in range(5):
        world.publish(b"%d" % i)
    assert len(sink.delivered) == 1
    ch.set_qos(3, False)
    assert len(sink.delivered) == 3
    ch.set_qos(0, False)  # unlimited
    assert len(sink.delivered) == 5


def test_requeue_goes_back_to_original_position(world: World) -> None:
    ch, sink = world.channel()
    world.declare(ch)
    for i in range(5):
        world.publish(b"%d" % i)
    tags = [world.broker.get(ch, "q", False)[0] for _ in range(3)]  # type: ignore[index]
    ch.reject(tags[1], False, True)  # message 1 back, before 3 and 4
    q = world.broker.vhosts["/"].queues["q"]
    assert [m.body for m in q.ready] == [b"1", b"3", b"4"]
    assert [m.redelivered for m in q.ready] == [True, False, False]
    ch.reject(tags[2], True, True)  # nack multiple: 0 and 2
    assert [m.body for m in q.ready] == [b"0", b"1", b"2", b"3", b"4"]


def test_channel_close_requeues_to_other_consumer(world: World) -> None:
    ch1, s1 = world.channel()
    ch2, s2 = world.channel()
    world.declare(ch1)
    world.broker.consume(ch1, "q", "w1", no_ack=False, exclusive=False, arguments={})
    world.publish(b"task")
    world.broker.consume(ch2, "q", "w2", no_ack=False, exclusive=False, arguments={})
    assert s1.bodies() == [b"task"] and s2.bodies() == []
    world.broker.close_channel(ch1)
    assert s2.delivered == [("w2", 1, b"task", True)]


def test_unknown_or_double_ack_is_406(world: World) -> None:
    ch, _ = world.channel()
    world.declare(ch)
    world.publish(b"x")
    tag, _, _ = world.broker.get(ch, "q", False)  # type: ignore[misc]
    ch.ack(tag, False)
    with pytest.raises(ChannelError) as info:
        ch.ack(tag, False)
    assert info.value.code == ReplyCode.PRECONDITION_FAILED
    assert info.value.text == f"PRECONDITION_FAILED - unknown delivery tag {tag}"


def test_ack_multiple_zero_acks_everything(world: World) -> None:
    ch, _ = world.channel()
    world.declare(ch)
    for i in range(3):
        world.publish(b"%d" % i)
        world.broker.get(ch, "q", False)
    ch.ack(0, True)
    assert ch.unacked == {}


def test_no_ack_consumer_ignores_prefetch(world: World) -> None:
    ch, sink = world.channel()
    world.declare(ch)
    ch.set_qos(1, False)
    world.broker.consume(ch, "q", "a", no_ack=True, exclusive=False, arguments={})
    for i in range(3):
        world.publish(b"%d" % i)
    assert len(sink.delivered) == 3 and ch.unacked == {}


def test_paused_channel_gets_nothing_until_resumed(world: World) -> None:
    ch, sink = world.channel()
    world.declare(ch)
    world.broker.consume(ch, "q", "a", no_ack=True, exclusive=False, arguments={})
    ch.set_paused(True)
    world.publish(b"x")
    assert sink.delivered == []
    ch.set_paused(False)
    assert sink.bodies() == [b"x"]


def test_auto_delete_queue_goes_with_last_consumer(world: World) -> None:
    ch, _ = world.channel()
    world.declare(ch, "ad", durable=False, auto_delete=True)
    world.broker.consume(ch, "ad", "a", no_ack=False, exclusive=False, arguments={})
    world.broker.cancel(ch, "a")
    assert "ad" not in world.broker.vhosts["/"].queues


def test_exclusive_queue_dies_with_its_connection(world: World) -> None:
    conn = world.connection()
    ch, _ = world.channel(conn)
    q = world.declare(ch, "", durable=False, exclusive=True)
    assert q.name.startswith("amq.gen-")
    other, _ = world.channel()
    with pytest.raises(ChannelError) as info:
        world.broker.consume(other, q.name, "", no_ack=False, exclusive=False, arguments={})
    assert info.value.code == ReplyCode.RESOURCE_LOCKED
    world.broker.disconnect(conn)
    assert q.name not in world.broker.vhosts["/"].queues


def test_persistent_messages_in_durable_queues_are_journalled(world: World) -> None:
    ch, _ = world.channel()
    world.declare(ch, "d", durable=True)
    world.declare(ch, "t", durable=False)
    assert world.publish(b"p", "d", persistent=True) == (True, True, False)
    assert world.publish(b"x", "d", persistent=False) == (True, False, False)
    assert world.publish(b"p", "t", persistent=True) == (True, False, False)
    assert world.publish(b"p", "nowhere", persistent=True) == (False, False, False)


def test_acking_a_long_backlog_one_multiple_at_a_time_is_linear(world: World) -> None:
    """20,000 unacked, acked in order each with multiple=True (what a client acking "everything up to
    here" does): each ack walks only what it settles. Before, each copied every outstanding tag, so
    the work grew with the square of the backlog (100,000: 30 s with the event loop held)."""

    class Counting(dict[int, Any]):
        walked = 0

        def __iter__(self) -> Iterator[int]:
            for k in super().__iter__():
                Counting.walked += 1
                yield k

    ch, sink = world.channel()
    world.declare(ch, durable=False)
    world.broker.consume(ch, "q", "c", no_ack=False, exclusive=False, arguments={})
    n = 20_000
    for _ in range(n):
        world.publish(b"m")
    tags = [t for _, t, _, _ in sink.delivered]
    assert len(tags) == n
    ch.unacked = Counting(ch.unacked)
    for t in tags:
        ch.ack(t, True)
    assert not ch.unacked and world.broker.vhosts["/"].queues["q"].unacked == 0
    assert Counting.walked <= 2 * n  # each settled tag once, plus the one that stops each walk
