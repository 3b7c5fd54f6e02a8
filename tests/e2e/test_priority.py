"""Priority queues (classic queues with x-max-priority), as RabbitMQ's rabbit_priority_queue serves them.

Higher priority first; publish order within a priority; no priority property is 0; more than
x-max-priority counts as x-max-priority; a requeued message goes back to its place in its level.
"""

from __future__ import annotations

from collections.abc import Callable

import pika
import pytest

BlockingChannel = pika.adapters.blocking_connection.BlockingChannel

# (body, priority property): the order below is publish order.
PUBLISHED = [
    (b"none-1", None), (b"p1-a", 1), (b"p5-a", 5), (b"p10-a", 10), (b"p5-b", 5),
    (b"p0", 0), (b"p200", 200), (b"p1-b", 1), (b"none-2", None),
]  # fmt: skip
EXPECTED = [b"p10-a", b"p200", b"p5-a", b"p5-b", b"p1-a", b"p1-b", b"none-1", b"p0", b"none-2"]


def publish_all(ch: BlockingChannel, queue: str) -> None:
    for body, prio in PUBLISHED:
        ch.basic_publish("", queue, body, pika.BasicProperties(priority=prio))


def get_all(ch: BlockingChannel, queue: str, ack: bool = True) -> list[tuple[bytes, bool, int]]:
    got = []
    while True:
        method, _, body = ch.basic_get(queue, auto_ack=ack)
        if method is None:
            return got
        got.append((body, method.redelivered, method.delivery_tag))


def test_higher_priority_first_publish_order_within_a_level(connect: Callable[..., pika.BlockingConnection]) -> None:
    ch = connect().channel()
    ch.queue_declare("prio", arguments={"x-max-priority": 10})
    ch.confirm_delivery()
    publish_all(ch, "prio")
    assert ch.queue_declare("prio", passive=True).method.message_count == len(PUBLISHED)
    assert [b for b, _, _ in get_all(ch, "prio")] == EXPECTED


def test_a_consumer_is_served_the_backlog_in_priority_order(connect: Callable[..., pika.BlockingConnection]) -> None:
    ch = connect().channel()
    ch.queue_declare("prio-c", arguments={"x-max-priority": 10})
    ch.confirm_delivery()
    publish_all(ch, "prio-c")
    ch.basic_qos(prefetch_count=1)
    got = []
    for method, _, body in ch.consume("prio-c", inactivity_timeout=2):
        if method is None:
            break
        got.append(body)
        ch.basic_ack(method.delivery_tag)
        if len(got) == len(EXPECTED):
            break
    ch.cancel()
    assert got == EXPECTED


def test_requeued_messages_go_back_to_their_place_in_their_level(
    connect: Callable[..., pika.BlockingConnection],
) -> None:
    ch = connect().channel()
    ch.queue_declare("prio-r", arguments={"x-max-priority": 10})
    ch.confirm_delivery()
    publish_all(ch, "prio-r")
    first = [ch.basic_get("prio-r", auto_ack=False) for _ in range(3)]  # p10-a, p200, p5-a
    assert [body for _, _, body in first] == EXPECTED[:3]
    ch.basic_nack(first[-1][0].delivery_tag, multiple=True, requeue=True)
    again = get_all(ch, "prio-r")
    assert [b for b, _, _ in again] == EXPECTED
    assert [r for _, r, _ in again] == [True, True, True] + [False] * (len(EXPECTED) - 3)


def test_a_higher_priority_message_overtakes_a_waiting_backlog(
    connect: Callable[..., pika.BlockingConnection],
) -> None:
    ch = connect().channel()
    ch.queue_declare("prio-late", arguments={"x-max-priority": 5})
    ch.confirm_delivery()
    for i in range(50):
        ch.basic_publish("", "prio-late", b"low-%d" % i, pika.BasicProperties(priority=1))
    ch.basic_publish("", "prio-late", b"urgent", pika.BasicProperties(priority=5))
    assert ch.basic_get("prio-late", auto_ack=True)[2] == b"urgent"
    assert ch.basic_get("prio-late", auto_ack=True)[2] == b"low-0"


@pytest.mark.parametrize("arguments", [{}, {"x-max-priority": 0}], ids=["no-x-max-priority", "x-max-priority-0"])
def test_queues_without_priorities_keep_publish_order(
    connect: Callable[..., pika.BlockingConnection], arguments: dict[str, object]
) -> None:
    ch = connect().channel()
    ch.queue_declare("fifo", arguments=arguments)
    ch.confirm_delivery()
    publish_all(ch, "fifo")
    assert [b for b, _, _ in get_all(ch, "fifo")] == [body for body, _ in PUBLISHED]


def test_purge_and_counts_of_a_priority_queue(connect: Callable[..., pika.BlockingConnection]) -> None:
    ch = connect().channel()
    ch.queue_declare("prio-p", arguments={"x-max-priority": 3})
    ch.confirm_delivery()
    publish_all(ch, "prio-p")
    assert ch.queue_purge("prio-p").method.message_count == len(PUBLISHED)
    assert get_all(ch, "prio-p") == []
    publish_all(ch, "prio-p")
    assert len(get_all(ch, "prio-p")) == len(PUBLISHED)


@pytest.mark.parametrize(
    ("key", "value"),
    [("x-max-priority", 10), ("x-max-priority", 0), ("x-queue-mode", "lazy"), ("x-queue-version", 2)],
)
def test_a_quorum_queue_refuses_classic_only_arguments(
    connect: Callable[..., pika.BlockingConnection], key: str, value: object
) -> None:
    conn = connect()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        conn.channel().queue_declare("qq", durable=True, arguments={"x-queue-type": "quorum", key: value})
    assert e.value.reply_code == 406
    assert e.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg '{key}' for queue 'qq' in vhost '/' of queue type rabbit_quorum_queue"
    )
    conn.channel().queue_declare("qq", durable=True, arguments={"x-queue-type": "quorum", "x-foo": 1})


@pytest.mark.parametrize(
    ("value", "why"),
    [(256, "{max_value_exceeded,256}"), (-1, "{value_negative,-1}"), ("a", '"expected integer, got longstr"')],
)
def test_a_bad_x_max_priority_is_refused_as_rabbitmq_does(
    connect: Callable[..., pika.BlockingConnection], value: object, why: str
) -> None:
    conn = connect()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        conn.channel().queue_declare("cp", arguments={"x-max-priority": value})
    assert e.value.reply_code == 406
    assert e.value.reply_text == f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'cp' in vhost '/': {why}"
