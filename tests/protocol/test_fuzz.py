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
