"""Prometheus /metrics on a live broker, parsed with prometheus_client's own parser."""

from __future__ import annotations

import base64
import urllib.request
from collections.abc import Callable

import pika
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Holder, Live

Key = tuple[str, tuple[tuple[str, str], ...]]


def scrape(live: Live, path: str = "/metrics") -> dict[Key, float]:
    req = urllib.request.Request(live.metrics_url + path)
    if path != "/metrics":  # per-object metrics need a monitoring user; guest is an administrator
        req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    out: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict[Key, float], name: str, **labels: str) -> float:
    return m[(name, tuple(sorted(labels.items())))]


def test_queue_gauges_match_what_pika_did(live: Live, holders: Callable[..., Holder]) -> None:
    with live.connect() as conn:
        ch = conn.channel()
        ch.queue_declare("task_queue", durable=True)
        ch.queue_declare("hello")
        for i in range(5):
            ch.basic_publish("", "task_queue", b"task %d" % i, pika.BasicProperties(delivery_mode=2))
        ch.basic_publish("", "hello", b"Hello World!")
    worker = holders(live.amqp, "task_queue", 2)
    worker.wait_for(2)

    m = scrape(live)
    assert value(m, "rabbitmq_queue_messages_ready") == 4
    assert value(m, "rabbitmq_queue_messages_unacked") == 2
    assert value(m, "rabbitmq_queue_messages") == 6
    assert value(m, "rabbitmq_queue_consumers") == 1
    assert value(m, "rabbitmq_queues") == 2
    assert value(m, "rabbitmq_connections") == 1 and value(m, "rabbitmq_channels") == 1
    assert value(m, "rabbitmq_consumers") == 1
    assert value(m, "rabbitmq_global_messages_received_total", protocol="amqp091") == 6
    assert value(m, "rabbitmq_global_messages_delivered_total", protocol="amqp091") == 2
    assert value(m, "rabbitmq_process_resident_memory_bytes") > 1_000_000

    per = scrape(live, "/metrics/per-object")
    tq, hq = {"vhost": "/", "queue": "task_queue"}, {"vhost": "/", "queue": "hello"}
    assert value(per, "rabbitmq_queue_messages_ready", **tq) == 3
    assert value(per, "rabbitmq_queue_messages_unacked", **tq) == 2
    assert value(per, "rabbitmq_queue_messages_ready", **hq) == 1
    assert value(per, "rabbitmq_queue_messages_unacked", **hq) == 0
    assert value(per, "rabbitmq_queue_messages_ready_bytes", **hq) == len(b"Hello World!")

    # The worker dies: its two deliveries are ready again at the next scrape.
    worker.kill()
    from tests.helpers import wait_for

    wait_for(lambda: value(scrape(live), "rabbitmq_connections") == 0)
    m = scrape(live)
    assert value(m, "rabbitmq_queue_messages_ready") == 6 and value(m, "rabbitmq_queue_messages_unacked") == 0


def test_counters_increase(live: Live) -> None:
    before = scrape(live)
    with live.connect() as conn:
        ch = conn.channel()
        ch.queue_declare("q")
        ch.confirm_delivery()
        for i in range(10):
            ch.basic_publish("", "q", b"%d" % i)
        for _ in range(4):
            method, _, _ = ch.basic_get("q")
            ch.basic_ack(method.delivery_tag)
        method, _, _ = ch.basic_get("q")
        ch.basic_nack(method.delivery_tag, requeue=True)
        ch.basic_get("q", auto_ack=True)
    after = scrape(live)
    diffs = {
        name: value(after, name, protocol="amqp091") - value(before, name, protocol="amqp091")
        for name in ("rabbitmq_global_messages_received_total", "rabbitmq_global_messages_delivered_total",
                     "rabbitmq_global_messages_acknowledged_total", "rabbitmq_global_messages_redelivered_total",
                     "rabbitmq_global_messages_confirmed_total")
    }  # fmt: skip
    assert diffs == {
        "rabbitmq_global_messages_received_total": 10,
        "rabbitmq_global_messages_delivered_total": 6,
        "rabbitmq_global_messages_acknowledged_total": 4,
        "rabbitmq_global_messages_redelivered_total": 1,
        "rabbitmq_global_messages_confirmed_total": 10,
    }
    per = scrape(live, "/metrics/per-object")
    assert value(per, "rabbitmq_queue_messages_published_total", vhost="/", queue="q") == 10
    assert value(per, "rabbitmq_queue_messages_ready", vhost="/", queue="q") == 5
