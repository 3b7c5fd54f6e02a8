"""Every management route over a real socket, against the FakeBackend."""

from __future__ import annotations

import base64
import time

from leveret.management.authz import authenticate
from leveret.model.access import AccessControl

from .conftest import Served

CONN = "127.0.0.1:50000 -> 127.0.0.1:5672"


def test_overview_shape_and_totals(api: Served) -> None:
    status, body, _ = api.request("GET", "/api/overview")
    assert status == 200
    for key in ("management_version", "rabbitmq_version", "product_name", "product_version", "cluster_name",
                "node", "listeners", "object_totals", "queue_totals", "message_stats"):  # fmt: skip
        assert key in body, key
    assert body["product_name"] == "Leveret"
    assert body["node"] == "leveret@testhost"
    assert body["object_totals"] == {
        "connections": 1,
        "channels": 1,
        "exchanges": 10,
        "queues": 3,
        "consumers": 1,
    }
    qt = body["queue_totals"]
    assert (qt["messages"], qt["messages_ready"], qt["messages_unacknowledged"]) == (13, 11, 2)
    assert qt["messages_details"] == {"rate": 0.0} or "rate" in qt["messages_details"]
    ms = body["message_stats"]
    for key in ("publish", "deliver_get", "ack", "redeliver", "confirm"):
        assert isinstance(ms[key], int)
        assert isinstance(ms[f"{key}_details"]["rate"], float)
    assert body["listeners"][0]["port"] == 5672 and body["listeners"][0]["node"] == "leveret@testhost"


def test_overview_rates_come_from_ticked_samples(api: Served) -> None:
    api.backend.load_rate = 100.0  # counters now grow 100/s
    time.sleep(1.2)  # the app ticks every 0.1 s in tests
    _, body, _ = api.request(
        "GET", "/api/overview?lengths_age=60&lengths_incr=1&msg_rates_age=60&msg_rates_incr=1"
    )
    ms = body["message_stats"]
    assert 50 <= ms["publish_details"]["rate"] <= 150, ms["publish_details"]
    assert 50 <= ms["ack_details"]["rate"] <= 150
    samples = ms["publish_details"]["samples"]
    assert len(samples) >= 2 and samples[0]["timestamp"] > samples[-1]["timestamp"]
    assert body["queue_totals"]["messages_details"]["samples"][0]["sample"] == 13
    _, q, _ = api.request("GET", "/api/queues/%2F/task_queue")
    assert q["message_stats"]["publish_details"]["rate"] > 10


def test_list_queues_all_and_per_vhost(api: Served) -> None:
    _, body, _ = api.request("GET", "/api/queues")
    assert sorted((q["vhost"], q["name"]) for q in body) == [("/", "hello"), ("/", "task_queue"),
                                                              ("other", "elsewhere")]  # fmt: skip
    _, body, _ = api.request("GET", "/api/queues/%2F")
    assert {q["name"] for q in body} == {"hello", "task_queue"}
    status, body, _ = api.request("GET", "/api/queues/nope")
    assert status == 404 and body == {"error": "Object Not Found", "reason": "Not Found"}


def test_queue_json_fields(api: Served) -> None:
    status, q, _ = api.request("GET", "/api/queues/%2F/task_queue")
    assert status == 200
    expected = {
        "name": "task_queue", "vhost": "/", "durable": True, "auto_delete": False, "exclusive": False,
        "arguments": {"x-queue-type": "classic"}, "type": "classic", "state": "running",
        "node": "leveret@testhost", "messages": 5, "messages_ready": 3, "messages_unacknowledged": 2,
        "consumers": 1, "consumer_timeout": 1_800_000,
    }  # fmt: skip
    assert {k: q[k] for k in expected} == expected
    assert q["message_bytes"] == q["message_bytes_ready"] + q["message_bytes_unacknowledged"] > 0
    assert q["memory"] > q["message_bytes"]
    assert {"publish", "deliver_get", "ack", "redeliver"} <= set(q["message_stats"])
    assert api.request("GET", "/api/queues/%2F/missing")[0] == 404


def test_listing_pagination_columns_sort(api: Served) -> None:
    _, body, _ = api.request("GET", "/api/queues?page=1&page_size=2&sort=messages&sort_reverse=true")
    assert body["total_count"] == 3 and body["page_count"] == 2 and body["item_count"] == 2
    assert [q["name"] for q in body["items"]] == ["elsewhere", "task_queue"]
    _, body, _ = api.request("GET", "/api/queues?columns=name,message_stats.publish&name=hel")
    assert body == [{"name": "hello", "message_stats": {"publish": 0}}]
    _, body, _ = api.request("GET", "/api/queues?name=%5Et.*e%24&use_regex=true")
    assert [q["name"] for q in body] == ["task_queue"]


