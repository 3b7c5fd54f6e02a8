"""Message content round-trips exactly: every basic property, nested headers, any body bytes, any size."""

from __future__ import annotations

import datetime
import decimal
import struct
from typing import Any

import pika
import pytest
from pamqp import commands as C
from pamqp import frame as pframe

from tests.e2e.raw import RawClient
from tests.e2e.test_basic import Collector, wait_got
from tests.helpers import ThreadBroker

pytestmark = pytest.mark.timeout(30)

ALL_BYTES = bytes(range(256)) * 4

HEADERS: dict[str, Any] = {
    "str": "héllo wörld",
    "int": 42,
    "neg": -7,
    "big": 2**40 + 1,
    "true": True,
    "false": False,
    "decimal": decimal.Decimal("3.14"),
    "when": datetime.datetime(2024, 5, 6, 7, 8, 9),
    "bin": b"\x00\xff\x80raw",
    "none": None,
    "list": [1, "two", [3, {"four": 4}], b"\x05"],
    "nested": {"level1": {"level2": {"level3": "deep", "n": 3}}, "empty": {}},
}


def full_properties() -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="application/octet-stream",
        content_encoding="identity",
        headers=HEADERS,
        delivery_mode=2,
        priority=7,
        correlation_id="corr-1",
        reply_to="amq.gen-reply",
        expiration="600000",
        message_id="msg-1",
        timestamp=1_700_000_000,
        type="task",
        user_id="guest",
        app_id="leveret-tests",
        cluster_id="c1",
    )


def test_pika_all_properties_and_nested_headers_round_trip(conn: Any) -> None:
    ch = conn.channel()
    ch.queue_declare("props")
    sent = full_properties()
    ch.basic_publish("", "props", ALL_BYTES, sent)
    got: list[Any] = []
    ch.basic_consume("props", lambda c, m, p, b: got.append((m, p, b)), auto_ack=True)
    conn.process_data_events(time_limit=0.2)
    while not got:
        conn.process_data_events(time_limit=0.05)
    m, p, body = got[0]
    assert body == ALL_BYTES
    for attr in (
        "content_type", "content_encoding", "delivery_mode", "priority", "correlation_id", "reply_to",
        "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id",
    ):  # fmt: skip
        assert getattr(p, attr) == getattr(sent, attr), attr
    h = p.headers
    assert h["str"] == "héllo wörld"
    assert (h["int"], h["neg"], h["big"], h["true"], h["false"]) == (42, -7, 2**40 + 1, True, False)
    assert h["decimal"] == decimal.Decimal("3.14")
    assert h["when"] == datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    assert h["bin"] == b"\x00\xff\x80raw"
    assert h["none"] is None
    assert h["list"] == [1, "two", [3, {"four": 4}], b"\x05"]
    assert h["nested"] == {"level1": {"level2": {"level3": "deep", "n": 3}}, "empty": {}}
    assert (m.exchange, m.routing_key) == ("", "props")


def test_basic_get_returns_the_same_properties(ch: Any) -> None:
    ch.queue_declare("gp")
    sent = full_properties()
    ch.basic_publish("", "gp", b"x", sent)
    _, p, body = ch.basic_get("gp", auto_ack=True)
    assert body == b"x"
    assert p.headers["nested"] == HEADERS["nested"]
    assert (p.message_id, p.priority, p.expiration) == ("msg-1", 7, "600000")


@pytest.mark.parametrize(
    "body", [b"", b"\x00", ALL_BYTES, bytes(range(256))[::-1] * 600], ids=["empty", "nul", "all", "150k"]
)
def test_bodies_round_trip_exactly(conn: Any, body: bytes) -> None:
    ch = conn.channel()
    ch.queue_declare("bodies")
    ch.basic_publish("", "bodies", body)
    col = Collector()
    ch.basic_consume("bodies", col, auto_ack=True)
    wait_got(conn, col, 1)
    assert col.bodies == [body]
    ch.basic_publish("", "bodies", body)
    # and through basic.get on another channel
    ch2 = conn.channel()
    ch2.queue_declare("bodies2")
    ch2.basic_publish("", "bodies2", body)
    assert ch2.basic_get("bodies2", auto_ack=True)[2] == body


def _table(entries: list[tuple[str, bytes]]) -> bytes:
    raw = b"".join(bytes([len(k)]) + k.encode() + v for k, v in entries)
    return struct.pack(">I", len(raw)) + raw


