"""Byte vectors through the sans-IO connection: whole, byte by byte, with trailing bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands as C
from pamqp import frame as F
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from leveret.errors import AMQPError, ChannelError, ConnectionError_, ReplyCode
from leveret.protocol import codec
from leveret.protocol.connection import AMQPConnection, BadProtocolHeader, ConnState
from leveret.protocol.events import Ack, HeaderReceived, Heartbeat, MethodReceived, Nack, Publish, Reject

HANDSHAKE = (
    codec.PROTOCOL_HEADER
    + F.marshal(C.Connection.StartOk(client_properties={}, mechanism="PLAIN", response="\0guest\0guest"), 0)
    + F.marshal(C.Connection.TuneOk(2047, 131072, 60), 0)
    + F.marshal(C.Connection.Open("/"), 0)
    + F.marshal(C.Channel.Open(), 1)
)


def _props_raw(props: C.Basic.Properties) -> bytes:
    return F.marshal(ContentHeader(0, 1, props), 1)[7 + 12 : -1]


def publish_bytes(channel: int, body: bytes, props: C.Basic.Properties | None = None, frame_max: int = 131072) -> bytes:
    props = props or C.Basic.Properties(delivery_mode=2)
    out = F.marshal(C.Basic.Publish(0, "", "q", True, False), channel)
    out += F.marshal(ContentHeader(0, len(body), props), channel)
    for i in range(0, len(body), frame_max - 8):
        out += F.marshal(ContentBody(body[i : i + frame_max - 8]), channel)
    return out


STREAM = (
    HANDSHAKE
    + publish_bytes(1, b"hello")
    + publish_bytes(1, b"")
    + publish_bytes(1, bytes(range(256)) * 40, frame_max=4096)
    + F.marshal(C.Basic.Ack(5, True), 1)
    + F.marshal(C.Basic.Nack(6, False, True), 1)
    + F.marshal(C.Basic.Reject(7, False), 1)
    + codec.heartbeat()
    + F.marshal(C.Queue.Declare(queue="tasks", durable=True), 1)
)


def _expected() -> list[object]:
    raw = _props_raw(C.Basic.Properties(delivery_mode=2))
    return [
        HeaderReceived(),
        "start-ok", "tune-ok", "open", "channel-open",
        Publish(1, "", "q", True, False, raw, b"hello"),
        Publish(1, "", "q", True, False, raw, b""),
        Publish(1, "", "q", True, False, raw, bytes(range(256)) * 40),
        Ack(1, 5, True),
        Nack(1, 6, False, True),
        Reject(1, 7, False),
        Heartbeat(),
        "queue-declare",
    ]  # fmt: skip


def _normalise(events: list[object]) -> list[object]:
    names = {
        C.Connection.StartOk: "start-ok", C.Connection.TuneOk: "tune-ok", C.Connection.Open: "open",
        C.Channel.Open: "channel-open", C.Queue.Declare: "queue-declare",
    }  # fmt: skip
    return [names[type(e.method)] if isinstance(e, MethodReceived) else e for e in events]


def test_whole_stream() -> None:
    conn = AMQPConnection()
    assert _normalise(conn.receive_data(STREAM)) == _expected()
    assert conn.state is ConnState.OPEN


def test_byte_by_byte() -> None:
    conn = AMQPConnection()
    events: list[object] = []
    for i in range(len(STREAM)):
        events += conn.receive_data(STREAM[i : i + 1])
    assert _normalise(events) == _expected()


@given(cuts=st.lists(st.integers(0, len(STREAM)), max_size=20))
def test_any_split(cuts: list[int]) -> None:
    conn = AMQPConnection()
    events: list[object] = []
    prev = 0
    for c in sorted(cuts) + [len(STREAM)]:
        events += conn.receive_data(STREAM[prev:c])
        prev = c
    assert _normalise(events) == _expected()


def test_trailing_partial_frame_waits() -> None:
    conn = AMQPConnection()
    tail = F.marshal(C.Basic.Ack(9, False), 1)
    events = conn.receive_data(STREAM + tail[:5])
    assert _normalise(events) == _expected()
    assert conn.receive_data(tail[5:]) == [Ack(1, 9, False)]


def test_declare_arguments_decoded() -> None:
    conn = AMQPConnection()
    conn.receive_data(HANDSHAKE)
    (ev,) = conn.receive_data(F.marshal(C.Queue.Declare(queue="q", arguments={"x-queue-type": "quorum"}), 1))
    assert isinstance(ev, MethodReceived) and ev.method.arguments == {"x-queue-type": "quorum"}


def test_bad_protocol_header() -> None:
    with pytest.raises(BadProtocolHeader):
        AMQPConnection().receive_data(b"GET / HTTP/1.1\r\n")
    with pytest.raises(BadProtocolHeader):
        AMQPConnection().receive_data(b"AMQP\x00\x00\x09\x02")
    # a prefix of the right header just waits
    assert AMQPConnection().receive_data(b"AMQP") == []


def _open() -> AMQPConnection:
    conn = AMQPConnection(frame_max=4096)
    conn.receive_data(HANDSHAKE)
    return conn


def _code(data: bytes, conn: AMQPConnection | None = None) -> tuple[ReplyCode, bool]:
    conn = conn or _open()
    with pytest.raises(AMQPError) as info:
        conn.receive_data(data)
    return info.value.code, info.value.hard


def test_bad_frame_end() -> None:
    frame = bytearray(F.marshal(C.Basic.Ack(1, False), 1))
    frame[-1] = 0
    assert _code(bytes(frame)) == (ReplyCode.FRAME_ERROR, True)


def test_frame_over_frame_max_rejected_from_its_head() -> None:
    # Only the 7-byte head arrives: the size alone is enough to refuse it.
    head = bytes([3]) + (1).to_bytes(2, "big") + (10_000).to_bytes(4, "big")
    assert _code(head) == (ReplyCode.FRAME_ERROR, True)


def test_unknown_frame_type() -> None:
    assert _code(bytes([9, 0, 0, 0, 0, 0, 0, 0xCE])) == (ReplyCode.FRAME_ERROR, True)


def test_method_on_unopened_channel() -> None:
    assert _code(F.marshal(C.Basic.Qos(0, 1, False), 5)) == (ReplyCode.CHANNEL_ERROR, True)


def test_second_channel_open() -> None:
    assert _code(F.marshal(C.Channel.Open(), 1)) == (ReplyCode.CHANNEL_ERROR, True)


def test_channels_counted_against_channel_max() -> None:
    """As RabbitMQ 3.10: the number of open channels is limited, not the channel number."""
    conn = _open()
    conn.tune(4096, 3)
    (ev,) = conn.receive_data(F.marshal(C.Channel.Open(), 11))  # number above channel_max: allowed
    assert isinstance(ev.method, C.Channel.Open)
    conn.receive_data(F.marshal(C.Channel.Open(), 2))
    with pytest.raises(ConnectionError_) as info:
        conn.receive_data(F.marshal(C.Channel.Open(), 3))
    assert info.value.code == ReplyCode.NOT_ALLOWED
    assert info.value.text == "NOT_ALLOWED - number of channels opened (3) has reached the negotiated channel_max (3)"


def test_content_out_of_sequence() -> None:
    body = F.marshal(ContentBody(b"x"), 1)
    assert _code(body) == (ReplyCode.UNEXPECTED_FRAME, True)
    header = F.marshal(ContentHeader(0, 1, C.Basic.Properties()), 1)
    assert _code(header) == (ReplyCode.UNEXPECTED_FRAME, True)
    # a method where a content header is expected
    pub = F.marshal(C.Basic.Publish(0, "", "q"), 1)
    assert _code(pub + F.marshal(C.Basic.Ack(1, False), 1)) == (ReplyCode.UNEXPECTED_FRAME, True)


def test_unknown_method() -> None:
    payload = (60 << 16 | 999).to_bytes(4, "big")
    frame = bytes([1, 0, 1]) + len(payload).to_bytes(4, "big") + payload + b"\xce"
    assert _code(frame) == (ReplyCode.NOT_IMPLEMENTED, True)


def test_non_connection_method_on_channel_zero() -> None:
    assert _code(F.marshal(C.Basic.Qos(0, 1, False), 0)) == (ReplyCode.CHANNEL_ERROR, True)
    assert _code(codec.PROTOCOL_HEADER + F.marshal(C.Basic.Qos(0, 1, False), 0), AMQPConnection()) == (
        ReplyCode.COMMAND_INVALID,
        True,
    )


def test_message_too_large_is_a_channel_error_and_body_dropped() -> None:
    conn = AMQPConnection(max_message_size=10)
    conn.receive_data(HANDSHAKE)
    data = publish_bytes(1, b"x" * 11)
    with pytest.raises(ChannelError) as info:
        conn.receive_data(data)
    assert info.value.code == ReplyCode.PRECONDITION_FAILED
    assert info.value.channel == 1
    assert "message size 11 is larger than configured max size 10" in info.value.text


def test_at_the_hard_limit_the_text_drops_configured() -> None:
    """RabbitMQ's wording: "configured max size" for any limit but its hard maximum of 512 MiB."""
    conn = AMQPConnection(max_message_size=512 << 20)
    conn.receive_data(HANDSHAKE)
    publish = F.marshal(C.Basic.Publish(0, "", "q", True, False), 1)
    header = F.marshal(ContentHeader(0, (512 << 20) + 1, C.Basic.Properties()), 1)  # the body never needs to come
    with pytest.raises(ChannelError) as info:
        conn.receive_data(publish + header)
    assert info.value.detail == f"message size {(512 << 20) + 1} is larger than max size {512 << 20}"


