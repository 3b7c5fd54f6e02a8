"""Dead-lettering, TTLs, x-expires and max-length with pika, as Dramatiq and Celery use them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.e2e.conftest import params
from tests.helpers import ThreadBroker

Connect = Callable[..., pika.BlockingConnection]


def get_within(ch: BlockingChannel, queue: str, seconds: float) -> tuple[float, bytes, pika.BasicProperties]:
    """basic.get ``queue`` until a message comes; (seconds waited, body, properties)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        m, p, body = ch.basic_get(queue, auto_ack=True)
        if m is not None:
            return time.monotonic() - start, body, p
        time.sleep(0.02)
    raise AssertionError(f"nothing arrived in {queue!r} within {seconds} s")


def test_dramatiq_style_nack_lands_in_the_xq_with_x_death(ch: BlockingChannel) -> None:
    ch.queue_declare(
        "Q", durable=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "Q.XQ"}
    )
    ch.queue_declare("Q.XQ", durable=True, arguments={"x-message-ttl": 86400000 * 7})
    ch.confirm_delivery()
    ch.basic_publish(
        "", "Q", b"job", pika.BasicProperties(delivery_mode=2, priority=0, message_id="m1"), mandatory=True
    )
    m, _, _ = ch.basic_get("Q")
    ch.basic_nack(m.delivery_tag, requeue=False)
    _, body, p = get_within(ch, "Q.XQ", 2)
    assert body == b"job" and p.message_id == "m1" and p.delivery_mode == 2
    (death,) = p.headers["x-death"]
    assert {k: v for k, v in death.items() if k != "time"} == {
        "count": 1,
        "reason": "rejected",
        "queue": "Q",
        "exchange": "",
        "routing-keys": ["Q"],
    }
    assert p.headers["x-first-death-reason"] == "rejected" and p.headers["x-first-death-queue"] == "Q"
    assert abs(death["time"].timestamp() - time.time()) < 5
    assert ch.queue_declare("Q", passive=True).method.message_count == 0


def test_celery_style_delay_chain(ch: BlockingChannel) -> None:
    """A TTL queue dead-letters, through a topic exchange, into the work queue after ~TTL."""
    ch.exchange_declare("celery_delayed", "topic", durable=True)
    ch.queue_declare("celery", durable=True)
    ch.queue_bind("celery", "celery_delayed", "#")
    ttl = 1000
    ch.queue_declare(
        "celery_delayed_0",
        durable=True,
        arguments={"x-message-ttl": ttl, "x-dead-letter-exchange": "celery_delayed"},
    )
    ch.basic_publish("", "celery_delayed_0", b"task", pika.BasicProperties(delivery_mode=2))
    waited, body, p = get_within(ch, "celery", 5)
    assert body == b"task" and 0.9 < waited < ttl / 1000 + 1.0
    assert p.headers["x-death"][0]["reason"] == "expired"


def test_per_message_expiration(ch: BlockingChannel) -> None:
    ch.queue_declare("exp")
    ch.basic_publish("", "exp", b"soon", pika.BasicProperties(expiration="200"))
    ch.basic_publish("", "exp", b"later", pika.BasicProperties(expiration="60000"))
    time.sleep(1.0)  # one or two periodic ticks
    assert ch.queue_declare("exp", passive=True).method.message_count == 1
    m, p, body = ch.basic_get("exp", auto_ack=True)
    assert body == b"later" and p.expiration == "60000"  # kept as sent while in the queue


def test_invalid_expiration_closes_the_channel(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.queue_declare("exp2")
    ch.basic_publish("", "exp2", b"x", pika.BasicProperties(expiration="soon"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("exp2", passive=True)
    assert (e.value.reply_code, e.value.reply_text) == (
        406,
        "PRECONDITION_FAILED - invalid expiration 'soon': no_integer",
    )


def test_x_expires_deletes_an_unused_queue(ch: BlockingChannel) -> None:
    ch.queue_declare("lease", arguments={"x-expires": 600})
    time.sleep(0.4)
    ch.queue_declare("lease", passive=True)
    time.sleep(1.5)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("lease", passive=True)
    assert e.value.reply_code == 404


def test_max_length_drop_head(ch: BlockingChannel) -> None:
    ch.queue_declare("ml", arguments={"x-max-length": 2})
    for i in range(5):
        ch.basic_publish("", "ml", b"%d" % i)
    assert ch.queue_declare("ml", passive=True).method.message_count == 2
    assert [ch.basic_get("ml", auto_ack=True)[2] for _ in range(2)] == [b"3", b"4"]


def test_reject_publish_nacks_the_confirm(ch: BlockingChannel) -> None:
    ch.queue_declare("rp", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", "rp", b"1", mandatory=True)
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "rp", b"2", mandatory=True)  # nacked, not returned (RabbitMQ)
    ch.basic_get("rp", auto_ack=True)
    ch.basic_publish("", "rp", b"3", mandatory=True)  # room again: acked
    assert ch.basic_get("rp", auto_ack=True)[2] == b"3"


def test_persistent_dead_letters_survive_a_restart(tmp_path: Path) -> None:
    def start() -> ThreadBroker:
        return ThreadBroker(storage="sqlite", data_dir=tmp_path).start()

    b = start()
    try:
        c = pika.BlockingConnection(params(b.port))
        ch = c.channel()
        ch.queue_declare(
            "Q", durable=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "Q.XQ"}
        )
        ch.queue_declare("Q.XQ", durable=True)
        ch.confirm_delivery()
        for i in range(3):
            ch.basic_publish("", "Q", b"%d" % i, pika.BasicProperties(delivery_mode=2))
        for _ in range(3):
            m, _, _ = ch.basic_get("Q")
            ch.basic_nack(m.delivery_tag, requeue=False)
        ch.queue_declare("Q.XQ", passive=True)  # a round trip: the nacks were handled
        c.close()
    finally:
        b.stop()
    b = start()
    try:
        c = pika.BlockingConnection(params(b.port))
        ch = c.channel()
        assert ch.queue_declare("Q", durable=True, passive=True).method.message_count == 0
        got = [ch.basic_get("Q.XQ", auto_ack=True) for _ in range(3)]
        assert [body for _, _, body in got] == [b"0", b"1", b"2"]
        assert all(p.headers["x-death"][0]["reason"] == "rejected" for _, p, _ in got)
        c.close()
    finally:
        b.stop()


@pytest.mark.parametrize("qtype", ["classic", "quorum"])
@pytest.mark.parametrize("key", ["x-message-ttl", "x-expires"])
def test_ttls_up_to_ten_years_as_rabbitmq_3_10(connect: Callable[..., pika.BlockingConnection], qtype: str, key: str) -> None:
    """RabbitMQ 3.10 takes 315,360,000,000 ms and refuses one more (Celery's celery_delayed_27 needs
    2^27 s); they were refused above 2^32 - 1 ms."""
    conn = connect()
    ch = conn.channel()
    ok = {"x-queue-type": qtype, key: 315_360_000_000}
    ch.queue_declare(f"ten-years-{qtype}-{key}", durable=True, arguments=ok)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        conn.channel().queue_declare(f"too-long-{qtype}-{key}", durable=True, arguments={**ok, key: 315_360_000_001})
    assert info.value.reply_code == 406
    assert info.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg '{key}' for queue 'too-long-{qtype}-{key}' in vhost '/': "
        "{value_too_large,315360000001}"
    )
    ch.queue_delete(f"ten-years-{qtype}-{key}")
