"""Bad input hurts nobody: each bad input gets RabbitMQ's reply code and text, only the offending channel
or connection is closed, and a second client (the :class:`Witness`) keeps publishing and consuming."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import pika
import pika.exceptions
import pytest
from pamqp import commands as C

from tests.e2e.bad_input import CASES, Case
from tests.e2e.conftest import params
from tests.e2e.raw import PROTOCOL_HEADER, RawClient, start_ok
from tests.helpers import ThreadBroker, wait_for
from tests.witness import Witness

pytestmark = pytest.mark.timeout(60)


def server_connections(broker: ThreadBroker) -> list[Any]:
    assert broker.app.server is not None
    return broker.call(lambda: list(broker.app.server.connections))  # type: ignore[union-attr]


# ---- raw frames ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_broker() -> Any:
    b = ThreadBroker().start()
    yield b
    b.stop()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_raw_bad_input_gets_rabbitmqs_reply(shared_broker: ThreadBroker, case: Case) -> None:
    with Witness(shared_broker.port), RawClient(shared_broker.port) as c:
        c.handshake()
        c.open_channel(1)
        case.send(c)
        channel, reply = c.recv()
        hard, code, text, ids = case.outcome(reply)
        assert (hard, code) == (case.hard, case.code), reply
        if case.text:
            assert text == case.text
        else:
            assert text.startswith("PRECONDITION_FAILED - invalid arg 'x-priority' for queue 'amq.gen-"), text
            assert text.endswith("in vhost '/': \"expected integer, got longstr\""), text
        assert ids == case.ids
        if hard:
            assert channel == 0
            c.send(0, C.Connection.CloseOk())
            c.read_until_closed(timeout=5)  # the broker closes the socket (at once, or after a 1 s grace)
        else:
            assert channel == 1
            # only the channel is gone: close-ok, reopen it and carry on on the same connection
            c.send(1, C.Channel.CloseOk())
            c.open_channel(1)
            c.send(1, C.Queue.Declare(queue="", exclusive=True))
            c.expect(C.Queue.DeclareOk)
    assert wait_for(lambda: len(server_connections(shared_broker)) == 0)


@pytest.mark.parametrize(
    "header", [b"AMQP\x00\x00\x09\x00", b"AMQP\x01\x01\x00\x09", b"GET / HTTP/1.1\r\n\r\n", b"\x01\x00\x00\x00\x00\x00"]
)
def test_wrong_protocol_header(shared_broker: ThreadBroker, header: bytes) -> None:
    with Witness(shared_broker.port), RawClient(shared_broker.port) as c:
        c.send_raw(header)
        assert c.read_until_closed(timeout=3) == PROTOCOL_HEADER


def test_frames_before_connection_open_are_505(shared_broker: ThreadBroker) -> None:
    """RabbitMQ: a frame on a channel before connection.open is UNEXPECTED_FRAME with the frame's octets."""
    with Witness(shared_broker.port), RawClient(shared_broker.port) as c:
        c.send_raw(PROTOCOL_HEADER)
        c.expect(C.Connection.Start)
        c.send(0, start_ok())
        c.expect(C.Connection.Tune)
        c.send(0, C.Connection.TuneOk(2047, 131072, 0))
        c.send(1, C.Channel.Open())
        close = c.expect(C.Connection.Close)
        assert (close.reply_code, close.reply_text) == (505, "UNEXPECTED_FRAME - type 1, all octets = <<0,20,0,10,1,48>>")


def test_channel_count_above_channel_max_is_530(shared_broker: ThreadBroker) -> None:
    """RabbitMQ 3.10 counts open channels against channel_max (it accepts any channel number)."""
    with Witness(shared_broker.port), RawClient(shared_broker.port) as c:
        c.handshake(channel_max=3)
        c.open_channel(7)  # a number above channel_max is fine
        c.open_channel(1)
        c.open_channel(2)
        c.send(3, C.Channel.Open())
        close = c.expect(C.Connection.Close)
        assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (
            530, "NOT_ALLOWED - number of channels opened (3) has reached the negotiated channel_max (3)", 20, 10,
        )  # fmt: skip


def test_frame_above_a_smaller_negotiated_frame_max(shared_broker: ThreadBroker) -> None:
    with Witness(shared_broker.port), RawClient(shared_broker.port) as c:
        c.handshake(frame_max=4096)
        c.open_channel(1)
        c.frame_max = 8192  # lie: body frames bigger than negotiated
        c.publish(1, b"x" * 6000, routing_key="q")
        close = c.expect(C.Connection.Close)
        assert (close.reply_code, close.reply_text) == (
            501, "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,6000,4088}"
        )  # fmt: skip


