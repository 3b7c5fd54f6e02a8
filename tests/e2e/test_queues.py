"""Queues and exchanges with pika over TCP: declare flags, delete, purge, routing."""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions
import pytest

from tests.e2e.conftest import drain
from tests.helpers import ThreadBroker, wait_for

pytestmark = pytest.mark.timeout(30)

LOCKED = (
    "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{}' in vhost '/'. It could be originally "
    "declared on another connection or the exclusive property value does not match that of the original declaration."
)


def closed_by_broker(fn: Any, *args: Any, **kw: Any) -> tuple[int, str]:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        fn(*args, **kw)
    return exc.value.reply_code, exc.value.reply_text


def queue_exists(broker: ThreadBroker, name: str) -> bool:
    return bool(broker.call(lambda: name in broker.app.broker.vhosts["/"].queues))  # type: ignore[union-attr]


# ---- routing ------------------------------------------------------------------------------------


def test_default_exchange_routes_by_queue_name(ch: Any) -> None:
    ch.queue_declare("a")
    ch.queue_declare("b")
    ch.basic_publish("", "a", b"to a")
    ch.basic_publish("", "b", b"to b")
    ch.basic_publish("", "nobody", b"dropped")  # unroutable, not mandatory: silently dropped
    assert ch.basic_get("a", auto_ack=True)[2] == b"to a"
    assert ch.basic_get("b", auto_ack=True)[2] == b"to b"
    assert ch.basic_get("a", auto_ack=True) == (None, None, None)
    assert ch.basic_get("b", auto_ack=True) == (None, None, None)


def test_amq_direct_exists_and_routes_by_binding_key(ch: Any) -> None:
    ch.exchange_declare("amq.direct", "direct", passive=True)
    ch.exchange_declare("amq.direct", "direct", durable=True)  # equivalent re-declare is fine
    ch.queue_declare("d1")
    ch.queue_declare("d2")
    ch.queue_bind("d1", "amq.direct", routing_key="k1")
    ch.queue_bind("d2", "amq.direct", routing_key="k2")
    ch.basic_publish("amq.direct", "k1", b"one")
    ch.basic_publish("amq.direct", "k2", b"two")
    ch.basic_publish("amq.direct", "d1", b"not by queue name")
    m1, _, b1 = ch.basic_get("d1", auto_ack=True)
    assert (b1, m1.exchange, m1.routing_key) == (b"one", "amq.direct", "k1")
    assert ch.basic_get("d2", auto_ack=True)[2] == b"two"
    assert ch.queue_declare("d1", passive=True).method.message_count == 0


def test_publish_to_missing_exchange_is_404(conn: Any) -> None:
    ch = conn.channel()
    ch.basic_publish("no-such-x", "k", b"x")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        ch.queue_declare("", exclusive=True)  # the next round trip sees the close
    assert (exc.value.reply_code, exc.value.reply_text) == (
        404,
        "NOT_FOUND - no exchange 'no-such-x' in vhost '/'",
    )


def test_default_exchange_cannot_be_bound(ch: Any) -> None:
    ch.queue_declare("q")
    code, text = closed_by_broker(ch.queue_bind, "q", "", routing_key="x")
    assert (code, text) == (403, "ACCESS_REFUSED - operation not permitted on the default exchange")


# ---- queue.declare ------------------------------------------------------------------------------


def test_durable_flag_is_kept(ch: Any, broker: ThreadBroker) -> None:
    ch.queue_declare("dur", durable=True)
    ch.queue_declare("tmp", durable=False)
    qs = broker.call(lambda: broker.app.broker.vhosts["/"].queues)  # type: ignore[union-attr]
    assert qs["dur"].durable is True and qs["tmp"].durable is False
    ch.queue_declare("dur", durable=True)  # equivalent: fine


