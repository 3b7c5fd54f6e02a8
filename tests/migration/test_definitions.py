"""Definitions both ways against a real RabbitMQ 3.10 node: what ``leveretctl export_definitions``
writes, ``rabbitmqctl import_definitions`` takes and recreates; what ``rabbitmqctl export_definitions``
writes, ``leveretctl import_definitions`` takes, or refuses naming each object it cannot honour and
applying nothing; Leveret -> RabbitMQ -> Leveret gives the same (normalised) document back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.helpers import ThreadBroker
from tests.http_client import http_request

from .conftest import NEEDS_RABBITMQ, Rabbit, leveretctl

pytestmark = NEEDS_RABBITMQ

#: Keys that describe the exporting node, not what it holds.
NODE_KEYS = ("rabbit_version", "rabbitmq_version", "product_name", "product_version", "global_parameters")


def without_internal_exchanges(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` as ``rabbitmqctl export_definitions`` (3.10) writes it: it leaves out internal exchanges
    and the ``internal`` key (rabbit_definitions:list_exchanges/0; the management plugin's HTTP export
    keeps both). Leveret writes both."""
    exchanges = [{k: v for k, v in x.items() if k != "internal"} for x in doc["exchanges"] if not x.get("internal")]
    return {**doc, "exchanges": exchanges}


