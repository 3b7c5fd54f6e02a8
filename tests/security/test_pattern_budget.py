"""Operator-written regexes cannot stop the broker: a permission regex or policy pattern with
catastrophic backtracking is given up on after a bounded time, refuses (permissions) or applies to
nothing (policies), and is logged; every other client keeps working.

Without the bound, ``(a|a)+$`` against 30 ``a`` and a ``!`` takes Python's ``re`` about 2**30 steps
(minutes) on the event loop: these tests then hit pytest's timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pika
import pika.exceptions
import pytest

from tests.helpers import ThreadBroker

V, U, PW = "v", "u", "upw"
EVIL = r"(a|a)+$"  # catastrophic for both re and regex (regex alone defuses (a+)+$)
VICTIM = "a" * 30 + "!"


@pytest.fixture
def b() -> Iterator[ThreadBroker]:
    broker = ThreadBroker(vhosts=(V,)).start()

    def setup() -> None:
        m = broker.app.broker
        assert m is not None
        m.access.add_user(U, PW, ())
        m.access.set_permissions("guest", V, ".*", ".*", ".*")

    broker.call(setup)
    yield broker
    broker.stop()


def connect(port: int, user: str = U, password: str = PW) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", port, V, pika.PlainCredentials(user, password),
                                  connection_attempts=1, socket_timeout=10, blocked_connection_timeout=10)
    )  # fmt: skip


def test_a_catastrophic_permission_regex_refuses_in_bounded_time(
    b: ThreadBroker, caplog: pytest.LogCaptureFixture
) -> None:
    b.call(lambda: b.app.broker.access.set_permissions(U, V, EVIL, ".*", ".*"))  # type: ignore[union-attr]
    conn = connect(b.port)
    ch = conn.channel()
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="leveret.patterns"):
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare(VICTIM)
    assert time.monotonic() - started < 10
    assert e.value.reply_code == 403
    assert any("took more than" in r.getMessage() for r in caplog.records)
    # Broken now: it refuses at once, even names it would have matched; other clients are served.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        conn.channel().queue_declare("aaa")
    guest = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port, V, connection_attempts=1))
    gch = guest.channel()
    gch.queue_declare(VICTIM)
    gch.confirm_delivery()
    gch.basic_publish("", VICTIM, b"fine")
    assert gch.basic_get(VICTIM, auto_ack=True)[2] == b"fine"
    guest.close()
    # Setting it again, simpler, gives the user back their rights on the same connection.
    b.call(lambda: b.app.broker.access.set_permissions(U, V, "^a+!?$", ".*", ".*"))  # type: ignore[union-attr]
    conn.channel().queue_declare(VICTIM)
    conn.close()


def test_a_catastrophic_topic_permission_regex_refuses(b: ThreadBroker) -> None:
    m = b.app.broker
    assert m is not None
    b.call(lambda: m.access.set_permissions(U, V, ".*", ".*", ".*"))
    b.call(lambda: m.access.set_topic_permissions(U, V, "amq.topic", EVIL, ".*"))
    conn = connect(b.port)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("amq.topic", "aaa", b"ok")  # matches quickly
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_publish("amq.topic", VICTIM, b"no")
    assert e.value.reply_code == 403
    conn.close()


def test_a_catastrophic_policy_pattern_applies_to_nothing(b: ThreadBroker) -> None:
    m = b.app.broker
    assert m is not None
    guest = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port, V, connection_attempts=1))
    ch = guest.channel()
    for i in range(20):  # existing queues the new policy is matched against at once
        ch.queue_declare(f"{VICTIM}{i}")
    started = time.monotonic()
    b.call(lambda: m.set_policy(V, "evil", EVIL, {"max-length": 1}))
    ch.queue_declare(VICTIM)
    assert time.monotonic() - started < 10
    ch.confirm_delivery()
    for n in range(3):
        ch.basic_publish("", VICTIM, str(n).encode())
    assert ch.queue_declare(VICTIM, passive=True).method.message_count == 3  # no max-length applied
    assert b.call(lambda: m.vhosts[V].queues[VICTIM].policy) is None
    guest.close()