def test_closing_channel_drops_until_close_ok() -> None:
    conn = _open()
    conn.close_channel(1, 406, "PRECONDITION_FAILED - x")
    assert conn.receive_data(publish_bytes(1, b"abc") + F.marshal(C.Basic.Ack(1, False), 1)) == []
    assert conn.receive_data(F.marshal(C.Channel.CloseOk(), 1)) == []
    (ev,) = conn.receive_data(F.marshal(C.Channel.Open(), 1))
    assert isinstance(ev, MethodReceived) and isinstance(ev.method, C.Channel.Open)


def test_events_before_an_error_are_kept() -> None:
    conn = _open()
    bad = bytearray(F.marshal(C.Basic.Ack(2, False), 1))
    bad[-1] = 0
    with pytest.raises(ConnectionError_) as info:
        conn.receive_data(F.marshal(C.Basic.Ack(1, False), 1) + bytes(bad))
    assert info.value.events == [Ack(1, 1, False)]


@settings(max_examples=300)
@given(data=st.binary(max_size=400), prefix=st.booleans())
def test_fuzz_any_bytes_give_events_or_protocol_errors(data: bytes, prefix: bool) -> None:
    conn = AMQPConnection(frame_max=4096)
    try:
        if prefix:
            conn.receive_data(HANDSHAKE)
        conn.receive_data(data)
    except (AMQPError, BadProtocolHeader):
        pass


