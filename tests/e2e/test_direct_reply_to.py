"""Direct reply-to (`amq.rabbitmq.reply-to`), RabbitMQ 3.10's texts and behaviour (reference 6.5): the
RPC pattern without a reply queue. AMQP only: bench/conformance_vs_rabbitmq.py runs it against
RabbitMQ too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika
import pytest

from tests.helpers import wait_for

Connect = Callable[..., pika.BlockingConnection]
REPLY_TO = "amq.rabbitmq.reply-to"


def rpc_server(connect: Connect, queue: str) -> pika.BlockingConnection:
    """Answers each request on ``queue`` with its body upper-cased, to its reply_to."""
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(queue)

    def on_request(c: Any, m: Any, props: Any, body: bytes) -> None:
        c.basic_publish("", props.reply_to, body.upper(), pika.BasicProperties(correlation_id=props.correlation_id))
        c.basic_ack(m.delivery_tag)

    ch.basic_consume(queue, on_request)
    return conn


def test_rpc_round_trip(connect: Connect) -> None:
    server = rpc_server(connect, "rpc")
    client = connect()
    ch = client.channel()
    replies: list[tuple[Any, Any, bytes]] = []
    ch.basic_consume(REPLY_TO, lambda c, m, p, b: replies.append((m, p, b)), auto_ack=True)
    for i in range(3):
        ch.basic_publish("", "rpc", b"ping %d" % i, pika.BasicProperties(reply_to=REPLY_TO, correlation_id=str(i)))

    def pump() -> bool:
        server.process_data_events(time_limit=0.02)
        client.process_data_events(time_limit=0.02)
        return len(replies) == 3

    wait_for(pump, timeout=10)
    assert [(p.correlation_id, b) for _, p, b in replies] == [("0", b"PING 0"), ("1", b"PING 1"), ("2", b"PING 2")]
    m = replies[0][0]
    assert m.exchange == "" and m.routing_key.startswith(REPLY_TO + ".") and not m.redelivered
    assert [r[0].delivery_tag for r in replies] == [1, 1, 1]  # RabbitMQ 3.10: the next tag, not taken
    # While the requester lives, its reply name declares (passive or not) with one consumer.
    probe = connect().channel()
    ok = probe.queue_declare(m.routing_key, passive=True)
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (m.routing_key, 0, 1)
    assert probe.queue_declare(REPLY_TO).method.consumer_count == 1
    client.close()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        probe.queue_declare(m.routing_key, passive=True)
    assert info.value.reply_code == 404 and info.value.reply_text == f"NOT_FOUND - no queue '{m.routing_key}' in vhost '/'"
    server.close()


def test_reply_consumer_must_not_ack(connect: Connect) -> None:
    ch = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=False)
    assert (info.value.reply_code, info.value.reply_text) == (406, "PRECONDITION_FAILED - reply consumer cannot acknowledge")


def test_one_reply_consumer_per_channel(connect: Connect) -> None:
    ch = connect().channel()
    ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    assert (info.value.reply_code, info.value.reply_text) == (406, "PRECONDITION_FAILED - reply consumer already set")


def test_asking_for_a_reply_without_a_reply_consumer_is_refused(connect: Connect) -> None:
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("rpc-none")
    ch.basic_publish("", "rpc-none", b"x", pika.BasicProperties(reply_to=REPLY_TO))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.queue_declare("rpc-none", passive=True)  # the close arrives before this answer
    assert (info.value.reply_code, info.value.reply_text) == (406, "PRECONDITION_FAILED - fast reply consumer does not exist")
    assert conn.channel().queue_declare("rpc-none", passive=True).method.message_count == 0  # nothing was routed


def test_a_reply_to_a_requester_that_is_gone_is_dropped(connect: Connect) -> None:
    requester = connect()
    rch = requester.channel()
    rch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    rch.queue_declare("rpc-gone")
    rch.basic_publish("", "rpc-gone", b"q", pika.BasicProperties(reply_to=REPLY_TO))
    server = connect()
    sch = server.channel()
    m, props, _ = wait_for(lambda: (got := sch.basic_get("rpc-gone", auto_ack=True))[0] and got, timeout=5)
    requester.close()
    sch.basic_publish("", props.reply_to, b"late reply")  # no error, no effect
    assert sch.queue_declare("rpc-gone", passive=True).method.message_count == 0  # the channel lives


def test_a_mandatory_reply_is_delivered_and_returned(connect: Connect) -> None:
    """RabbitMQ 3.10: the pseudo-queue is not a route, so a mandatory reply comes back as 312 NO_ROUTE
    although it was delivered (4.2 changed this)."""
    requester = connect()
    rch = requester.channel()
    replies: list[bytes] = []
    rch.basic_consume(REPLY_TO, lambda c, m, p, b: replies.append(b), auto_ack=True)
    rch.queue_declare("rpc-mand")
    rch.basic_publish("", "rpc-mand", b"q", pika.BasicProperties(reply_to=REPLY_TO))
    server = connect()
    sch = server.channel()
    returned: list[Any] = []
    sch.add_on_return_callback(lambda c, m, p, b: returned.append(m))
    _, props, _ = wait_for(lambda: (got := sch.basic_get("rpc-mand", auto_ack=True))[0] and got, timeout=5)
    sch.basic_publish("", props.reply_to, b"answer", mandatory=True)

    def pump() -> bool:
        requester.process_data_events(time_limit=0.02)
        server.process_data_events(time_limit=0.02)
        return bool(replies and returned)

    wait_for(pump, timeout=5)
    assert replies == [b"answer"] and returned[0].reply_code == 312
