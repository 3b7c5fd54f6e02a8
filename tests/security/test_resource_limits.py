"""User limits (``max-connections``, ``max-channels``) and vhost limits (``max-connections``,
``max-queues``) are enforced, and managed over HTTP, as RabbitMQ 3.10 does.

Probed on RabbitMQ 3.10.8 (rabbitmqctl set_user_limits u '{"max-connections": 1, "max-channels": 2}'):
a second connection gets 530 ``NOT_ALLOWED - connection refused for user 'u': user connection limit
(1) is reached``; a third channel closes the *connection* with 530 ``NOT_ALLOWED - number of channels
opened for user 'u' has reached the maximum allowed user limit of (2)``; 0 refuses every one, -1 is
unlimited; limits merge key by key; unknown keys and non-numbers are refused with the texts below.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest

from tests.helpers import ThreadBroker
from tests.security.test_access_api import Api, make_api

U, PW = "u", "pw"


@pytest.fixture
def b() -> Iterator[ThreadBroker]:
    broker = ThreadBroker().start()

    def setup() -> None:
        m = broker.app.broker
        assert m is not None
        m.access.add_user(U, PW, ())
        m.access.set_permissions(U, "/", ".*", ".*", ".*")

    broker.call(setup)
    yield broker
    broker.stop()


def limits(b: ThreadBroker, value: object) -> None:
    b.call(lambda: b.app.broker.access.set_user_limits(U, value))  # type: ignore[union-attr]


def connect(b: ThreadBroker, user: str = U, password: str = PW) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", b.port, "/", pika.PlainCredentials(user, password),
                                  connection_attempts=1, socket_timeout=10)
    )  # fmt: skip


def test_max_connections(b: ThreadBroker) -> None:
    limits(b, {"max-connections": 1})
    c1 = connect(b)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        connect(b)
    assert "(530) \"NOT_ALLOWED - connection refused for user 'u': user connection limit (1) is reached\"" in str(
        e.value
    )
    guest = connect(b, "guest", "guest")  # another user is not counted
    guest.close()
    c1.close()
    connect(b).close()  # the count falls when a connection closes
    limits(b, {"max-connections": 0})
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        connect(b)
    assert "user connection limit (0) is reached" in str(e.value)
    limits(b, {"max-connections": -1})
    conns = [connect(b) for _ in range(3)]
    for c in conns:
        c.close()


def test_max_channels_closes_the_connection(b: ThreadBroker) -> None:
    limits(b, {"max-channels": 2})
    c1 = connect(b)
    c2 = connect(b)
    c1.channel()
    c2.channel()  # the limit counts every connection of the user
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        c1.channel()
    assert (e.value.reply_code, e.value.reply_text) == (
        530, "NOT_ALLOWED - number of channels opened for user 'u' has reached the maximum allowed user limit of (2)"
    )
    assert not c1.is_open
    c2.channel()  # c1's channel went with its connection
    c2.close()


def test_limits_merge_clear_validate_and_persist(b: ThreadBroker) -> None:
    m = b.app.broker
    assert m is not None
    limits(b, {"max-connections": 1, "max-channels": 2})
    limits(b, {"max-connections": 5})
    assert b.call(lambda: m.access.user(U).limits) == {"max-connections": 5, "max-channels": 2}
    b.call(lambda: m.access.clear_user_limits(U, "max-channels"))
    assert b.call(lambda: m.access.user(U).limits) == {"max-connections": 5}
    with pytest.raises(ValueError, match=r"^max-connections should be a number, actually was <<\"x\">>$"):
        limits(b, {"max-connections": "x"})
    with pytest.raises(ValueError, match=r"^Unrecognised terms \[\{<<\"foo\">>,1\}\] in user-limits$"):
        limits(b, {"foo": 1})
    with pytest.raises(KeyError):
        b.call(lambda: m.access.set_user_limits("nobody", {"max-connections": 1}))
    b.call(lambda: m.access.clear_user_limits(U, "all"))
    assert b.call(lambda: m.access.user(U).limits) == {}


def test_limits_are_kept_across_a_restart(tmp_path: Path) -> None:
    first = ThreadBroker(storage="sqlite", data_dir=tmp_path).start()
    try:
        m = first.app.broker
        assert m is not None
        first.call(lambda: m.access.add_user(U, PW, ()))
        first.call(lambda: m.access.set_permissions(U, "/", ".*", ".*", ".*"))
        limits(first, {"max-connections": 1})
    finally:
        first.stop()
    again = ThreadBroker(storage="sqlite", data_dir=tmp_path).start()
    try:
        c1 = connect(again)
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError, match="user connection limit"):
            connect(again)
        c1.close()
    finally:
        again.stop()


# ---- over HTTP, and vhost limits (RabbitMQ's texts and shapes probed on 3.10.8) -------------------


@pytest.fixture
def api() -> Iterator[Api]:
    a = make_api()
    a.ok("PUT", "/api/users/u", {"password": PW, "tags": ""}, 201)
    a.ok("PUT", "/api/vhosts/v", None, 201)
    for vhost in ("%2F", "v"):
        a.ok("PUT", f"/api/permissions/{vhost}/u", {"configure": ".*", "write": ".*", "read": ".*"}, 201)
    yield a
    a.broker.stop()


def test_user_limits_over_http(api: Api) -> None:
    assert api.get("/api/user-limits") == []
    api.ok("PUT", "/api/user-limits/u/max-connections", {"value": 3})
    api.ok("PUT", "/api/user-limits/u/max-channels", {"value": 7})
    rows = [{"user": "u", "value": {"max-connections": 3, "max-channels": 7}}]
    assert api.get("/api/user-limits") == rows == api.get("/api/user-limits/u")
    assert api.get("/api/users/u")["limits"] == {"max-connections": 3, "max-channels": 7}
    assert api.request("GET", "/api/user-limits/nobody")[0] == 404
    for path, body, reason in [
        ("u/foo", {"value": 3}, 'Unrecognised terms [{<<"foo">>,3}] in user-limits'),
        ("u/max-connections", {"value": "x"}, 'max-connections should be a number, actually was <<"x">>'),
        ("u/max-connections", {"nope": 1}, "[{key_missing,value}]"),
        ("nobody/max-connections", {"value": 1}, ["no_such_user", "nobody"]),
    ]:
        assert api.request("PUT", f"/api/user-limits/{path}", body) == (
            400, {"error": "bad_request", "reason": reason}
        ), path
    api.ok("DELETE", "/api/user-limits/u/max-channels")
    api.ok("DELETE", "/api/user-limits/u/max-channels")  # nothing to clear is fine
    assert api.get("/api/user-limits/u") == [{"user": "u", "value": {"max-connections": 3}}]
    assert api.request("GET", "/api/user-limits", auth=("u", PW))[0] == 401  # administrators only
    api.ok("PUT", "/api/user-limits/u/max-connections", {"value": 1})
    c1 = api.connect("u", PW)  # and it is enforced
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError, match=r"user connection limit \(1\)"):
        api.connect("u", PW)
    c1.close()


def test_vhost_limits_over_http_and_amqp(api: Api) -> None:
    api.ok("PUT", "/api/vhost-limits/v/max-queues", {"value": 2})
    api.ok("PUT", "/api/vhost-limits/v/max-connections", {"value": 5})
    rows = [{"vhost": "v", "value": {"max-queues": 2, "max-connections": 5}}]
    assert api.get("/api/vhost-limits") == rows == api.get("/api/vhost-limits/v")
    for path, body, reason in [
        ("v/foo", {"value": 2}, 'Validation failed\n\nUnrecognised terms [{&lt;&lt;"foo"&gt;&gt;,2}] in limits\n'),
        ("v/max-queues", {"value": "x"}, 'Validation failed\n\nmax-queues should be a number, actually was '
                                         '&lt;&lt;"x"&gt;&gt;\n'),
    ]:  # fmt: skip
        assert api.request("PUT", f"/api/vhost-limits/{path}", body) == (
            400, {"error": "bad_request", "reason": reason}
        ), path
    assert api.request("PUT", "/api/vhost-limits/nope/max-queues", {"value": 1})[0] == 404
    # max-queues counts every path a queue is declared by: AMQP and HTTP.
    conn = api.connect("u", PW, "v")
    ch = conn.channel()
    ch.queue_declare("q1")
    api.ok("PUT", "/api/queues/v/q2", {"durable": False}, 201)
    ch.queue_declare("q1")  # an existing one is not a new queue
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("q3")
    assert (e.value.reply_code, e.value.reply_text) == (
        406, "PRECONDITION_FAILED - cannot declare queue 'q3': queue limit in vhost 'v' (2) is reached"
    )
    status, reply = api.request("PUT", "/api/queues/v/q4", {"durable": False})
    assert status == 400 and "queue limit in vhost 'v' (2) is reached" in reply["reason"], reply
    conn.close()
    # max-connections of the vhost, checked before the user's (RabbitMQ's text names the user).
    api.ok("PUT", "/api/vhost-limits/v/max-connections", {"value": 1})
    c1 = api.connect("u", PW, "v")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as pe:
        api.connect("guest", "guest", "v")
    assert "NOT_ALLOWED - access to vhost 'v' refused for user 'guest': connection limit (1) is reached" in str(
        pe.value
    )
    api.connect("u", PW, "/").close()  # other vhosts are not counted
    c1.close()
    api.ok("DELETE", "/api/vhost-limits/v/max-connections")
    assert api.get("/api/vhost-limits/v") == [{"vhost": "v", "value": {"max-queues": 2}}]
    # Another user's vhost: a management user sees only the vhosts it has permissions in.
    api.ok("PUT", "/api/users/m", {"password": "mpw", "tags": "management"}, 201)
    assert api.request("GET", "/api/vhost-limits", auth=("m", "mpw")) == (200, [])
    assert api.request("GET", "/api/vhost-limits/v", auth=("m", "mpw"))[0] == 401
    assert api.request("PUT", "/api/vhost-limits/v/max-queues", {"value": 9}, auth=("u", PW))[0] == 401
    api.ok("DELETE", "/api/vhost-limits/v/max-queues")
    assert api.get("/api/vhost-limits") == []


def test_vhost_limits_are_kept_across_a_restart_and_go_with_the_vhost(tmp_path: Path) -> None:
    a = make_api(storage="sqlite", data_dir=tmp_path)
    try:
        a.ok("PUT", "/api/vhosts/v", None, 201)
        a.ok("PUT", "/api/vhost-limits/v/max-queues", {"value": 0})
        a.ok("PUT", "/api/vhost-limits/v/max-connections", {"value": 10**30})  # valid, extreme: kept as is
        a.ok("PUT", "/api/users/big", {"password": "x", "tags": ""}, 201)
        a.ok("PUT", "/api/user-limits/big/max-channels", {"value": -(10**30)})  # negative: no limit
    finally:
        a.broker.stop()
    a = make_api(storage="sqlite", data_dir=tmp_path)
    try:
        assert a.get("/api/vhost-limits") == [{"vhost": "v", "value": {"max-queues": 0, "max-connections": 10**30}}]
        assert a.get("/api/user-limits/big") == [{"user": "big", "value": {"max-channels": -(10**30)}}]
        conn = a.connect("guest", "guest", "v")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="queue limit in vhost 'v' \\(0\\)"):
            conn.channel().queue_declare("q")
        conn.close()
        a.ok("DELETE", "/api/vhosts/v")
        a.ok("PUT", "/api/vhosts/v", None, 201)
        assert a.get("/api/vhost-limits") == []  # a new vhost of the same name starts without limits
    finally:
        a.broker.stop()
