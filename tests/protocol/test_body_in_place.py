"""Large bodies are assembled in one buffer of their size: their frames are copied (or read from the
socket, through get_buffer / buffer_updated) straight into it, never kept as frames and joined (issue 17)."""

from __future__ import annotations

import random
import struct

import pytest
from pamqp import commands as C
from pamqp import frame as F

from leveret.errors import ConnectionError_, ReplyCode
from leveret.protocol.connection import DIRECT_BODY_MIN, AMQPConnection
from leveret.protocol.events import Heartbeat, Publish
from tests.protocol.fuzz_target import HANDSHAKE

FRAME_MAX = 131072


def _frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return bytes([ftype]) + struct.pack(">HI", channel, len(payload)) + payload + b"\xce"


def message(channel: int, body: bytes, chunk: int = FRAME_MAX - 8) -> bytes:
    out = [F.marshal(C.Basic.Publish(exchange="", routing_key=f"q{channel}"), channel)]
    out.append(_frame(2, channel, struct.pack(">HHQH", 60, 0, len(body), 0)))
    out += [_frame(3, channel, body[i : i + chunk]) for i in range(0, len(body), chunk)]
    return b"".join(out)


def opened(channels: int = 1) -> AMQPConnection:
    conn = AMQPConnection(frame_max=FRAME_MAX)
    conn.receive_data(HANDSHAKE)  # channel 1
    for ch in range(2, channels + 1):
        conn.receive_data(F.marshal(C.Channel.Open(), ch))
    return conn


def feed(conn: AMQPConnection, data: bytes, rng: random.Random | None = None) -> list[object]:
    """As a BufferedProtocol's transport does: write into get_buffer(), at most what it offers."""
    events: list[object] = []
    off = 0
    while off < len(data):
        into = conn.get_buffer()
        k = min(len(into), len(data) - off)
        if rng is not None:
            k = rng.randint(1, k)
        into[:k] = data[off : off + k]
        off += k
        events += conn.buffer_updated(k)
    return events


def test_a_large_bodys_frames_are_read_into_the_body_itself() -> None:
    conn = opened()
    body = random.Random(1).randbytes(5 * FRAME_MAX + 17)
    data = message(1, body)
    cut = 200  # the publish, its header and the start of the first body frame
    into = conn.get_buffer()
    into[:cut] = data[:cut]
    assert conn.buffer_updated(cut) == []
    # The rest of that frame goes straight into the message's body: the buffer offered is a view of it.
    into = conn.get_buffer()
    target = into.obj
    assert isinstance(target, bytearray) and len(target) == len(body)
    payload_at = len(F.marshal(C.Basic.Publish(exchange="", routing_key="q1"), 1)) + 8 + 14 + 7
    assert len(into) == FRAME_MAX - 8 - (cut - payload_at)  # exactly the rest of that frame's payload
    events = feed(conn, data[cut:])
    assert len(events) == 1 and isinstance(events[0], Publish)
    assert events[0].body == body
    assert events[0].body is target  # the buffer it was read into, not a join of frames
    assert (conn.announced, conn.buffered) == (0, 0)


def test_small_bodies_stay_bytes_and_large_ones_are_bytearrays() -> None:
    conn = opened()
    small = conn.receive_data(message(1, b"x" * (DIRECT_BODY_MIN - 1)))
    large = conn.receive_data(message(1, b"y" * DIRECT_BODY_MIN))
    assert type(small[0].body) is bytes and type(large[0].body) is bytearray  # type: ignore[attr-defined]
    assert large[0].body == b"y" * DIRECT_BODY_MIN  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed", range(8))
def test_any_split_of_interleaved_channels_gives_the_same_events(seed: int) -> None:
    rng = random.Random(seed)
    bodies = {ch: rng.randbytes(rng.choice([0, 10, DIRECT_BODY_MIN, 300_000, 2 * FRAME_MAX])) for ch in (1, 2, 3)}
    # Frames of three channels interleaved (allowed between frames), with heartbeats among them.
    streams = {ch: _split_frames(message(ch, b, chunk=rng.choice([4096, 65536, FRAME_MAX - 8]))) for ch, b in bodies.items()}
    frames: list[bytes] = []
    while any(streams.values()):
        ch = rng.choice([c for c, s in streams.items() if s])
        frames.append(streams[ch].pop(0))
        if rng.random() < 0.1:
            frames.append(_frame(8, 0, b""))
    data = b"".join(frames)
    whole = opened(3).receive_data(data)
    pieces = feed(opened(3), data, rng)
    assert pieces == whole
    got = {e.channel: bytes(e.body) for e in whole if isinstance(e, Publish)}
    assert got == bodies
    assert sum(isinstance(e, Heartbeat) for e in whole) == sum(f == _frame(8, 0, b"") for f in frames)


def _split_frames(data: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(data):
        size = struct.unpack_from(">I", data, pos + 3)[0]
        out.append(data[pos : pos + 8 + size])
        pos += 8 + size
    return out


def test_a_bad_frame_end_after_a_frame_read_into_the_body_is_a_frame_error() -> None:
    conn = opened()
    data = bytearray(message(1, bytes(3 * FRAME_MAX)))
    first_end = len(F.marshal(C.Basic.Publish(exchange="", routing_key="q1"), 1)) + 8 + 14 + 7 + FRAME_MAX - 8
    assert data[first_end] == 0xCE
    data[first_end] = 0
    with pytest.raises(ConnectionError_) as err:
        feed(conn, bytes(data))
    assert err.value.code == ReplyCode.FRAME_ERROR and "invalid_frame_end_marker,0" in err.value.text


def test_a_body_frame_past_the_declared_size_is_refused_before_it_is_read() -> None:
    conn = opened()
    head = F.marshal(C.Basic.Publish(exchange="", routing_key="q"), 1)
    head += _frame(2, 1, struct.pack(">HHQH", 60, 0, DIRECT_BODY_MIN, 0))
    frame = _frame(3, 1, bytes(DIRECT_BODY_MIN + 1))
    feed(conn, head)
    with pytest.raises(ConnectionError_) as err:
        feed(conn, frame[:100])  # only the start of the frame: its head says too much
    assert err.value.code == ReplyCode.FRAME_ERROR and "exceeds declared size" in err.value.text


def test_a_channel_closed_while_its_body_is_read_gives_no_publish() -> None:
    conn = opened()
    data = message(1, bytes(2 * FRAME_MAX))
    feed(conn, data[:1000])
    conn.close_channel(1, 406, "closed by the broker")
    assert feed(conn, data[1000:]) == []  # the rest is read and dropped
    assert (conn.announced, conn.buffered) == (0, 0)


def test_release_in_the_middle_of_a_body_frame_forgets_it() -> None:
    conn = opened()
    feed(conn, message(1, bytes(2 * FRAME_MAX))[:1000])
    body_slot = conn.get_buffer()
    assert len(body_slot) < FRAME_MAX and len(body_slot.obj) == 2 * FRAME_MAX  # type: ignore[arg-type]  # into the body
    assert conn.release() > 0  # the bytes of the unfinished body are let go
    after = conn.get_buffer()
    assert after.obj is not body_slot.obj and len(after) == 64 << 10  # the read buffer again, not the body
    assert (conn.announced, conn.buffered) == (0, 0)
