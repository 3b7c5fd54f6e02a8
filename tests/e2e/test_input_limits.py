"""Values a client can send that used to break the broker (issue 11, items 1, 3, 7): deep tables, long
names and keys, argument values that end up in short strings, malformed headers.

Each is sent over a real socket (pika, or :class:`RawClient` for bytes no library would write) or over
the HTTP API, which calls the same model functions; the broker must refuse it with a clear error or
take it in stride, and keep serving.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from pamqp import commands as C
from pamqp import encode

from leveret.limits import MAX_TABLE_DEPTH
from leveret.model.message import Message
from leveret.storage.base import BindingRecord, ExchangeRecord, QueueRecord, Recovered
from tests.e2e.conftest import params
from tests.e2e.raw import RawClient
from tests.helpers import ProcessBroker, ThreadBroker
from tests.http_client import http_request
from tests.protocol.test_tables import declare_frame, nested_array, table_with

pytestmark = pytest.mark.timeout(120)

LONG = "k" * 300


def deep(levels: int) -> Any:
    """A JSON/pika value ``levels`` lists deep."""
    v: Any = []
    for _ in range(levels - 1):
        v = [v]
    return v


def channel_error(port: int, fn: Any) -> str:
    """Run ``fn(channel)`` on a fresh pika channel; return the channel-close text it must cause."""
    conn = pika.BlockingConnection(params(port))
    try:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            fn(ch)
        assert e.value.reply_code == 406, e.value
        # the connection is still good
        conn.channel().queue_declare("", exclusive=True)
        return str(e.value.reply_text)
    finally:
        conn.close()


# ---- item 3: a dead-letter routing key no delivery could carry ------------------------------------


def test_a_dead_letter_routing_key_over_255_bytes_is_refused(broker: ThreadBroker) -> None:
    text = channel_error(
        broker.port,
        lambda ch: ch.queue_declare("src", arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": LONG}),
    )
    assert text == (
        "PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue 'src' in vhost '/': "
        "{value_too_long,300} (at most 255 bytes)"
    )
    text = channel_error(broker.port, lambda ch: ch.queue_declare("src", arguments={"x-dead-letter-exchange": LONG}))
    assert "invalid arg 'x-dead-letter-exchange'" in text
    text = channel_error(
        broker.port, lambda ch: ch.exchange_declare("x", "direct", arguments={"alternate-exchange": LONG})
    )
    assert text.startswith("PRECONDITION_FAILED - invalid arg 'alternate-exchange' for exchange 'x' in vhost '/'")


def test_a_message_with_a_routing_key_over_255_bytes_never_blocks_its_queue(broker: ThreadBroker) -> None:
    """The issue's repro, as a broker restarted on a store written before the check: the source
    queue dead-letters with a 300-byte routing key into ``target``. Every get and consume on
    ``target`` failed with 541 (the key could not be encoded), messages queued before it included."""

    def restore() -> None:
        assert broker.app.broker is not None
        broker.app.broker.recover(
            Recovered(
                queues=[
                    QueueRecord("/", "src", arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": LONG}),
                    QueueRecord("/", "target"),
                ],
                exchanges=[ExchangeRecord("/", "dlx", "fanout")],
                bindings=[BindingRecord("/", "dlx", "target", "queue", "")],
            )
        )

    broker.call(restore)
    conn = pika.BlockingConnection(params(broker.port))
    ch = conn.channel()
    ch.basic_publish("", "target", b"before")
    ch.basic_publish("", "src", b"bad")
    method, _, body = ch.basic_get("src")
    assert body == b"bad"
    ch.basic_reject(method.delivery_tag, requeue=False)  # dead-lettered with the 300-byte key
    ch.basic_publish("", "target", b"after")
    m, _, b = ch.basic_get("target", auto_ack=True)
    assert b == b"before"
    seen = []
    for m, _, b in ch.consume("target", inactivity_timeout=2):
        seen.append((b, m.routing_key))
        ch.basic_ack(m.delivery_tag)
        if len(seen) == 2:
            break
    assert seen == [(b"bad", "k" * 255), (b"after", "target")]  # the key cut to what a short string holds
    ch.cancel()
    conn.close()


def test_a_stored_message_with_a_long_routing_key_is_delivered(broker: ThreadBroker) -> None:
    """A message in a queue with a routing key no short string holds (a store from before the
    check): consume delivers it with the key cut, instead of failing every delivery from the queue."""
    conn = pika.BlockingConnection(params(broker.port))
    ch = conn.channel()
    ch.queue_declare("q")

    def put() -> None:
        assert broker.app.broker is not None
        q = broker.app.broker.vhosts["/"].queues["q"]
        q.publish(Message(10_000, "é" * 200, "é" * 200, b"\x00\x00", b"body", False))

    broker.call(put)
    for m, _, b in ch.consume("q", inactivity_timeout=2):
        assert b == b"body"
        assert m.exchange == m.routing_key == "é" * 127  # 254 bytes: no character cut in half
        ch.basic_ack(m.delivery_tag)
        break
    ch.cancel()
    conn.close()


# ---- item 1 over AMQP: deep tables in every method that carries one --------------------------------


def test_deep_arguments_over_amqp_close_the_connection_with_501(broker: ThreadBroker) -> None:
    for build in (
        lambda: declare_frame(table_with(nested_array(20_000))),
        lambda: _method(C.Queue.Bind(queue="q", exchange="amq.direct", routing_key="k"), {"a": deep(MAX_TABLE_DEPTH)}),
        lambda: _method(C.Exchange.Declare(exchange="x", exchange_type="direct"), {"a": deep(100)}),
        lambda: _method(C.Basic.Consume(queue="q"), {"a": deep(40)}),
    ):
        with RawClient(broker.port) as c:
            c.handshake()
            c.open_channel(1)
            c.send_raw(build())
            close = c.expect(C.Connection.Close)
            assert close.reply_code == 501
            assert f"nested deeper than {MAX_TABLE_DEPTH} levels" in close.reply_text
    # at the limit it is fine
    conn = pika.BlockingConnection(params(broker.port))
    ch = conn.channel()
    ch.queue_declare("ok", arguments={"a": deep(MAX_TABLE_DEPTH - 1)})
    conn.close()


def _method(m: Any, arguments: dict[str, Any]) -> bytes:
    """``m`` on channel 1 with ``arguments`` encoded by pamqp (it has no depth limit of its own)."""
    m.arguments = {}
    raw = bytearray(encode.field_table({}))
    payload = struct.pack(">I", m.index) + m.marshal()
    # the empty table is the last argument: swap it for the real one
    assert payload.endswith(bytes(raw))
    payload = payload[: -len(raw)] + encode.field_table(arguments)
    return b"\x01" + struct.pack(">HI", 1, len(payload)) + payload + b"\xce"


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_deep_frames_cost_the_broker_no_memory(tmp_path: Path) -> None:
    """The issue's repro: each ~100 KB frame with an array nested 20,000 deep cost 20-25 MB of RSS
    that was never given back (1.37 GB after 80 frames)."""
    b = ProcessBroker(tmp_path / "data", extra=["--storage", "memory", "--http-port", "off"]).start()
    try:
        assert b.proc is not None
        frame = declare_frame(table_with(nested_array(20_000)))
        with RawClient(b.port) as warm:  # first connection: imports and caches, not the attack
            warm.handshake()
        before = rss(b.proc.pid)
        for _ in range(20):
            with RawClient(b.port) as c:
                c.handshake()
                c.open_channel(1)
                c.send_raw(frame)
                assert c.expect(C.Connection.Close).reply_code == 501
        grown = rss(b.proc.pid) - before
        assert grown < 30_000_000, f"RSS grew {grown / 1e6:.0f} MB over 20 deep frames"
    finally:
        b.kill()


# ---- items 1 and 7 over HTTP: the same checks, since the HTTP API calls the same model -------------


@pytest.fixture
def http_broker(broker_factory: Any) -> ThreadBroker:
    b: ThreadBroker = broker_factory(http_port=0)
    return b


def _http(b: ThreadBroker, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, data, _ = http_request(f"http://127.0.0.1:{b.app.http_port}{path}", method, body)
    return status, data


def test_http_refuses_what_amqp_could_not_carry(http_broker: ThreadBroker) -> None:
    b = http_broker
    status, body = _http(b, "PUT", "/api/queues/%2F/" + "q" * 300, {"durable": True})
    # RabbitMQ 3.10 management's text (tests/management_e2e/test_vs_rabbitmq.py)
    assert status == 400 and body["reason"] == "queue should be less than 255 bytes, actually was 300\n", body
    status, body = _http(b, "PUT", "/api/queues/%2F/deep", {"arguments": {"a": deep(40)}})
    assert status == 400 and f"nested deeper than {MAX_TABLE_DEPTH} levels" in body["reason"], body
    args = {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": LONG}
    status, body = _http(b, "PUT", "/api/queues/%2F/src", {"arguments": args})
    assert status == 400 and "value_too_long,300" in body["reason"], body
    status, body = _http(b, "GET", "/api/queues")
    assert status == 200 and [q["name"] for q in body] == []
    # definitions go through the same model calls
    doc = {
        "queues": [{"name": "dq", "vhost": "/", "durable": True, "auto_delete": False, "arguments": {"a": deep(40)}}],
    }
    status, body = _http(b, "POST", "/api/definitions", doc)
    assert status == 400 and f"nested deeper than {MAX_TABLE_DEPTH} levels" in str(body), body
    doc = {
        "queues": [{"name": "dq", "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}],
        "bindings": [{"source": "amq.direct", "vhost": "/", "destination": "dq", "destination_type": "queue",
                      "routing_key": LONG, "arguments": {}}],
    }  # fmt: skip
    status, body = _http(b, "POST", "/api/definitions", doc)
    assert status == 400 and "routing key is too long: 300 bytes" in str(body), body


# ---- item 1 for message headers: decoded by the model only, bounded and never fatal ----------------


def content_header(channel: int, props: bytes, body_size: int) -> bytes:
    payload = struct.pack(">HHQ", 60, 0, body_size) + props
    return b"\x02" + struct.pack(">HI", channel, len(payload)) + payload + b"\xce"


def body_frame(channel: int, body: bytes) -> bytes:
    return b"\x03" + struct.pack(">HI", channel, len(body)) + body + b"\xce"


def publish_raw_headers(c: RawClient, exchange: str, routing_key: str, table: bytes, body: bytes = b"m") -> None:
    """basic.publish whose ``headers`` property is the raw ``table`` (flags 0x2000)."""
    c.send(1, C.Basic.Publish(exchange=exchange, routing_key=routing_key))
    c.send_raw(content_header(1, b"\x20\x00" + table, len(body)) + body_frame(1, body))


def _entry(key: bytes, value: bytes) -> bytes:
    return bytes([len(key)]) + key + value


def _table(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack(">I", len(body)) + body


def test_a_deep_header_routes_through_a_headers_exchange(broker: ThreadBroker) -> None:
    """A header nested 5,000 deep made pamqp recurse out (541, connection closed). It is now present
    with a value equal to nothing, which is what RabbitMQ's matching gives (no binding value can be
    that deep)."""
    conn = pika.BlockingConnection(params(broker.port))
    ch = conn.channel()
    for q, args in (
        ("has-a", {"x-match": "all", "a": 1}),
        ("has-deep", {"x-match": "all", "deep": None}),  # presence only
        ("deep-equals", {"x-match": "all", "deep": [[1]]}),
    ):
        ch.queue_declare(q)
        ch.queue_bind(q, "amq.headers", arguments=args)
    table = _table(_entry(b"a", b"I" + struct.pack(">i", 1)), _entry(b"deep", nested_array(5000)))
    with RawClient(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send(1, C.Confirm.Select())
        c.expect(C.Confirm.SelectOk)
        publish_raw_headers(c, "amq.headers", "", table)
        c.expect(C.Basic.Ack)  # no 541: the connection lives
    counts = {q: ch.queue_declare(q, passive=True).method.message_count for q in ("has-a", "has-deep", "deep-equals")}
    assert counts == {"has-a": 1, "has-deep": 1, "deep-equals": 0}
    conn.close()


def test_malformed_cc_and_x_death_headers_do_not_break_publish_or_dead_lettering(broker: ThreadBroker) -> None:
    """Headers are never validated on the hot path; CC/BCC and dead-lettering split them. A CC array
    or an x-death entry with garbage inside used to raise ValueError (541) at publish or at reject."""
    garbage_table = b"F" + struct.pack(">I", 3) + b"\x01kZ"  # a table holding an unknown type tag
    cc = _entry(b"CC", b"A" + struct.pack(">I", len(garbage_table)) + garbage_table)
    x_death = _entry(b"x-death", b"A" + struct.pack(">I", len(garbage_table)) + garbage_table)
    conn = pika.BlockingConnection(params(broker.port))
    ch = conn.channel()
    ch.queue_declare("dead")
    ch.queue_declare("src", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"})
    with RawClient(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send(1, C.Confirm.Select())
        c.expect(C.Confirm.SelectOk)
        publish_raw_headers(c, "", "src", _table(cc))
        c.expect(C.Basic.Ack)
        publish_raw_headers(c, "", "src", _table(x_death))
        c.expect(C.Basic.Ack)
        for _ in range(2):  # pika could not even read these messages: get and reject them raw
            c.send(1, C.Basic.Get(queue="src"))
            c.send(1, C.Basic.Reject(_raw_get_tag(c), requeue=False))
        c.send(1, C.Queue.Declare(queue="dead", passive=True))
        assert c.expect(C.Queue.DeclareOk).message_count == 2
    _, props, _ = ch.basic_get("dead", auto_ack=True)
    assert props.headers["x-first-death-reason"] == "rejected"  # the malformed headers were started afresh
    conn.close()


def _raw_get_tag(c: RawClient) -> int:
    """The delivery tag of the get-ok (with its content) that comes next, read without decoding the
    content header (pamqp could not decode these headers either)."""
    _, ok = c.recv()
    assert isinstance(ok, C.Basic.GetOk), ok
    c.recv_frame_bytes()  # content header
    c.recv_frame_bytes()  # body
    return int(ok.delivery_tag)
