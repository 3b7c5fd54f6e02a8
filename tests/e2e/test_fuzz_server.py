"""Server-level fuzzing: random but well-framed methods over a real socket to one broker.

Every example is a fresh connection that sends a random sequence of methods (any method the protocol
knows, with random arguments drawn from small pools so they interact: declares, binds, consumes,
publishes with content, acks of plausible tags...). Whatever happens to that connection, the broker must
stay up, release it, and a second client (the :class:`Witness`) must keep publishing and consuming.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

from tests.e2e.raw import RawClient
from tests.helpers import ThreadBroker, wait_for
from tests.witness import Witness

pytestmark = pytest.mark.timeout(300)

NAMES = st.sampled_from(["", "q1", "q2", "amq.direct", "amq.fanout", "x1", "amq.gen-x", "é" * 10])
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "bit": st.booleans(),
    "octet": st.integers(0, 255),
    "short": st.integers(0, 0xFFFF) | st.sampled_from([0, 1, 10]),
    "long": st.integers(0, 0xFFFFFFFF) | st.sampled_from([0, 1, 4096]),
    "longlong": st.integers(0, 5) | st.integers(0, 2**64 - 1),
    "shortstr": NAMES | st.text(max_size=20),
    "longstr": st.text(max_size=20),
    "table": st.dictionaries(
        st.sampled_from(["x-message-ttl", "x-expires", "x-max-length", "x-queue-type", "x-priority", "x-overflow", "a"]),
        st.none() | st.booleans() | st.integers(-(2**31), 2**31 - 1) | st.text(max_size=8) | st.floats(allow_nan=False),
        max_size=3,
    ),
}
# Methods a client may send (server-to-client ones are in the mix too: they must be refused cleanly).
METHODS = [C.INDEX_MAPPING[i] for i in sorted(C.INDEX_MAPPING)]


@st.composite
def method_frame(draw: st.DrawFn, channel: int) -> bytes:
    cls = draw(st.sampled_from(METHODS))
    m = cls.__new__(cls)
    for attr in cls.__slots__:
        setattr(m, attr, draw(VALUES[cls.amqp_type(attr)]))
    m.validate = lambda: None  # pamqp's name rules are not the broker's
    try:
        return pframe.marshal(m, channel)
    except Exception:  # a value pamqp cannot encode (e.g. a shortstr over 255 bytes): skip it
        return b""


@st.composite
def publish(draw: st.DrawFn, channel: int) -> bytes:
    body = draw(st.binary(max_size=300))
    props = C.Basic.Properties(delivery_mode=draw(st.sampled_from([None, 1, 2])))
    out = pframe.marshal(C.Basic.Publish(exchange=draw(st.sampled_from(["", "amq.direct", "x1"])), routing_key=draw(NAMES)), channel)
    out += pframe.marshal(pheader.ContentHeader(0, len(body), props), channel)
    if body:
        out += pframe.marshal(pbody.ContentBody(body), channel)
    return out


COMMON = [
    C.Queue.Declare(queue="q1"), C.Queue.Declare(queue="q2", exclusive=True), C.Basic.Consume(queue="q1"),
    C.Basic.Qos(prefetch_count=2), C.Confirm.Select(), C.Basic.Ack(1, False), C.Basic.Get(queue="q1"),
    C.Basic.Reject(1, True), C.Basic.Nack(0, True, True), C.Channel.Close(200, "", 0, 0), C.Channel.Open(),
    C.Exchange.Declare(exchange="x1", exchange_type="fanout"), C.Queue.Bind(queue="q1", exchange="x1"),
    C.Queue.Purge(queue="q1"), C.Basic.Recover(requeue=True), C.Queue.Delete(queue="q1"),
]  # fmt: skip


@st.composite
def session(draw: st.DrawFn) -> list[bytes]:
    frames = []
    for _ in range(draw(st.integers(1, 12))):
        channel = draw(st.sampled_from([1, 1, 1, 2, 0, 3]))
        kind = draw(st.sampled_from(["common", "common", "publish", "random"]))
        if kind == "common":
            frames.append(pframe.marshal(draw(st.sampled_from(COMMON)), channel))
        elif kind == "publish":
            frames.append(draw(publish(channel)))
        else:
            frames.append(draw(method_frame(channel)))
    return frames


@pytest.fixture(scope="module")
def fuzzed_broker() -> Iterator[tuple[ThreadBroker, Witness]]:
    b = ThreadBroker(consumer_timeout=None).start()
    w = Witness(b.port, min_rounds=10)
    with w:
        yield b, w
    b.stop()


EXAMPLES = int(os.environ.get("LEVERET_FUZZ_EXAMPLES", "200"))  # more: LEVERET_FUZZ_EXAMPLES=5000


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(frames=session())
def test_random_methods_never_hurt_the_broker(fuzzed_broker: tuple[ThreadBroker, Witness], frames: list[bytes]) -> None:
    must_not_hurt(fuzzed_broker, frames)


def must_not_hurt(fuzzed_broker: tuple[ThreadBroker, Witness], frames: list[bytes]) -> None:
    """Send ``frames`` on a fresh connection, then connection.close; the broker must answer (close-ok, or its
    own connection.close) or close,
    never with 541 INTERNAL_ERROR (an exception that was not a protocol error: a bug), and the
    witness must keep working."""
    b, w = fuzzed_broker
    with RawClient(b.port, timeout=5) as c:
        c.handshake()
        c.open_channel(1)
        try:
            c.send_raw(b"".join(frames) + pframe.marshal(C.Connection.Close(200, "bye", 0, 0), 0))
            while True:  # until the socket closes: close-ok to our close, or the broker's own close
                # Only connection.close is decoded: content headers may carry what the fuzzer published
                # (headers nested 5,000 deep), which pamqp here could not decode.
                raw = c.recv_frame_bytes(timeout=4)
                if raw[0] == 1 and raw[7:11] == b"\x00\x0a\x00\x33":
                    break  # close-ok to our close: the socket is ours to close (as with RabbitMQ)
                if raw[0] == 1 and raw[7:11] == b"\x00\x0a\x00\x32":
                    f = pframe.unmarshal(raw)[2]
                    assert f.reply_code != 541, f.reply_text
                    c.send(0, C.Connection.CloseOk())
        except (EOFError, BrokenPipeError, ConnectionResetError):
            pass  # closed, as it must be
        except TimeoutError:
            pytest.fail("the broker neither answered connection.close nor closed the socket")
    assert w.error is None, w.error
    assert b.app.server is not None
    wait_for(lambda: b.call(lambda: len(b.app.server.connections)) == 1, timeout=5)  # only the witness is left


# ---- valid but extreme values (issue 11) ---------------------------------------------------------------
# The same contract for sessions built from values at and past the limits: names and routing keys of 255
# bytes, argument tables nested up to and past MAX_TABLE_DEPTH or with thousands of entries, dead-letter
# and alternate-exchange arguments of 255 and 256 bytes, publishes whose headers nest 5,000 deep, many
# channels. Afterwards the witness must have kept working and the broker must have let the connection go.

LONG_NAMES = st.sampled_from(["q1", "x1", "n" * 255, "é" * 127, "k" * 254 + "!"])


def _deep(levels: int) -> Any:
    v: Any = 1
    for i in range(levels):
        v = [v] if i % 2 else {"k": v}
    return v


EXTREME_ARGS = st.dictionaries(
    st.sampled_from(["x-dead-letter-exchange", "x-dead-letter-routing-key", "alternate-exchange", "x-match", "a", "b"]),
    st.sampled_from(["", "x1", "amq.headers"]) | st.sampled_from(["d" * 255, "d" * 256])
    | st.sampled_from([31, 32, 33, 60]).map(_deep) | st.sampled_from([{f"k{i}": i for i in range(2000)}]),
    max_size=3,
)  # fmt: skip


def _unchecked(cls: Any, **fields: Any) -> Any:
    m = cls(**{k: v for k, v in fields.items() if k != "arguments"})
    m.arguments = fields.get("arguments", {})
    m.validate = lambda: None
    return m


@st.composite
def extreme_method(draw: st.DrawFn, channel: int) -> bytes:
    name, key, args = draw(LONG_NAMES), draw(LONG_NAMES), draw(EXTREME_ARGS)
    kind = draw(st.sampled_from(["queue", "exchange", "bind", "xbind", "consume", "deep_raw", "headers", "dlx"]))
    try:
        if kind == "queue":
            return pframe.marshal(_unchecked(C.Queue.Declare, queue=name, arguments=args), channel)
        if kind == "exchange":
            xtype = draw(st.sampled_from(["direct", "headers", "fanout"]))
            return pframe.marshal(_unchecked(C.Exchange.Declare, exchange=name, exchange_type=xtype, arguments=args), channel)
        if kind == "bind":
            m = _unchecked(C.Queue.Bind, queue=name, exchange=draw(st.sampled_from(["amq.headers", "x1", "amq.direct"])),
                           routing_key=key, arguments=args)  # fmt: skip
            return pframe.marshal(m, channel)
        if kind == "xbind":
            return pframe.marshal(_unchecked(C.Exchange.Bind, destination=name, source="amq.direct", routing_key=key, arguments=args), channel)
        if kind == "consume":
            return pframe.marshal(_unchecked(C.Basic.Consume, queue=name, consumer_tag=key, arguments=args), channel)
    except Exception:  # a value pamqp cannot encode (a 256-byte short string): skip it
        return b""
    if kind == "deep_raw":  # 20,000 deep: built by hand, pamqp would recurse out encoding it
        value = b"A\x00\x00\x00\x00"
        for _ in range(draw(st.sampled_from([40, 20_000]))):
            value = b"A" + struct.pack(">I", len(value)) + value
        table = struct.pack(">I", 2 + len(value)) + b"\x01k" + value
        payload = b"\x00\x32\x00\x0a\x00\x00\x02q1\x00" + table
        return b"\x01" + struct.pack(">HI", channel, len(payload)) + payload + b"\xce"
    if kind == "headers":  # a publish to amq.headers whose headers nest deep (pamqp never sees them)
        value = b"V"
        for _ in range(draw(st.sampled_from([3, 33, 5000]))):
            value = b"A" + struct.pack(">I", len(value)) + value
        props = b"\x20\x00" + struct.pack(">I", 8 + len(value)) + b"\x01aI\x00\x00\x00\x01" + b"\x01k" + value
        out = pframe.marshal(C.Basic.Publish(exchange="amq.headers", routing_key=key[:255]), channel)
        out += b"\x02" + struct.pack(">HI", channel, 12 + len(props)) + struct.pack(">HHQ", 60, 0, 1) + props + b"\xce"
        return out + b"\x03" + struct.pack(">HI", channel, 1) + b"m\xce"
    # dlx: a queue dead-lettering with a long key, a message into it, rejected
    frames = [
        _unchecked(C.Queue.Declare, queue="dl-src", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": key}),
        C.Queue.Declare(queue="q1"),
    ]
    out = b"".join(pframe.marshal(f, channel) for f in frames)
    out += pframe.marshal(C.Basic.Publish(exchange="", routing_key="dl-src"), channel)
    out += pframe.marshal(pheader.ContentHeader(0, 1, C.Basic.Properties()), channel) + pframe.marshal(pbody.ContentBody(b"m"), channel)
    return out + pframe.marshal(C.Basic.Get(queue="dl-src"), channel) + pframe.marshal(C.Basic.Reject(1, False), channel)


@st.composite
def extreme_session(draw: st.DrawFn) -> list[bytes]:
    frames = []
    for _ in range(draw(st.integers(1, 8))):
        channel = draw(st.sampled_from([1, 1, 2, 2047]))
        kind = draw(st.sampled_from(["extreme", "extreme", "common", "channels"]))
        if kind == "extreme":
            frames.append(draw(extreme_method(channel)))
        elif kind == "common":
            frames.append(pframe.marshal(draw(st.sampled_from(COMMON)), channel))
        else:
            frames.append(b"".join(pframe.marshal(C.Channel.Open(), ch) for ch in range(2, draw(st.sampled_from([5, 300])))))
    return frames


EXTREME_EXAMPLES = int(os.environ.get("LEVERET_FUZZ_EXTREME_EXAMPLES", "80"))


@settings(max_examples=EXTREME_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(frames=extreme_session())
def test_extreme_values_never_hurt_the_broker(fuzzed_broker: tuple[ThreadBroker, Witness], frames: list[bytes]) -> None:
    must_not_hurt(fuzzed_broker, frames)