def test_put_queue_creates_then_is_idempotent_then_406(api: Served) -> None:
    status, _, _ = api.request(
        "PUT", "/api/queues/%2F/new%2Fq", {"durable": False, "arguments": {"x-max-length": 5}}
    )
    assert status == 201
    assert api.backend.qs[("/", "new/q")].arguments == {"x-max-length": 5}
    assert (
        api.request("PUT", "/api/queues/%2F/new%2Fq", {"durable": False, "arguments": {"x-max-length": 5}})[0]
        == 204
    )
    status, body, _ = api.request("PUT", "/api/queues/%2F/new%2Fq", {"durable": True})
    assert status == 400 and body["error"] == "bad_request"
    assert body["reason"].startswith("inequivalent arg")  # bare, as RabbitMQ's management
    status, body, _ = api.request("PUT", "/api/queues/%2F/bad", b"{not json")
    assert status == 400 and body["error"] == "bad_request"


def test_delete_queue_with_conditions(api: Served) -> None:
    status, body, _ = api.request("DELETE", "/api/queues/%2F/task_queue?if-empty=true")
    assert status == 400 and "not empty" in body["reason"]
    status, body, _ = api.request("DELETE", "/api/queues/%2F/task_queue?if-unused=true")
    assert status == 400 and "in use" in body["reason"]
    status, _, headers = api.request("DELETE", "/api/queues/%2F/task_queue")
    assert status == 204 and headers["X-Messages-Deleted"] == "3"
    assert ("/", "task_queue") not in api.backend.qs
    assert api.request("DELETE", "/api/queues/%2F/task_queue")[0] == 404


def test_exclusive_queue_locked_is_400(api: Served) -> None:
    api.backend.add_queue("/", "mine", exclusive=True, owner=CONN)
    status, body, _ = api.request("DELETE", "/api/queues/%2F/mine")
    assert status == 400 and body["reason"].startswith("cannot obtain exclusive access to locked queue")
    _, q, _ = api.request("GET", "/api/queues/%2F/mine")
    assert q["exclusive"] is True and q["owner_pid_details"] == {"name": CONN}


def test_purge(api: Served) -> None:
    status, _, headers = api.request("DELETE", "/api/queues/%2F/task_queue/contents")
    assert status == 204 and headers["X-Messages-Purged"] == "3"
    _, q, _ = api.request("GET", "/api/queues/%2F/task_queue")
    assert (q["messages_ready"], q["messages_unacknowledged"]) == (0, 2)