def test_content_header_is_forwarded_byte_for_byte_raw(broker: ThreadBroker) -> None:
    """Field types that a decode/re-encode would change (pamqp narrows int64, rejects bad UTF-8)."""
    nested = _table([("n", b"l" + struct.pack(">q", 1))])
    headers = _table(
        [
            ("i8", b"b\xff"),
            ("u8", b"B\x80"),
            ("i16", b"s" + struct.pack(">h", -2)),
            ("u16", b"u" + struct.pack(">H", 65535)),
            ("i32", b"I" + struct.pack(">i", -3)),
            ("u32", b"i" + struct.pack(">I", 2**32 - 1)),
            ("i64small", b"l" + struct.pack(">q", 5)),  # int64 holding a small value
            ("f32", b"f" + struct.pack(">f", 1.5)),
            ("f64", b"d" + struct.pack(">d", -2.25)),
            ("dec", b"D\x02" + struct.pack(">i", 314)),
            ("ts", b"T" + struct.pack(">Q", 1_700_000_000)),
            ("bin", b"x" + struct.pack(">I", 3) + b"\xff\x00\xfe"),
            ("badutf8", b"S" + struct.pack(">I", 2) + b"\xff\xfe"),
            ("void", b"V"),
            ("nested", b"F" + nested),
            ("arr", b"A" + struct.pack(">I", 7) + b"b\x01" + b"t\x01" + b"V" + b"V" + b"V"),
        ]
    )
    flags = 0x8000 | 0x2000 | 0x1000  # content-type, headers, delivery-mode
    props = struct.pack(">H", flags) + b"\x04text" + headers + b"\x02"
    body = b"payload"
    header_payload = struct.pack(">HHQ", 60, 0, len(body)) + props
    header_frame = struct.pack(">BHI", 2, 1, len(header_payload)) + header_payload + b"\xce"
    with RawClient(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send(1, C.Queue.Declare(queue="exact"))
        c.expect(C.Queue.DeclareOk)
        c.send_raw(
            pframe.marshal(C.Basic.Publish(exchange="", routing_key="exact"), 1)
            + header_frame
            + struct.pack(">BHI", 3, 1, len(body))
            + body
            + b"\xce"
        )
        c.send(1, C.Basic.Consume(queue="exact", consumer_tag="t", no_ack=True))
        c.expect(C.Basic.ConsumeOk)
        c.expect(C.Basic.Deliver)
        assert c.recv_frame_bytes() == header_frame
        assert c.recv_frame_bytes() == struct.pack(">BHI", 3, 1, len(body)) + body + b"\xce"
        c.send(1, C.Basic.Get(queue="exact"))
        c.expect(C.Basic.GetEmpty)


def test_body_bigger_than_frame_max_is_split_into_frames_raw(broker: ThreadBroker) -> None:
    body = bytes(range(256)) * 1200  # 307,200 bytes: three frames at 131,072
    with RawClient(broker.port) as pub:
        pub.handshake()
        pub.open_channel(1)
        pub.send(1, C.Queue.Declare(queue="big"))
        pub.expect(C.Queue.DeclareOk)
        pub.publish(1, body, routing_key="big")  # split by the client at 131,072
        with RawClient(broker.port) as sub:
            sub.handshake(frame_max=8192)  # a consumer that negotiated smaller frames
            sub.open_channel(3)
            sub.send(3, C.Basic.Consume(queue="big", consumer_tag="t", no_ack=True))
            sub.expect(C.Basic.ConsumeOk)
            sub.expect(C.Basic.Deliver)
            head = sub.recv_frame_bytes()
            assert head[0] == 2 and struct.unpack_from(">Q", head, 11)[0] == len(body)
            parts = []
            while sum(len(p) for p in parts) < len(body):
                f = sub.recv_frame_bytes()
                assert f[0] == 3 and struct.unpack_from(">H", f, 1)[0] == 3
                assert len(f) <= 8192
                parts.append(f[7:-1])
            assert b"".join(parts) == body
            assert len(parts) == -(-len(body) // (8192 - 8))


def test_large_body_through_pika(conn: Any) -> None:
    body = bytes(range(256)) * 2048  # 512 KiB, four frames each way
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("large")
    ch.basic_publish("", "large", body, pika.BasicProperties(message_id="big"))
    m, p, got = ch.basic_get("large", auto_ack=True)
    assert (got == body, p.message_id, m.message_count) == (True, "big", 0)


def test_message_bigger_than_max_message_size_is_406(broker_factory: Any) -> None:
    b = broker_factory(max_message_size=1000)
    with RawClient(b.port) as c:
        c.handshake()
        c.open_channel(1)
        c.publish(1, b"x" * 1001, routing_key="q")
        close = c.expect(C.Channel.Close)
        assert (close.reply_code, close.reply_text) == (
            406,
            "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000",
        )
        c.send(1, C.Channel.CloseOk())
        c.open_channel(2)


def test_a_22_mb_message_passes_with_the_default_limit(ch: Any) -> None:
    """RabbitMQ 3.x's default max_message_size is 128 MiB, and clients' own suites send 22 MB messages
    (it was 16 MiB here, RabbitMQ 4's default)."""
    body = bytes(range(256)) * (22_000_000 // 256)
    ch.queue_declare("big22")
    ch.confirm_delivery()
    ch.basic_publish("", "big22", body)
    method, _, got = ch.basic_get("big22", auto_ack=True)
    assert method is not None and got == body
