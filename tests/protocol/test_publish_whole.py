"""The small-message fast path (issue 17): a basic.publish whose header and one body frame are all in the
buffer is parsed in one step, and so is a whole basic.ack. It must give exactly the events, the errors and the state the general
frame-by-frame path gives, for every way the bytes can be cut, and read nothing past what was read."""

from __future__ import annotations

import random
import struct

import pytest
from pamqp import commands as C
from pamqp import frame as F

from leveret.errors import AMQPError
from leveret.protocol.connection import AMQPConnection
from leveret.protocol.events import Publish
from tests.protocol.fuzz_target import HANDSHAKE

FRAME_MAX = 4096  # small, so that bodies over it take several frames


def _frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return bytes([ftype]) + struct.pack(">HI", channel, len(payload)) + payload + b"\xce"


def publish(
    channel: int,
    body: bytes,
    *,
    exchange: str = "",
    routing_key: str = "q",
    mandatory: bool = False,
    props: bytes = b"\x00\x00",
    declared: int | None = None,
    body_channel: int | None = None,
) -> bytes:
    out = [F.marshal(C.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory), channel)]
    size = len(body) if declared is None else declared
    out.append(_frame(2, channel, struct.pack(">HHQ", 60, 0, size) + props))
    chunk = FRAME_MAX - 8
    out += [
        _frame(3, channel if body_channel is None else body_channel, body[i : i + chunk])
        for i in range(0, len(body), chunk)
    ]
    return b"".join(out)


def opened(read_buffer: bytearray | None = None) -> AMQPConnection:
    conn = AMQPConnection(frame_max=FRAME_MAX, read_buffer=read_buffer)
    conn.receive_data(HANDSHAKE)  # channel 1
    conn.receive_data(F.marshal(C.Channel.Open(), 2))
    return conn


def feed(conn: AMQPConnection, data: bytes, cuts: list[int]) -> tuple[list[object], tuple[int, str] | None]:
    """Feed ``data`` as reads cut at ``cuts`` (receive_data writes each through get_buffer /
    buffer_updated); (events, (code, text) of the error or None)."""
    events: list[object] = []
    off = 0
    try:
        for bound in sorted(c for c in cuts if 0 < c < len(data)) + [len(data)]:
            if bound > off:
                events += conn.receive_data(data[off:bound])
                off = bound
    except AMQPError as err:
        return events + err.events, (err.code, err.text)
    return events, None


def one_byte_at_a_time(data: bytes) -> tuple[list[object], tuple[int, str] | None]:
    """The general path only: never is a whole message in the buffer at once."""
    return feed(opened(), data, list(range(len(data))))


def mixed_stream(rng: random.Random) -> bytes:
    parts = []
    for i in range(300):
        size = rng.choice([0, 1, 16, 200, FRAME_MAX - 8, FRAME_MAX - 7, 3 * FRAME_MAX])
        parts.append(
            publish(
                rng.choice([1, 2]),
                rng.randbytes(size),
                exchange=rng.choice(["", "amq.direct", "ex.1"]),
                routing_key=rng.choice(["q", "task_queue", "k" * 255, ""]),
                mandatory=rng.random() < 0.3,
                props=rng.choice([b"\x00\x00", b"\x10\x00\x02", b"\x90\x00\x0atext/plain\x02"]),
            )
        )
        if i % 50 == 0:
            parts.append(_frame(8, 0, b""))  # a heartbeat between messages
        if i % 3 == 0:  # consumers' acks on the same connection (the other fast path)
            parts.append(F.marshal(C.Basic.Ack(delivery_tag=rng.randrange(1, 2**40), multiple=rng.random() < 0.5), rng.choice([1, 2])))
    return b"".join(parts)


