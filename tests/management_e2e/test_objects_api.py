"""Exchanges, bindings, publish, get, queue actions, health checks and the aliveness test over real
HTTP against a live broker, with RabbitMQ 3.10's paths, statuses, shapes and texts."""

from __future__ import annotations

import base64
from typing import Any

from .conftest import Live


def _ok(live: Live, method: str, path: str, body: Any = None, status: int = 204) -> Any:
    got, answer, _ = live.request(method, path, body)
    assert got == status, (method, path, got, answer)
    return answer


def test_exchange_put_delete_and_bindings(live: Live) -> None:
    assert live.request("PUT", "/api/exchanges/%2F/logs", {"type": "topic", "durable": True})[0] == 201
    assert live.request("PUT", "/api/exchanges/%2F/logs", {"type": "topic", "durable": True})[0] == 204
    x = live.get("/api/exchanges/%2F/logs")
    assert (x["type"], x["durable"], x["auto_delete"], x["internal"]) == ("topic", True, False, False)
    status, body, _ = live.request("PUT", "/api/exchanges/%2F/logs", {"type": "fanout", "durable": True})
    assert status == 400 and "inequivalent arg 'type'" in body["reason"], body
    _ok(live, "PUT", "/api/exchanges/%2F/sink", {"type": "fanout"}, 201)
    _ok(live, "PUT", "/api/queues/%2F/audit", {"durable": False}, 201)

    status, _, headers = live.request("POST", "/api/bindings/%2F/e/logs/q/audit", {"routing_key": "a.b c~d"})
    assert status == 201 and headers["Location"] == "audit/a.b%2Bc%257Ed"  # the key quoted again, as RabbitMQ
    status, _, headers = live.request(
        "POST", "/api/bindings/%2F/e/logs/e/sink", {"routing_key": "k", "arguments": {"x": 1}}
    )
    assert status == 201
    props = headers["Location"].rsplit("/", 1)[1]
    assert props.startswith("k~") and len(props) > 2

    (b,) = live.get("/api/bindings/%2F/e/logs/q/audit")
    assert b == {"source": "logs", "vhost": "/", "destination": "audit", "destination_type": "queue",
                 "routing_key": "a.b c~d", "arguments": {}, "properties_key": "a.b+c%7Ed"}  # fmt: skip
    assert live.get("/api/bindings/%2F/e/logs/q/audit/a.b+c%257Ed")["routing_key"] == "a.b c~d"
    assert live.get(f"/api/bindings/%2F/e/logs/e/sink/{props}")["arguments"] == {"x": 1}
    sources = live.get("/api/exchanges/%2F/logs/bindings/source")
    assert sorted(x["destination"] for x in sources) == ["audit", "sink"]
    assert [x["source"] for x in live.get("/api/exchanges/%2F/sink/bindings/destination")] == ["logs"]
    assert live.request("GET", "/api/bindings/%2F/e/logs/q/audit/nope")[:2] == (
        404, {"error": "Object Not Found", "reason": "Not Found"})  # fmt: skip
    assert live.request("GET", "/api/bindings/%2F/e/nope/q/audit")[:2] == (200, [])  # as RabbitMQ
    assert live.request("POST", "/api/bindings/%2F/e/logs/q/nope", {})[0] == 404

    # if-unused: logs is the source of two bindings
    status, body, _ = live.request("DELETE", "/api/exchanges/%2F/logs?if-unused=true")
    assert status == 400 and "in use" in body["reason"], body
    _ok(live, "DELETE", "/api/bindings/%2F/e/logs/q/audit/a.b+c%257Ed")
    _ok(live, "DELETE", f"/api/bindings/%2F/e/logs/e/sink/{props}")
    assert live.get("/api/bindings/%2F/e/logs/q/audit") == []
    _ok(live, "DELETE", "/api/exchanges/%2F/logs?if-unused=true")
    assert live.request("GET", "/api/exchanges/%2F/logs")[0] == 404
    assert live.request("DELETE", "/api/exchanges/%2F/logs")[0] == 404
    # rabbit_channel's 403 through direct_request: 401 "Access refused."
    assert live.request("DELETE", "/api/exchanges/%2F/amq.direct")[:2] == (
        401, {"error": "not_authorised", "reason": "Access refused."})  # fmt: skip


