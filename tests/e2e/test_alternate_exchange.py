"""Alternate exchanges ("alternate-exchange" exchange argument), as rabbit_exchange:route1 applies them.

An exchange whose bindings match nothing (no queue, no exchange) passes the message to its alternate
exchange, with the same routing key; that one may have its own; every exchange is visited once, so
cycles end; a missing alternate exchange routes nowhere. A message routed through an alternate
exchange is not returned to a mandatory publisher. The same tests pass against RabbitMQ 3.10.8.
"""

from __future__ import annotations

from collections.abc import Callable

import pika
import pika.exceptions
import pytest

Connect = Callable[..., pika.BlockingConnection]


def channel(connect: Connect) -> pika.adapters.blocking_connection.BlockingChannel:
    ch = connect().channel()
    ch.confirm_delivery()
    return ch


def setup_ae(ch: pika.adapters.blocking_connection.BlockingChannel, main: str = "main") -> None:
    ch.exchange_declare("ae", "fanout")
    ch.queue_declare("ae-q")
    ch.queue_bind("ae-q", "ae")
    ch.exchange_declare(main, "direct", arguments={"alternate-exchange": "ae"})
    ch.queue_declare("main-q")
    ch.queue_bind("main-q", main, "known")


def body_of(ch: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> bytes | None:
    return ch.basic_get(queue, auto_ack=True)[2]


def test_unroutable_goes_to_the_alternate_exchange_and_is_not_returned(connect: Connect) -> None:
    ch = channel(connect)
    setup_ae(ch)
    ch.basic_publish("main", "nowhere", b"to-ae", mandatory=True)  # no UnroutableError
    ch.basic_publish("main", "known", b"routed", mandatory=True)
    assert body_of(ch, "ae-q") == b"to-ae"
    assert body_of(ch, "main-q") == b"routed"
    assert body_of(ch, "ae-q") is None, "a routed message does not also go to the alternate exchange"


def test_alternate_exchanges_chain_and_keep_the_routing_key(connect: Connect) -> None:
    ch = channel(connect)
    ch.exchange_declare("ae2", "direct")
    ch.queue_declare("ae2-q")
    ch.queue_bind("ae2-q", "ae2", "k")
    ch.exchange_declare("ae1", "direct", arguments={"alternate-exchange": "ae2"})
    ch.exchange_declare("top", "topic", arguments={"alternate-exchange": "ae1"})
    ch.basic_publish("top", "k", b"twice-alternated", mandatory=True)
    assert body_of(ch, "ae2-q") == b"twice-alternated"
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("top", "other-key", b"nowhere", mandatory=True)


@pytest.mark.timeout(20)
def test_a_cycle_of_alternate_exchanges_ends_and_the_message_is_returned(connect: Connect) -> None:
    ch = channel(connect)
    ch.exchange_declare("x1", "direct", arguments={"alternate-exchange": "x2"})
    ch.exchange_declare("x2", "direct", arguments={"alternate-exchange": "x1"})
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("x1", "k", b"loop", mandatory=True)


def test_a_missing_alternate_exchange_routes_nowhere(connect: Connect) -> None:
    ch = channel(connect)
    ch.exchange_declare("orphan", "direct", arguments={"alternate-exchange": "does-not-exist"})
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("orphan", "k", b"lost", mandatory=True)


def test_the_alternate_exchange_of_an_exchange_reached_by_binding_is_used(connect: Connect) -> None:
    ch = channel(connect)
    setup_ae(ch, main="inner")
    ch.exchange_declare("outer", "direct")
    ch.exchange_bind("inner", "outer", "k")
    ch.basic_publish("outer", "k", b"via-inner", mandatory=True)
    assert body_of(ch, "ae-q") == b"via-inner"


def test_redeclaring_with_another_alternate_exchange_is_406(connect: Connect) -> None:
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare("main", "direct", arguments={"alternate-exchange": "ae"})
    ch.exchange_declare("main", "direct", arguments={"alternate-exchange": "ae"})  # equivalent
    prefix = "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange 'main' in vhost '/': "
    for arguments, expected in [
        ({"alternate-exchange": "other"}, "received 'other' but current is 'ae'"),
        ({}, "received none but current is the value 'ae' of type 'longstr'"),
    ]:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            conn.channel().exchange_declare("main", "direct", arguments=arguments)
        assert (e.value.reply_code, e.value.reply_text) == (406, prefix + expected)