def normalised(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` without the node's identity, every list sorted, so two brokers' exports compare with ==."""
    out = {}
    for key, value in doc.items():
        if key in NODE_KEYS:
            continue
        if key == "vhosts":
            value = [{**v, "limits": sorted(map(list, v.get("limits") or [])), "metadata": tags_listed(v["metadata"])}
                     for v in value]  # fmt: skip
        out[key] = sorted(value, key=lambda item: json.dumps(item, sort_keys=True))
    return out


def tags_listed(metadata: dict[str, Any]) -> dict[str, Any]:
    """RabbitMQ 3.10 keeps ``rabbitmqctl add_vhost --tags prod`` as the string "prod" and exports it so;
    Leveret reads it (as RabbitMQ's import does) as the list ["prod"]."""
    tags = metadata.get("tags")
    return {**metadata, "tags": tags.split(",") if isinstance(tags, str) else tags}


class Leveret:
    def __init__(self) -> None:
        self.broker = ThreadBroker(http_port=0).start()
        self.http_port: int = self.broker.app.http_port  # type: ignore[assignment]

    def req(self, method: str, path: str, body: Any = None) -> Any:
        status, answer, _ = http_request(f"http://127.0.0.1:{self.http_port}{path}", method, body)
        assert status < 300, (method, path, status, answer)
        return answer

    def export(self, path: Path) -> dict[str, Any]:
        r = leveretctl("export_definitions", str(path), http_port=self.http_port)
        assert r.returncode == 0, r.stderr
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc


@pytest.fixture
def leveret() -> Iterator[Leveret]:
    lev = Leveret()
    yield lev
    lev.broker.stop()


@pytest.fixture
def fresh(rabbit: Rabbit) -> Rabbit:
    rabbit.reset()
    return rabbit


def build_topology(lev: Leveret) -> None:
    """One of each thing a definitions file carries, built over Leveret's HTTP API."""
    lev.req("PUT", "/api/vhosts/orders", {"description": "orders of the shop", "tags": "prod,eu"})
    lev.req("PUT", "/api/users/alice", {"password": "alice-pw", "tags": "monitoring"})
    lev.req("PUT", "/api/users/bob", {"password": "bob-pw", "tags": ""})
    lev.req("PUT", "/api/user-limits/bob/max-connections", {"value": 3})
    lev.req("PUT", "/api/permissions/orders/alice", {"configure": "^alice-.*", "write": ".*", "read": ".*"})
    lev.req("PUT", "/api/permissions/%2F/bob", {"configure": "", "write": "^tasks$", "read": ".*"})
    lev.req("PUT", "/api/topic-permissions/orders/alice", {"exchange": "amq.topic", "write": "^alice\\.", "read": ".*"})
    lev.req("PUT", "/api/queues/orders/tasks",
            {"durable": True, "arguments": {"x-max-length": 1000, "x-message-ttl": 60000, "x-dead-letter-exchange": "dlx"}})  # fmt: skip
    lev.req("PUT", "/api/queues/orders/votes", {"durable": True, "arguments": {"x-queue-type": "quorum"}})
    lev.req("PUT", "/api/queues/orders/scratch", {"durable": False, "auto_delete": True, "arguments": {}})
    lev.req("PUT", "/api/queues/%2F/task_queue", {"durable": True, "arguments": {"x-max-priority": 5}})
    lev.req("PUT", "/api/exchanges/orders/events", {"type": "topic", "durable": True})
    lev.req("PUT", "/api/exchanges/orders/dlx", {"type": "fanout", "durable": True, "internal": True})
    lev.req("PUT", "/api/exchanges/orders/by-header", {"type": "headers", "durable": False, "auto_delete": True})
    lev.req("POST", "/api/bindings/orders/e/events/q/tasks", {"routing_key": "order.*", "arguments": {}})
    lev.req("POST", "/api/bindings/orders/e/by-header/q/votes",
            {"routing_key": "", "arguments": {"x-match": "all", "kind": "vote"}})  # fmt: skip
    lev.req("POST", "/api/bindings/orders/e/events/e/by-header", {"routing_key": "vote.#", "arguments": {}})
    lev.req("PUT", "/api/policies/orders/cap",
            {"pattern": "^tasks$", "definition": {"max-length": 500, "overflow": "reject-publish"},
             "apply-to": "queues", "priority": 1})  # fmt: skip
    lev.req("PUT", "/api/vhost-limits/orders/max-queues", {"value": 100})
    lev.req("PUT", "/api/vhost-limits/orders/max-connections", {"value": 50})


def test_leveret_export_imports_into_rabbitmq(fresh: Rabbit, leveret: Leveret, tmp_path: Path) -> None:
    build_topology(leveret)
    ours = leveret.export(tmp_path / "leveret.json")
    assert ours["rabbitmq_version"] == "3.10.8" and ours["product_name"] == "Leveret"
    assert {"component": "vhost-limits", "name": "limits", "vhost": "orders",
            "value": {"max-queues": 100, "max-connections": 50}} in ours["parameters"]  # fmt: skip
    fresh.ctl("import_definitions", str(tmp_path / "leveret.json"))  # exit status 0, or the test fails
    theirs = fresh.export(tmp_path / "rabbitmq.json")
    assert normalised(theirs) == normalised(without_internal_exchanges(ours))
    # and RabbitMQ holds them, as its own listings show (the internal exchange too)
    exchanges = fresh.ctl("list_exchanges", "-p", "orders", "--no-table-headers", "name", "type", "durable",
                          "auto_delete", "internal").stdout.split("\n")  # fmt: skip
    for line in ("events\ttopic\ttrue\tfalse\tfalse", "dlx\tfanout\ttrue\tfalse\ttrue",
                 "by-header\theaders\tfalse\ttrue\tfalse"):  # fmt: skip
        assert line in exchanges
    queues = fresh.ctl("list_queues", "-p", "orders", "--no-table-headers", "name", "type", "durable").stdout
    assert sorted(queues.split("\n")[:-1]) == ["scratch\tclassic\tfalse", "tasks\tclassic\ttrue", "votes\tquorum\ttrue"]
    limits = fresh.ctl("list_vhost_limits", "-p", "orders", "--no-table-headers").stdout
    assert json.loads(limits) == {"max-queues": 100, "max-connections": 50}
    policies = fresh.ctl("list_policies", "-p", "orders", "--no-table-headers").stdout.split("\n")[:-1]
    assert [(vh, name, pattern, to, json.loads(definition), prio)
            for vh, name, pattern, to, definition, prio in (p.split("\t") for p in policies)] == [
        ("orders", "cap", "^tasks$", "queues", {"max-length": 500, "overflow": "reject-publish"}, "1")
    ]  # fmt: skip
    # the password hashes carried over: alice logs in to RabbitMQ with her Leveret password
    fresh.ctl("authenticate_user", "alice", "alice-pw")
    assert fresh.ctl("authenticate_user", "alice", "wrong", check=False).returncode != 0
    conn = pika.BlockingConnection(pika.URLParameters(fresh.url("orders", "alice", "alice-pw")))
    conn.close()


def build_rabbitmq_topology(rabbit: Rabbit) -> None:
    """The same kinds of things, made on RabbitMQ with its own tools."""
    rabbit.ctl("set_cluster_name", "rabbit-prod")
    rabbit.ctl("add_vhost", "billing", "--description", "invoices", "--tags", "prod")
    rabbit.ctl("add_user", "carol", "carol-pw")
    rabbit.ctl("set_user_tags", "carol", "management")
    rabbit.ctl("set_permissions", "-p", "billing", "carol", "^carol-.*", ".*", ".*")
    rabbit.ctl("set_permissions", "-p", "billing", "guest", ".*", ".*", ".*")
    rabbit.ctl("set_topic_permissions", "-p", "billing", "carol", "amq.topic", "^invoice\\.", ".*")
    rabbit.ctl("set_policy", "-p", "billing", "--apply-to", "queues", "--priority", "2", "ttl", "^invoices$",
               '{"message-ttl": 86400000, "max-length-bytes": 1048576}')  # fmt: skip
    rabbit.ctl("set_vhost_limits", "-p", "billing", '{"max-queues": 20}')
    conn = pika.BlockingConnection(pika.URLParameters(rabbit.url("billing")))
    ch = conn.channel()
    ch.exchange_declare("invoicing", "direct", durable=True)
    ch.queue_declare("invoices", durable=True, arguments={"x-dead-letter-exchange": "invoicing", "x-max-priority": 3})
    ch.queue_declare("audit", durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 5})
    ch.queue_bind("invoices", "invoicing", "new")
    ch.queue_bind("audit", "invoicing", "new")
    conn.close()


def test_rabbitmq_export_imports_into_leveret(fresh: Rabbit, leveret: Leveret, tmp_path: Path) -> None:
    build_rabbitmq_topology(fresh)
    theirs = fresh.export(tmp_path / "rabbitmq.json")
    r = leveretctl("import_definitions", str(tmp_path / "rabbitmq.json"), http_port=leveret.http_port)
    assert r.returncode == 0, r.stderr
    # the node's identity is not taken, and it says so
    assert "Not imported (kept as they are on this node): global parameter cluster_name" in r.stderr
    ours = leveret.export(tmp_path / "leveret.json")
    assert normalised(without_internal_exchanges(ours)) == normalised(theirs)
    assert leveret.req("GET", "/api/vhost-limits/billing") == [{"vhost": "billing", "value": {"max-queues": 20}}]
    # carol logs in to Leveret with her RabbitMQ password, and her permissions hold
    conn = pika.BlockingConnection(pika.URLParameters(f"amqp://carol:carol-pw@127.0.0.1:{leveret.broker.port}/billing"))
    ch = conn.channel()
    ch.queue_declare("carol-work", auto_delete=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("not-carols", auto_delete=True)
    assert e.value.reply_code == 403
    conn.close()


def test_import_refuses_what_leveret_cannot_honour(fresh: Rabbit, leveret: Leveret, tmp_path: Path) -> None:
    """A stream queue (RabbitMQ 3.10 has them), a plugin's exchange type and a federation upstream: one
    refusal that names each of them, and nothing of the file applied."""
    conn = pika.BlockingConnection(pika.URLParameters(fresh.url()))
    ch = conn.channel()
    ch.queue_declare("events-log", durable=True, arguments={"x-queue-type": "stream"})
    ch.queue_declare("plain", durable=True)
    conn.close()
    fresh.ctl("add_vhost", "extra")
    doc = fresh.export(tmp_path / "rabbitmq.json")
    doc["exchanges"].append({"name": "spread", "vhost": "/", "type": "x-consistent-hash", "durable": True,
                             "auto_delete": False, "internal": False, "arguments": {}})  # fmt: skip
    doc["parameters"].append({"component": "federation-upstream", "name": "origin", "vhost": "/",
                              "value": {"uri": "amqp://elsewhere"}})  # fmt: skip
    (tmp_path / "rabbitmq.json").write_text(json.dumps(doc))
    before = leveret.req("GET", "/api/definitions")
    r = leveretctl("import_definitions", str(tmp_path / "rabbitmq.json"), http_port=leveret.http_port)
    assert r.returncode != 0
    for named in ("queue 'events-log' in vhost '/' of type 'stream'",
                  "exchange 'spread' in vhost '/' of type 'x-consistent-hash'",
                  "parameter 'origin' of component 'federation-upstream' in vhost '/'"):  # fmt: skip
        assert named in r.stderr, r.stderr
    assert leveret.req("GET", "/api/definitions") == before  # not even the vhost or the plain queue


def test_round_trip_leveret_rabbitmq_leveret(fresh: Rabbit, tmp_path: Path) -> None:
    first = Leveret()
    try:
        build_topology(first)
        original = first.export(tmp_path / "1-leveret.json")
    finally:
        first.broker.stop()
    fresh.ctl("import_definitions", str(tmp_path / "1-leveret.json"))
    fresh.export(tmp_path / "2-rabbitmq.json")
    second = Leveret()
    try:
        r = leveretctl("import_definitions", str(tmp_path / "2-rabbitmq.json"), http_port=second.http_port)
        assert r.returncode == 0, r.stderr
        back = second.export(tmp_path / "3-leveret.json")
    finally:
        second.broker.stop()
    # unchanged, but for what rabbitmqctl export_definitions leaves out (internal exchanges)
    assert normalised(without_internal_exchanges(back)) == normalised(without_internal_exchanges(original))
    assert [x["name"] for x in back["exchanges"] if x["name"] == "dlx"] == []
    assert back["users"] and back["parameters"] and back["policies"] and back["topic_permissions"]
