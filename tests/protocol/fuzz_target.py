"""The protocol layer's fuzz target, shared by the CI test (tests/protocol/test_fuzz.py) and the long
runs (fuzz/fuzz_protocol.py, atheris or hypothesis).

Contract under test (protocol/connection.py): any bytes give events, or raise :class:`AMQPError` with a
valid reply code and a reply text that fits a shortstr, or :class:`BadProtocolHeader`. Nothing else.
"""

from __future__ import annotations

from pamqp import commands as C
from pamqp import frame as F
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from leveret.errors import AMQPError, ReplyCode
from leveret.protocol import codec
from leveret.protocol.connection import AMQPConnection, BadProtocolHeader
from leveret.protocol.events import Ack, HeaderReceived, Heartbeat, MethodReceived, Nack, Publish, Reject

HANDSHAKE = (
    codec.PROTOCOL_HEADER
    + F.marshal(C.Connection.StartOk(client_properties={}, mechanism="PLAIN", response="\0guest\0guest"), 0)
    + F.marshal(C.Connection.TuneOk(2047, 4096, 60), 0)
    + F.marshal(C.Connection.Open("/"), 0)
    + F.marshal(C.Channel.Open(), 1)
)

# A valid session to mutate: most mutations land deep in the parser instead of failing at the header.
SEED = (
    F.marshal(C.Basic.Publish(0, "", "q", True, False), 1)
    + F.marshal(ContentHeader(0, 5, C.Basic.Properties(delivery_mode=2, headers={"a": 1})), 1)
    + F.marshal(ContentBody(b"hello"), 1)
    + F.marshal(C.Queue.Declare(queue="tasks", durable=True, arguments={"x-message-ttl": 5}), 1)
    + F.marshal(C.Basic.Ack(5, True), 1)
    + F.marshal(C.Basic.Nack(6, False, True), 1)
    + F.marshal(C.Channel.Open(), 2)
    + F.marshal(C.Basic.Consume(queue="tasks", arguments={"x-priority": 1}), 2)
    + codec.heartbeat()
    + F.marshal(C.Channel.Close(200, "bye", 0, 0), 2)
    + F.marshal(C.Connection.Close(200, "bye", 0, 0), 0)
)

EVENTS = (Ack, HeaderReceived, Heartbeat, MethodReceived, Nack, Publish, Reject)


def run(
    data: bytes, *, after_handshake: bool, cuts: list[int] | None = None, frame_max: int = 4096, channel_max: int = 16
) -> None:
    """Feed ``data`` (in pieces at ``cuts``) to a fresh connection; raise AssertionError on a broken contract."""
    conn = AMQPConnection(
        frame_max=frame_max, channel_max=channel_max, max_message_size=1 << 16, max_incomplete_content=1 << 17
    )
    pieces = []
    prev = 0
    for c in sorted(cuts or []) + [len(data)]:
        pieces.append(data[prev:c])
        prev = max(prev, c)
    try:
        if after_handshake:
            conn.receive_data(HANDSHAKE)
        for p in pieces:
            events = conn.receive_data(p)
            assert all(isinstance(e, EVENTS) for e in events), events
    except BadProtocolHeader:
        assert not after_handshake
    except AMQPError as err:
        assert isinstance(err.code, ReplyCode) and err.code >= 300, err.code
        assert len(err.text.encode("utf-8")) <= 255
        assert err.text.startswith(err.code.name + " - ")
        assert 0 <= err.class_id <= 0xFFFF and 0 <= err.method_id <= 0xFFFF
        assert all(isinstance(e, EVENTS) for e in err.events)
    # Any other exception propagates: that is the bug the fuzzer looks for.


def run_bytes(data: bytes) -> None:
    """One byte-string entry point (for atheris): the first byte picks the mode and a cut."""
    if not data:
        return
    mode, rest = data[0], data[1:]
    if mode & 1:
        rest = SEED[: (mode >> 1) * len(SEED) // 128] + rest  # a valid prefix of varying length, then the input
    cut = [len(rest) * (mode >> 4) // 16] if mode & 2 else None
    run(rest, after_handshake=bool(mode & 4) or bool(mode & 1), cuts=cut)
