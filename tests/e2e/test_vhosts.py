"""Users and virtual hosts from the command line (--user NAME:PASSWORD, --vhost NAME), so that
client code written for amqp://app:secret@host/app connects unchanged."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pika
import pika.exceptions
import pytest

from tests.helpers import ThreadBroker


@pytest.fixture
def app_broker() -> Iterator[ThreadBroker]:
    b = ThreadBroker(users={"guest": "guest", "app": "s3cret"}, vhosts=("app", "other")).start()
    yield b
    b.stop()


def connect_as(b: ThreadBroker, user: str, password: str, vhost: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            "127.0.0.1", b.port, vhost, pika.PlainCredentials(user, password), connection_attempts=1, socket_timeout=5
        )
    )


def test_a_configured_user_uses_a_configured_vhost(app_broker: ThreadBroker) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(f"amqp://app:s3cret@127.0.0.1:{app_broker.port}/app"))
    ch = conn.channel()
    ch.queue_declare("tasks", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "tasks", b"in app", pika.BasicProperties(delivery_mode=2))
    assert ch.basic_get("tasks", auto_ack=True)[2] == b"in app"
    conn.close()


def test_vhosts_are_separate_namespaces(app_broker: ThreadBroker) -> None:
    a = connect_as(app_broker, "app", "s3cret", "app").channel()
    o = connect_as(app_broker, "app", "s3cret", "other").channel()
    root = connect_as(app_broker, "guest", "guest", "/").channel()
    for ch, body in ((a, b"a"), (o, b"o"), (root, b"r")):
        ch.queue_declare("same-name")
        ch.confirm_delivery()
        ch.basic_publish("", "same-name", body)
    assert [ch.basic_get("same-name", auto_ack=True)[2] for ch in (a, o, root)] == [b"a", b"o", b"r"]
    a.queue_declare("only-in-app")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        o.queue_declare("only-in-app", passive=True)
    assert (e.value.reply_code, e.value.reply_text) == (404, "NOT_FOUND - no queue 'only-in-app' in vhost 'other'")


def test_an_unknown_vhost_is_refused_with_530(app_broker: ThreadBroker) -> None:
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        connect_as(app_broker, "app", "s3cret", "nosuch")
    assert "(530) 'NOT_ALLOWED - vhost nosuch not found'" in str(e.value)


def test_a_wrong_password_is_refused(app_broker: ThreadBroker) -> None:
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as e:
        connect_as(app_broker, "app", "wrong", "app")
    assert "ACCESS_REFUSED" in str(e.value)


def test_the_unknown_vhost_text_is_rabbitmqs(connect: Callable[..., pika.BlockingConnection]) -> None:
    # AMQP only, so bench/conformance_vs_rabbitmq.py checks the same text against RabbitMQ.
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        connect(virtual_host="nosuch")
    assert "(530) 'NOT_ALLOWED - vhost nosuch not found'" in str(e.value)


def test_a_user_without_a_password_separator_is_a_usage_error() -> None:
    from click.testing import CliRunner

    from leveret.cli.main import main

    result = CliRunner().invoke(main, ["server", "--user", "nocolon", "--amqp-port", "0"])
    assert result.exit_code == 2
    assert "Invalid value for '--user': expected NAME:PASSWORD" in result.output
    assert "nocolon" not in result.output  # the value may be a password: it is not repeated
