"""Consumer acknowledgement timeouts with a fake clock."""

from __future__ import annotations

import pytest

from leveret.errors import ChannelError, ReplyCode
from tests.model.conftest import World


def _setup(world: World, **consume_args: object) -> tuple[object, object]:
    ch, sink = world.channel()
    world.declare(ch, arguments=consume_args.pop("queue_args", {}))
    world.broker.consume(ch, "q", "w", no_ack=False, exclusive=False, arguments=dict(consume_args))
    return ch, sink


def test_fires_after_deadline_and_requeues_everything_on_the_channel() -> None:
    world = World(consumer_timeout=2000)
    ch, sink = _setup(world)
    world.publish(b"a")
    world.clock.now += 1.0
    world.publish(b"b")
    world.clock.now += 0.999
    world.broker.check_timeouts(world.clock.now)
    assert sink.closed == []  # type: ignore[attr-defined]
    world.clock.now += 0.001
    world.broker.check_timeouts(world.clock.now)
    assert sink.closed == [  # type: ignore[attr-defined]
        (
            ReplyCode.PRECONDITION_FAILED,
            "delivery acknowledgement on channel 1 timed out. Timeout value used: 2000 ms. "
            "This timeout value can be configured, see consumers doc guide to learn more",
        )
    ]
    q = world.broker.vhosts["/"].queues["q"]
    assert [(m.body, m.redelivered) for m in q.ready] == [(b"a", True), (b"b", True)]


def test_ack_stops_the_clock() -> None:
    world = World(consumer_timeout=1000)
    ch, sink = _setup(world)
    world.publish(b"a")
    world.clock.now += 0.5
    ch.ack(1, False)  # type: ignore[attr-defined]
    world.clock.now += 10
    world.broker.check_timeouts(world.clock.now)
    assert sink.closed == []  # type: ignore[attr-defined]


def test_basic_get_counts_too() -> None:
    world = World(consumer_timeout=1000)
    ch, sink = world.channel()
    world.declare(ch)
    world.publish(b"a")
    world.broker.get(ch, "q", False)
    world.clock.now += 1.0
    world.broker.check_timeouts(world.clock.now)
    assert len(sink.closed) == 1


def test_no_ack_is_exempt() -> None:
    world = World(consumer_timeout=1000)
    ch, sink = world.channel()
    world.declare(ch)
    world.broker.consume(ch, "q", "w", no_ack=True, exclusive=False, arguments={})
    world.publish(b"a")
    world.clock.now += 100
    world.broker.check_timeouts(world.clock.now)
    assert sink.closed == []


@pytest.mark.parametrize(
    ("server", "queue_arg", "consumer_arg", "effective"),
    [(2000, None, None, 2000), (2000, 1000, None, 1000), (2000, 1000, 500, 500), (2000, 3000, None, 2000),
     (None, 3000, None, 3000), (None, None, None, None), (None, 3000, 4000, 3000)],
)  # fmt: skip
def test_smallest_timeout_wins(server: int | None, queue_arg: int | None, consumer_arg: int | None, effective: int | None) -> None:
    world = World(consumer_timeout=server)
    ch, _ = world.channel()
    world.declare(ch, arguments={"x-consumer-timeout": queue_arg} if queue_arg else {})
    args = {"x-consumer-timeout": consumer_arg} if consumer_arg else {}
    c = world.broker.consume(ch, "q", "w", no_ack=False, exclusive=False, arguments=args)
    assert c.timeout == effective


@pytest.mark.parametrize("bad", ["1000", -1, 1.5, True])
def test_bad_timeout_arguments_are_refused(bad: object) -> None:
    world = World()
    ch, _ = world.channel()
    with pytest.raises(ChannelError) as info:
        world.declare(ch, arguments={"x-consumer-timeout": bad})
    assert info.value.code == ReplyCode.PRECONDITION_FAILED and "x-consumer-timeout" in info.value.text
    world.declare(ch)
    with pytest.raises(ChannelError) as info:
        world.broker.consume(ch, "q", "w", no_ack=False, exclusive=False, arguments={"x-consumer-timeout": bad})
    assert "x-consumer-timeout" in info.value.text


def test_oldest_first_across_consumers_on_a_channel() -> None:
    world = World(consumer_timeout=None)
    ch, sink = world.channel()
    world.declare(ch, "slow")
    world.declare(ch, "fast")
    world.broker.consume(ch, "slow", "s", no_ack=False, exclusive=False, arguments={"x-consumer-timeout": 5000})
    world.broker.consume(ch, "fast", "f", no_ack=False, exclusive=False, arguments={"x-consumer-timeout": 1000})
    world.publish(b"1", "slow")
    world.clock.now += 0.5
    world.publish(b"2", "fast")
    world.clock.now += 1.0
    world.broker.check_timeouts(world.clock.now)
    assert "Timeout value used: 1000 ms" in sink.closed[0][1]
    assert [m.redelivered for m in world.broker.vhosts["/"].queues["slow"].ready] == [True]


def test_cancel_mode_cancels_only_the_stuck_consumer() -> None:
    world = World(consumer_timeout=1000, consumer_timeout_action="cancel")
    ch, sink = world.channel()
    world.declare(ch)
    world.broker.consume(ch, "q", "stuck", no_ack=False, exclusive=False, arguments={})
    world.publish(b"a")
    ch2, sink2 = world.channel()
    world.clock.now += 1.0
    world.broker.check_timeouts(world.clock.now)
    assert sink.cancelled == ["stuck"] and sink.closed == []
    assert not ch.closed and ch.unacked == {}
    world.broker.consume(ch2, "q", "other", no_ack=False, exclusive=False, arguments={})
    assert sink2.delivered == [("other", 1, b"a", True)]


def test_cancel_mode_falls_back_to_close_without_cancel_notify() -> None:
    world = World(consumer_timeout=1000, consumer_timeout_action="cancel")
    ch, sink = world.channel(world.connection(cancel_notify=False))
    world.declare(ch)
    world.broker.consume(ch, "q", "stuck", no_ack=False, exclusive=False, arguments={})
    world.publish(b"a")
    world.clock.now += 1.0
    world.broker.check_timeouts(world.clock.now)
    assert sink.cancelled == [] and len(sink.closed) == 1