def test_publish_routes_with_properties_and_get_sees_them(live: Live) -> None:
    _ok(live, "PUT", "/api/queues/%2F/q1", {"durable": True}, 201)
    props = {"content_type": "text/plain", "delivery_mode": 2, "priority": 3, "timestamp": 1700000000,
             "expiration": "60000", "correlation_id": "c1", "reply_to": "r", "message_id": "m1", "type": "t",
             "app_id": "a", "user_id": "guest", "headers": {"h": "v", "n": 7, "l": [1, "x"], "t": {"in": True}}}  # fmt: skip
    body = {"routing_key": "q1", "properties": props, "payload": "hello", "payload_encoding": "string"}
    assert _ok(live, "POST", "/api/exchanges/%2F/amq.default/publish", body, 200) == {"routed": True}
    raw = base64.b64encode(b"\xff\x00bin").decode()
    body2 = {"routing_key": "q1", "properties": {}, "payload": raw, "payload_encoding": "base64"}
    assert _ok(live, "POST", "/api/exchanges/%2F/amq.default/publish", body2, 200) == {"routed": True}
    nowhere = {"routing_key": "none", "properties": {}, "payload": "x", "payload_encoding": "string"}
    assert _ok(live, "POST", "/api/exchanges/%2F/amq.direct/publish", nowhere, 200) == {"routed": False}

    got = _ok(live, "POST", "/api/queues/%2F/q1/get",
              {"count": "5", "ackmode": "ack_requeue_false", "encoding": "auto", "truncate": "3"}, 200)  # fmt: skip
    assert len(got) == 2
    first, second = got
    assert first["payload"] == "hel" and first["payload_bytes"] == 5 and first["payload_encoding"] == "string"
    assert first["exchange"] == "" and first["routing_key"] == "q1" and first["message_count"] == 1
    p = first["properties"]
    for k, v in props.items():
        assert p[k] == v, (k, p[k], v)
    assert second["payload_encoding"] == "base64" and base64.b64decode(second["payload"]) == b"\xff\x00b"

    # and over AMQP the properties are the ones sent
    _ok(live, "POST", "/api/exchanges/%2F/amq.default/publish", body, 200)
    conn = live.connect()
    try:
        method, header, got_body = conn.channel().basic_get("q1", auto_ack=True)
        assert got_body == b"hello" and header.delivery_mode == 2 and header.headers["n"] == 7
        assert header.timestamp == 1700000000 and header.priority == 3
    finally:
        conn.close()


def test_publish_errors_are_rabbitmqs(live: Live) -> None:
    path = "/api/exchanges/%2F/amq.default/publish"
    status, body, _ = live.request("POST", path, {"routing_key": "x"})
    assert (status, body) == (400, {"error": "bad_request",
                                    "reason": "[{key_missing,properties},{key_missing,payload},"
                                              "{key_missing,payload_encoding}]"})  # fmt: skip
    base = {"routing_key": "x", "payload": "p", "payload_encoding": "string"}
    for props, reason in (({"delivery_mode": "2"}, ["not_int", "delivery_mode"]),
                          ({"priority": 1.5}, ["not_int", "priority"]),
                          ({"timestamp": "now"}, ["not_int", "timestamp"]),
                          ({"expiration": 100}, ["not_string", "expiration"])):  # fmt: skip
        status, body, _ = live.request("POST", path, {**base, "properties": props})
        assert (status, body["reason"]) == (400, reason), body
    assert live.request("POST", "/api/exchanges/%2F/nope/publish", {**base, "properties": {}})[0] == 400  # RabbitMQ: "404 NOT_FOUND - no exchange ..."
    status, body, _ = live.request("POST", path, {**base, "properties": {"user_id": "someone"}})
    assert status == 400, body
    assert body["reason"].startswith("406 PRECONDITION_FAILED - user_id property set to"), body
    # a queue refusing the message (reject-publish overflow): the confirm channel's nack
    limits = {"x-max-length": 0, "x-overflow": "reject-publish"}
    _ok(live, "PUT", "/api/queues/%2F/full", {"arguments": limits}, 201)
    status, body, _ = live.request("POST", path, {**base, "routing_key": "full", "properties": {}})
    assert (status, body["reason"]) == (400, "Unable to publish message. Check queue limits."), body


