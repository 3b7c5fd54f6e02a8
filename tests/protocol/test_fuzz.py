"""Fuzzing the sans-IO protocol layer: any bytes give events or a protocol error, never another exception.

Bounded for CI; fuzz/fuzz_protocol.py runs the same target for as long as you like.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands as C

from tests.protocol.fuzz_target import SEED, run, run_bytes

CI = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@CI
@given(data=st.binary(max_size=600), after_handshake=st.booleans(), cuts=st.lists(st.integers(0, 600), max_size=4))
def test_any_bytes(data: bytes, after_handshake: bool, cuts: list[int]) -> None:
    run(data, after_handshake=after_handshake, cuts=cuts)


@st.composite
def mutated_seed(draw: st.DrawFn) -> bytes:
    data = bytearray(SEED)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["set", "insert", "delete"]))
        i = draw(st.integers(0, len(data) - 1))
        if op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[i : i + draw(st.integers(1, 8))]
    return bytes(data)


@CI
@given(data=mutated_seed(), cuts=st.lists(st.integers(0, len(SEED)), max_size=3))
def test_mutated_valid_session(data: bytes, cuts: list[int]) -> None:
    run(data, after_handshake=True, cuts=cuts)


METHOD_IDS = sorted(C.INDEX_MAPPING)


@st.composite
def well_framed(draw: st.DrawFn) -> bytes:
    """Valid frame heads and ends around known method ids with arbitrary arguments, headers and bodies."""
    out = b""
    for _ in range(draw(st.integers(1, 8))):
        ftype = draw(st.sampled_from([1, 1, 1, 2, 3, 8]))
        channel = draw(st.sampled_from([0, 1, 2, 3, 17]))
        if ftype == 1:
            payload = draw(st.sampled_from(METHOD_IDS)).to_bytes(4, "big") + draw(st.binary(max_size=40))
        else:
            payload = draw(st.binary(max_size=40))
        out += bytes([ftype]) + channel.to_bytes(2, "big") + len(payload).to_bytes(4, "big") + payload + b"\xce"
    return out


@CI
@given(data=well_framed())
def test_well_framed_garbage(data: bytes) -> None:
    run(data, after_handshake=True)


@CI
@given(data=st.binary(max_size=800))
def test_atheris_entry_point(data: bytes) -> None:
    run_bytes(data)


# ---- valid but extreme values (issue 11): depth, length, counts --------------------------------------
# Frames a well-behaved encoder could produce, pushed to the limits: tables and arrays nested from a few
# levels to far past MAX_TABLE_DEPTH, tables with thousands of entries, 255-byte names and keys (and
# length bytes that claim more than the frame holds), content headers filling a frame, the highest
# channel numbers, many channels at once. The contract is the same: events or a protocol error.

EXTREME_FRAME_MAX = 1 << 20


def _frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return bytes([ftype]) + channel.to_bytes(2, "big") + len(payload).to_bytes(4, "big") + payload + b"\xce"


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


@st.composite
def extreme_value(draw: st.DrawFn) -> bytes:
    """One field value: nested containers (depth up to 20,000), or a big flat table, or a long string."""
    kind = draw(st.sampled_from(["nest", "nest", "wide", "string", "scalar"]))
    if kind == "nest":
        depth = draw(st.sampled_from([1, 2, 4, 30, 31, 32, 33, 100, 1000, 20_000]))
        v = draw(st.sampled_from([b"V", b"I\x00\x00\x00\x01", b"S" + _u32(0)]))
        for _ in range(depth):
            if draw(st.booleans()) or depth > 100:
                v = b"A" + _u32(len(v)) + v
            else:
                v = b"F" + _u32(2 + len(v)) + b"\x01k" + v
        return v
    if kind == "wide":
        n = draw(st.sampled_from([10, 1000, 10_000]))
        body = b"".join(b"\x01k" + b"b\x01" for _ in range(n))
        return b"F" + _u32(len(body)) + body
    if kind == "string":
        return b"S" + _u32(draw(st.sampled_from([255, 256, 65536]))) + b"s" * draw(st.sampled_from([255, 256, 65536]))
    return draw(st.sampled_from([b"t\x01", b"l" + bytes(8), b"D\x02" + bytes(4), b"T" + bytes(8), b"x" + _u32(1) + b"z"]))


@st.composite
def extreme_table(draw: st.DrawFn) -> bytes:
    entries = b"".join(
        bytes([len(k)]) + k + draw(extreme_value())
        for k in draw(st.lists(st.sampled_from([b"", b"x-death", b"k" * 255, b"alternate-exchange"]), max_size=3))
    )
    length = len(entries) + draw(st.sampled_from([0, 0, 0, 0, 1, -1]))
    return _u32(max(0, length)) + entries


def _shortstr(draw: st.DrawFn) -> bytes:
    n = draw(st.sampled_from([0, 1, 254, 255]))
    s = draw(st.sampled_from([b"q", "é".encode(), b"\xff"])) * 255
    claimed = draw(st.sampled_from([n, n, 255]))  # a length byte that may claim more than follows
    return bytes([claimed]) + s[:n]


@st.composite
def extreme_frames(draw: st.DrawFn) -> bytes:
    out = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["declare", "bind", "consume", "start_ok", "exchange", "header", "channels"]))
        channel = draw(st.sampled_from([1, 2, 15, 16, 65535]))
        table = draw(extreme_table())
        if kind == "declare":
            payload = b"\x00\x32\x00\x0a\x00\x00" + _shortstr(draw) + b"\x02" + table
        elif kind == "bind":
            payload = b"\x00\x32\x00\x14\x00\x00" + _shortstr(draw) + _shortstr(draw) + _shortstr(draw) + b"\x00" + table
        elif kind == "consume":
            payload = b"\x00\x3c\x00\x14\x00\x00" + _shortstr(draw) + _shortstr(draw) + b"\x00" + table
        elif kind == "exchange":
            payload = b"\x00\x28\x00\x0a\x00\x00" + _shortstr(draw) + b"\x06direct" + b"\x00" + table
        elif kind == "start_ok":
            channel = 0
            payload = b"\x00\x0a\x00\x0b" + table + b"\x05PLAIN" + _u32(12) + b"\x00guest\x00guest" + b"\x05en_US"
        elif kind == "header":  # basic.publish with a 255-byte key, a header filling the frame, some body
            out.append(_frame(1, channel, b"\x00\x3c\x00\x28\x00\x00\x00" + _shortstr(draw) + b"\x00"))
            size = draw(st.sampled_from([0, 1, 1 << 16, (1 << 16) + 1, 1 << 17, (1 << 17) + 1]))
            props = b"\x20\x00" + table
            props += b"\x00" * draw(st.sampled_from([0, EXTREME_FRAME_MAX - 8 - 12 - len(props)]))
            payload = b"\x00\x3c\x00\x00" + size.to_bytes(8, "big") + props
            out.append(_frame(2, channel, payload[: EXTREME_FRAME_MAX - 8]))
            payload = bytes(min(size, draw(st.sampled_from([0, 100, 1 << 16]))))
            kind = "body"
        else:  # many channels opened at once, past channel_max
            out.append(b"".join(_frame(1, ch, b"\x00\x14\x00\x0a\x00") for ch in range(2, draw(st.sampled_from([3, 17, 40])))))
            continue
        out.append(_frame(3 if kind == "body" else 1, channel, payload))
    return b"".join(out)


EXTREME = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@EXTREME
@given(data=extreme_frames(), cuts=st.lists(st.integers(0, 1 << 17), max_size=2))
def test_valid_but_extreme_values(data: bytes, cuts: list[int]) -> None:
    run(data, after_handshake=True, cuts=cuts, frame_max=EXTREME_FRAME_MAX)