def test_redeclare_with_different_durable_is_406_with_rabbitmq_text(conn: Any) -> None:
    ch = conn.channel()
    ch.queue_declare("q", durable=False)
    code, text = closed_by_broker(ch.queue_declare, "q", durable=True)
    assert code == 406
    assert text == (
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'"
    )
    ch = conn.channel()
    ch.queue_declare("q2", durable=True)
    assert closed_by_broker(ch.queue_declare, "q2") == (
        406,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q2' in vhost '/': received 'false' but current is 'true'",
    )


def test_redeclare_with_different_auto_delete_or_args_is_406(conn: Any) -> None:
    ch = conn.channel()
    ch.queue_declare("ad")
    assert closed_by_broker(ch.queue_declare, "ad", auto_delete=True) == (
        406,
        "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue 'ad' in vhost '/': received 'true' but current is 'false'",
    )
    ch = conn.channel()
    ch.queue_declare("args", arguments={"x-max-length": 10})
    # Texts as RabbitMQ 3.10.8 gives them to pika (rabbit_misc:assert_args_equivalence): values only
    # when both sides have the argument, "none" and the value with its type when one lacks it.
    prefix = "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'args' in vhost '/': "
    for arguments, expected in [
        ({"x-max-length": 20}, "received '20' but current is '10'"),
        ({"x-max-length": "10"}, "received '10' but current is '10'"),
        ({"x-max-length": True}, "received 'true' but current is '10'"),
        ({}, "received none but current is the value '10' of type 'signedint'"),
    ]:
        ch = conn.channel()
        assert closed_by_broker(ch.queue_declare, "args", arguments=arguments) == (406, prefix + expected)
    ch = conn.channel()
    ch.queue_declare("args-none")
    assert closed_by_broker(ch.queue_declare, "args-none", arguments={"x-max-length": 2**40}) == (
        406,
        "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'args-none' in vhost '/': "
        "received the value '1099511627776' of type 'long' but current is none",
    )
    ch = conn.channel()
    ch.queue_declare("args", arguments={"x-max-length": 10})  # same args: fine


def test_passive_declare_of_missing_queue_is_404(ch: Any) -> None:
    assert closed_by_broker(ch.queue_declare, "ghost", passive=True) == (
        404,
        "NOT_FOUND - no queue 'ghost' in vhost '/'",
    )


def test_passive_declare_reports_counts_and_ignores_flags(conn: Any) -> None:
    ch = conn.channel()
    ch.queue_declare("pc", durable=True)
    for i in range(3):
        ch.basic_publish("", "pc", str(i).encode())
    ok = ch.queue_declare("pc", passive=True).method  # durable=False here, but passive ignores it
    assert (ok.queue, ok.message_count, ok.consumer_count) == ("pc", 3, 0)


def test_declare_ok_counts_ready_messages_and_consumers(connect: Any) -> None:
    c1 = connect()
    ch = c1.channel()
    ch.queue_declare("counts")
    for i in range(5):
        ch.basic_publish("", "counts", str(i).encode())
    ch.basic_qos(prefetch_count=1)
    ch.basic_consume("counts", lambda *a: None)
    ch.basic_consume("counts", lambda *a: None)
    drain(c1, 0.1)  # two deliveries are now unacked
    other = connect().channel()
    ok = other.queue_declare("counts").method
    assert (ok.message_count, ok.consumer_count) == (3, 2)


def test_server_named_queues_are_amq_gen_and_unique(ch: Any) -> None:
    names = {ch.queue_declare("", exclusive=True).method.queue for _ in range(5)}
    assert len(names) == 5
    for n in names:
        assert n.startswith("amq.gen-") and len(n) > len("amq.gen-") + 10
        ch.basic_publish("", n, b"x")
        assert ch.queue_declare(n, passive=True).method.message_count == 1


def test_reserved_amq_prefix_is_403(ch: Any) -> None:
    assert closed_by_broker(ch.queue_declare, "amq.mine") == (
        403,
        "ACCESS_REFUSED - queue name 'amq.mine' contains reserved prefix 'amq.*'",
    )


