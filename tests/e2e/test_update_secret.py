"""connection.update-secret (RabbitMQ's extension, used by OAuth 2 clients to refresh a token): with the
internal user database RabbitMQ answers update-secret-ok and re-checks nothing, so Leveret does the same
(reference 6.7). pika's acceptance suite has 8 tests of it; they failed with 503 COMMAND_INVALID."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pika
import pytest

from tests.helpers import ThreadBroker


def test_update_secret_is_answered_and_the_connection_goes_on(connect: Callable[..., pika.BlockingConnection]) -> None:
    """AMQP only (bench/conformance_vs_rabbitmq.py runs it against RabbitMQ too)."""
    conn = connect()
    conn.update_secret("new-token-value", "token refreshed")  # blocks until update-secret-ok
    ch = conn.channel()
    ch.queue_declare("after-update")
    ch.basic_publish("", "after-update", b"still works")
    method, _, body = ch.basic_get("after-update", auto_ack=True)
    assert method is not None and body == b"still works"


def test_the_reason_is_logged_never_the_secret(broker: ThreadBroker, caplog: pytest.LogCaptureFixture) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    with caplog.at_level(logging.INFO, logger="leveret.connection"):
        conn.update_secret("new-token-value", "token refreshed")
    conn.close()
    lines = [r.getMessage() for r in caplog.records if "updated its secret" in r.getMessage()]
    assert len(lines) == 1 and "token refreshed" in lines[0], lines
    assert all("new-token-value" not in r.getMessage() for r in caplog.records)
