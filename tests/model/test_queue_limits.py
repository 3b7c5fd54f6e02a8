"""Queue limits with a fake clock: dead-lettering, message TTL, queue TTL (x-expires), max length.

Expected behaviour was checked against RabbitMQ 3.10.8 (see the docstrings).
"""

from __future__ import annotations

from typing import Any

import pytest
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from leveret.errors import ChannelError
from leveret.model.queue import Queue

from .conftest import World


def props(**kw: Any) -> bytes:
    """A raw property section, as a publisher sends it."""
    raw: bytes = ContentHeader(0, 0, Basic.Properties(**kw)).marshal()[12:]
    return raw


def decode(raw: bytes) -> Basic.Properties:
    h = ContentHeader()
    h.unmarshal(b"\x00\x3c\x00\x00" + bytes(8) + raw)
    return h.properties


def publish(
    world: World, body: bytes, rk: str, exchange: str = "", persistent: bool = False, **kw: Any
) -> Any:
    if persistent:
        kw["delivery_mode"] = 2
    return world.broker.publish("/", exchange, rk, props(**kw), body, persistent)


def ready(q: Queue) -> list[bytes | None]:
    return [m.body for m in q.ready]


DLQ = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "Q.XQ"}


# ---- dead-lettering -------------------------------------------------------------------------------


def test_nack_without_requeue_dead_letters_with_x_death(world: World) -> None:
    """Dramatiq's flow. RabbitMQ: the copy arrives with exchange = the DLX, routing key = the DLRK,
    x-death (count, reason, queue, time, exchange, routing-keys, original-expiration), the
    x-first-death-* headers, no expiration, every other property unchanged."""
    world.broker.wall_clock = lambda: 1_700_000_000.5
    ch, _ = world.channel()
    world.declare(ch, "Q", arguments=dict(DLQ))
    xq = world.declare(ch, "Q.XQ")
    publish(
        world, b"job", "Q", content_type="text/plain", message_id="m1", headers={"a": 1}, expiration="60000"
    )
    tag, _, _ = world.broker.get(ch, "Q", no_ack=False)  # type: ignore[misc]
    ch.reject(tag, False, requeue=False)
    assert ready(xq) == [b"job"]
    m = xq.ready[0]
    assert (m.exchange, m.routing_key, m.redelivered) == ("", "Q.XQ", False)
    p = decode(m.properties)
    assert (p.content_type, p.message_id, p.expiration) == ("text/plain", "m1", None)
    assert p.headers["a"] == 1
    (death,) = p.headers["x-death"]
    assert list(death) == [
        "count",
        "reason",
        "queue",
        "time",
        "exchange",
        "routing-keys",
        "original-expiration",
    ]
    assert death["count"] == 1 and death["reason"] == "rejected" and death["queue"] == "Q"
    assert (
        death["exchange"] == "" and death["routing-keys"] == ["Q"] and death["original-expiration"] == "60000"
    )
    assert death["time"].timestamp() == 1_700_000_000
    first = {k: v for k, v in p.headers.items() if k.startswith("x-first-death")}
    assert first == {
        "x-first-death-exchange": "",
        "x-first-death-queue": "Q",
        "x-first-death-reason": "rejected",
    }
    assert list(p.headers) == sorted(p.headers)  # RabbitMQ sends the table sorted


def test_same_queue_and_reason_increments_the_count(world: World) -> None:
    ch, _ = world.channel()
    world.declare(ch, "Q", arguments=dict(DLQ))
    xq = world.declare(ch, "Q.XQ")
    publish(world, b"job", "Q")
    for n in (1, 2):
        tag, _, _ = world.broker.get(ch, "Q", no_ack=False)  # type: ignore[misc]
        ch.reject(tag, False, requeue=False)
        m = xq.take()
        assert m is not None
        deaths = decode(m.properties).headers["x-death"]
        assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [("Q", "rejected", n)]
        world.broker.publish("/", "", "Q", m.properties, b"job", False)  # the worker retries it