def test_exclusive_queue_is_locked_to_its_connection(connect: Any, broker: ThreadBroker) -> None:
    owner = connect()
    och = owner.channel()
    och.queue_declare("excl", exclusive=True)
    och.basic_publish("", "excl", b"mine")
    other = connect()
    for op in (
        lambda c: c.queue_declare("excl", exclusive=True),
        lambda c: c.queue_declare("excl"),
        lambda c: c.queue_declare("excl", passive=True),
        lambda c: c.basic_consume("excl", lambda *a: None),
        lambda c: c.basic_get("excl"),
        lambda c: c.queue_purge("excl"),
        lambda c: c.queue_delete("excl"),
    ):
        assert closed_by_broker(op, other.channel()) == (405, LOCKED.format("excl"))
    assert other.is_open
    # The owner uses it freely on any of its channels.
    assert owner.channel().basic_get("excl", auto_ack=True)[2] == b"mine"
    # When the owner goes away, so does the queue.
    owner.close()
    assert wait_for(lambda: not queue_exists(broker, "excl"))
    assert closed_by_broker(other.channel().queue_declare, "excl", passive=True)[0] == 404


def test_exclusive_flag_mismatch_on_the_same_connection_is_405(ch: Any) -> None:
    ch.queue_declare("shared")
    assert closed_by_broker(ch.queue_declare, "shared", exclusive=True) == (405, LOCKED.format("shared"))


def test_auto_delete_queue_goes_when_its_last_consumer_cancels(conn: Any, broker: ThreadBroker) -> None:
    ch = conn.channel()
    ch.queue_declare("ad", auto_delete=True)
    ch.basic_publish("", "ad", b"x")
    assert queue_exists(broker, "ad")  # never had a consumer: stays
    t1 = ch.basic_consume("ad", lambda *a: None, auto_ack=True)
    t2 = ch.basic_consume("ad", lambda *a: None, auto_ack=True)
    ch.basic_cancel(t1)
    assert queue_exists(broker, "ad")
    ch.basic_cancel(t2)
    assert wait_for(lambda: not queue_exists(broker, "ad"))
    assert closed_by_broker(ch.queue_declare, "ad", passive=True)[0] == 404


def test_auto_delete_queue_goes_when_consumer_channel_closes(connect: Any, broker: ThreadBroker) -> None:
    c = connect()
    ch = c.channel()
    ch.queue_declare("ad2", auto_delete=True)
    ch.basic_consume("ad2", lambda *a: None)
    c.close()
    assert wait_for(lambda: not queue_exists(broker, "ad2"))


def test_quorum_queue_type_is_accepted(ch: Any, broker: ThreadBroker) -> None:
    ok = ch.queue_declare("task_queue", durable=True, arguments={"x-queue-type": "quorum"}).method
    assert ok.queue == "task_queue"
    ch.queue_declare("task_queue", durable=True, arguments={"x-queue-type": "quorum"})
    ch.basic_publish(
        "", "task_queue", b"work", pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    )
    assert ch.basic_get("task_queue", auto_ack=True)[2] == b"work"
    assert broker.call(lambda: broker.app.broker.vhosts["/"].queues["task_queue"].type) == "quorum"  # type: ignore[union-attr]


def test_quorum_queue_must_be_durable(ch: Any) -> None:
    assert closed_by_broker(ch.queue_declare, "qq", arguments={"x-queue-type": "quorum"}) == (
        406,
        "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'qq' in vhost '/'",
    )


# ---- queue.delete -------------------------------------------------------------------------------


def test_delete_returns_ready_message_count(ch: Any, broker: ThreadBroker) -> None:
    ch.queue_declare("del")
    for _ in range(4):
        ch.basic_publish("", "del", b"x")
    ch.basic_get("del")  # one unacked: not counted
    assert ch.queue_delete("del").method.message_count == 3
    assert not queue_exists(broker, "del")
    assert ch.queue_delete("del").method.message_count == 0  # deleting a missing queue is fine