def test_publish_runs_as_the_http_user(live: Live) -> None:
    _ok(live, "PUT", "/api/users/reader", {"password": "pw", "tags": "management"}, 201)
    _ok(live, "PUT", "/api/permissions/%2F/reader", {"configure": "", "write": "", "read": ".*"}, 201)
    status, body, _ = live.request(
        "POST", "/api/exchanges/%2F/amq.default/publish",
        {"routing_key": "x", "properties": {}, "payload": "p", "payload_encoding": "string"}, auth=("reader", "pw"),
    )  # fmt: skip
    assert (status, body) == (401, {"error": "not_authorised", "reason": "Access refused."})


def test_get_requires_keys_and_ackmodes_behave(live: Live) -> None:
    _ok(live, "PUT", "/api/exchanges/%2F/dlx", {"type": "fanout"}, 201)
    _ok(live, "PUT", "/api/queues/%2F/dead", {}, 201)
    _ok(live, "POST", "/api/bindings/%2F/e/dlx/q/dead", {}, 201)
    _ok(live, "PUT", "/api/queues/%2F/work", {"arguments": {"x-dead-letter-exchange": "dlx"}}, 201)
    status, body, _ = live.request("POST", "/api/queues/%2F/work/get", {"count": 1})
    assert (status, body["reason"]) == (400, "[{key_missing,ackmode},{key_missing,encoding}]")
    status, body, _ = live.request("POST", "/api/queues/%2F/work/get",
                                   {"count": 1, "ackmode": "ack_requeue_true", "encoding": "utf8"})  # fmt: skip
    assert (status, body["reason"]) == (400, "Unsupported encoding. Please use auto or base64.")
    pub = {"routing_key": "work", "properties": {}, "payload_encoding": "string"}
    for i in range(2):
        _ok(live, "POST", "/api/exchanges/%2F/amq.default/publish", {**pub, "payload": f"m{i}"}, 200)
    get = {"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto"}
    first = _ok(live, "POST", "/api/queues/%2F/work/get", get, 200)
    assert [(m["payload"], m["redelivered"]) for m in first] == [("m0", False), ("m1", False)]
    again = _ok(live, "POST", "/api/queues/%2F/work/get", {**get, "ackmode": "reject_requeue_true"}, 200)
    assert [(m["payload"], m["redelivered"]) for m in again] == [("m0", True), ("m1", True)]
    gone = _ok(live, "POST", "/api/queues/%2F/work/get", {**get, "ackmode": "reject_requeue_false"}, 200)
    assert len(gone) == 2 and live.queue("work")["messages"] == 0
    dead = _ok(live, "POST", "/api/queues/%2F/dead/get", {**get, "ackmode": "ack_requeue_false"}, 200)
    assert [m["payload"] for m in dead] == ["m0", "m1"]
    assert dead[0]["properties"]["headers"]["x-death"][0]["reason"] == "rejected"


