"""Users, vhosts, permissions and topic permissions in definitions files: exported from the broker's
access control, and imported from a file in RabbitMQ 3.10's format (data/rabbitmq-3.10-definitions.json:
salted sha256 and sha512 hashes, a hash without its algorithm, tags as a comma string, a cleartext
password) so that its users log in over AMQP with exactly the permissions it gives them."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from leveret.model.access import MD5, SHA256, hash_password

from .test_access_api import Api, make_api

FILE = Path(__file__).with_name("data") / "rabbitmq-3.10-definitions.json"
ACCESS_KEYS = ("users", "vhosts", "permissions", "topic_permissions")


def rabbitmq_file() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(FILE.read_text())
    return doc


@pytest.fixture
def api() -> Iterator[Api]:
    a = make_api()
    yield a
    a.broker.stop()


@pytest.fixture
def imported(api: Api) -> Api:
    status, reply = api.request("POST", "/api/definitions", rabbitmq_file())
    assert status == 204, reply
    return api


def refused_403(action: Any) -> str:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        action()
    assert e.value.reply_code == 403
    return str(e.value.reply_text)


def test_export_lists_users_vhosts_permissions_and_topic_permissions(api: Api) -> None:
    api.ok("PUT", "/api/users/hal", {"password": "hpw", "tags": "management"}, 201)
    api.ok("PUT", "/api/vhosts/vh", {"description": "Team H", "tags": "a,b"}, 201)
    api.ok("PUT", "/api/permissions/vh/hal", {"configure": "^hal", "write": "", "read": ".*"}, 201)
    api.ok(
        "PUT", "/api/topic-permissions/vh/hal", {"exchange": "amq.topic", "write": "^h", "read": "^r"}, 201
    )
    doc = api.get("/api/definitions")
    hal = api.get("/api/users/hal")
    assert hal in doc["users"] and set(hal) == {
        "name",
        "password_hash",
        "hashing_algorithm",
        "tags",
        "limits",
    }
    assert [u["name"] for u in doc["users"]] == ["guest", "hal"]
    assert doc["vhosts"] == [
        {"name": "/", "limits": [], "metadata": {"description": "", "tags": []}},
        {"name": "vh", "limits": [], "metadata": {"description": "Team H", "tags": ["a", "b"]}},
    ]
    assert doc["permissions"] == [
        {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
        {"user": "guest", "vhost": "vh", "configure": ".*", "write": ".*", "read": ".*"},  # its creator
        {"user": "hal", "vhost": "vh", "configure": "^hal", "write": "", "read": ".*"},
    ]
    assert doc["topic_permissions"] == [
        {"user": "hal", "vhost": "vh", "exchange": "amq.topic", "write": "^h", "read": "^r"}
    ]
    # A per-vhost export carries none of them (RabbitMQ's shape).
    one = api.get("/api/definitions/vh")
    assert not set(ACCESS_KEYS) & set(one)


def test_rabbitmq_3_10_file_imports_and_its_users_log_in(imported: Api) -> None:
    api, doc = imported, rabbitmq_file()
    users = {u["name"]: u for u in api.get("/api/users")}
    assert sorted(users) == ["billing", "guest", "legacy-batch", "ops-admin", "orders-app", "reporting"]
    for u in doc["users"]:
        if "password_hash" in u:  # hashes are kept as they are, so they export unchanged
            assert users[u["name"]]["password_hash"] == u["password_hash"]
    assert users["reporting"]["hashing_algorithm"] == SHA256, (
        "no algorithm, rabbit_version 3.10.8: the default"
    )
    assert users["orders-app"]["tags"] == ["management", "monitoring"], "tags from a comma string"
    assert users["billing"]["limits"] == {"max-connections": 20}
    assert api.get("/api/whoami", ("ops-admin", "ops-admin-pw")) == {
        "name": "ops-admin",
        "tags": ["administrator"],
    }
    assert api.get("/api/whoami", ("billing", "billing-pw"))["tags"] == ["policymaker"]  # sha512
    vhosts = {v["name"]: v for v in api.get("/api/vhosts")}
    assert sorted(vhosts) == ["/", "batch", "orders"]
    assert vhosts["orders"]["metadata"] == {"description": "Order pipeline", "tags": ["prod", "eu-west"]}
    assert sorted(q["name"] for q in api.get("/api/queues/orders")) == ["orders.audit", "orders.created"]
    # Importing creates vhosts as the broker: the importing user gets no permissions on them.
    assert api.get("/api/permissions") == sorted(
        [
            {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
            *doc["permissions"],
        ],
        key=lambda p: (p["vhost"], p["user"]),
    )
    assert api.get("/api/topic-permissions") == doc["topic_permissions"]

    # orders-app: configure/write/read on orders.*, topic writes only under orders.orders-app.
    with api.connect("orders-app", "orders-app-pw", "orders") as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("orders.mine")
        ch.basic_publish("orders.events", "order.created", b"o-1")
        ch.basic_publish("amq.topic", "orders.orders-app.shipped", b"ok")
        assert refused_403(lambda: ch.basic_publish("amq.topic", "orders.billing.paid", b"no")) == (
            "ACCESS_REFUSED - access to topic 'orders.billing.paid' in exchange 'amq.topic' in vhost 'orders' "
            "refused for user 'orders-app'"
        )
        ch = conn.channel()
        assert refused_403(lambda: ch.queue_declare("billing.q")) == (
            "ACCESS_REFUSED - access to queue 'billing.q' in vhost 'orders' refused for user 'orders-app'"
        )
    # reporting (a hash without hashing_algorithm): may read, may not publish or declare.
    with api.connect("reporting", "reporting-pw", "orders") as conn:
        ch = conn.channel()
        method, _, body = ch.basic_get("orders.created", auto_ack=True)
        assert method is not None and body == b"o-1"
        ch.queue_declare("orders.created", passive=True)
        assert "access to exchange 'orders.events'" in refused_403(
            lambda: (
                ch.basic_publish("orders.events", "order.x", b"x"),
                ch.queue_declare("orders.created", passive=True),
            )
        )
    # legacy-batch (a cleartext password in the file) uses its own vhost only.
    with api.connect("legacy-batch", "legacy-batch-pw", "batch") as conn:
        conn.channel().queue_declare("nightly", durable=True, passive=True)
    with pytest.raises(pika.exceptions.AMQPConnectionError) as e:
        api.connect("legacy-batch", "legacy-batch-pw", "orders")
    assert "NOT_ALLOWED - access to vhost 'orders' refused for user 'legacy-batch'" in str(e.value)
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        api.connect("ops-admin", "wrong", "orders")


def test_round_trip_export_import_is_unchanged(imported: Api) -> None:
    exported = imported.get("/api/definitions")
    other = make_api()
    try:
        status, reply = other.request("POST", "/api/definitions", exported)
        assert status == 204, reply
        again = other.get("/api/definitions")
        for key in (*ACCESS_KEYS, "queues", "exchanges", "bindings"):
            assert again[key] == exported[key], key
        with other.connect("legacy-batch", "legacy-batch-pw", "batch") as conn:  # its hash came over
            conn.channel().queue_declare("nightly", durable=True, passive=True)
        # And into itself: nothing changes either.
        assert imported.request("POST", "/api/definitions", exported)[0] == 204
        assert imported.get("/api/definitions") == exported
    finally:
        other.broker.stop()


@pytest.mark.parametrize(("version", "algorithm"), [("3.5.7", MD5), ("3.0.0", MD5), ("3.6.0", SHA256)])
def test_hash_without_algorithm_takes_it_from_the_file_version(
    api: Api, version: str, algorithm: str
) -> None:
    doc = {"rabbit_version": version, "users": [{"name": "old", "password_hash": hash_password("opw", algorithm),
                                                 "tags": "management"}]}  # fmt: skip
    assert api.request("POST", "/api/definitions", doc)[0] == 204
    assert api.get("/api/users/old")["hashing_algorithm"] == algorithm
    assert api.get("/api/whoami", ("old", "opw"))["name"] == "old"


def _broken(change: Any) -> dict[str, Any]:
    doc = copy.deepcopy(rabbitmq_file())
    change(doc)
    return doc


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d["permissions"].append({"user": "ghost", "vhost": "orders", "configure": "", "write": "",
                                             "read": ""}),
         "permission for user 'ghost' in vhost 'orders': no such user 'ghost'"),
        (lambda d: d["permissions"].append({"user": "reporting", "vhost": "nowhere", "configure": "", "write": "",
                                             "read": ""}),
         "permission for user 'reporting' in vhost 'nowhere': no such vhost 'nowhere'"),
        (lambda d: d["topic_permissions"].append({"user": "ghost", "vhost": "orders", "exchange": "amq.topic",
                                                   "write": "", "read": ""}),
         "topic permission for user 'ghost' in vhost 'orders': no such user 'ghost'"),
        (lambda d: d["permissions"][2].update(configure="(open"),
         "permission for user 'orders-app' in vhost 'orders': configure regex '(open' is not a valid regular"),
        (lambda d: d["users"][0].pop("tags"), "user 'ops-admin': tags_not_present"),
        (lambda d: d["users"][1].update(password_hash="%%%"), "user 'orders-app': password_hash of user 'orders-app' is not valid base64"),
        (lambda d: d["users"][4].update(password_hash="abcd"), "user 'legacy-batch': both_password_and_password_hash"),
        (lambda d: d["vhosts"].append({"name": ""}), "vhost '': vhost name must be a non-empty string"),
    ],
)  # fmt: skip
def test_bad_access_entries_are_a_clear_error_and_none_is_applied(api: Api, change: Any, reason: str) -> None:
    before = api.get("/api/definitions")
    status, reply = api.request("POST", "/api/definitions", _broken(change))
    assert status == 400 and reply["error"] == "bad_request", reply
    assert reason in reply["reason"], reply
    after = api.get("/api/definitions")
    for key in (*ACCESS_KEYS, "queues", "exchanges"):
        assert after[key] == before[key], key


def test_per_vhost_import_leaves_users_and_permissions_alone(api: Api) -> None:
    doc = rabbitmq_file()
    for q in doc["queues"]:
        q["vhost"] = "/"
    doc["exchanges"] = doc["bindings"] = []
    assert api.request("POST", "/api/definitions/%2F", doc)[0] == 204
    assert [u["name"] for u in api.get("/api/users")] == ["guest"]
    assert [v["name"] for v in api.get("/api/vhosts")] == ["/"]
    assert sorted(q["name"] for q in api.get("/api/queues/%2F")) == [
        "nightly",
        "orders.audit",
        "orders.created",
    ]
