"""x-single-active-consumer: one consumer at a time gets the queue's messages; the others wait in
registration order and take over when it goes (cancel, channel closed, with its unacked messages
back in the queue). AMQP only: bench/conformance_vs_rabbitmq.py runs it against RabbitMQ too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika

Connect = Callable[..., pika.BlockingConnection]
SAC = {"x-single-active-consumer": True}


class Consumer:
    def __init__(self, connect: Connect, queue: str, ack: bool = True) -> None:
        self.conn = connect()
        self.ch = self.conn.channel()
        self.ch.basic_qos(prefetch_count=50)
        self.got: list[bytes] = []
        self.ack = ack

        def on(ch: Any, method: Any, props: Any, body: bytes) -> None:
            self.got.append(body)
            if self.ack:
                ch.basic_ack(method.delivery_tag)

        self.tag = self.ch.basic_consume(queue, on)

    def pump(self, seconds: float = 0.3) -> None:
        self.conn.process_data_events(time_limit=seconds)

    def pump_until(self, n: int, timeout: float = 10) -> None:
        """Read until ``n`` messages arrived (or the timeout: the caller's assertion says what is missing)."""
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            self.conn.process_data_events(time_limit=0.05)


def publish(connect: Connect, queue: str, bodies: list[bytes]) -> None:
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    for b in bodies:
        ch.basic_publish("", queue, b)
    conn.close()


def test_only_the_first_consumer_is_served_until_it_cancels(connect: Connect) -> None:
    setup = connect().channel()
    setup.queue_declare("sac", arguments=SAC)
    first, second = Consumer(connect, "sac"), Consumer(connect, "sac")
    publish(connect, "sac", [b"a%d" % i for i in range(10)])
    first.pump_until(10)
    second.pump()
    assert first.got == [b"a%d" % i for i in range(10)] and second.got == []
    first.ch.basic_cancel(first.tag)
    publish(connect, "sac", [b"b%d" % i for i in range(5)])
    second.pump_until(5)
    first.pump()
    assert second.got == [b"b%d" % i for i in range(5)] and len(first.got) == 10


def test_the_next_consumer_takes_over_the_unacked_messages_of_one_that_goes(connect: Connect) -> None:
    setup = connect().channel()
    setup.queue_declare("sac2", arguments=SAC)
    first = Consumer(connect, "sac2", ack=False)  # holds everything unacked
    second = Consumer(connect, "sac2")
    publish(connect, "sac2", [b"m%d" % i for i in range(6)])
    first.pump_until(6)
    second.pump()
    assert len(first.got) == 6 and second.got == []
    first.ch.close()  # its six unacked messages go back, to the consumer now active
    second.pump_until(6)
    assert second.got == [b"m%d" % i for i in range(6)]


def test_without_the_argument_consumers_share_round_robin(connect: Connect) -> None:
    setup = connect().channel()
    setup.queue_declare("rr")
    first, second = Consumer(connect, "rr"), Consumer(connect, "rr")
    publish(connect, "rr", [b"%d" % i for i in range(6)])
    first.pump_until(3)
    second.pump_until(3)
    assert first.got == [b"0", b"2", b"4"] and second.got == [b"1", b"3", b"5"]