def test_queue_actions(live: Live) -> None:
    _ok(live, "PUT", "/api/queues/%2F/q", {}, 201)
    _ok(live, "POST", "/api/queues/%2F/q/actions", {"action": "sync"})
    _ok(live, "POST", "/api/queues/%2F/q/actions", {"action": "cancel_sync"})
    status, body, _ = live.request("POST", "/api/queues/%2F/q/actions", {"action": "explode"})
    assert (status, body["reason"]) == (400, '{unknown,<<"explode">>}')
    status, body, _ = live.request("POST", "/api/queues/%2F/q/actions", {})
    assert (status, body["reason"]) == (400, "[{key_missing,action}]")
    assert live.request("POST", "/api/queues/%2F/nope/actions", {"action": "sync"})[0] == 404


def test_health_checks(live: Live) -> None:
    ok = {"status": "ok"}
    assert live.get("/api/health/checks/alarms") == ok
    assert live.get("/api/health/checks/local-alarms") == ok
    assert live.get("/api/health/checks/virtual-hosts") == ok
    assert live.get("/api/health/checks/certificate-expiration/1/months") == ok
    assert live.request("GET", "/api/health/checks/certificate-expiration/1/fortnights")[0] == 400
    single = {"status": "ok", "reason": "single node cluster"}
    assert live.get("/api/health/checks/node-is-quorum-critical") == single
    assert live.get("/api/health/checks/node-is-mirror-sync-critical") == single
    port = live.broker.port
    assert live.get(f"/api/health/checks/port-listener/{port}") == {"status": "ok", "port": port}
    status, body, _ = live.request("GET", "/api/health/checks/port-listener/1")
    assert status == 503 and body["status"] == "failed" and body["reason"] == "No active listener"
    assert body["missing"] == 1 and port in body["ports"]
    assert live.request("GET", "/api/health/checks/port-listener/abc")[:2] == (
        400, {"error": "bad_request", "reason": "Invalid port"})  # fmt: skip
    for name in ("amqp", "amqp091", "amqp0-9-1"):
        got = live.get(f"/api/health/checks/protocol-listener/{name}")
        assert got == {"status": "ok", "protocol": "amqp"}
    status, body, _ = live.request("GET", "/api/health/checks/protocol-listener/mqtt")
    assert status == 503 and body["missing"] == "mqtt" and "amqp" in body["protocols"]

    server = live.broker.app.server
    assert server is not None
    live.broker.call(setattr, server.memory_alarm, "active", True)
    try:
        status, body, _ = live.request("GET", "/api/health/checks/alarms")
        node = live.get("/api/overview")["node"]
        assert (status, body) == (503, {"status": "failed", "reason": "There are alarms in effect in the cluster",
                                        "alarms": [{"resource": "memory", "node": node}]})  # fmt: skip
        status, body, _ = live.request("GET", "/api/health/checks/local-alarms")
        assert status == 503 and body["reason"] == "There are alarms in effect on the node"
    finally:
        live.broker.call(setattr, server.memory_alarm, "active", False)


def test_aliveness_declares_publishes_and_gets(live: Live) -> None:
    assert live.get("/api/aliveness-test/%2F") == {"status": "ok"}
    q = live.queue("aliveness-test")
    assert q["durable"] is False and q["messages"] == 0
    assert live.request("GET", "/api/aliveness-test/nope")[0] == 404
    # a consumer on the queue takes test_message before the get can: 503
    conn = live.connect()
    try:
        ch = conn.channel()
        ch.basic_consume("aliveness-test", lambda *a: None, auto_ack=True)
        status, body, _ = live.request("GET", "/api/aliveness-test/%2F")
        assert (status, body) == (503, {"status": "failed", "reason": "aliveness-test queue is empty"})
    finally:
        conn.close()


def test_policy_and_parameter_lists_are_empty(live: Live) -> None:
    for path in ("/api/policies", "/api/policies/%2F", "/api/operator-policies", "/api/parameters",
                 "/api/parameters/shovel", "/api/parameters/shovel/%2F"):  # fmt: skip
        assert live.get(path) == [], path
