"""Sender-selected distribution: the CC and BCC headers (arrays of routing keys) add routing keys to
a publish; each queue gets the message once; BCC is removed from every copy, CC is kept.
AMQP only: bench/conformance_vs_rabbitmq.py runs it against RabbitMQ too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika

Connect = Callable[..., pika.BlockingConnection]


def get(ch: Any, queue: str) -> tuple[bytes | None, dict[str, Any] | None]:
    method, props, body = ch.basic_get(queue, auto_ack=True)
    return (None, None) if method is None else (body, props.headers)


def test_cc_and_bcc_add_routing_keys_and_bcc_is_removed(connect: Connect) -> None:
    ch = connect().channel()
    ch.confirm_delivery()
    for q in ("to", "cc", "bcc", "nobody"):
        ch.queue_declare(q)
    headers = {"CC": ["cc"], "BCC": ["bcc"], "other": 1}
    ch.basic_publish("", "to", b"m", pika.BasicProperties(headers=headers), mandatory=True)
    kept = {"CC": ["cc"], "other": 1}
    assert [get(ch, q) for q in ("to", "cc", "bcc")] == [(b"m", kept)] * 3
    assert get(ch, "nobody") == (None, None)


def test_a_queue_reached_by_several_keys_gets_one_copy(connect: Connect) -> None:
    ch = connect().channel()
    ch.confirm_delivery()
    ch.exchange_declare("t", "topic")
    ch.queue_declare("all")
    ch.queue_bind("all", "t", "#")
    ch.queue_declare("news")
    ch.queue_bind("news", "t", "news.*")
    ch.basic_publish("t", "sports.x", b"m", pika.BasicProperties(headers={"CC": ["news.a", "news.b"]}))
    assert get(ch, "all")[0] == b"m" and get(ch, "all") == (None, None)
    assert get(ch, "news")[0] == b"m" and get(ch, "news") == (None, None)


def test_a_message_routed_only_by_cc_is_not_returned(connect: Connect) -> None:
    ch = connect().channel()
    ch.confirm_delivery()
    ch.queue_declare("only-cc")
    ch.basic_publish("", "no-such-queue", b"m", pika.BasicProperties(headers={"BCC": ["only-cc"]}), mandatory=True)
    assert get(ch, "only-cc") == (b"m", {})
