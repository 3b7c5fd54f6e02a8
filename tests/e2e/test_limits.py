"""Configured limits: connections, channels per connection, consumers per channel, queues per vhost.

Each is hit over a raw socket or with pika and answered with RabbitMQ's code and text, while a second
client (the :class:`Witness`, itself one connection, one channel, one consumer and one queue) keeps working.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from pamqp import commands as C

from tests.e2e.conftest import params
from tests.e2e.raw import PROTOCOL_HEADER, RawClient, start_ok
from tests.helpers import ProcessBroker, wait_for
from tests.witness import Witness

pytestmark = pytest.mark.timeout(60)


def test_max_connections(broker_factory: Any) -> None:
    b = broker_factory(max_connections=3)
    with Witness(b.port):
        kept = [pika.BlockingConnection(params(b.port)) for _ in range(2)]  # with the witness: 3
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as exc:
            pika.BlockingConnection(params(b.port))
        assert "(530)" in str(exc.value)
        assert "access to vhost '/' refused for user 'guest': connection limit (3) is reached" in str(exc.value)
        with RawClient(b.port) as c:
            c.send_raw(PROTOCOL_HEADER)
            c.expect(C.Connection.Start)
            c.send(0, start_ok())
            c.expect(C.Connection.Tune)
            c.send(0, C.Connection.TuneOk(2047, 131072, 0))
            c.send(0, C.Connection.Open("/"))
            close = c.expect(C.Connection.Close)
            assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (
                530, "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (3) is reached", 10, 40,
            )  # fmt: skip
        kept.pop().close()
        time.sleep(0.1)
        again = pika.BlockingConnection(params(b.port))  # room again
        again.channel().queue_declare("", exclusive=True)
        for c in [again, *kept]:
            c.close()


def test_channel_max_is_negotiated_and_counted(broker_factory: Any) -> None:
    b = broker_factory(channel_max=4)
    with Witness(b.port):
        conn = pika.BlockingConnection(params(b.port))
        assert conn._impl.params.channel_max == 4
        chans = [conn.channel() for _ in range(4)]
        with pytest.raises(pika.exceptions.NoFreeChannels):
            conn.channel()  # pika keeps to the negotiated limit itself...
        conn.close()
        assert all(c.is_closed for c in chans)
        with RawClient(b.port) as c:  # ...a client that does not is closed with RabbitMQ's 530
            c.handshake(channel_max=0)
            for n in range(1, 5):
                c.open_channel(n)
            c.send(5, C.Channel.Open())
            close = c.expect(C.Connection.Close)
            assert (close.reply_code, close.reply_text) == (
                530, "NOT_ALLOWED - number of channels opened (4) has reached the negotiated channel_max (4)"
            )  # fmt: skip


def test_max_consumers_per_channel(broker_factory: Any) -> None:
    b = broker_factory(max_consumers_per_channel=2)
    with Witness(b.port):
        conn = pika.BlockingConnection(params(b.port))
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_consume(q, lambda *a: None)
        ch.basic_consume(q, lambda *a: None)
        other = conn.channel()  # the limit is per channel
        other.basic_consume(q, lambda *a: None)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as exc:
            ch.basic_consume(q, lambda *a: None)
        assert (exc.value.reply_code, exc.value.reply_text) == (530, "NOT_ALLOWED - reached maximum (2) of consumers per channel")


def test_max_queues(broker_factory: Any) -> None:
    b = broker_factory(max_queues=3)
    with Witness(b.port):  # the witness's queue is one of the 3
        conn = pika.BlockingConnection(params(b.port))
        ch = conn.channel()
        ch.queue_declare("q1")
        ch.queue_declare("q2")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            ch.queue_declare("q3")
        assert (exc.value.reply_code, exc.value.reply_text) == (
            406, "PRECONDITION_FAILED - cannot declare queue 'q3': queue limit in vhost '/' (3) is reached"
        )  # fmt: skip
        ch = conn.channel()
        ch.queue_declare("q1")  # declaring an existing queue is fine,
        ch.queue_declare("q2", passive=True)  # and so is a passive declare
        ch.queue_delete("q2")
        ch.queue_declare("q3")  # room again
        ch.queue_delete("q1")
        ch.queue_delete("q3")
        conn.close()


def test_limits_from_the_command_line(tmp_path: Path) -> None:
    b = ProcessBroker(
        tmp_path / "data", extra=["--storage", "memory", "--max-connections", "1", "--handshake-timeout", "1"]
    ).start()
    try:
        first = pika.BlockingConnection(params(b.port))
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as exc:
            pika.BlockingConnection(params(b.port))
        assert "connection limit (1) is reached" in str(exc.value)
        first.close()
        with RawClient(b.port) as c:  # --handshake-timeout 1
            t0 = time.monotonic()
            assert c.read_until_closed(timeout=5) == b""
            assert time.monotonic() - t0 < 2.5
        wait_for(lambda: any("handshake not completed in 1 s" in line for line in b.log))
    finally:
        b.terminate()