def test_delete_if_unused(conn: Any, broker: ThreadBroker) -> None:
    ch = conn.channel()
    ch.queue_declare("used")
    tag = ch.basic_consume("used", lambda *a: None)
    assert closed_by_broker(ch.queue_delete, "used", if_unused=True) == (
        406,
        "PRECONDITION_FAILED - queue 'used' in vhost '/' in use",
    )
    ch = conn.channel()
    assert queue_exists(broker, "used")
    assert tag  # its channel was closed by the error, so the consumer is gone now
    ch.queue_delete("used", if_unused=True)
    assert not queue_exists(broker, "used")


def test_delete_if_empty(conn: Any) -> None:  # AMQP only: also run against RabbitMQ (bench/conformance_vs_rabbitmq.py)
    ch = conn.channel()
    ch.queue_declare("full")
    ch.confirm_delivery()
    ch.basic_publish("", "full", b"x")
    assert closed_by_broker(ch.queue_delete, "full", if_empty=True) == (
        406,
        "PRECONDITION_FAILED - queue 'full' in vhost '/' not empty",
    )
    ch = conn.channel()
    ch.basic_get("full", auto_ack=True)
    assert ch.queue_delete("full", if_empty=True).method.message_count == 0
    assert closed_by_broker(ch.queue_declare, "full", passive=True) == (
        404,
        "NOT_FOUND - no queue 'full' in vhost '/'",
    )


def test_delete_if_empty_counts_ready_messages_only_like_rabbitmq(connect: Any, broker: ThreadBroker) -> None:
    """RabbitMQ's if-empty looks at ready messages only (BQ:is_empty) and is checked before if-unused."""
    c = connect()
    ch = c.channel()
    ch.basic_qos(prefetch_count=1)
    ch.queue_declare("pending")
    ch.basic_publish("", "pending", b"x")
    ch.basic_publish("", "pending", b"y")
    ch.basic_consume("pending", lambda *a: None)
    drain(c)  # one delivered (unacked), one ready
    other = connect()
    code, text = closed_by_broker(other.channel().queue_delete, "pending", if_empty=True, if_unused=True)
    assert (code, text) == (406, "PRECONDITION_FAILED - queue 'pending' in vhost '/' not empty")
    ch2 = c.channel()
    ch2.queue_declare("ue")
    ch2.basic_publish("", "ue", b"x")
    assert ch2.basic_get("ue")[2] == b"x"  # unacked only, nothing ready
    assert ch2.queue_delete("ue", if_empty=True).method.message_count == 0
    assert not queue_exists(broker, "ue")


def test_delete_cancels_consumers_with_basic_cancel(connect: Any) -> None:
    c = connect()
    ch = c.channel()
    ch.queue_declare("gone")
    cancelled: list[Any] = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume("gone", lambda *a: None)
    connect().channel().queue_delete("gone")
    wait_for(lambda: (drain(c), cancelled)[1])
    assert cancelled == [tag]
    assert ch.is_open


# ---- queue.purge --------------------------------------------------------------------------------


def test_purge_removes_ready_messages_only_and_returns_count(conn: Any) -> None:
    ch = conn.channel()
    ch.queue_declare("p")
    for i in range(5):
        ch.basic_publish("", "p", str(i).encode())
    g1 = ch.basic_get("p")[0]
    g2 = ch.basic_get("p")[0]
    assert (g1.delivery_tag, g2.delivery_tag) == (1, 2)
    assert ch.queue_purge("p").method.message_count == 3
    assert ch.queue_declare("p", passive=True).method.message_count == 0
    assert ch.queue_purge("p").method.message_count == 0
    ch.basic_nack(0, multiple=True, requeue=True)  # the two unacked survive the purge
    got = [ch.basic_get("p", auto_ack=True) for _ in range(2)]
    assert [(b, m.redelivered) for m, _, b in got] == [(b"0", True), (b"1", True)]
    assert ch.basic_get("p") == (None, None, None)


def test_purge_of_missing_queue_is_404(ch: Any) -> None:
    assert closed_by_broker(ch.queue_purge, "nope") == (404, "NOT_FOUND - no queue 'nope' in vhost '/'")
