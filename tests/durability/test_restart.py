"""Graceful restarts (SIGTERM, then start on the same data dir), one test per promise of issue 3."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from tests.durability.conftest import close_quietly, connect, recovery
from tests.helpers import ProcessBroker, wait_for

Start = Callable[..., ProcessBroker]


def restart(b: ProcessBroker, start: Start) -> ProcessBroker:
    assert b.terminate() == 0
    return start()


def get_all(
    ch: pika.adapters.blocking_connection.BlockingChannel, queue: str
) -> list[tuple[pika.spec.Basic.GetOk, pika.BasicProperties, bytes]]:
    got = []
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=False)
        if method is None:
            return got
        got.append((method, props, body))


def test_durable_queues_survive_non_durable_do_not(start: Start) -> None:
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("durable-q", durable=True)
    ch.queue_declare("transient-q", durable=False)
    ch.queue_declare("excl-q", durable=True, exclusive=True)
    close_quietly(conn)
    b = restart(b, start)
    assert recovery(b)[:2] == (1, 0)
    conn = connect(b)
    ch = conn.channel()
    assert ch.queue_declare("durable-q", passive=True).method.message_count == 0
    for name in ("transient-q", "excl-q"):
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.queue_declare(name, passive=True)
        assert e.value.reply_code == 404
        ch = conn.channel()
    close_quietly(conn)


def _properties(i: int) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="application/octet-stream", content_encoding="gzip", delivery_mode=2, priority=i % 10,
        correlation_id=f"corr-{i}", reply_to="replies", message_id=f"id-{i}", timestamp=1_700_000_000 + i,
        type="task", user_id="guest", app_id="durability-test",
        headers={
            "n": i, "big": 2**40 + i, "neg": -i, "s": f"héllo {i}", "flag": i % 2 == 0, "dec": Decimal("1.5"), "raw": b"\x00\xff",
            "nested": {"a": [1, "two", {"three": 3}]}, "list": [i, str(i)], "none": None,
            "when": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        },
    )  # fmt: skip


def test_persistent_messages_survive_in_order_byte_identical(start: Start) -> None:
    rnd = random.Random(3)
    bodies = [b"", b"x", os.urandom(300_000), bytes(range(256)) * 3] + [
        rnd.randbytes(rnd.randrange(1, 5000)) for _ in range(60)
    ]
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("work", durable=True)
    for i, body in enumerate(bodies):
        ch.basic_publish("", "work", body, _properties(i))
    close_quietly(conn)
    b = restart(b, start)
    assert recovery(b)[:2] == (1, len(bodies))
    conn = connect(b)
    got = get_all(conn.channel(), "work")
    assert [body for _, _, body in got] == bodies
    for i, (method, props, _) in enumerate(got):
        assert method.redelivered is False
        assert method.routing_key == "work" and method.exchange == ""
        expected = _properties(i)
        assert props.__dict__ == expected.__dict__, i
    close_quietly(conn)


def test_transient_messages_in_a_durable_queue_are_gone(start: Start) -> None:
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("mixed", durable=True)
    for i in range(20):
        ch.basic_publish(
            "", "mixed", str(i).encode(), pika.BasicProperties(delivery_mode=2 if i % 3 == 0 else 1)
        )
    ch.queue_declare("plain", durable=True)
    ch.basic_publish("", "plain", b"transient, no delivery_mode")
    close_quietly(conn)
    b = restart(b, start)
    conn = connect(b)
    ch = conn.channel()
    assert [int(body) for _, _, body in get_all(ch, "mixed")] == [i for i in range(20) if i % 3 == 0]
    assert get_all(ch, "plain") == []
    close_quietly(conn)


def test_unacked_come_back_redelivered_in_place_acked_never(start: Start) -> None:
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("jobs", durable=True)
    for i in range(10):
        ch.basic_publish("", "jobs", str(i).encode(), pika.BasicProperties(delivery_mode=2))
    consumer = connect(b)
    cch = consumer.channel()
    tags = {}
    for _ in range(4):
        method, _props, body = cch.basic_get("jobs")
        tags[int(body)] = method.delivery_tag
    cch.basic_ack(tags[0])
    cch.basic_ack(tags[2])
    consumer.process_data_events(0.1)
    # Stopped while 1 and 3 are delivered and unacked (the consumer's connection is still open).
    b = restart(b, start)
    assert recovery(b)[:2] == (1, 8)
    conn = connect(b)
    got = get_all(conn.channel(), "jobs")
    assert [(int(body), m.redelivered) for m, _, body in got] == [(1, True), (3, True)] + [
        (i, False) for i in range(4, 10)
    ]
    close_quietly(conn)


def test_quorum_queues_survive(start: Start) -> None:
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("qq", durable=True, arguments={"x-queue-type": "quorum"})
    for i in range(5):
        ch.basic_publish("", "qq", str(i).encode(), pika.BasicProperties(delivery_mode=2))
    close_quietly(conn)
    b = restart(b, start)
    conn = connect(b)
    ch = conn.channel()
    # Redeclaring with the same arguments is accepted: the type was kept.
    assert (
        ch.queue_declare("qq", durable=True, arguments={"x-queue-type": "quorum"}).method.message_count == 5
    )
    assert [int(body) for _, _, body in get_all(ch, "qq")] == list(range(5))
    close_quietly(conn)


def test_bindings_of_durable_queues_to_durable_exchanges_survive(start: Start) -> None:
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.exchange_declare("orders", "topic", durable=True)
    ch.exchange_declare("direct-x", "direct", durable=True)
    ch.exchange_declare("transient-x", "fanout", durable=False)
    ch.queue_declare("eu", durable=True)
    ch.queue_declare("all", durable=True)
    ch.queue_bind("eu", "orders", "order.eu.*")
    ch.queue_bind("all", "orders", "#")
    ch.queue_bind("eu", "direct-x", "k", arguments={"x-note": "kept"})
    ch.queue_bind("all", "transient-x")
    ch.queue_bind("all", "amq.fanout")  # a built-in durable exchange
    close_quietly(conn)
    b = restart(b, start)
    conn = connect(b)
    ch = conn.channel()
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2)
    ch.basic_publish("orders", "order.eu.fr", b"1", props)
    ch.basic_publish("orders", "order.us.ny", b"2", props)
    ch.basic_publish("direct-x", "k", b"3", props)
    ch.basic_publish("amq.fanout", "", b"4", props)
    assert [body for _, _, body in get_all(ch, "eu")] == [b"1", b"3"]
    assert [body for _, _, body in get_all(ch, "all")] == [b"1", b"2", b"4"]
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare("transient-x", "fanout", passive=True)
    assert e.value.reply_code == 404
    close_quietly(conn)


def test_recovery_line_is_logged(start: Start) -> None:
    b = start()
    assert recovery(b)[:2] == (0, 0)  # an empty store says so too
    conn = connect(b)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("a", durable=True)
    ch.queue_declare("b", durable=True)
    for i in range(100):
        ch.basic_publish("", "ab"[i % 2], b"m", pika.BasicProperties(delivery_mode=2))
    close_quietly(conn)
    b = restart(b, start)
    queues, messages, seconds = recovery(b)
    assert (queues, messages) == (2, 100)
    assert 0 <= seconds < 5


def test_disk_free_limit_option_sets_the_alarm(start: Start) -> None:
    b = start("--disk-free-limit", str(10**18))  # more than any disk: the alarm is set at once
    wait_for(lambda: any("disk free space alarm set" in line for line in b.log), timeout=5)


def test_a_priority_queue_keeps_its_order_across_a_restart(start: Start) -> None:
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("prio", durable=True, arguments={"x-max-priority": 5})
    ch.confirm_delivery()
    published = [(b"a1", 1), (b"b5", 5), (b"c0", None), (b"d9", 9), (b"e1", 1), (b"f5", 5)]
    for body, prio in published:
        ch.basic_publish("", "prio", body, pika.BasicProperties(delivery_mode=2, priority=prio))
    first = ch.basic_get("prio", auto_ack=False)  # 9 counts as 5, and b5 was published first
    assert first[2] == b"b5"
    close_quietly(conn)  # first goes back, redelivered
    b = restart(b, start)
    conn = connect(b)
    ch = conn.channel()
    got = [(body, m.redelivered) for m, _, body in get_all(ch, "prio")]
    assert got == [(b"b5", True), (b"d9", False), (b"f5", False), (b"a1", False), (b"e1", False), (b"c0", False)]
    close_quietly(conn)


def test_an_alternate_exchange_survives_a_restart(start: Start) -> None:
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.exchange_declare("ae", "fanout", durable=True)
    ch.queue_declare("ae-q", durable=True)
    ch.queue_bind("ae-q", "ae")
    ch.exchange_declare("main", "direct", durable=True, arguments={"alternate-exchange": "ae"})
    close_quietly(conn)
    b = restart(b, start)
    conn = connect(b)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("main", "unbound", b"kept", pika.BasicProperties(delivery_mode=2), mandatory=True)
    assert ch.basic_get("ae-q", auto_ack=True)[2] == b"kept"
    close_quietly(conn)


def test_message_ttls_keep_running_while_the_broker_is_down(start: Start) -> None:
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("dlq", durable=True)
    dlx = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}
    ch.queue_declare("ttl-q", durable=True, arguments={"x-message-ttl": 4000, **dlx})
    ch.queue_declare("own-ttl", durable=True, arguments=dlx)
    ch.confirm_delivery()
    ch.basic_publish("", "ttl-q", b"queue-ttl", pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("", "own-ttl", b"own-ttl", pika.BasicProperties(delivery_mode=2, expiration="4000"))
    ch.basic_publish("", "own-ttl", b"long", pika.BasicProperties(delivery_mode=2, expiration="600000"))
    published = time.monotonic()
    close_quietly(conn)
    assert b.terminate() == 0
    time.sleep(max(0.0, published + 4.5 - time.monotonic()))  # both short TTLs run out while it is down
    b = start()
    up = time.monotonic()
    conn = connect(b)
    ch = conn.channel()
    wait_for(lambda: ch.queue_declare("dlq", passive=True).method.message_count == 2, timeout=5)
    # Expired at the first look after the restart (the 0.5 s tick), not 4 s after it.
    assert time.monotonic() - up < 2.0
    bodies = sorted(ch.basic_get("dlq", auto_ack=True)[2] for _ in range(2))
    assert bodies == [b"own-ttl", b"queue-ttl"]
    assert ch.queue_declare("ttl-q", passive=True).method.message_count == 0
    assert ch.basic_get("own-ttl", auto_ack=True)[2] == b"long", "a TTL not yet over is kept"
    close_quietly(conn)


def test_a_vhost_and_its_durable_queue_come_back(start: Start) -> None:
    b = start("--user", "app:s3cret", "--vhost", "app")
    url = f"amqp://app:s3cret@127.0.0.1:{b.port}/app"
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare("tasks", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "tasks", b"kept", pika.BasicProperties(delivery_mode=2))
    close_quietly(conn)
    assert b.terminate() == 0
    b = start("--user", "app:s3cret")  # without --vhost: the durable queue brings its vhost back
    conn = pika.BlockingConnection(pika.URLParameters(f"amqp://app:s3cret@127.0.0.1:{b.port}/app"))
    assert conn.channel().basic_get("tasks", auto_ack=True)[2] == b"kept"
    close_quietly(conn)
