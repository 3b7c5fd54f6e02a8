"""Transactions (tx.select / tx.commit / tx.rollback) with RabbitMQ's semantics and texts.

Publishes are held until tx.commit (a missing exchange is refused at once); acks, nacks and rejects
take their deliveries out of the unacked set at once but act at tx.commit, and tx.rollback gives them
back. Mandatory returns come at commit. The texts are RabbitMQ 3.10.8's; these tests also pass
against it (bench/conformance_vs_rabbitmq.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest

Connect = Callable[..., pika.BlockingConnection]


def pump_until(conn: pika.BlockingConnection, done: Callable[[], bool], timeout: float = 10) -> None:
    """Let pika read until ``done()`` (or the timeout: the caller's assertion then says what is missing)."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)


def one_unacked_in_tx(conn: pika.BlockingConnection, queue: str, body: bytes = b"one") -> tuple[Any, Any]:
    """A channel in tx mode holding one message of ``queue`` unacked (published before tx.select)."""
    ch = conn.channel()
    ch.queue_declare(queue)
    ch.basic_publish("", queue, body)
    ch.tx_select()
    method, _, _ = ch.basic_get(queue, auto_ack=False)
    return ch, method


def ready(conn: pika.BlockingConnection, queue: str) -> int:
    return int(conn.channel().queue_declare(queue, passive=True).method.message_count)


@pytest.mark.parametrize("method", ["tx_commit", "tx_rollback"])
def test_commit_or_rollback_without_select_is_406(connect: Connect, method: str) -> None:
    ch = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        getattr(ch, method)()
    assert (e.value.reply_code, e.value.reply_text) == (406, "PRECONDITION_FAILED - channel is not transactional")


def test_tx_and_confirm_modes_exclude_each_other(connect: Connect) -> None:
    conn = connect()
    ch = conn.channel()
    ch.tx_select()
    ch.tx_select()  # again: fine
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.confirm_delivery()
    assert e.value.reply_text == "PRECONDITION_FAILED - cannot switch from tx to confirm mode"
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.tx_select()
    assert e.value.reply_text == "PRECONDITION_FAILED - cannot switch from confirm to tx mode"


def test_publishes_wait_for_commit_and_rollback_drops_them(connect: Connect) -> None:
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("txq")
    ch.tx_select()
    for i in range(3):
        ch.basic_publish("", "txq", b"m%d" % i)
    assert ready(conn, "txq") == 0
    ch.tx_commit()
    assert ready(conn, "txq") == 3
    ch.basic_publish("", "txq", b"dropped")
    ch.tx_rollback()
    assert ready(conn, "txq") == 3
    assert [ch.basic_get("txq", auto_ack=True)[2] for _ in range(3)] == [b"m0", b"m1", b"m2"]


def test_a_publish_to_a_missing_exchange_fails_at_once(connect: Connect) -> None:
    ch = connect().channel()
    ch.tx_select()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_publish("no-such-exchange", "k", b"x")
        ch.tx_commit()
    assert (e.value.reply_code, e.value.reply_text) == (404, "NOT_FOUND - no exchange 'no-such-exchange' in vhost '/'")


def test_acks_act_at_commit_and_come_back_at_rollback(connect: Connect) -> None:
    conn = connect()
    ch, method = one_unacked_in_tx(conn, "txa")
    ch.basic_ack(method.delivery_tag)
    ch.tx_rollback()  # the ack is forgotten: the message is unacked again, and can be acked again
    ch.basic_ack(method.delivery_tag)
    ch.tx_commit()
    ch.close()  # nothing unacked is left to come back
    assert ready(conn, "txa") == 0


def test_a_second_ack_of_the_same_tag_in_a_transaction_is_406(connect: Connect) -> None:
    conn = connect()
    ch, method = one_unacked_in_tx(conn, "txd")
    ch.basic_ack(method.delivery_tag)
    ch.basic_ack(method.delivery_tag)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.tx_commit()
    assert (e.value.reply_code, e.value.reply_text) == (406, "PRECONDITION_FAILED - unknown delivery tag 1")
    assert ready(conn, "txd") == 1, "the uncommitted ack did not count: the message is back"


def test_nack_requeue_and_reject_to_a_dead_letter_queue_act_at_commit(connect: Connect) -> None:
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("dlq")
    ch.queue_declare("txn", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
    for body in (b"requeued", b"rejected"):
        ch.basic_publish("", "txn", body)
    ch.tx_select()
    first, _, _ = ch.basic_get("txn", auto_ack=False)
    second, _, _ = ch.basic_get("txn", auto_ack=False)
    ch.basic_nack(first.delivery_tag, requeue=True)
    ch.basic_reject(second.delivery_tag, requeue=False)
    assert ready(conn, "txn") == 0 and ready(conn, "dlq") == 0
    ch.tx_commit()
    assert ready(conn, "txn") == 1 and ready(conn, "dlq") == 1
    method, _, body = ch.basic_get("txn", auto_ack=True)
    assert (body, method.redelivered) == (b"requeued", True)
    assert ch.basic_get("dlq", auto_ack=True)[2] == b"rejected"


def test_acks_held_by_an_uncommitted_transaction_come_back_when_the_channel_closes(connect: Connect) -> None:
    conn = connect()
    ch, method = one_unacked_in_tx(conn, "txc", b"kept")
    ch.basic_ack(method.delivery_tag)
    ch.close()
    method, _, body = conn.channel().basic_get("txc", auto_ack=True)
    assert (body, method.redelivered) == (b"kept", True)


def test_prefetch_is_freed_by_the_commit_not_the_ack(connect: Connect) -> None:
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("txp")
    for i in range(2):
        ch.basic_publish("", "txp", b"%d" % i)
    ch.tx_select()
    ch.basic_qos(prefetch_count=1)
    got: list[Any] = []
    ch.basic_consume("txp", lambda c, m, p, b: got.append((m, b)))
    pump_until(conn, lambda: len(got) >= 1)
    assert [b for _, b in got] == [b"0"]
    ch.basic_ack(got[0][0].delivery_tag)
    conn.process_data_events(0.3)
    assert [b for _, b in got] == [b"0"], "the ack is not committed: the consumer is still full"
    ch.tx_commit()
    pump_until(conn, lambda: len(got) >= 2)
    assert [b for _, b in got] == [b"0", b"1"]


def test_mandatory_returns_come_at_commit(connect: Connect) -> None:
    conn = connect()
    ch = conn.channel()
    ch.tx_select()
    returned: list[bytes] = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append(b))
    ch.basic_publish("", "no-such-queue", b"back", mandatory=True)
    conn.process_data_events(0.2)
    assert returned == []
    ch.tx_commit()
    pump_until(conn, lambda: bool(returned))
    assert returned == [b"back"]
