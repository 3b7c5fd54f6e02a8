"""Server-level fuzzing: random but well-framed methods over a real socket to one broker.

Every example is a fresh connection that sends a random sequence of methods (any method the protocol
knows, with random arguments drawn from small pools so they interact: declares, binds, consumes,
publishes with content, acks of plausible tags...). Whatever happens to that connection, the broker must
stay up, release it, and a second client (the :class:`Witness`) must keep publishing and consuming.
"""

from __future__ import annotations

import os
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
    b, w = fuzzed_broker
    with RawClient(b.port, timeout=5) as c:
        c.handshake()
        c.open_channel(1)
        try:
            c.send_raw(b"".join(frames) + pframe.marshal(C.Connection.Close(200, "bye", 0, 0), 0))
            while True:  # until the socket closes: close-ok to our close, or the broker's own close
                _, f = c.recv(timeout=4)
                if isinstance(f, C.Connection.Close):
                    c.send(0, C.Connection.CloseOk())
        except (EOFError, BrokenPipeError, ConnectionResetError):
            pass  # closed, as it must be
        except TimeoutError:
            pytest.fail("the broker neither answered connection.close nor closed the socket")
    assert w.error is None, w.error
    assert b.app.server is not None
    wait_for(lambda: b.call(lambda: len(b.app.server.connections)) == 1, timeout=5)  # only the witness is left
