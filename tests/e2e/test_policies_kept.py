"""Policies kept across a restart (the sqlite store, a real ``leveret server`` process) and carried by
definitions export and import in RabbitMQ's shape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.helpers import ProcessBroker
from tests.http_client import http_request
from tests.security.test_access_api import ADMIN, Api, make_api

POLICY = {"pattern": "^cap", "definition": {"max-length": 3}, "priority": 1, "apply-to": "queues"}
OPERATOR = {
    "pattern": "^cap",
    "definition": {"max-length": 2, "message-ttl": 900000},
    "priority": 0,
    "apply-to": "all",
}


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, payload, _ = http_request(base + path, method, body, ADMIN)
    return status, payload


def test_policies_survive_a_restart(tmp_path: Path) -> None:
    b = ProcessBroker(tmp_path / "data").start()
    try:
        http = f"http://127.0.0.1:{b.http_port}"
        assert call(http, "PUT", "/api/policies/%2F/cap", POLICY)[0] == 201
        assert call(http, "PUT", "/api/operator-policies/%2F/ops", OPERATOR)[0] == 201
        assert (
            call(http, "PUT", "/api/policies/%2F/gone", {"pattern": "x", "definition": {"expires": 5}})[0]
            == 201
        )
        assert call(http, "DELETE", "/api/policies/%2F/gone")[0] == 204
        with pika.BlockingConnection(pika.URLParameters(b.url)) as conn:
            ch = conn.channel()
            ch.queue_declare("cap", durable=True)
            for i in range(5):
                ch.basic_publish("", "cap", str(i).encode(), pika.BasicProperties(delivery_mode=2))
            assert ch.queue_declare("cap", passive=True).method.message_count == 2
        assert b.terminate() == 0
        b.start()
        http = f"http://127.0.0.1:{b.http_port}"
        status, policies = call(http, "GET", "/api/policies")
        assert policies == [{"vhost": "/", "name": "cap", **POLICY}]
        assert call(http, "GET", "/api/operator-policies")[1] == [{"vhost": "/", "name": "ops", **OPERATOR}]
        q = call(http, "GET", "/api/queues/%2F/cap")[1]
        assert (q["policy"], q["operator_policy"]) == ("cap", "ops")
        assert q["effective_policy_definition"] == {"max-length": 2, "message-ttl": 900000}
        with pika.BlockingConnection(pika.URLParameters(b.url)) as conn:
            ch = conn.channel()
            ch.basic_publish("", "cap", b"5", pika.BasicProperties(delivery_mode=2))
            assert ch.queue_declare("cap", passive=True).method.message_count == 2
    finally:
        b.kill()


@pytest.fixture
def pair() -> Iterator[tuple[Api, Api]]:
    a, b = make_api(), make_api()
    yield a, b
    a.broker.stop()
    b.broker.stop()


def test_definitions_round_trip(pair: tuple[Api, Api]) -> None:
    src, dst = pair
    src.ok("PUT", "/api/policies/%2F/cap", POLICY, 201)
    src.ok("PUT", "/api/policies/%2F/ae", {"pattern": "^x", "definition": {"alternate-exchange": "un"}}, 201)
    exported = src.get("/api/definitions")
    assert sorted(exported["policies"], key=lambda p: p["name"]) == [
        {"vhost": "/", "name": "ae", "pattern": "^x", "apply-to": "all", "definition": {"alternate-exchange": "un"},
         "priority": 0},
        {"vhost": "/", "name": "cap", **POLICY},
    ]  # fmt: skip
    assert src.get("/api/definitions/%2F")["policies"] == exported["policies"]
    dst.ok("POST", "/api/definitions", exported, 204)
    assert dst.get("/api/policies") == src.get("/api/policies")
    with dst.connect("guest", "guest") as conn:
        ch = conn.channel()
        ch.queue_declare("cap")
        for i in range(5):
            ch.basic_publish("", "cap", str(i).encode())
        assert ch.queue_declare("cap", passive=True).method.message_count == 3


def test_definitions_import_refuses_a_bad_policy(pair: tuple[Api, Api]) -> None:
    _, dst = pair
    doc = {"policies": [{"vhost": "/", "name": "bad", "pattern": ".*", "definition": {"max-length": "abc"}}]}
    status, reply = dst.request("POST", "/api/definitions", doc)
    assert status == 400 and "is not a valid maximum length" in reply["reason"]
    assert dst.get("/api/policies") == []
