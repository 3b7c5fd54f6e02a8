"""The management HTTP API against a live broker, with pika doing the messaging."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pika
import pytest

from tests.helpers import ThreadBroker, wait_for

from .conftest import Holder, Live
from .load import Load

Q = "/api/queues/%2F"


def test_overview_totals_and_rates_under_load(live: Live, holders: Callable[..., Holder]) -> None:
    with live.connect() as conn:
        ch = conn.channel()
        ch.queue_declare("backlog", durable=True)
        for i in range(4):
            ch.basic_publish("", "backlog", b"job %d" % i)
    holders(live.amqp, "backlog", 1).wait_for(1)

    ov = live.get("/api/overview")
    assert ov["queue_totals"]["messages"] == 4
    assert ov["queue_totals"]["messages_ready"] == 3
    assert ov["queue_totals"]["messages_unacknowledged"] == 1
    assert ov["object_totals"] == {
        "connections": 1,
        "channels": 1,
        "exchanges": 6,  # "", amq.direct, amq.fanout, amq.topic, amq.headers, amq.match
        "queues": 1,
        "consumers": 1,
    }
    assert ov["message_stats"]["publish"] == 4 and ov["message_stats"]["deliver_get"] == 1
    assert {li["protocol"]: li["port"] for li in ov["listeners"]} == {
        "amqp": live.broker.port, "http": live.broker.app.http_port,
        "http/prometheus": live.broker.app.prometheus_port}  # fmt: skip
    assert ov["rabbitmq_version"].startswith("3.") and ov["product_name"] == "Leveret"
    # only the exchange types a client can really declare (headers is not implemented yet)
    assert [t["name"] for t in ov["exchange_types"]] == ["direct", "fanout", "headers", "topic"]

    with Load(live.amqp, "busy", rate=300) as load:

        def rates_up() -> dict[str, float] | None:
            ms = live.get("/api/overview")["message_stats"]
            rates = {k: ms[f"{k}_details"]["rate"] for k in ("publish", "deliver_get", "ack")}
            return rates if all(r > 0 for r in rates.values()) else None

        rates = wait_for(rates_up, timeout=8, interval=0.25)
        busy = live.queue("busy")
        assert busy["message_stats"]["publish_details"]["rate"] > 0
        assert busy["message_stats"]["ack_details"]["rate"] > 0
        assert busy["consumers"] == 1
    assert rates["publish"] > 10, rates
    ov = live.get("/api/overview?lengths_age=60&lengths_incr=1&msg_rates_age=60&msg_rates_incr=1")
    assert ov["message_stats"]["publish"] == 4 + load.published
    assert ov["message_stats"]["ack"] == load.acked
    assert len(ov["message_stats"]["publish_details"]["samples"]) >= 2
    assert len(ov["queue_totals"]["messages_details"]["samples"]) >= 2


def test_a_growing_queue_shows_its_depth_rate(live: Live) -> None:
    """``messages_details.rate`` of a queue object follows its depth (it was a constant 0.0)."""
    with live.connect() as conn:
        ch = conn.channel()
        ch.queue_declare("growing")

        def rising() -> dict[str, Any] | None:
            for i in range(20):
                ch.basic_publish("", "growing", b"x%d" % i)
            q = live.queue("growing")
            return q if q["messages_details"]["rate"] > 0 and q["messages_ready_details"]["rate"] > 0 else None

        q = wait_for(rising, timeout=8, interval=0.25)
        assert q["messages_unacknowledged_details"]["rate"] == 0.0


def test_queue_put_get_delete(live: Live) -> None:
    status, body, _ = live.request(
        "PUT", f"{Q}/orders", {"durable": True, "arguments": {"x-consumer-timeout": 90000}}
    )
    assert status == 201, body
    assert (
        live.request("PUT", f"{Q}/orders", {"durable": True, "arguments": {"x-consumer-timeout": 90000}})[0]
        == 204
    )
    status, body, _ = live.request("PUT", f"{Q}/orders", {"durable": False})
    assert status == 400 and body["error"] == "bad_request" and "durable" in body["reason"]

    # pika sees the queue the API made, with its properties
    with live.connect() as conn:
        ch = conn.channel()
        ch.queue_declare("orders", durable=True, arguments={"x-consumer-timeout": 90000}, passive=False)
        ch.basic_publish("", "orders", b"order 1")
        ch.basic_publish("", "orders", b"order 22")
    q = live.queue("orders")
    for key, value in {"name": "orders", "vhost": "/", "durable": True, "auto_delete": False, "exclusive": False,
                       "arguments": {"x-consumer-timeout": 90000}, "type": "classic", "state": "running",
                       "messages": 2, "messages_ready": 2, "messages_unacknowledged": 0, "message_bytes": 15,
                       "consumers": 0, "consumer_timeout": 90000}.items():  # fmt: skip
        assert q[key] == value, key
    assert q["message_stats"]["publish"] == 2
    assert [x["name"] for x in live.get("/api/queues")] == ["orders"]
    assert [x["name"] for x in live.get(Q)] == ["orders"]

    status, body, _ = live.request("GET", f"{Q}/missing")
    assert status == 404 and body == {"error": "Object Not Found", "reason": "Not Found"}
    assert live.request("GET", "/api/queues/nope/orders")[0] == 404

    status, _, headers = live.request("DELETE", f"{Q}/orders")
    assert status == 204 and headers["X-Messages-Deleted"] == "2"
    assert live.request("GET", f"{Q}/orders")[0] == 404
    with live.connect() as conn, pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        conn.channel().queue_declare("orders", passive=True)
    assert e.value.reply_code == 404


def test_delete_contents_purges_ready_only(live: Live, holders: Callable[..., Holder]) -> None:
    with live.connect() as conn:
        ch = conn.channel()
        ch.queue_declare("work")
        for i in range(5):
            ch.basic_publish("", "work", b"%d" % i)
    holders(live.amqp, "work", 2).wait_for(2)
    status, _, headers = live.request("DELETE", f"{Q}/work/contents")
    assert status == 204 and headers["X-Messages-Purged"] == "3"
    q = live.queue("work")
    assert (q["messages_ready"], q["messages_unacknowledged"]) == (0, 2)


def test_post_get_ackmodes_and_properties(live: Live) -> None:
    ts = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    props = pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", headers={"attempt": 3, "tag": "x"},
        delivery_mode=2, priority=5, correlation_id="corr-1", reply_to="replies", expiration="60000",
        message_id="m-1", timestamp=int(ts.timestamp()), type="order.created", app_id="shop",
    )  # fmt: skip
    with live.connect() as conn:
        ch = conn.channel()
        ch.queue_declare("inbox", durable=True)
        ch.basic_publish("", "inbox", b'{"id": 1}', props)
        ch.basic_publish("", "inbox", bytes([0, 255, 1, 2]))

        get = {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}
        status, [m], _ = live.request("POST", f"{Q}/inbox/get", get)
        assert status == 200
        assert m == {"payload_bytes": 9, "redelivered": False, "exchange": "", "routing_key": "inbox",
                     "message_count": 1, "payload": '{"id": 1}', "payload_encoding": "string",
                     "properties": {"content_type": "application/json", "content_encoding": "utf-8",
                                    "headers": {"attempt": 3, "tag": "x"}, "delivery_mode": 2, "priority": 5,
                                    "correlation_id": "corr-1", "reply_to": "replies", "expiration": "60000",
                                    "message_id": "m-1", "timestamp": int(ts.timestamp()), "type": "order.created",
                                    "app_id": "shop"}}  # fmt: skip
        # requeued: still there, now redelivered, and pika sees exactly that
        q = live.queue("inbox")
        assert (q["messages_ready"], q["messages_unacknowledged"]) == (2, 0)
        status, [m2], _ = live.request("POST", f"{Q}/inbox/get", get)
        assert m2["redelivered"] is True and m2["payload"] == '{"id": 1}'
        method, got_props, body = ch.basic_get("inbox", auto_ack=False)
        assert body == b'{"id": 1}' and method.redelivered and got_props.correlation_id == "corr-1"
        ch.basic_nack(method.delivery_tag, requeue=True)

        # several at once, binary payload base64-encoded; ack_requeue_false removes them
        status, got, _ = live.request("POST", f"{Q}/inbox/get", {"count": 5, "ackmode": "ack_requeue_false",
                                                                 "encoding": "auto"})  # fmt: skip
        assert status == 200 and [g["message_count"] for g in got] == [1, 0]
        assert got[1]["payload_encoding"] == "base64"
        assert base64.b64decode(got[1]["payload"]) == bytes([0, 255, 1, 2])
        assert got[1]["properties"] == {}
        q = live.queue("inbox")
        assert (q["messages_ready"], q["messages_unacknowledged"]) == (0, 0)
        assert ch.basic_get("inbox", auto_ack=True) == (None, None, None)
        # four management gets (two of them redeliveries) and one pika get, like RabbitMQ counts them
        stats = live.queue("inbox")["message_stats"]
        assert (stats["publish"], stats["deliver_get"], stats["redeliver"], stats["ack"]) == (2, 5, 3, 0)

    status, body, _ = live.request(
        "POST", f"{Q}/inbox/get", {"count": 1, "ackmode": "bogus", "encoding": "auto"}
    )
    assert status == 400 and body["error"] == "bad_request"
    assert live.request("POST", f"{Q}/missing/get", get)[0] == 404


def test_connections_channels_consumers(live: Live) -> None:
    conn = live.connect(name="billing-worker")
    try:
        ch = conn.channel()
        ch.queue_declare("jobs", arguments={"x-consumer-timeout": 45000})
        ch.basic_qos(prefetch_count=3)
        tag = ch.basic_consume("jobs", lambda *a: None)
        ch.confirm_delivery()
        local_port = conn._impl._transport._sock.getsockname()[1]

        [c] = live.get("/api/connections")
        assert (
            c["peer_host"] == "127.0.0.1" and c["peer_port"] == local_port and c["port"] == live.broker.port
        )
        assert c["user"] == "guest" and c["vhost"] == "/" and c["channels"] == 1 and c["state"] == "running"
        assert (
            c["protocol"] == "AMQP 0-9-1"
            and c["client_properties"]["product"] == "Pika Python Client Library"
        )
        assert c["client_properties"]["connection_name"] == "billing-worker"
        assert c["name"] == f"127.0.0.1:{local_port} -> 127.0.0.1:{live.broker.port}"
        assert c["recv_oct"] > 0 and c["send_oct"] > 0 and c["frame_max"] > 0
        from urllib.parse import quote

        assert live.get(f"/api/connections/{quote(c['name'], safe='')}")["name"] == c["name"]

        [chan] = live.get("/api/channels")
        assert chan["name"] == f"{c['name']} (1)" and chan["number"] == 1
        assert chan["connection_details"]["name"] == c["name"]
        assert chan["consumer_count"] == 1 and chan["prefetch_count"] == 3 and chan["confirm"] is True

        [cons] = live.get("/api/consumers")
        assert cons["consumer_tag"] == tag and cons["queue"] == {"name": "jobs", "vhost": "/"}
        assert cons["channel_details"]["connection_name"] == c["name"]
        assert (
            cons["ack_required"] is True and cons["prefetch_count"] == 3 and cons["consumer_timeout"] == 45000
        )
        assert live.get("/api/consumers/%2F") == [cons]
    finally:
        conn.close()
    wait_for(lambda: live.get("/api/connections") == [])
    assert live.get("/api/channels") == [] and live.get("/api/consumers") == []


def test_delete_connection(live: Live) -> None:
    from urllib.parse import quote

    conns = [live.connect(), live.connect()]
    names = [c["name"] for c in live.get("/api/connections")]
    status, _, _ = live.request("DELETE", f"/api/connections/{quote(names[0], safe='')}")
    assert status == 204
    status, _, _ = live.request("DELETE", f"/api/connections/{quote(names[1], safe='')}",
                                headers={"X-Reason": "maintenance"})  # fmt: skip
    assert status == 204
    texts = []
    for conn in conns:
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            conn.process_data_events(time_limit=5)
        assert e.value.reply_code == 320
        texts.append(e.value.reply_text)
    assert texts == ["CONNECTION_FORCED - Closed via management plugin", "CONNECTION_FORCED - maintenance"]
    wait_for(lambda: live.get("/api/connections") == [])
    assert live.request("DELETE", f"/api/connections/{quote(names[0], safe='')}")[0] == 404


def test_exchanges_bindings(live: Live) -> None:
    with live.connect() as conn:
        ch = conn.channel()
        ch.exchange_declare("logs", "fanout", durable=False, auto_delete=False)
        ch.queue_declare("audit")
        ch.queue_bind("audit", "logs")
        ch.queue_bind("audit", "amq.direct", "audit", arguments={"x-match": "all"})
    xs = {x["name"]: x for x in live.get("/api/exchanges")}
    assert set(xs) == {"", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match", "logs"}
    assert {
        k: xs["logs"][k] for k in ("vhost", "type", "durable", "auto_delete", "internal", "arguments")
    } == {
        "vhost": "/",
        "type": "fanout",
        "durable": False,
        "auto_delete": False,
        "internal": False,
        "arguments": {},
    }
    assert live.get("/api/exchanges/%2F/logs")["type"] == "fanout"
    bindings = live.get("/api/bindings")
    assert {(b["source"], b["destination"], b["destination_type"], b["routing_key"]) for b in bindings} == {
        ("", "audit", "queue", "audit"),
        ("logs", "audit", "queue", "audit"),
        ("amq.direct", "audit", "queue", "audit"),
    }
    by_source = {b["source"]: b for b in bindings}
    assert by_source["logs"]["properties_key"] == "audit"
    assert by_source["amq.direct"]["arguments"] == {"x-match": "all"}
    assert live.get("/api/bindings/%2F") == bindings
    assert len(live.get(f"{Q}/audit/bindings")) == 3


def test_definitions_roundtrip(live_factory: Callable[..., Live]) -> None:
    a, b = live_factory(), live_factory()
    with a.connect() as conn:
        ch = conn.channel()
        ch.exchange_declare("events", "topic", durable=True)
        ch.queue_declare("emails", durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_bind("emails", "events", "user.*")
    doc = a.get("/api/definitions")
    assert doc["rabbit_version"].startswith("3.")
    assert [u["name"] for u in doc["users"]] == ["guest"]
    assert [v["name"] for v in doc["vhosts"]] == ["/"]
    assert doc["queues"] == [{"name": "emails", "vhost": "/", "durable": True, "auto_delete": False,
                              "arguments": {"x-queue-type": "quorum"}, "type": "quorum"}]  # fmt: skip

    status, body, _ = b.request("POST", "/api/definitions", doc)
    assert status == 204, body
    with b.connect() as conn:
        ch = conn.channel()
        ch.basic_publish("events", "user.signup", b"welcome")
        _, _, body = ch.basic_get("emails", auto_ack=True)
    assert body == b"welcome"
    exported = b.get("/api/definitions")
    for key in ("queues", "exchanges", "bindings"):
        assert exported[key] == doc[key]

    status, body, _ = b.request("POST", "/api/definitions", {"queues": "not a list"})
    assert status == 400 and body["error"] == "bad_request"


def test_definitions_roundtrip_exchange_bindings(live_factory: Callable[..., Live]) -> None:
    a, b = live_factory(), live_factory()
    with a.connect() as conn:
        ch = conn.channel()
        ch.exchange_declare("celery.delayed", "topic", durable=True)
        ch.exchange_declare("route", "headers", durable=True)
        ch.queue_declare("work", durable=True)
        ch.exchange_bind("route", "celery.delayed", "#.work")
        ch.exchange_bind("celery.delayed", "amq.topic", "delayed.#")
        ch.queue_bind("work", "route", arguments={"x-match": "any", "queue": "work"})
    doc = a.get("/api/definitions")
    e2e = sorted((x["source"], x["destination"], x["routing_key"]) for x in doc["bindings"]
                 if x["destination_type"] == "exchange")  # fmt: skip
    assert e2e == [("amq.topic", "celery.delayed", "delayed.#"), ("celery.delayed", "route", "#.work")]
    listed = {(x["source"], x["destination"], x["destination_type"]) for x in a.get("/api/bindings/%2F")}
    assert ("celery.delayed", "route", "exchange") in listed

    status, body, _ = b.request("POST", "/api/definitions", doc)
    assert status == 204, body
    with b.connect() as conn:
        ch = conn.channel()
        ch.basic_publish("amq.topic", "delayed.9.work", b"later", pika.BasicProperties(headers={"queue": "work"}))
        _, _, got = ch.basic_get("work", auto_ack=True)
    assert got == b"later"
    exported = b.get("/api/definitions")
    key = lambda x: sorted(map(str, x.items()))  # noqa: E731
    for k in ("queues", "exchanges", "bindings"):
        assert sorted(exported[k], key=key) == sorted(doc[k], key=key)

    bad = {"bindings": [{"source": "route", "vhost": "/", "destination": "x", "destination_type": "stream",
                         "routing_key": "", "arguments": {}}]}  # fmt: skip
    status, body, _ = b.request("POST", "/api/definitions", bad)
    assert status == 400 and "destination_type" in body["reason"]
    missing = {"bindings": [dict(bad["bindings"][0], destination="nope", destination_type="exchange")]}
    status, body, _ = b.request("POST", "/api/definitions", missing)
    assert status == 404, body


def test_healthcheck_and_auth(live: Live) -> None:
    assert live.get("/api/healthchecks/node") == {"status": "ok"}
    status, body, headers = live.request("GET", "/api/overview", auth=("guest", "wrong"))
    assert status == 401 and body == {"error": "not_authorized", "reason": "Login failed"}
    assert headers["Content-Type"].startswith("application/json")
    status, body, _ = live.request("GET", "/api/queues", auth=None)
    assert status == 401 and body is None  # no credentials: no body, as RabbitMQ
    status, body, _ = live.request("GET", "/api/queues", auth=("nobody", "guest"))
    assert status == 401 and body["error"] == "not_authorized"

    async def with_aiohttp() -> tuple[int, object, int, object]:
        async with aiohttp.ClientSession() as s:
            async with s.get(
                live.http + "/api/healthchecks/node", auth=aiohttp.BasicAuth("guest", "guest")
            ) as r:
                ok = (r.status, await r.json())
            async with s.get(live.http + "/api/whoami", auth=aiohttp.BasicAuth("guest", "nope")) as r:
                return (*ok, r.status, await r.json())

    assert asyncio.run(with_aiohttp()) == (200, {"status": "ok"}, 401,
                                           {"error": "not_authorized", "reason": "Login failed"})  # fmt: skip


def test_non_loopback_guest_refused() -> None:
    # guest may only come from localhost: reach the broker over a non-loopback address if the host has one.
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            addr = s.getsockname()[0]
    except OSError:
        pytest.skip("no non-loopback address")
    if addr.startswith("127."):
        pytest.skip("no non-loopback address")
    b = ThreadBroker(http_port=0, users={"guest": "guest", "admin": "s3cret"})
    b.settings.host = "0.0.0.0"  # listen on every interface, not only loopback
    b.start()
    try:
        _check_remote(addr, b.app.http_port or 0)
    finally:
        b.stop()


def _check_remote(addr: str, port: int) -> None:
    import urllib.request

    req = urllib.request.Request(f"http://{addr}:{port}/api/overview")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("guest accepted from a non-loopback address")
    except urllib.error.HTTPError as e:
        assert e.code == 401 and b"User can only log in via localhost" in e.read()
    req = urllib.request.Request(f"http://{addr}:{port}/api/healthchecks/node")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"admin:s3cret").decode())
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