def test_dead_letter_keeps_original_routing_key_without_dlrk(world: World) -> None:
    ch, _ = world.channel()
    world.broker.vhosts["/"].declare_exchange("dlx", "direct")
    world.declare(ch, "src", arguments={"x-dead-letter-exchange": "dlx"})
    dead = world.declare(ch, "dead")
    world.broker.vhosts["/"].bind(None, "dead", "dlx", "src", {})
    publish(world, b"a", "src")
    tag, _, _ = world.broker.get(ch, "src", no_ack=False)  # type: ignore[misc]
    ch.reject(tag, False, requeue=False)
    assert [(m.exchange, m.routing_key) for m in dead.ready] == [("dlx", "src")]


def test_dead_letter_to_a_missing_exchange_is_dropped(world: World) -> None:
    ch, _ = world.channel()
    q = world.declare(ch, "q", arguments={"x-dead-letter-exchange": "nope"})
    publish(world, b"a", "q")
    tag, _, _ = world.broker.get(ch, "q", no_ack=False)  # type: ignore[misc]
    ch.reject(tag, False, requeue=False)
    assert len(q.ready) == 0 and q.unacked == 0


def test_requeue_true_does_not_dead_letter(world: World) -> None:
    ch, _ = world.channel()
    q = world.declare(ch, "Q", arguments=dict(DLQ))
    xq = world.declare(ch, "Q.XQ")
    publish(world, b"a", "Q")
    tag, _, _ = world.broker.get(ch, "Q", no_ack=False)  # type: ignore[misc]
    ch.reject(tag, False, requeue=True)
    assert ready(q) == [b"a"] and ready(xq) == []


def test_persistent_dead_letter_is_journalled_in_the_durable_target_with_a_new_id(world: World) -> None:
    ch, _ = world.channel()
    world.declare(ch, "Q", arguments=dict(DLQ))
    world.declare(ch, "Q.XQ")
    publish(world, b"p", "Q", persistent=True)
    (old,) = world.store.open().messages[("/", "Q")]
    tag, _, _ = world.broker.get(ch, "Q", no_ack=False)  # type: ignore[misc]
    ch.reject(tag, False, requeue=False)
    held = world.store.open().messages
    assert ("/", "Q") not in held
    (new,) = held[("/", "Q.XQ")]
    assert new.msg_id != old.msg_id and new.body == b"p" and new.exchange == "" and new.routing_key == "Q.XQ"


def test_expiry_cycle_back_to_the_same_queue_is_dropped(world: World) -> None:
    """RabbitMQ: a message cycling back by expiry, with no rejection, is dropped (queue 'C' empty)."""
    ch, _ = world.channel()
    q = world.declare(ch, "C", arguments={"x-message-ttl": 100, "x-dead-letter-exchange": ""})
    publish(world, b"c", "C")
    world.clock.now += 0.2
    world.broker.expire(world.clock.now)
    assert len(q.ready) == 0


def test_rejection_cycle_is_allowed(world: World) -> None:
    ch, _ = world.channel()
    q = world.declare(ch, "R", arguments={"x-dead-letter-exchange": ""})  # back to itself by its routing key
    publish(world, b"r", "R")
    for n in (1, 2, 3):
        tag, _, _ = world.broker.get(ch, "R", no_ack=False)  # type: ignore[misc]
        ch.reject(tag, False, requeue=False)
        assert ready(q) == [b"r"]
        assert decode(q.ready[0].properties).headers["x-death"][0]["count"] == n


# ---- message TTL ----------------------------------------------------------------------------------


def test_queue_ttl_expires_on_the_tick(world: World) -> None:
    ch, _ = world.channel()
    q = world.declare(ch, "t", arguments={"x-message-ttl": 1000})
    publish(world, b"a", "t")
    world.clock.now += 0.5
    publish(world, b"b", "t")
    world.broker.expire(world.clock.now)
    assert ready(q) == [b"a", b"b"]
    world.clock.now += 0.6
    world.broker.expire(world.clock.now)
    assert ready(q) == [b"b"]
    world.clock.now += 0.5
    world.broker.expire(world.clock.now)
    assert ready(q) == [] and q not in world.broker.ttl_queues


def test_expired_messages_are_not_delivered_or_got(world: World) -> None:
    ch, sink = world.channel()
    world.declare(ch, "t", arguments={"x-message-ttl": 1000})
    publish(world, b"old", "t")
    world.clock.now += 2
    publish(world, b"new", "t")
    assert world.broker.get(ch, "t", no_ack=True)[1].body == b"new"  # type: ignore[index]
    publish(world, b"old2", "t")
    world.clock.now += 2
    world.broker.consume(ch, "t", "c", no_ack=True, exclusive=False, arguments={})
    assert sink.bodies() == []


