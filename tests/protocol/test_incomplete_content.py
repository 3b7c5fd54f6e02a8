"""The protocol layer's bound on unfinished content, and what it tells the server (issue 11, item 2)."""

from __future__ import annotations

import struct

import pytest
from pamqp import commands as C
from pamqp import frame as F

from leveret.errors import ChannelError, ReplyCode
from leveret.protocol.connection import AMQPConnection, ChanState
from leveret.protocol.events import Publish
from tests.protocol.fuzz_target import HANDSHAKE

MIB = 1 << 20


def _frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return bytes([ftype]) + struct.pack(">HI", channel, len(payload)) + payload + b"\xce"


def publish(channel: int) -> bytes:
    return F.marshal(C.Basic.Publish(exchange="", routing_key="q"), channel)


def header(channel: int, size: int) -> bytes:
    return _frame(2, channel, struct.pack(">HHQH", 60, 0, size, 0))


def body(channel: int, n: int) -> bytes:
    return _frame(3, channel, bytes(n))


def opened(channels: int, **kw: int) -> AMQPConnection:
    conn = AMQPConnection(frame_max=32 * MIB, channel_max=0, **kw)
    conn.receive_data(HANDSHAKE)  # channel 1
    for ch in range(2, channels + 1):
        conn.receive_data(F.marshal(C.Channel.Open(), ch))
    return conn


def test_a_publish_frame_makes_the_connection_a_publisher() -> None:
    conn = opened(1)
    assert not conn.publishing
    conn.receive_data(publish(1))  # nothing complete yet
    assert conn.publishing


def test_announced_and_buffered_bytes_are_counted_and_released() -> None:
    conn = opened(2, max_message_size=16 * MIB, max_incomplete_content=64 * MIB)
    conn.receive_data(publish(1) + header(1, 10 * MIB) + body(1, 1000))
    conn.receive_data(publish(2) + header(2, 5 * MIB) + body(2, 500) + body(2, 500))
    assert (conn.announced, conn.buffered) == (15 * MIB, 2000)
    events = conn.receive_data(body(2, 5 * MIB - 1000))
    assert isinstance(events[0], Publish) and len(events[0].body) == 5 * MIB
    assert (conn.announced, conn.buffered) == (10 * MIB, 1000)
    conn.close_channel(1, 406, "x")  # the broker closes channel 1: its unfinished message goes
    assert (conn.announced, conn.buffered) == (0, 0)
    conn.receive_data(publish(2) + header(2, 100) + body(2, 10))
    assert conn.release() == 10
    assert (conn.announced, conn.buffered) == (0, 0)


def test_a_header_over_the_connections_bound_is_refused_before_its_body() -> None:
    conn = opened(6, max_message_size=16 * MIB, max_incomplete_content=64 * MIB)
    for ch in range(1, 5):
        conn.receive_data(publish(ch) + header(ch, 16 * MIB) + body(ch, 100))
    with pytest.raises(ChannelError) as e:
        conn.receive_data(publish(5) + header(5, 1) + body(5, 1))
    assert e.value.code == ReplyCode.PRECONDITION_FAILED and e.value.channel == 5
    assert (e.value.class_id, e.value.method_id) == (60, 40)
    assert e.value.text == (
        "PRECONDITION_FAILED - message size 1 would take the content of unfinished messages on this connection "
        f"over {64 * MIB} bytes ({64 * MIB} announced)"
    )
    assert conn.channels[5] is ChanState.CLOSING
    assert conn.receive_data(body(5, 1)) == []  # dropped, as after the max message size check
    assert (conn.announced, conn.buffered) == (64 * MIB, 400)
    conn.receive_data(publish(6) + header(6, 0))  # an empty body announces nothing


def test_the_bound_never_refuses_one_message_of_the_maximum_size() -> None:
    conn = opened(1, max_message_size=16 * MIB, max_incomplete_content=1)
    assert conn.max_incomplete_content == 16 * MIB
    conn.receive_data(publish(1) + header(1, 16 * MIB))