def test_get_messages(api: Served) -> None:
    api.backend.qs[("/", "hello")].ready.append(b"\xff\xfe binary")
    body = {"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50000}
    status, msgs, _ = api.request("POST", "/api/queues/%2F/hello/get", body)
    assert status == 200 and len(msgs) == 2
    first = msgs[0]
    assert set(first) == {"payload_bytes", "redelivered", "exchange", "routing_key", "message_count",
                          "properties", "payload", "payload_encoding"}  # fmt: skip
    assert (first["payload"], first["payload_encoding"], first["payload_bytes"]) == ("msg-0", "string", 5)
    assert first["properties"] == {"delivery_mode": 2, "headers": {"k": "v"}}
    assert msgs[1]["payload_encoding"] == "base64"
    assert base64.b64decode(msgs[1]["payload"]) == b"\xff\xfe binary"
    assert len(api.backend.qs[("/", "hello")].ready) == 2  # requeued
    body = {"count": 1, "ackmode": "ack_requeue_false", "encoding": "base64", "truncate": 2}
    _, msgs, _ = api.request("POST", "/api/queues/%2F/hello/get", body)
    assert msgs[0]["payload"] == base64.b64encode(b"ms").decode() and msgs[0]["payload_bytes"] == 5
    assert len(api.backend.qs[("/", "hello")].ready) == 1
    status, err, _ = api.request("POST", "/api/queues/%2F/hello/get", {"count": 1, "ackmode": "nope", "encoding": "auto"})
    assert status == 400 and "ackmode" in err["reason"]
    assert (
        api.request("POST", "/api/queues/%2F/none/get", {"count": 1, "ackmode": "ack_requeue_true"})[0] == 400
    )  # the body is checked first: [{key_missing,encoding}]
    status, err, _ = api.request("POST", "/api/queues/%2F/none/get",
                                 {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"})  # fmt: skip
    assert (status, err) == (404, {"error": "not_found", "reason": "NOT_FOUND - no queue 'none' in vhost '/'"})


def test_connections_channels_consumers(api: Served) -> None:
    _, conns, _ = api.request("GET", "/api/connections")
    assert conns[0]["name"] == CONN and conns[0]["protocol"] == "AMQP 0-9-1"
    assert conns[0]["client_properties"] == {"product": "pika", "capabilities": {"basic.nack": True}}
    assert api.request("GET", "/api/connections/" + CONN.replace(" ", "%20").replace(">", "%3E"))[0] == 200
    _, chans, _ = api.request("GET", "/api/channels")
    assert chans[0]["name"] == f"{CONN} (1)" and chans[0]["connection_details"]["peer_port"] == 50000
    _, cons, _ = api.request("GET", "/api/consumers")
    assert cons[0]["queue"] == {"name": "task_queue", "vhost": "/"}
    assert cons[0]["channel_details"]["connection_name"] == CONN and cons[0]["consumer_tag"] == "ctag-1"
    assert api.request("GET", "/api/consumers/other")[1] == []


def test_close_connection(api: Served) -> None:
    path = "/api/connections/127.0.0.1%3A50000%20-%3E%20127.0.0.1%3A5672"
    status, _, _ = api.request("DELETE", path, headers={"X-Reason": "maintenance"})
    assert status == 204 and api.backend.closed == [(CONN, "maintenance")]
    assert api.request("DELETE", path)[0] == 404


def test_exchanges_and_bindings(api: Served) -> None:
    _, xs, _ = api.request("GET", "/api/exchanges/%2F")
    assert {x["name"] for x in xs} == {"", "amq.direct", "amq.fanout", "amq.topic", "amq.headers"}
    _, x, _ = api.request("GET", "/api/exchanges/%2F/amq.topic")
    assert x["type"] == "topic" and x["durable"] is True
    _, bs, _ = api.request("GET", "/api/bindings/%2F")
    assert {"source": "", "vhost": "/", "destination": "hello", "destination_type": "queue",
            "routing_key": "hello", "arguments": {}, "properties_key": "hello"} in bs  # fmt: skip
    _, qb, _ = api.request("GET", "/api/queues/%2F/hello/bindings")
    assert [b["destination"] for b in qb] == ["hello"]
    assert len(api.request("GET", "/api/bindings")[1]) == 3


def test_definitions_roundtrip(api: Served) -> None:
    api.backend.declare_exchange("/", "logs", "fanout", True, False, False, {})
    api.backend.bind("/", "logs", "hello", "queue", "", {})
    status, doc, _ = api.request("GET", "/api/definitions")
    assert status == 200
    for key in ("rabbit_version", "users", "vhosts", "permissions", "queues", "exchanges", "bindings",
                "policies", "parameters", "global_parameters"):  # fmt: skip
        assert key in doc
    assert {u["name"] for u in doc["users"]} == {"guest", "admin"}
    assert doc["users"][0]["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert [x["name"] for x in doc["exchanges"]] == ["logs"]
    assert doc["bindings"] == [{"source": "logs", "vhost": "/", "destination": "hello", "destination_type": "queue",
                                "routing_key": "", "arguments": {}}]  # fmt: skip
    assert {q["name"] for q in doc["queues"]} == {"task_queue", "hello", "elsewhere"}
    # Import into an empty broker: same topology comes back.
    fresh = type(api.backend)()
    from leveret.management.definitions import import_definitions

    report = import_definitions(fresh, doc)
    assert (report.exchanges, report.queues, report.bindings) == (1, 3, 1)
    assert "users" in report.ignored
    assert ("/", "hello") in fresh.qs and ("/", "logs") in fresh.xs


def test_post_definitions(api: Served) -> None:
    doc = {"queues": [{"name": "imported", "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}],
           "exchanges": [{"name": "ex", "vhost": "/", "type": "topic", "durable": True, "auto_delete": False,
                          "internal": False, "arguments": {}}],
           "bindings": [{"source": "ex", "vhost": "/", "destination": "imported", "destination_type": "queue",
                         "routing_key": "a.#", "arguments": {}}]}  # fmt: skip
    assert api.request("POST", "/api/definitions", doc)[0] == 204
    assert ("/", "imported") in api.backend.qs
    status, body, _ = api.request("POST", "/api/definitions", {"queues": "nope"})
    assert status == 400 and "queues" in body["reason"]
    # A vhost the file names is created (with its metadata); a queue in a vhost it does not name is 404.
    status, body, _ = api.request(
        "POST",
        "/api/definitions",
        {"vhosts": [{"name": "new", "metadata": {"description": "d", "tags": ["t"]}}]},
    )
    assert status == 204 and "new" in api.backend.vhosts()
    assert api.request("GET", "/api/vhosts/new")[1]["metadata"] == {"description": "d", "tags": ["t"]}
    status, body, _ = api.request("POST", "/api/definitions", {"queues": [{"name": "q", "vhost": "unknown"}]})
    assert status == 404
    _, one, _ = api.request("GET", "/api/definitions/other")
    assert [q["name"] for q in one["queues"]] == ["elsewhere"] and "users" not in one


def test_health_whoami_vhosts_nodes(api: Served) -> None:
    assert api.request("GET", "/api/healthchecks/node")[1] == {"status": "ok"}
    assert api.request("GET", "/api/aliveness-test/%2F")[1] == {"status": "ok"}
    assert api.request("GET", "/api/whoami", user="admin", password="s3cret")[1] == {
        "name": "admin", "tags": ["administrator"]}  # fmt: skip
    _, vhosts, _ = api.request("GET", "/api/vhosts")
    assert [(v["name"], v["messages"]) for v in vhosts] == [("/", 6), ("other", 7)]
    assert api.request("GET", "/api/vhosts/other")[1]["messages_ready"] == 7
    _, nodes, _ = api.request("GET", "/api/nodes")
    assert nodes[0]["name"] == "leveret@testhost" and nodes[0]["os_pid"] == "4242"
    assert api.request("GET", "/api/nodes/leveret@testhost")[0] == 200
    assert api.request("GET", "/api/nodes/other@host")[0] == 404


def test_auth_required_and_401_shape(api: Served) -> None:
    # RabbitMQ 3.10: no credentials, no body; a failed login is "not_authorized" (with a z)
    status, body, headers = api.request("GET", "/api/overview", user="")
    assert status == 401 and body is None and "WWW-Authenticate" in headers
    status, body, _ = api.request("GET", "/api/overview", user="guest", password="wrong")
    assert status == 401 and body == {"error": "not_authorized", "reason": "Login failed"}
    status, _, headers = api.request(
        "GET", "/api/overview", user="", headers={"X-Requested-With": "XMLHttpRequest"}
    )
    assert status == 401 and "WWW-Authenticate" not in headers
    assert api.request("GET", "/api/overview", user="admin", password="s3cret")[0] == 200


def test_guest_only_from_loopback() -> None:
    users = AccessControl(loopback_users=("guest",))
    users.add_user("guest", "guest")
    users.add_user("admin", "pw")
    hdr = "Basic " + base64.b64encode(b"guest:guest").decode()

    def who(header: str, remote: str, access: AccessControl = users) -> tuple[str | None, str]:
        u, reason = authenticate(header, remote, access)
        return (u.name if u is not None else None), reason

    assert who(hdr, "127.0.0.1") == ("guest", "")
    assert who(hdr, "::1")[0] == "guest"
    assert who(hdr, "::ffff:127.0.0.1")[0] == "guest"
    user, reason = who(hdr, "10.1.2.3")
    assert user is None and "localhost" in reason
    admin = "Basic " + base64.b64encode(b"admin:pw").decode()
    assert who(admin, "10.1.2.3")[0] == "admin"
    assert who("Basic !!!", "127.0.0.1")[0] is None
    users.loopback_users = frozenset()
    assert who(hdr, "10.1.2.3")[0] == "guest"


def test_dashboard_served_without_auth(api: Served) -> None:
    status, html, _ = api.request("GET", "/", user="")
    assert status == 200 and "data-testid" in html and "app.js" in html
    for asset in ("/static/app.js", "/static/style.css"):
        assert api.request("GET", asset, user="")[0] == 200


def test_unknown_path_and_method(api: Served) -> None:
    status, body, _ = api.request("GET", "/api/nope")
    assert status == 404 and body == {"error": "Object Not Found", "reason": "Not Found"}
    status, body, headers = api.request("PATCH", "/api/overview")
    assert status == 405 and body is None and "GET" in headers["Allow"]  # cowboy's: no body


def test_unexpected_backend_error_is_500_json(api: Served) -> None:
    def boom(vhost: str | None = None) -> list[object]:
        raise RuntimeError("bug")

    api.backend.exchanges = boom  # type: ignore[method-assign,assignment]
    status, body, _ = api.request("GET", "/api/exchanges")
    assert status == 500 and body["error"] == "internal_server_error"
