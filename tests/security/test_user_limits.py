"""Per-user limits (``max-connections``, ``max-channels``) are enforced as RabbitMQ 3.10 enforces them.

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