# ---- authentication and handshake ---------------------------------------------------------------

LOGIN_REFUSED = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."


def test_login_failure_raw_and_pika(shared_broker: ThreadBroker) -> None:
    with Witness(shared_broker.port):
        with RawClient(shared_broker.port) as c:
            c.send_raw(PROTOCOL_HEADER)
            c.expect(C.Connection.Start)
            c.send(0, start_ok("PLAIN", b"\x00guest\x00wrong", {"capabilities": {"authentication_failure_close": True}}))
            close = c.expect(C.Connection.Close)
            assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (403, LOGIN_REFUSED, 10, 11)
            c.send(0, C.Connection.CloseOk())
            assert c.read_until_closed(timeout=3) == b""
        p = params(shared_broker.port)
        p.credentials = pika.PlainCredentials("guest", "wrong")
        with pytest.raises(pika.exceptions.ProbableAuthenticationError) as exc:
            pika.BlockingConnection(p)
        assert exc.value.args[0] == f"ConnectionClosedByBroker: (403) '{LOGIN_REFUSED}'"


def _non_loopback_address() -> str | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 9))  # sends nothing: only picks the outgoing interface
        addr = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if addr.startswith("127.") else str(addr)


def test_guest_from_non_loopback_is_refused_while_others_work() -> None:
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("no non-loopback IPv4 address on this machine")
    b = ThreadBroker()
    b.settings.host = "0.0.0.0"
    b.start()
    try:
        with Witness(b.port):
            p = pika.ConnectionParameters(host=addr, port=b.port, credentials=pika.PlainCredentials("guest", "guest"))
            with pytest.raises(pika.exceptions.ProbableAuthenticationError) as exc:
                pika.BlockingConnection(p)
            assert "(403)" in exc.value.args[0] and "Login was refused" in exc.value.args[0]
    finally:
        b.stop()


@pytest.fixture(scope="module")
def quick_handshake_broker() -> Any:
    b = ThreadBroker(handshake_timeout=1.0).start()
    yield b
    b.stop()


@pytest.mark.parametrize("stage", ["nothing", "protocol header", "start-ok", "tune-ok"])
def test_handshake_not_completed_in_time_closes_the_socket(quick_handshake_broker: ThreadBroker, stage: str) -> None:
    b = quick_handshake_broker
    with Witness(b.port), RawClient(b.port) as c:
        t0 = time.monotonic()
        if stage != "nothing":
            c.send_raw(PROTOCOL_HEADER)
            c.expect(C.Connection.Start)
        if stage in ("start-ok", "tune-ok"):
            c.send(0, start_ok())
            c.expect(C.Connection.Tune)
        if stage == "tune-ok":
            c.send(0, C.Connection.TuneOk(2047, 131072, 0))
        assert c.read_until_closed(timeout=5) == b""  # as RabbitMQ: closed, no connection.close
        assert 0.9 <= time.monotonic() - t0 <= 2.5
    assert wait_for(lambda: not server_connections(b))


def test_a_slow_but_complete_handshake_is_kept(quick_handshake_broker: ThreadBroker) -> None:
    with RawClient(quick_handshake_broker.port) as c:
        c.handshake()
        time.sleep(1.8)
        c.open_channel(1)


# ---- with pika ------------------------------------------------------------------------------------


def test_pika_message_above_max_size_closes_only_the_channel(broker_factory: Any) -> None:
    b = broker_factory(max_message_size=1000)
    with Witness(b.port):
        conn = pika.BlockingConnection(params(b.port))
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"x" * 1001)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            ch.queue_declare(q, passive=True)
        assert (exc.value.reply_code, exc.value.reply_text) == (
            406, "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000"
        )  # fmt: skip
        ch2 = conn.channel()
        ch2.basic_publish("", q, b"x" * 1000)
        assert ch2.basic_get(q, auto_ack=True)[2] == b"x" * 1000
        conn.close()