def test_per_message_expiration_and_the_smaller_ttl_wins(world: World) -> None:
    ch, _ = world.channel()
    q = world.declare(ch, "t", arguments={"x-message-ttl": 5000})
    publish(world, b"short", "t", expiration="1000")
    publish(world, b"long", "t", expiration="60000")
    world.clock.now += 1.5
    world.broker.expire(world.clock.now)
    assert ready(q) == [b"long"]
    world.clock.now += 4
    world.broker.expire(world.clock.now)
    assert ready(q) == []


def test_only_the_head_expires(world: World) -> None:
    """RabbitMQ's classic queues: an expired message behind a live one waits until it reaches the head."""
    ch, _ = world.channel()
    q = world.declare(ch, "t", durable=False)
    publish(world, b"long", "t", expiration="10000")
    publish(world, b"short", "t", expiration="100")
    world.clock.now += 1
    world.broker.expire(world.clock.now)
    assert ready(q) == [b"long", b"short"]
    assert world.broker.get(ch, "t", no_ack=True)[1].body == b"long"  # type: ignore[index]
    assert world.broker.get(ch, "t", no_ack=True) is None


def test_ttl_zero_is_delivered_at_once_or_expires(world: World) -> None:
    ch, sink = world.channel()
    xq = world.declare(ch, "Q.XQ")
    q = world.declare(ch, "z", arguments={"x-message-ttl": 0, **DLQ})
    publish(world, b"nobody", "z")
    assert ready(q) == [] and [decode(m.properties).headers["x-death"][0]["reason"] for m in xq.ready] == [
        "expired"
    ]
    world.broker.consume(ch, "z", "c", no_ack=False, exclusive=False, arguments={})
    publish(world, b"taken", "z")
    assert sink.bodies("c") == [b"taken"]


def test_invalid_expiration_is_a_406_with_rabbitmqs_text(world: World) -> None:
    ch, _ = world.channel()
    world.declare(ch, "q")
    for value, text in (
        ("abc", "invalid expiration 'abc': no_integer"),
        ("-1", "invalid expiration '-1': {value_negative,-1}"),
        ("12x", "invalid expiration '12x': {leftover_string,\"x\"}"),
    ):
        with pytest.raises(ChannelError) as e:
            publish(world, b"a", "q", expiration=value)
        assert (e.value.code, e.value.text) == (406, "PRECONDITION_FAILED - " + text)
    with pytest.raises(ChannelError) as e:  # an empty expiration (pamqp leaves it out): flag set, length 0
        world.broker.publish("/", "", "q", b"\x01\x00\x00", b"a", False)
    assert e.value.text == "PRECONDITION_FAILED - invalid expiration '': no_integer"


def test_expired_dead_letter_and_a_celery_style_delay_chain(world: World) -> None:
    """A delay queue with a TTL dead-letters into a work queue through a topic exchange."""
    ch, sink = world.channel()
    vh = world.broker.vhosts["/"]
    vh.declare_exchange("celery", "topic")
    world.declare(ch, "delay_1s", arguments={"x-message-ttl": 1000, "x-dead-letter-exchange": "celery"})
    world.declare(ch, "celery")
    vh.bind(None, "celery", "celery", "#", {})
    world.broker.consume(ch, "celery", "w", no_ack=False, exclusive=False, arguments={})
    publish(world, b"task", "delay_1s", persistent=True)
    world.clock.now += 0.9
    world.broker.expire(world.clock.now)
    assert sink.bodies("w") == []
    world.clock.now += 0.2
    world.broker.expire(world.clock.now)
    assert sink.bodies("w") == [b"task"]
    d = ch.unacked[1].msg
    assert (d.exchange, d.routing_key) == ("celery", "delay_1s")
    assert decode(d.properties).headers["x-death"][0]["reason"] == "expired"


