"""Graceful shutdown of a `leveret server` process: SIGTERM closes every connection with 320, exit 0."""

from __future__ import annotations

import signal
import socket

import pika
import pika.exceptions
import pytest
from pamqp import commands as C

from tests.e2e.conftest import params
from tests.e2e.raw import RawClient
from tests.helpers import ProcessBroker

pytestmark = pytest.mark.timeout(60)

FORCED = "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"


def test_sigterm_sends_connection_forced_to_every_client_and_exits_0(process_broker: ProcessBroker) -> None:
    port = process_broker.port
    blocking = pika.BlockingConnection(params(port))
    ch = blocking.channel()
    ch.queue_declare("sd", durable=True)
    ch.basic_consume("sd", lambda *a: None)
    raw = RawClient(port)
    raw2 = RawClient(port)
    try:
        raw.handshake()
        raw.open_channel(1)
        raw2.handshake()
        assert process_broker.proc is not None
        process_broker.proc.send_signal(signal.SIGTERM)

        close = raw.expect(C.Connection.Close)
        assert (close.reply_code, close.reply_text) == (320, FORCED)
        raw.send(0, C.Connection.CloseOk())
        assert raw.read_until_closed(timeout=5) == b""

        # raw2 never answers: the broker closes it anyway after a bounded wait
        close = raw2.expect(C.Connection.Close)
        assert close.reply_code == 320
        raw2.read_until_closed(timeout=8)

        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as exc:
            blocking.process_data_events(time_limit=5)
            blocking.process_data_events(time_limit=5)
        assert (exc.value.reply_code, exc.value.reply_text) == (320, FORCED)

        assert process_broker.proc.wait(15) == 0
    finally:
        raw.close()
        raw2.close()
    # the listener is gone
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    log = "".join(process_broker.log)
    assert "Traceback" not in log, log


def test_sigterm_with_no_clients_exits_0(process_broker: ProcessBroker) -> None:
    assert process_broker.terminate(timeout=15) == 0


def test_sigint_exits_0_too(process_broker: ProcessBroker) -> None:
    c = pika.BlockingConnection(params(process_broker.port))
    assert process_broker.proc is not None
    process_broker.proc.send_signal(signal.SIGINT)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as exc:
        c.process_data_events(time_limit=5)
        c.process_data_events(time_limit=5)
    assert exc.value.reply_code == 320
    assert process_broker.proc.wait(15) == 0
