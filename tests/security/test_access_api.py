"""Users, vhosts, permissions and topic permissions managed at run time over the HTTP API, with
RabbitMQ 3.10's paths, bodies, shapes and status codes, checked against a real broker: what is set
over HTTP is what AMQP clients (pika) get, it is administrator only, and it survives a restart."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from leveret.model.access import SHA512, check_password, hash_password
from tests.helpers import ProcessBroker, ThreadBroker, wait_for
from tests.http_client import http_request

ADMIN = ("guest", "guest")


class Api:
    """A running broker (AMQP and HTTP on port 0) and real clients for it."""

    def __init__(self, broker: ThreadBroker) -> None:
        self.broker = broker

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.broker.app.http_port}"

    def request(
        self, method: str, path: str, body: Any = None, auth: tuple[str, str] | None = ADMIN
    ) -> tuple[int, Any]:
        status, payload, _ = http_request(self.http + path, method, body, auth)
        return status, payload

    def get(self, path: str, auth: tuple[str, str] = ADMIN) -> Any:
        status, body = self.request("GET", path, auth=auth)
        assert status == 200, (path, status, body)
        return body

    def ok(self, method: str, path: str, body: Any = None, status: int = 204) -> None:
        got, reply = self.request(method, path, body)
        assert got == status, (method, path, got, reply)

    def connect(self, user: str, password: str, vhost: str = "/") -> pika.BlockingConnection:
        params = pika.ConnectionParameters(
            "127.0.0.1", self.broker.port, vhost, pika.PlainCredentials(user, password),
            connection_attempts=1, socket_timeout=5, blocked_connection_timeout=5,
        )  # fmt: skip
        return pika.BlockingConnection(params)


def make_api(**settings: Any) -> Api:
    settings.setdefault("http_port", 0)
    return Api(ThreadBroker(**settings).start())


@pytest.fixture
def api() -> Iterator[Api]:
    a = make_api()
    yield a
    a.broker.stop()


def closed_by_broker(conn: pika.BlockingConnection) -> pika.exceptions.ConnectionClosedByBroker:
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        conn.process_data_events(time_limit=5)
    return e.value


# ---- users ------------------------------------------------------------------------------------------


def test_user_create_replace_and_delete(api: Api) -> None:
    api.ok("PUT", "/api/users/alice", {"password": "apw", "tags": "management"}, 201)
    alice = api.get("/api/users/alice")
    assert set(alice) == {"name", "password_hash", "hashing_algorithm", "tags", "limits"}
    assert alice["name"] == "alice" and alice["tags"] == ["management"] and alice["limits"] == {}
    assert alice["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert len(base64.b64decode(alice["password_hash"])) == 36
    assert check_password("apw", alice["password_hash"], alice["hashing_algorithm"])
    assert api.get("/api/whoami", ("alice", "apw")) == {"name": "alice", "tags": ["management"]}

    # Replaced: 204, tags as a list, a new password (the old one stops working).
    api.ok("PUT", "/api/users/alice", {"password": "new", "tags": ["monitoring", "management"]})
    assert api.get("/api/users/alice")["tags"] == ["monitoring", "management"]
    assert api.request("GET", "/api/whoami", auth=("alice", "apw"))[0] == 401
    assert api.get("/api/whoami", ("alice", "new"))["tags"] == ["monitoring", "management"]

    # A hash made elsewhere (here sha512, as another RabbitMQ may export it), taken as it is.
    h = hash_password("hashed", SHA512)
    api.ok("PUT", "/api/users/alice", {"password_hash": h, "hashing_algorithm": SHA512, "tags": ""})
    assert api.get("/api/users/alice") == {"name": "alice", "password_hash": h, "hashing_algorithm": SHA512,
                                           "tags": [], "limits": {}}  # fmt: skip
    api.ok("PUT", "/api/users/alice", {"password_hash": h, "hashing_algorithm": SHA512, "tags": "management"})
    assert api.get("/api/whoami", ("alice", "hashed"))["name"] == "alice"

    # Neither password nor hash: the user stays but cannot log in with a password (RabbitMQ's rule).
    api.ok("PUT", "/api/users/alice", {"tags": "management"})
    assert api.get("/api/users/alice")["password_hash"] == ""
    assert api.request("GET", "/api/whoami", auth=("alice", "hashed"))[0] == 401
    api.ok("PUT", "/api/users/nopass", {"tags": ""}, 201)
    assert api.request("GET", "/api/whoami", auth=("nopass", ""))[0] == 401

    assert [u["name"] for u in api.get("/api/users")] == ["alice", "guest", "nopass"]
    api.ok("DELETE", "/api/users/alice")
    assert api.request("GET", "/api/users/alice")[0] == 404
    assert api.request("DELETE", "/api/users/alice")[0] == 404
    assert api.request("GET", "/api/whoami", auth=("alice", "hashed"))[0] == 401

    api.ok("PUT", "/api/users/a1", {"password": "x", "tags": ""}, 201)
    api.ok("PUT", "/api/users/a2", {"password": "x", "tags": ""}, 201)
    api.ok("POST", "/api/users/bulk-delete", {"users": ["a1", "a2", "never-was"]})
    assert [u["name"] for u in api.get("/api/users")] == ["guest", "nopass"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"password": "x"}, "tags_not_present"),
        ({"password": "x", "password_hash": "abc=", "tags": ""}, "both_password_and_password_hash_are_provided"),
        ({"password_hash": "not base64!", "tags": ""}, "password_hash of user 'bad' is not valid base64"),
        ({"password_hash": hash_password("x"), "hashing_algorithm": "rot13", "tags": ""},
         "unsupported hashing_algorithm 'rot13'"),
        ({"password": "x", "tags": 7}, "tags must be a list of strings or a comma-separated string"),
        ({"password": 7, "tags": ""}, "password must be a string"),
        ({"password": "x", "tags": "", "limits": {"max-queues": 1}}, 'Unrecognised terms [{<<"max-queues">>,1}] in user-limits'),
        ({"password": "x", "tags": "", "limits": {"max-channels": "2"}}, 'max-channels should be a number, actually was <<"2">>'),
    ],
)  # fmt: skip
def test_user_put_refusals(api: Api, body: dict[str, Any], reason: str) -> None:
    status, reply = api.request("PUT", "/api/users/bad", body)
    assert status == 400 and reply["error"] == "bad_request" and reply["reason"].startswith(reason), reply
    assert api.request("GET", "/api/users/bad")[0] == 404


# RabbitMQ 3.10's texts (rabbit_mgmt_util:decode), checked in tests/management_e2e/test_vs_rabbitmq.py
DOUBLY_ENCODED = "invalid payload: the request body JSON-decoded to a string. Is the input doubly-JSON-encoded?"


def test_body_must_be_a_json_object(api: Api) -> None:
    for path in (
        "/api/users/x",
        "/api/permissions/%2F/guest",
        "/api/topic-permissions/%2F/guest",
        "/api/vhosts/v",
    ):
        status, reply = api.request("PUT", path, b'"a string"')
        assert (status, reply["reason"]) == (400, DOUBLY_ENCODED), path
        status, reply = api.request("PUT", path, b"[1]")
        assert (status, reply["reason"]) == (400, "not_json"), path
        status, reply = api.request("PUT", path, b"{not json")
        assert (status, reply["reason"]) == (400, "not_json"), path


def test_tag_change_takes_effect_at_once(api: Api) -> None:
    api.ok("PUT", "/api/users/carol", {"password": "cpw", "tags": "management"}, 201)
    carol = ("carol", "cpw")
    assert api.get("/api/whoami", carol) == {"name": "carol", "tags": ["management"]}
    assert api.request("GET", "/api/users", auth=carol) == (
        401, {"error": "not_authorised", "reason": "Not administrator user"})  # fmt: skip
    api.ok("PUT", "/api/users/carol", {"password": "cpw", "tags": "administrator"})
    assert api.get("/api/whoami", carol) == {"name": "carol", "tags": ["administrator"]}
    assert "carol" in [u["name"] for u in api.get("/api/users", carol)]
    api.ok("PUT", "/api/users/carol", {"password": "cpw", "tags": ""})
    assert api.request("GET", "/api/whoami", auth=carol)[1]["reason"] == "Not management user"


def test_deleted_user_loses_login_and_its_connection(api: Api) -> None:
    api.ok("PUT", "/api/users/dave", {"password": "dpw", "tags": ""}, 201)
    api.ok("PUT", "/api/permissions/%2F/dave", {"configure": ".*", "write": ".*", "read": ".*"}, 201)
    conn = api.connect("dave", "dpw")
    conn.channel().queue_declare("dave-q")
    api.ok("DELETE", "/api/users/dave")
    e = closed_by_broker(conn)
    assert e.reply_code == 320 and "dave" in e.reply_text
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as refused:
        api.connect("dave", "dpw")
    assert "(403)" in str(refused.value) and "Login was refused" in str(refused.value)
    assert api.get("/api/permissions") == [
        {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
    ]


def test_changes_are_logged_with_the_administrator_and_without_passwords(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="leveret.access")
    api.ok("PUT", "/api/users/ivy", {"password": "sekrit-ivy", "tags": "management"}, 201)
    api.ok("PUT", "/api/vhosts/vi", {}, 201)
    api.ok("PUT", "/api/permissions/vi/ivy", {"configure": "^ivy", "write": ".*", "read": ".*"}, 201)
    api.ok("DELETE", "/api/users/ivy")
    api.ok("DELETE", "/api/vhosts/vi")
    lines = [r.getMessage() for r in caplog.records if r.name == "leveret.access"]
    assert lines == [
        "user 'ivy' created with tags ['management'] (by 'guest' over HTTP)",
        "vhost 'vi' created (by 'guest' over HTTP)",
        "permissions of user 'guest' in vhost 'vi' set to '.*' (it created the vhost) (by 'guest' over HTTP)",
        "permissions of user 'ivy' in vhost 'vi' set to configure '^ivy' write '.*' read '.*' (by 'guest' over HTTP)",
        "user 'ivy' deleted (by 'guest' over HTTP)",
        "vhost 'vi' deleted with everything in it (by 'guest' over HTTP)",
    ]
    assert "sekrit-ivy" not in caplog.text


# ---- permissions --------------------------------------------------------------------------------------


def test_permissions_set_over_http_are_enforced_over_amqp(api: Api) -> None:
    api.ok("PUT", "/api/users/erin", {"password": "epw", "tags": ""}, 201)
    assert [u["name"] for u in api.get("/api/users/without-permissions")] == ["erin"]
    perm = {"configure": "^erin-", "write": "^erin-", "read": ".*"}
    api.ok("PUT", "/api/permissions/%2F/erin", perm, 201)
    row = {"user": "erin", "vhost": "/", **perm}
    assert api.get("/api/permissions/%2F/erin") == row
    assert api.get("/api/users/erin/permissions") == [row]
    assert row in api.get("/api/vhosts/%2F/permissions") and row in api.get("/api/permissions")
    assert api.get("/api/users/without-permissions") == []

    with api.connect("erin", "epw") as conn:
        ch = conn.channel()
        ch.queue_declare("erin-q")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare("other-q")
        assert e.value.reply_code == 403
        assert (
            e.value.reply_text
            == "ACCESS_REFUSED - access to queue 'other-q' in vhost '/' refused for user 'erin'"
        )
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.basic_publish("amq.direct", "k", b"x")
            ch.queue_declare("erin-q", passive=True)  # a round trip, so the refusal arrives
        assert e.value.reply_text == (
            "ACCESS_REFUSED - access to exchange 'amq.direct' in vhost '/' refused for user 'erin'"
        )

    # Widened over HTTP: the next operation may.
    api.ok("PUT", "/api/permissions/%2F/erin", {"configure": ".*", "write": ".*", "read": ".*"})
    with api.connect("erin", "epw") as conn:
        conn.channel().queue_declare("other-q")

    # Cleared: connection.open is refused.
    api.ok("DELETE", "/api/permissions/%2F/erin")
    assert api.request("GET", "/api/permissions/%2F/erin")[0] == 404
    assert api.request("DELETE", "/api/permissions/%2F/erin")[0] == 404
    with pytest.raises(pika.exceptions.AMQPConnectionError) as refused:
        api.connect("erin", "epw")
    assert "(530)" in str(refused.value)
    assert "NOT_ALLOWED - access to vhost '/' refused for user 'erin'" in str(refused.value)


def test_permission_put_refusals(api: Api) -> None:
    full = {"configure": ".*", "write": ".*", "read": ".*"}
    assert api.request("PUT", "/api/permissions/%2F/nobody", full) == (
        400, {"error": "bad_request", "reason": "vhost_or_user_not_found"})  # fmt: skip
    assert api.request("PUT", "/api/permissions/novh/guest", full)[1]["reason"] == "vhost_or_user_not_found"
    assert api.request("PUT", "/api/permissions/%2F/guest", {"configure": ".*"}) == (
        400, {"error": "bad_request", "reason": "[{key_missing,write},{key_missing,read}]"})  # fmt: skip
    status, reply = api.request("PUT", "/api/permissions/%2F/guest", {**full, "write": "(unclosed"})
    assert status == 400 and reply["reason"].startswith(
        "write regex '(unclosed' is not a valid regular expression"
    )
    status, reply = api.request("PUT", "/api/permissions/%2F/guest", {**full, "read": 5})
    assert (status, reply["reason"]) == (400, "read regex must be a string")
    assert api.get("/api/permissions/%2F/guest") == {"user": "guest", "vhost": "/", **full}, "left as it was"
    assert api.request("GET", "/api/users/nobody/permissions")[0] == 404
    assert api.request("GET", "/api/vhosts/novh/permissions")[0] == 404


def test_topic_permissions_set_over_http_are_enforced_over_amqp(api: Api) -> None:
    api.ok("PUT", "/api/users/fay", {"password": "fpw", "tags": ""}, 201)
    api.ok("PUT", "/api/permissions/%2F/fay", {"configure": ".*", "write": ".*", "read": ".*"}, 201)
    tp = {"exchange": "amq.topic", "write": "^{username}\\.", "read": ".*"}
    api.ok("PUT", "/api/topic-permissions/%2F/fay", tp, 201)
    api.ok("PUT", "/api/topic-permissions/%2F/fay", {"exchange": "other", "write": ".*", "read": ".*"})
    row = {"user": "fay", "vhost": "/", **tp}
    other = {"user": "fay", "vhost": "/", "exchange": "other", "write": ".*", "read": ".*"}
    assert api.get("/api/topic-permissions/%2F/fay") == [row, other]
    assert api.get("/api/topic-permissions") == [row, other]
    assert api.get("/api/users/fay/topic-permissions") == [row, other]
    assert api.get("/api/vhosts/%2F/topic-permissions") == [row, other]

    with api.connect("fay", "fpw") as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", "fay.news", b"mine")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.basic_publish("amq.topic", "gus.news", b"not mine")
        assert e.value.reply_text == (
            "ACCESS_REFUSED - access to topic 'gus.news' in exchange 'amq.topic' in vhost '/' refused for user 'fay'"
        )

    api.ok("DELETE", "/api/topic-permissions/%2F/fay?exchange=other")
    assert api.get("/api/topic-permissions/%2F/fay") == [row]
    api.ok("DELETE", "/api/topic-permissions/%2F/fay/amq.topic")
    assert api.request("GET", "/api/topic-permissions/%2F/fay")[0] == 404
    assert api.request("DELETE", "/api/topic-permissions/%2F/fay")[0] == 404
    with api.connect("fay", "fpw") as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", "gus.news", b"now allowed")

    assert api.request("PUT", "/api/topic-permissions/%2F/fay", {"exchange": "x", "write": ".*"}) == (
        400, {"error": "bad_request", "reason": "[{key_missing,read}]"})  # fmt: skip
    assert api.request("PUT", "/api/topic-permissions/nov/fay", tp)[1]["reason"] == "vhost_or_user_not_found"
    status, reply = api.request("PUT", "/api/topic-permissions/%2F/fay", {**tp, "read": "[a-"})
    assert status == 400 and "read regex '[a-' is not a valid regular expression" in reply["reason"]


# ---- vhosts -------------------------------------------------------------------------------------------


def test_vhost_created_and_deleted_at_run_time(api: Api) -> None:
    api.ok("PUT", "/api/vhosts/va", {"description": "team a", "tags": "prod,eu"}, 201)
    va = next(v for v in api.get("/api/vhosts") if v["name"] == "va")
    assert (va["description"], va["tags"]) == ("team a", ["prod", "eu"])
    assert va["metadata"] == {"description": "team a", "tags": ["prod", "eu"]}
    # The creating user gets full permissions on it (rabbit_vhost:put_vhost); nobody else.
    assert api.get("/api/vhosts/va/permissions") == [
        {"user": "guest", "vhost": "va", "configure": ".*", "write": ".*", "read": ".*"}
    ]
    api.ok("PUT", "/api/vhosts/va", {"description": "team A"})
    assert api.get("/api/vhosts/va")["metadata"] == {"description": "team A", "tags": []}
    assert len(api.get("/api/vhosts/va/permissions")) == 1

    conn = api.connect("guest", "guest", "va")
    ch = conn.channel()
    ch.queue_declare("jobs", durable=True)
    ch.basic_publish("", "jobs", b"job")
    wait_for(lambda: api.get("/api/queues/va/jobs")["messages"] == 1)

    api.ok("DELETE", "/api/vhosts/va")
    e = closed_by_broker(conn)
    assert e.reply_code == 320
    assert "va" not in [v["name"] for v in api.get("/api/vhosts")]
    assert api.request("GET", "/api/queues/va/jobs")[0] == 404
    assert [q["name"] for q in api.get("/api/queues")] == []
    assert api.get("/api/permissions") == [{"user": "guest", "vhost": "/", "configure": ".*", "write": ".*",
                                            "read": ".*"}]  # fmt: skip
    with pytest.raises(pika.exceptions.AMQPConnectionError) as refused:
        api.connect("guest", "guest", "va")
    assert "(530)" in str(refused.value) and "NOT_ALLOWED - vhost va not found" in str(refused.value)
    assert api.request("DELETE", "/api/vhosts/va")[0] == 404

    # Created again: empty, usable.
    api.ok("PUT", "/api/vhosts/va", {}, 201)
    with api.connect("guest", "guest", "va") as again:
        assert again.channel().queue_declare("jobs", durable=True).method.message_count == 0

    status, reply = api.request("PUT", "/api/vhosts/" + "v" * 256, {})
    assert status == 400 and "vhost name" in reply["reason"]
    status, reply = api.request("PUT", "/api/vhosts/vb", {"tags": 5})
    assert status == 400 and "tags" in reply["reason"]


# ---- administrators only --------------------------------------------------------------------------------

ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "/api/users", None),
    ("GET", "/api/users/without-permissions", None),
    ("POST", "/api/users/bulk-delete", {"users": ["guest"]}),
    ("GET", "/api/users/guest", None),
    ("PUT", "/api/users/guest", {"password": "taken", "tags": "administrator"}),
    ("DELETE", "/api/users/guest", None),
    ("GET", "/api/users/guest/permissions", None),
    ("GET", "/api/users/guest/topic-permissions", None),
    ("GET", "/api/permissions", None),
    ("GET", "/api/permissions/%2F/guest", None),
    ("PUT", "/api/permissions/%2F/mon", {"configure": ".*", "write": ".*", "read": ".*"}),
    ("DELETE", "/api/permissions/%2F/guest", None),
    ("GET", "/api/topic-permissions", None),
    ("GET", "/api/topic-permissions/%2F/guest", None),
    ("PUT", "/api/topic-permissions/%2F/mon", {"exchange": "amq.topic", "write": ".*", "read": ".*"}),
    ("DELETE", "/api/topic-permissions/%2F/guest", None),
    ("DELETE", "/api/topic-permissions/%2F/guest/amq.topic", None),
    ("PUT", "/api/vhosts/mine", {}),
    ("DELETE", "/api/vhosts/%2F", None),
    ("GET", "/api/vhosts/%2F/permissions", None),
    ("GET", "/api/vhosts/%2F/topic-permissions", None),
    ("GET", "/api/definitions", None),
    ("POST", "/api/definitions", {"users": [{"name": "mon", "password": "x", "tags": "administrator"}]}),
]


@pytest.mark.parametrize("tags", ["monitoring", "policymaker", "management"])
def test_non_administrators_get_401_on_every_endpoint(api: Api, tags: str) -> None:
    api.ok("PUT", "/api/users/mon", {"password": "mpw", "tags": tags}, 201)
    api.ok(
        "PUT", "/api/topic-permissions/%2F/guest", {"exchange": "amq.topic", "write": ".*", "read": ".*"}, 201
    )
    before = api.get("/api/definitions")
    for method, path, body in ENDPOINTS:
        assert api.request(method, path, body, auth=("mon", "mpw")) == (
            401, {"error": "not_authorised", "reason": "Not administrator user"}), (method, path)  # fmt: skip
    after = api.get("/api/definitions")
    assert after["users"] == before["users"] and after["vhosts"] == before["vhosts"]
    assert (
        after["permissions"] == before["permissions"]
        and after["topic_permissions"] == before["topic_permissions"]
    )
    assert api.request("GET", "/api/users", auth=None)[0] == 401


# ---- durable --------------------------------------------------------------------------------------------


def test_everything_survives_a_restart(tmp_path: Path) -> None:
    def start() -> Api:
        return make_api(storage="sqlite", data_dir=tmp_path / "data")

    a = start()
    try:
        a.ok("PUT", "/api/vhosts/va", {"description": "team a", "tags": ["prod"]}, 201)
        a.ok("PUT", "/api/users/gil", {"password": "gpw", "tags": "monitoring,management"}, 201)
        a.ok("PUT", "/api/permissions/va/gil", {"configure": "^gil-", "write": ".*", "read": ".*"}, 201)
        a.ok(
            "PUT",
            "/api/topic-permissions/va/gil",
            {"exchange": "amq.topic", "write": "^gil\\.", "read": ".*"},
            201,
        )
        a.ok("PUT", "/api/users/gone", {"password": "x", "tags": ""}, 201)
        a.ok("DELETE", "/api/users/gone")
        a.ok("PUT", "/api/vhosts/vgone", {}, 201)
        a.ok("DELETE", "/api/vhosts/vgone")
        snapshot = {p: a.get(p) for p in ("/api/users", "/api/permissions", "/api/topic-permissions")}
        vhosts = [(v["name"], v["metadata"]) for v in a.get("/api/vhosts")]
    finally:
        a.broker.stop()

    b = start()
    try:
        assert {p: b.get(p) for p in snapshot} == snapshot
        assert [(v["name"], v["metadata"]) for v in b.get("/api/vhosts")] == vhosts
        assert [name for name, _ in vhosts] == ["/", "va"]
        assert b.get("/api/whoami", ("gil", "gpw")) == {"name": "gil", "tags": ["monitoring", "management"]}
        with b.connect("gil", "gpw", "va") as conn:
            ch = conn.channel()
            ch.queue_declare("gil-q")
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                ch.queue_declare("q")
            assert e.value.reply_code == 403
    finally:
        b.broker.stop()


def test_a_restart_keeps_a_vhost_description_set_over_http(tmp_path: Path) -> None:
    """--vhost at every start must not wipe what was set at run time (add_vhost without metadata keeps it)."""
    b = ProcessBroker(tmp_path / "data", extra=["--vhost", "app"]).start()
    try:
        url = f"http://127.0.0.1:{b.http_port}/api/vhosts/app"
        status, _, _ = http_request(url, "PUT", {"description": "orders", "tags": "prod"}, ("guest", "guest"))
        assert status in (201, 204)
    finally:
        b.terminate()
    b = ProcessBroker(tmp_path / "data", extra=["--vhost", "app"]).start()
    try:
        _, body, _ = http_request(f"http://127.0.0.1:{b.http_port}/api/vhosts/app", "GET", None, ("guest", "guest"))
        assert body["description"] == "orders" and body["tags"] == ["prod"], body
    finally:
        b.terminate()