def test_the_fast_path_gives_the_general_paths_events_for_every_cut() -> None:
    rng = random.Random(17)
    data = mixed_stream(rng)
    expected, err = one_byte_at_a_time(data)
    assert err is None
    assert sum(isinstance(e, Publish) for e in expected) == 300
    taken = 0
    original = AMQPConnection._publish_whole

    def counting(self: AMQPConnection, *args: object) -> int:
        nonlocal taken
        done = original(self, *args)  # type: ignore[arg-type]
        taken += bool(done)
        return done

    AMQPConnection._publish_whole = counting  # type: ignore[method-assign]
    try:
        whole, err = feed(opened(), data, [])
        assert err is None and whole == expected
        for seed in range(20):
            cut_rng = random.Random(seed)
            cuts = [cut_rng.randrange(len(data)) for _ in range(cut_rng.randint(1, 400))]
            # A shared read buffer full of stale, valid-looking frames: nothing past what was read may count.
            stale = bytearray((data * (1 + (256 << 10) // len(data)))[: 256 << 10])
            got, err = feed(opened(stale), data, cuts)
            assert err is None
            assert got == expected, seed
    finally:
        AMQPConnection._publish_whole = original  # type: ignore[method-assign]
    assert taken > 300  # the fast path was taken (most small messages arrive whole)


BAD_STREAMS = {
    # (the bytes after one good message, what is wrong)
    "body on another channel": publish(1, b"abc", body_channel=2),
    "body longer than declared": publish(1, b"abcd", declared=3),
    "header for another class": publish(1, b"abc").replace(b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03", b"\x00\x3d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03"),
    "bad frame end after the header": (lambda d: d[:39] + b"\x00" + d[40:])(publish(1, b"abc")),
    "bad frame end after the body": publish(1, b"abc")[:-1] + b"\x00",
    "bad frame end after the method": (lambda d: d[: d.index(b"\xce")] + b"\x00" + d[d.index(b"\xce") + 1 :])(
        publish(1, b"abc")
    ),
    "publish on a channel never opened": publish(9, b"abc"),
    "publish on channel 0": publish(0, b"abc"),
    "malformed UTF-8 in the routing key": publish(1, b"abc", routing_key="q").replace(b"\x01q", b"\x01\xff"),
    "a header with no publish": publish(1, b"abc")[publish(1, b"abc").index(b"\xce") + 1 :],
    "a second publish before the body": publish(1, b"abc")[: publish(1, b"abc").index(b"\xce") + 1]
    + publish(1, b"abc"),
    "header on another channel, empty body": F.marshal(C.Basic.Publish(exchange="", routing_key="q"), 1)
    + publish(2, b"")[publish(2, b"").index(b"\xce") + 1 :],
    "a method frame where the body frame goes": publish(1, b"", declared=13)
    + F.marshal(C.Basic.Ack(delivery_tag=1), 1),  # basic.ack's payload is 13 bytes, as declared
    "an ack between a publish and its header": F.marshal(C.Basic.Publish(exchange="", routing_key="q"), 1)
    + F.marshal(C.Basic.Ack(delivery_tag=1), 1),
    "an ack on a channel never opened": F.marshal(C.Basic.Ack(delivery_tag=1), 7),
    "an ack with a bad frame end": F.marshal(C.Basic.Ack(delivery_tag=1), 1)[:-1] + b"\x00",
    "header on another channel": F.marshal(C.Basic.Publish(exchange="", routing_key="q"), 1)
    + publish(2, b"abc")[publish(2, b"abc").index(b"\xce") + 1 :],
}


@pytest.mark.parametrize("name", sorted(BAD_STREAMS))
def test_bad_input_gives_the_general_paths_error(name: str) -> None:
    data = publish(2, b"good") + BAD_STREAMS[name] + publish(2, b"after")
    expected = one_byte_at_a_time(data)
    assert expected[1] is not None, "the stream must be bad"
    assert feed(opened(), data, []) == expected
    assert feed(opened(), data, [len(data) // 2]) == expected


def test_a_frame_max_body_frame_is_refused_the_same_way() -> None:
    # One body frame over the negotiated frame_max (the fast path must not skip the size check).
    body = b"y" * (FRAME_MAX + 10)
    data = (
        F.marshal(C.Basic.Publish(exchange="", routing_key="q"), 1)
        + _frame(2, 1, struct.pack(">HHQ", 60, 0, len(body)) + b"\x00\x00")
        + _frame(3, 1, body)
    )
    expected = one_byte_at_a_time(data)
    assert expected[1] is not None and "frame_too_large" in expected[1][1]
    assert feed(opened(), data, []) == expected


def test_a_closing_channel_drops_its_publishes_on_the_fast_path_too() -> None:
    conn = opened()
    conn.close_channel(1, 404, "NOT_FOUND")  # the broker closed channel 1; the client has not seen it yet
    events, err = feed(conn, publish(1, b"dropped") + publish(2, b"kept"), [])
    assert err is None
    assert [e.body for e in events if isinstance(e, Publish)] == [b"kept"]


def test_acks_parsed_whole_skip_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = opened()

    def general(*args: object) -> None:
        raise AssertionError("an ack took the general path")

    monkeypatch.setattr(conn, "_on_hot", general)
    data = b"".join(F.marshal(C.Basic.Ack(delivery_tag=t, multiple=t % 2 == 0), 1 + t % 2) for t in range(1, 101))
    events, err = feed(conn, data, [])
    assert err is None
    assert [(e.channel, e.delivery_tag, e.multiple) for e in events] == [(1 + t % 2, t, t % 2 == 0) for t in range(1, 101)]


def test_publish_arguments_are_decoded_once_and_the_cache_is_bounded() -> None:
    conn = opened()
    data = b"".join(publish(1, b"b", routing_key=f"k{i}") for i in range(200))
    events, err = feed(conn, data, [])
    assert err is None
    assert [e.routing_key for e in events] == [f"k{i}" for i in range(200)]
    assert 0 < len(conn._publish_args) <= 64
