"""Quorum-queue delivery counting, as RabbitMQ 3.10.8 does it (checked against a private node).

A delivery from a quorum queue carries the header x-delivery-count: one more after each return (nack or reject with requeue, channel closed with it unacked); basic.get-ok has it from 0, a consumer
only once it is above 0. With
x-delivery-limit N, a message returned N + 1 times leaves the queue: dead-lettered with reason
``delivery_limit`` (the dead-lettered copy has no x-delivery-count), or dropped without a DLX.
Classic queues add no header. AMQP only: bench/conformance_vs_rabbitmq.py runs it against RabbitMQ.
"""

from __future__ import annotations

from collections.abc import Callable

import pika

Connect = Callable[..., pika.BlockingConnection]
QUORUM = {"x-queue-type": "quorum"}
DLX = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}


def test_each_return_counts_and_the_header_rides_on_every_delivery(connect: Connect) -> None:
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("qq", durable=True, arguments=QUORUM)
    ch.basic_publish("", "qq", b"m", pika.BasicProperties(headers={"a": 1}, delivery_mode=2))
    seen = []
    for i in range(4):
        method, props, _ = ch.basic_get("qq")
        seen.append((method.redelivered, props.headers))
        if i == 0:
            ch.basic_nack(method.delivery_tag, requeue=True)
        elif i == 1:
            ch.basic_reject(method.delivery_tag, requeue=True)
        elif i == 2:
            ch.close()  # returned unacked when its channel closes
            ch = conn.channel()
        else:
            ch.basic_ack(method.delivery_tag)
    assert seen == [
        (False, {"a": 1, "x-delivery-count": 0}),
        (True, {"a": 1, "x-delivery-count": 1}),
        (True, {"a": 1, "x-delivery-count": 2}),
        (True, {"a": 1, "x-delivery-count": 3}),
    ]


def test_a_consumer_sees_the_count_too(connect: Connect) -> None:
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("qc", durable=True, arguments=QUORUM)
    ch.basic_publish("", "qc", b"m")
    got = []
    for method, props, _ in ch.consume("qc", inactivity_timeout=2):
        got.append(props.headers)
        if len(got) == 2:
            ch.basic_ack(method.delivery_tag)
            break
        ch.basic_nack(method.delivery_tag, requeue=True)
    ch.cancel()
    assert got == [None, {"x-delivery-count": 1}]  # unlike basic.get, no header while the count is 0


def test_past_the_delivery_limit_a_message_is_dead_lettered(connect: Connect) -> None:
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("dlq", durable=True)
    ch.queue_declare("ql", durable=True, arguments={**QUORUM, "x-delivery-limit": 2, **DLX})
    ch.basic_publish("", "ql", b"poison", pika.BasicProperties(headers={"a": 1}))
    counts = []
    while (got := ch.basic_get("ql"))[0] is not None:
        counts.append(got[1].headers["x-delivery-count"])
        ch.basic_nack(got[0].delivery_tag, requeue=True)
    assert counts == [0, 1, 2]
    method, props, body = ch.basic_get("dlq", auto_ack=True)
    assert body == b"poison"
    assert "x-delivery-count" not in props.headers and props.headers["a"] == 1
    death = props.headers["x-death"][0]
    assert (death["reason"], death["queue"], death["count"]) == ("delivery_limit", "ql", 1)
    assert props.headers["x-first-death-reason"] == "delivery_limit"


def test_past_the_delivery_limit_without_a_dlx_a_message_is_dropped(connect: Connect) -> None:
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("qd", durable=True, arguments={**QUORUM, "x-delivery-limit": 0})
    ch.basic_publish("", "qd", b"once")
    method, _, _ = ch.basic_get("qd")
    ch.basic_nack(method.delivery_tag, requeue=True)
    assert ch.basic_get("qd")[0] is None
    assert ch.queue_declare("qd", durable=True, arguments={**QUORUM, "x-delivery-limit": 0}).method.message_count == 0


def test_classic_queues_add_no_header(connect: Connect) -> None:
    ch = connect().channel()
    ch.confirm_delivery()
    ch.queue_declare("cq")
    ch.basic_publish("", "cq", b"c")
    method, props, _ = ch.basic_get("cq")
    assert props.headers is None
    ch.basic_nack(method.delivery_tag, requeue=True)
    method, props, _ = ch.basic_get("cq", auto_ack=True)
    assert method.redelivered and props.headers is None