@pytest.mark.parametrize(
    "args, text",
    [
        ({"x-message-ttl": "abc"}, "invalid arg 'x-message-ttl' for queue 'pq' in vhost '/': \"expected integer, got longstr\""),
        ({"x-expires": 0}, "invalid arg 'x-expires' for queue 'pq' in vhost '/': {value_zero,0}"),
        ({"x-max-length": -1}, "invalid arg 'x-max-length' for queue 'pq' in vhost '/': {value_negative,-1}"),
        ({"x-queue-type": "nope"}, "invalid arg 'x-queue-type' for queue 'pq' in vhost '/': \"unsupported queue type 'nope'\""),
    ],
)
def test_pika_bad_declare_arguments_are_406(shared_broker: ThreadBroker, args: dict[str, Any], text: str) -> None:
    with Witness(shared_broker.port):
        conn = pika.BlockingConnection(params(shared_broker.port))
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            ch.queue_declare("pq", exclusive=True, arguments=args)
        assert (exc.value.reply_code, exc.value.reply_text) == (406, "PRECONDITION_FAILED - " + text)
        assert conn.is_open
        conn.channel().queue_declare("pq", exclusive=True)  # the connection carries on
        conn.close()


def test_pika_bad_consume_argument_and_exchange_type(shared_broker: ThreadBroker) -> None:
    with Witness(shared_broker.port):
        conn = pika.BlockingConnection(params(shared_broker.port))
        ch = conn.channel()
        ch.queue_declare("pc", exclusive=True)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            ch.basic_consume("pc", lambda *a: None, arguments={"x-priority": "high"})
        assert (exc.value.reply_code, exc.value.reply_text) == (
            406, "PRECONDITION_FAILED - invalid arg 'x-priority' for queue 'pc' in vhost '/': \"expected integer, got longstr\""
        )  # fmt: skip
        # (pika refuses to reuse a consumer tag itself; the raw case covers the broker's 530)
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as cexc:
            ch.exchange_declare("px", exchange_type="bogus")
        assert (cexc.value.reply_code, cexc.value.reply_text) == (503, "COMMAND_INVALID - unknown exchange type 'bogus'")


def test_pika_long_names(shared_broker: ThreadBroker) -> None:
    """255 bytes is the most a shortstr holds: accepted. Longer names cannot be encoded: pika refuses them."""
    with Witness(shared_broker.port):
        conn = pika.BlockingConnection(params(shared_broker.port))
        ch = conn.channel()
        name = "é" * 127 + "q"  # 255 bytes of UTF-8
        assert ch.queue_declare(name, exclusive=True).method.queue == name
        ch.basic_publish("", name, b"long name")
        assert ch.basic_get(name, auto_ack=True)[2] == b"long name"
        with pytest.raises(Exception):  # noqa: B017 - pika's own ShortStringTooLong / AssertionError
            ch.queue_declare("q" * 256)
        conn.close()


# ---- internal errors ------------------------------------------------------------------------------


def test_internal_error_in_the_model_is_541_logged_and_others_keep_working(
    broker: ThreadBroker, caplog: pytest.LogCaptureFixture
) -> None:
    model = broker.app.broker
    assert model is not None
    real = model.publish

    def failing(vhost: str, exchange: str, routing_key: str, *rest: Any) -> Any:
        if routing_key == "boom":
            raise RuntimeError("injected failure")
        return real(vhost, exchange, routing_key, *rest)

    model.publish = failing  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger="leveret.connection")
    with Witness(broker.port):
        conn = pika.BlockingConnection(params(broker.port))
        ch = conn.channel()
        ch.basic_publish("", "boom", b"x")
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as exc:
            ch.queue_declare("", exclusive=True)
        assert exc.value.reply_code == 541
        assert exc.value.reply_text == "INTERNAL_ERROR - internal error while handling Publish: RuntimeError"
    records = [r for r in caplog.records if r.name == "leveret.connection" and r.exc_info]
    assert records and "injected failure" in caplog.text and "Traceback" in caplog.text


def test_internal_error_in_the_protocol_layer_is_541(broker: ThreadBroker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="leveret.connection")
    with Witness(broker.port), RawClient(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        [victim] = [s for s in server_connections(broker) if s.client and s.client.client_properties.get("product") == "leveret-e2e-raw"]

        def explode(nbytes: int) -> Any:
            raise KeyError("injected protocol bug")

        victim.amqp.buffer_updated = explode  # type: ignore[method-assign]
        c.send(1, C.Basic.Qos(0, 1, False))
        close = c.expect(C.Connection.Close)
        assert (close.reply_code, close.reply_text) == (541, "INTERNAL_ERROR - internal error while reading: KeyError")
    assert "injected protocol bug" in caplog.text
