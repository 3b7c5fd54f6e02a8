"""Connection-level behaviour over real sockets: handshake, auth, tune, heartbeats, close, channels."""

from __future__ import annotations

import socket
import time
from typing import Any

import amqp
import pika
import pika.exceptions
import pytest
from pamqp import commands as C
from pamqp import heartbeat as pheartbeat

from tests.e2e.conftest import drain, params
from tests.e2e.raw import PROTOCOL_HEADER, RawClient, start_ok
from tests.helpers import ThreadBroker, wait_for

pytestmark = pytest.mark.timeout(30)

# RabbitMQ 3.10 advertises all of these, each true; Leveret implements each of them.
CAPABILITIES = (
    "publisher_confirms",
    "exchange_exchange_bindings",
    "basic.nack",
    "consumer_cancel_notify",
    "connection.blocked",
    "consumer_priorities",
    "authentication_failure_close",
    "per_consumer_qos",
    "direct_reply_to",
)
LOGIN_REFUSED = "ACCESS_REFUSED - Login was refused using authentication mechanism {}. For details see the broker logfile."


def server_connections(broker: ThreadBroker) -> list[Any]:
    assert broker.app.server is not None
    return broker.call(lambda: list(broker.app.server.connections))  # type: ignore[union-attr]


# ---- connection.start ---------------------------------------------------------------------------


def test_pika_sees_server_properties_and_capabilities(conn: pika.BlockingConnection) -> None:
    props = conn._impl.server_properties
    assert props["product"] == "Leveret"
    assert isinstance(props["version"], str) and props["version"]
    assert props["platform"] == "Python"
    caps = props["capabilities"]
    assert caps == dict.fromkeys(CAPABILITIES, True)


def test_raw_start_offers_plain_and_amqplain(broker: ThreadBroker) -> None:
    with RawClient(broker.port) as c:
        c.send_raw(PROTOCOL_HEADER)
        start = c.expect(C.Connection.Start)
        assert (start.version_major, start.version_minor) == (0, 9)
        assert start.mechanisms == "PLAIN AMQPLAIN"
        assert "en_US" in start.locales
        for cap in CAPABILITIES:
            assert start.server_properties["capabilities"][cap] is True


def test_py_amqp_logs_in_with_amqplain(broker: ThreadBroker) -> None:
    """py-amqp (kombu, Celery) picks AMQPLAIN first when the server offers it."""
    c = amqp.Connection(host=f"127.0.0.1:{broker.port}", connect_timeout=5)
    chosen: list[bytes] = []
    orig = c.send_method

    def spy(sig: Any, format: Any = None, args: Any = None, *rest: Any, **kw: Any) -> Any:
        if sig == amqp.spec.Connection.StartOk:
            chosen.append(args[1])
        return orig(sig, format, args, *rest, **kw)

    c.send_method = spy
    c.connect()
    try:
        assert chosen == [b"AMQPLAIN"]
        assert c.server_properties["product"] == "Leveret"
        assert c.mechanisms == [b"PLAIN", b"AMQPLAIN"]
        ch = c.channel()
        name, _, _ = ch.queue_declare("", exclusive=True)
        ch.basic_publish(amqp.Message(b"via py-amqp"), routing_key=name)
        msg = wait_for(lambda: ch.basic_get(name, no_ack=True))
        assert msg.body == b"via py-amqp"
    finally:
        c.close()


def test_py_amqp_with_wrong_password_is_refused(broker: ThreadBroker) -> None:
    c = amqp.Connection(host=f"127.0.0.1:{broker.port}", userid="guest", password="nope", connect_timeout=5)
    with pytest.raises(amqp.exceptions.AccessRefused) as exc:
        c.connect()
    assert exc.value.reply_code == 403
    assert exc.value.reply_text == LOGIN_REFUSED.format("AMQPLAIN")
    c.collect()


# ---- protocol header ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"AMQP\x00\x00\x09\x00",
        b"AMQP\x01\x01\x00\x09",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"AMQP\x00\x00\x08\x00",
    ],
)
def test_bad_protocol_header_gets_ours_back_and_the_socket_closed(
    broker: ThreadBroker, header: bytes
) -> None:
    with RawClient(broker.port) as c:
        c.send_raw(header)
        assert c.read_until_closed(timeout=3) == PROTOCOL_HEADER


def test_header_sent_byte_by_byte_is_accepted(broker: ThreadBroker) -> None:
    with RawClient(broker.port) as c:
        for b in PROTOCOL_HEADER:
            c.send_raw(bytes([b]))
            time.sleep(0.005)
        c.expect(C.Connection.Start)


# ---- authentication -----------------------------------------------------------------------------


def test_wrong_password_gets_403_access_refused(broker: ThreadBroker) -> None:
    p = params(broker.port)
    p.credentials = pika.PlainCredentials("guest", "wrong")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as exc:
        pika.BlockingConnection(p)
    # pika advertises authentication_failure_close, so it sees the broker's connection.close
    assert exc.value.args[0] == f"ConnectionClosedByBroker: (403) '{LOGIN_REFUSED.format('PLAIN')}'"


