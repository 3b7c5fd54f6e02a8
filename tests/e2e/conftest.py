"""Fixtures for end-to-end tests: real clients over TCP against a broker on an ephemeral port."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator

import pika
import pytest

from tests.helpers import ThreadBroker


def params(port: int, **kw: object) -> pika.ConnectionParameters:
    kw.setdefault("blocked_connection_timeout", 10)
    kw.setdefault("socket_timeout", 5)
    kw.setdefault("connection_attempts", 1)
    return pika.ConnectionParameters(
        host="127.0.0.1",
        port=port,
        credentials=pika.PlainCredentials("guest", "guest"),
        **kw,  # type: ignore[arg-type]
    )


# Another broker to run the tests that only talk AMQP against (bench/conformance_vs_rabbitmq.py sets
# these to a private RabbitMQ node): its port, and a command that empties it before each test.
EXTERNAL_PORT = os.environ.get("LEVERET_E2E_AMQP_PORT")
EXTERNAL_RESET = os.environ.get("LEVERET_E2E_RESET")


@pytest.fixture
def amqp_port(request: pytest.FixtureRequest) -> int:
    """The port ``connect`` uses: a fresh Leveret (``broker``), or the external broker, emptied."""
    if EXTERNAL_PORT:
        if EXTERNAL_RESET:
            subprocess.run([EXTERNAL_RESET], check=True, capture_output=True, timeout=60)
        return int(EXTERNAL_PORT)
    broker: ThreadBroker = request.getfixturevalue("broker")
    return broker.port


@pytest.fixture
def connect(amqp_port: int) -> Iterator[Callable[..., pika.BlockingConnection]]:
    """``connect(**params)`` opens a pika BlockingConnection to the broker; all are closed afterwards."""
    made: list[pika.BlockingConnection] = []

    def make(**kw: object) -> pika.BlockingConnection:
        c = pika.BlockingConnection(params(amqp_port, **kw))
        made.append(c)
        return c

    yield make
    for c in made:
        if c.is_open:
            try:
                c.close()
            except Exception:
                pass


@pytest.fixture
def conn(connect: Callable[..., pika.BlockingConnection]) -> pika.BlockingConnection:
    return connect()


@pytest.fixture
def ch(conn: pika.BlockingConnection) -> pika.adapters.blocking_connection.BlockingChannel:
    return conn.channel()


def drain(conn: pika.BlockingConnection, seconds: float = 0.05) -> None:
    """Let pika read whatever the broker has sent (process_data_events for a moment)."""
    conn.process_data_events(time_limit=seconds)
