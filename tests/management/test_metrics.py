"""Prometheus endpoint: RabbitMQ's metric names, parsed with prometheus_client's parser."""

from __future__ import annotations

import base64
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from .conftest import Served


def scrape(
    metrics: Served, path: str, auth: tuple[str, str] | None = None
) -> tuple[dict[str, dict[tuple[tuple[str, str], ...], float]], dict[str, str]]:
    req = urllib.request.Request(metrics.url + path)
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
        ctype = resp.headers["Content-Type"]
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype
    return samples, types


def test_aggregated_metrics(metrics: Served) -> None:
    s, types = scrape(metrics, "/metrics")
    assert s["rabbitmq_queue_messages_ready"][()] == 11
    assert s["rabbitmq_queue_messages_unacked"][()] == 2
    assert s["rabbitmq_queue_messages"][()] == 13
    assert s["rabbitmq_queue_consumers"][()] == 1
    assert s["rabbitmq_queues"][()] == 3
    assert s["rabbitmq_connections"][()] == 1
    assert s["rabbitmq_channels"][()] == 1
    assert s["rabbitmq_consumers"][()] == 1
    assert s["rabbitmq_process_resident_memory_bytes"][()] == 50_000_000
    for name in ("received", "delivered", "acknowledged", "redelivered", "confirmed"):
        assert s[f"rabbitmq_global_messages_{name}_total"][(("protocol", "amqp091"),)] == 0
        assert types[f"rabbitmq_global_messages_{name}"] == "counter"
    assert types["rabbitmq_queue_messages_ready"] == "gauge"
    assert "rabbitmq_queue_messages_published_total" not in s  # per-object only


def test_counters_follow_totals(metrics: Served) -> None:
    import dataclasses

    b = metrics.backend
    b.base_totals = dataclasses.replace(
        b.base_totals, published=10, delivered=7, acked=5, redelivered=1, confirmed=9
    )
    s, _ = scrape(metrics, "/metrics")
    proto = (("protocol", "amqp091"),)
    assert s["rabbitmq_global_messages_received_total"][proto] == 10
    assert s["rabbitmq_global_messages_delivered_total"][proto] == 7
    assert s["rabbitmq_global_messages_acknowledged_total"][proto] == 5
    assert s["rabbitmq_global_messages_redelivered_total"][proto] == 1
    assert s["rabbitmq_global_messages_confirmed_total"][proto] == 9


def test_per_object_metrics(metrics: Served) -> None:
    metrics.backend.add_queue("/", 'odd "name"\\with\nnewline', ready=2)
    s, _ = scrape(metrics, "/metrics/per-object", ("admin", "s3cret"))  # needs a monitoring user
    ready = s["rabbitmq_queue_messages_ready"]
    assert ready[(("queue", "task_queue"), ("vhost", "/"))] == 3
    assert ready[(("queue", "elsewhere"), ("vhost", "other"))] == 7
    assert ready[(("queue", 'odd "name"\\with\nnewline'), ("vhost", "/"))] == 2
    assert s["rabbitmq_queue_messages_unacked"][(("queue", "task_queue"), ("vhost", "/"))] == 2
    assert s["rabbitmq_queue_consumers"][(("queue", "task_queue"), ("vhost", "/"))] == 1
    assert (("queue", "hello"), ("vhost", "/")) in s["rabbitmq_queue_messages_published_total"]
    info = s["rabbitmq_identity_info"]
    assert any(dict(k)["rabbitmq_node"] == "leveret@testhost" for k in info)