@pytest.mark.parametrize("response", [b"\x00guest\x00wrong", b"\x00nobody\x00guest"])
def test_raw_bad_credentials_close_with_403_then_socket_closes(broker: ThreadBroker, response: bytes) -> None:
    with RawClient(broker.port) as c:
        c.send_raw(PROTOCOL_HEADER)
        c.expect(C.Connection.Start)
        c.send(0, start_ok("PLAIN", response))
        close = c.expect(C.Connection.Close)
        assert close.reply_code == 403
        assert close.reply_text == LOGIN_REFUSED.format("PLAIN")
        c.send(0, C.Connection.CloseOk())
        c.read_until_closed(timeout=3)
    assert wait_for(lambda: not server_connections(broker))


def test_amqplain_raw_login(broker: ThreadBroker) -> None:
    from pamqp import encode

    table = encode.field_table({"LOGIN": "guest", "PASSWORD": "guest"})[4:]  # AMQPLAIN: no length prefix
    with RawClient(broker.port) as c:
        c.handshake(mechanism="AMQPLAIN", response=table)
        c.open_channel(1)


def test_unknown_vhost_is_530_not_allowed(broker: ThreadBroker) -> None:
    with RawClient(broker.port) as c:
        c.send_raw(PROTOCOL_HEADER)
        c.expect(C.Connection.Start)
        c.send(0, start_ok())
        c.expect(C.Connection.Tune)
        c.send(0, C.Connection.TuneOk(2047, 131072, 0))
        c.send(0, C.Connection.Open(virtual_host="nope"))
        close = c.expect(C.Connection.Close)
        assert (close.reply_code, close.reply_text) == (530, "NOT_ALLOWED - vhost nope not found")


# ---- tune ---------------------------------------------------------------------------------------


def test_tune_proposes_rabbitmq_defaults(broker: ThreadBroker) -> None:
    with RawClient(broker.port) as c:
        _, tune = c.handshake()
        assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)


def test_pika_accepts_defaults_and_negotiates_heartbeat_down(connect: Any, broker: ThreadBroker) -> None:
    c = connect()
    assert (c._impl.params.channel_max, c._impl.params.frame_max, c._impl.params.heartbeat) == (
        2047,
        131072,
        60,
    )
    c.close()
    wait_for(lambda: not server_connections(broker))
    c = connect(heartbeat=7, frame_max=65536, channel_max=100)
    assert (c._impl.params.heartbeat, c._impl.params.frame_max, c._impl.params.channel_max) == (7, 65536, 100)
    [srv] = server_connections(broker)
    assert (srv.heartbeat, srv.amqp.frame_max, srv.amqp.channel_max) == (7, 65536, 100)


def test_frame_larger_than_negotiated_frame_max_is_501(broker: ThreadBroker) -> None:
    with RawClient(broker.port) as c:
        c.handshake(frame_max=4096)
        c.open_channel(1)
        c.frame_max = 8192  # lie: send body frames bigger than negotiated
        c.publish(1, b"x" * 6000, routing_key="q")
        close = c.expect(C.Connection.Close)
        assert close.reply_code == 501


# ---- heartbeats ---------------------------------------------------------------------------------


def test_silent_client_is_dropped_after_two_missed_heartbeats(broker: ThreadBroker) -> None:
    with RawClient(broker.port) as c:
        c.handshake(heartbeat=1)
        c.open_channel(1)
        t0 = time.monotonic()
        # The broker heartbeats us while we say nothing...
        _, frame = c.recv(timeout=2, skip_heartbeats=False)
        assert isinstance(frame, pheartbeat.Heartbeat)
        # ...then drops the connection without a connection.close (as RabbitMQ does).
        rest = c.read_until_closed(timeout=5)
        elapsed = time.monotonic() - t0
        assert 1.5 <= elapsed <= 3.5, elapsed
        assert set(rest[i] for i in range(0, len(rest), 8)) <= {8}, rest  # only heartbeat frames
    assert wait_for(lambda: not server_connections(broker))


def test_client_that_heartbeats_stays_connected(broker: ThreadBroker) -> None:
    with RawClient(broker.port) as c:
        c.handshake(heartbeat=1)
        deadline = time.monotonic() + 3
        seen = 0
        while time.monotonic() < deadline:
            c.heartbeat()
            try:
                _, f = c.recv(timeout=0.4, skip_heartbeats=False)
                seen += isinstance(f, pheartbeat.Heartbeat)
            except TimeoutError:
                pass
        assert seen >= 2
        c.open_channel(1)  # still alive after 3 intervals


def test_any_traffic_counts_as_liveness(connect: Any, broker: ThreadBroker) -> None:
    """pika with heartbeat=1 keeps the connection while it processes events."""
    c = connect(heartbeat=1)
    ch = c.channel()
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        drain(c, 0.2)
    assert c.is_open
    ch.queue_declare("", exclusive=True)


# ---- orderly close ------------------------------------------------------------------------------