METHOD_IDS = sorted(C.INDEX_MAPPING)
payloads = st.one_of(
    st.binary(max_size=60),
    st.tuples(st.sampled_from(METHOD_IDS), st.binary(max_size=60)).map(lambda t: t[0].to_bytes(4, "big") + t[1]),
)


@settings(max_examples=500)
@given(frames=st.lists(st.tuples(st.sampled_from([1, 2, 3, 8, 4]), st.integers(0, 3), payloads), max_size=8))
def test_fuzz_well_framed_garbage(frames: list[tuple[int, int, bytes]]) -> None:
    """Frames with valid heads and ends, known method ids, arbitrary arguments reach the decoders."""
    conn = AMQPConnection(frame_max=4096)
    conn.receive_data(HANDSHAKE)
    data = b"".join(bytes([t]) + ch.to_bytes(2, "big") + len(p).to_bytes(4, "big") + p + b"\xce" for t, ch, p in frames)
    try:
        conn.receive_data(data)
    except AMQPError:
        pass


def test_after_our_close_only_close_and_close_ok_count() -> None:
    """Once we sent connection.close, anything else (content, garbage methods, channel 0 junk) is dropped,
    so the client's close-ok behind it is still seen."""
    conn = _open()
    conn.close(501, "FRAME_ERROR - x")
    junk = (
        F.marshal(ContentBody(b"x"), 1)
        + F.marshal(ContentHeader(0, 1, C.Basic.Properties()), 1)
        + F.marshal(C.Basic.Qos(0, 1, False), 0)
        + bytes([1, 0, 0, 0, 0, 0, 4]) + (60 << 16 | 999).to_bytes(4, "big") + b"\xce"
    )
    (ev,) = conn.receive_data(junk + F.marshal(C.Connection.CloseOk(), 0))
    assert isinstance(ev.method, C.Connection.CloseOk)
    assert conn.state is ConnState.CLOSED