def test_requeued_message_keeps_its_expiry(world: World) -> None:
    ch, _ = world.channel()
    q = world.declare(ch, "t", arguments={"x-message-ttl": 1000})
    publish(world, b"a", "t")
    tag, _, _ = world.broker.get(ch, "t", no_ack=False)  # type: ignore[misc]
    world.clock.now += 2
    ch.reject(tag, False, requeue=True)
    assert ready(q) == []


# ---- queue TTL (x-expires) ----------------------------------------------------------------------


def test_unused_queue_is_deleted_after_x_expires(world: World) -> None:
    ch, _ = world.channel()
    world.declare(ch, "e", arguments={"x-expires": 1000})
    world.clock.now += 0.8
    world.declare(ch, "e", arguments={"x-expires": 1000})  # a redeclare renews the lease
    world.clock.now += 0.8
    world.broker.expire(world.clock.now)
    assert "e" in world.broker.vhosts["/"].queues
    world.broker.get(ch, "e", no_ack=True)  # so does basic.get
    world.clock.now += 0.9
    world.broker.expire(world.clock.now)
    assert "e" in world.broker.vhosts["/"].queues
    world.clock.now += 0.2
    world.broker.expire(world.clock.now)
    assert "e" not in world.broker.vhosts["/"].queues


def test_a_consumed_queue_does_not_expire_until_its_last_consumer_leaves(world: World) -> None:
    ch, _ = world.channel()
    world.declare(ch, "e", arguments={"x-expires": 1000})
    world.broker.consume(ch, "e", "c", no_ack=True, exclusive=False, arguments={})
    world.clock.now += 5
    world.broker.expire(world.clock.now)
    assert "e" in world.broker.vhosts["/"].queues
    world.broker.cancel(ch, "c")
    world.clock.now += 0.9
    world.broker.expire(world.clock.now)
    assert "e" in world.broker.vhosts["/"].queues
    world.clock.now += 0.2
    world.broker.expire(world.clock.now)
    assert "e" not in world.broker.vhosts["/"].queues


# ---- max length ----------------------------------------------------------------------------------


def test_max_length_drop_head_dead_letters_the_oldest_as_maxlen(world: World) -> None:
    ch, _ = world.channel()
    q = world.declare(ch, "M", arguments={"x-max-length": 2, **DLQ})
    xq = world.declare(ch, "Q.XQ")
    for i in range(3):
        assert publish(world, b"m%d" % i, "M") == (True, False, False)
    assert ready(q) == [b"m1", b"m2"] and ready(xq) == [b"m0"]
    assert decode(xq.ready[0].properties).headers["x-death"][0]["reason"] == "maxlen"


def test_max_length_bytes_drops_without_dlx(world: World) -> None:
    ch, _ = world.channel()
    q = world.declare(ch, "B", arguments={"x-max-length-bytes": 10})
    for body in (b"aaaa", b"bbbb", b"cccc"):
        publish(world, body, "B", persistent=True)
    assert ready(q) == [b"bbbb", b"cccc"] and q.ready_bytes == 8
    assert len(world.store.open().messages[("/", "B")]) == 2


def test_reject_publish_refuses_the_new_message(world: World) -> None:
    ch, sink = world.channel()
    q = world.declare(ch, "R", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    assert publish(world, b"1", "R") == (True, False, False)
    assert publish(world, b"2", "R") == (True, False, True)
    assert ready(q) == [b"1"]
    world.broker.consume(ch, "R", "c", no_ack=False, exclusive=False, arguments={})
    assert publish(world, b"3", "R") == (True, False, False)  # only ready messages count


def test_reject_publish_dlx_dead_letters_the_refused_message(world: World) -> None:
    ch, _ = world.channel()
    world.declare(ch, "R", arguments={"x-max-length": 0, "x-overflow": "reject-publish-dlx", **DLQ})
    xq = world.declare(ch, "Q.XQ")
    assert publish(world, b"r", "R") == (True, False, True)
    assert ready(xq) == [b"r"]
    assert decode(xq.ready[0].properties).headers["x-death"][0]["reason"] == "maxlen"


def test_queue_without_limits_takes_the_fast_path(world: World) -> None:
    ch, _ = world.channel()
    q = world.declare(ch, "plain", arguments={"x-max-priority": 5})
    publish(world, b"a", "plain")
    assert q.limits is None and not q.ttl_watch and q.ready[0].expires is None