def test_orderly_close_releases_the_connection(connect: Any, broker: ThreadBroker) -> None:
    c = connect()
    c.channel()
    assert len(server_connections(broker)) == 1
    c.close()
    assert wait_for(lambda: not server_connections(broker))
    assert broker.call(lambda: dict(broker.app.broker.connections)) == {}  # type: ignore[union-attr]


def test_raw_close_gets_close_ok_and_the_socket_is_left_to_the_client(broker: ThreadBroker) -> None:
    """As RabbitMQ (reference 6.8): after close-ok the broker does not close the socket; what the client
    still sends is ignored; the socket goes after the negotiated heartbeat (if under 30 s, else 30 s)."""
    with RawClient(broker.port) as c:
        c.handshake(heartbeat=2)
        c.open_channel(1)
        c.send(0, C.Connection.Close(200, "bye", 0, 0))
        c.expect(C.Connection.CloseOk)
        t0 = time.monotonic()
        c.send(1, C.Basic.Qos(prefetch_count=5))  # a late frame: no error, no answer
        c.sock.sendall(b"\x08\x00\x00\x00\x00\x00\x00\xce")  # a heartbeat
        assert c.read_until_closed(timeout=10) == b""
        waited = time.monotonic() - t0
        assert 1.5 <= waited <= 4.0, waited
    assert wait_for(lambda: not server_connections(broker))


def test_a_client_that_closes_after_close_ok_is_forgotten_at_once(broker: ThreadBroker) -> None:
    with RawClient(broker.port) as c:
        c.handshake()  # heartbeat 0: the broker would wait 30 s
        c.send(0, C.Connection.Close(200, "bye", 0, 0))
        c.expect(C.Connection.CloseOk)
    assert wait_for(lambda: not server_connections(broker), timeout=2)


def test_client_closing_socket_without_handshake_is_forgotten(broker: ThreadBroker) -> None:
    s = socket.create_connection(("127.0.0.1", broker.port))
    s.sendall(PROTOCOL_HEADER[:4])
    s.close()
    assert wait_for(lambda: not server_connections(broker))


# ---- channels -----------------------------------------------------------------------------------


def test_many_channels_on_one_connection(conn: pika.BlockingConnection) -> None:
    chans = [conn.channel() for _ in range(100)]
    assert len({c.channel_number for c in chans}) == 100
    q = chans[0].queue_declare("", exclusive=True).method.queue
    for i, c in enumerate(chans):
        c.basic_publish("", q, str(i).encode())
    got = []
    for c in reversed(chans):
        m, _, body = c.basic_get(q, auto_ack=True)
        assert m is not None
        got.append(int(body))
    assert got == list(range(100))
    for c in chans[::2]:
        c.close()
    for c in chans[1::2]:
        assert c.is_open
        c.queue_declare(q, passive=True)


def test_channel_error_closes_only_that_channel(conn: pika.BlockingConnection) -> None:
    ok = conn.channel()
    bad = conn.channel()
    q = ok.queue_declare("", exclusive=True).method.queue
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        bad.queue_declare("no-such-queue", passive=True)
    assert exc.value.reply_code == 404
    assert exc.value.reply_text == "NOT_FOUND - no queue 'no-such-queue' in vhost '/'"
    assert bad.is_closed and ok.is_open and conn.is_open
    ok.basic_publish("", q, b"still works")
    assert ok.basic_get(q, auto_ack=True)[2] == b"still works"
    again = conn.channel()  # a new channel opens fine on the same connection
    again.queue_declare(q, passive=True)


def test_channel_number_reuse_after_broker_close(broker: ThreadBroker) -> None:
    with RawClient(broker.port) as c:
        c.handshake()
        c.open_channel(5)
        c.send(5, C.Queue.Declare(queue="missing", passive=True))
        close = c.expect(C.Channel.Close)
        assert (close.reply_code, close.class_id, close.method_id) == (404, 50, 10)
        c.send(5, C.Channel.CloseOk())
        c.open_channel(5)
        c.send(5, C.Queue.Declare(queue="", exclusive=True))
        c.expect(C.Queue.DeclareOk)


# ---- loopback-only guest ------------------------------------------------------------------------


def _non_loopback_address() -> str | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 9))  # no packet is sent: this only picks the outgoing interface
        addr = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if addr.startswith("127.") else addr


def test_guest_is_refused_from_a_non_loopback_address() -> None:
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("no non-loopback IPv4 address on this machine")
    b = ThreadBroker(users={"guest": "guest", "bob": "secret"})
    b.settings.host = "0.0.0.0"
    b.start()
    try:
        with RawClient(b.port, host=addr) as c:
            c.send_raw(PROTOCOL_HEADER)
            c.expect(C.Connection.Start)
            c.send(0, start_ok())
            close = c.expect(C.Connection.Close)
            assert (close.reply_code, close.reply_text) == (403, LOGIN_REFUSED.format("PLAIN"))
        # another user may connect from there, and guest still may from loopback
        pika.BlockingConnection(
            pika.ConnectionParameters(
                host=addr, port=b.port, credentials=pika.PlainCredentials("bob", "secret")
            )
        ).close()
        pika.BlockingConnection(params(b.port)).close()
    finally:
        b.stop()
