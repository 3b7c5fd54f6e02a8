"""The hand-written hot-path codec agrees with pamqp byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as C
from pamqp import frame as F
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from leveret.protocol import codec

# pamqp (the reference) refuses names outside this alphabet, so compare on it.
names = st.text(alphabet="abcXYZ019-_.:@#,/+ ", max_size=40)
free_text = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)
tags = st.integers(min_value=1, max_value=2**63 - 1)  # pamqp encodes longlong as signed


def _props(**kw: object) -> tuple[C.Basic.Properties, bytes]:
    """pamqp properties and the raw property section pamqp would write for them."""
    p = C.Basic.Properties(**kw)  # type: ignore[arg-type]
    raw = F.marshal(ContentHeader(0, 5, p), 1)
    return p, raw[7 + 12 : -1]  # strip frame head, class/weight/body size, frame end


def _pamqp_content(channel: int, props: C.Basic.Properties, body: bytes, frame_max: int) -> bytes:
    out = F.marshal(ContentHeader(0, len(body), props), channel)
    chunk = frame_max - 8
    for i in range(0, len(body), chunk):
        out += F.marshal(ContentBody(body[i : i + chunk]), channel)
    return out


@given(channel=st.integers(1, 2047), ctag=free_text, tag=tags, redelivered=st.booleans(), exchange=names, rk=names,
       body=st.binary(max_size=300))  # fmt: skip
def test_deliver_matches_pamqp(channel: int, ctag: str, tag: int, redelivered: bool, exchange: str, rk: str, body: bytes) -> None:
    props, raw = _props(content_type="text/plain", delivery_mode=2, headers={"x": 1, "y": "z"})
    ours = codec.encode_deliver(
        channel, codec.shortstr(ctag), tag, redelivered, codec.shortstr(exchange), codec.shortstr(rk), raw, body, 4096
    )
    method = F.marshal(C.Basic.Deliver(ctag, tag, redelivered, exchange, rk), channel)
    assert ours == method + _pamqp_content(channel, props, body, 4096)


def test_deliver_splits_large_bodies_like_pamqp() -> None:
    props, raw = _props(delivery_mode=1)
    body = bytes(range(256)) * 100  # 25,600 bytes over 4,096-byte frames
    ours = codec.encode_deliver(1, codec.shortstr("c"), 7, False, b"\x00", codec.shortstr("q"), raw, body, 4096)
    assert ours == F.marshal(C.Basic.Deliver("c", 7, False, "", "q"), 1) + _pamqp_content(1, props, body, 4096)


@pytest.mark.parametrize("size", [1, 4096 - 9, 4096 - 8, 4096 - 7, 2 * (4096 - 8)])
def test_deliver_at_the_frame_size_boundary_matches_pamqp(size: int) -> None:
    props, raw = _props(delivery_mode=2)
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    ours = codec.encode_deliver(5, codec.shortstr("ct"), 2**40, True, codec.shortstr("x"), codec.shortstr("k"), raw, body, 4096)
    assert ours == F.marshal(C.Basic.Deliver("ct", 2**40, True, "x", "k"), 5) + _pamqp_content(5, props, body, 4096)


def test_shortstr_remembers_a_bounded_number_of_values() -> None:
    for i in range(3 * codec._SHORTSTRS_KEPT):
        assert codec.shortstr(f"key-{i}") == bytes((len(f"key-{i}"),)) + f"key-{i}".encode()
    assert 0 < len(codec._shortstrs) <= codec._SHORTSTRS_KEPT
    long = "é" * 200  # 400 bytes: cut at the last whole character, cached or not
    assert codec.shortstr(long) == codec.shortstr(long) == bytes((254,)) + ("é" * 127).encode()


def test_empty_body_has_no_body_frame() -> None:
    props, raw = _props()
    ours = codec.encode_deliver(3, codec.shortstr("c"), 1, False, b"\x00", b"\x01q", raw, b"", 131072)
    assert ours == F.marshal(C.Basic.Deliver("c", 1, False, "", "q"), 3) + F.marshal(ContentHeader(0, 0, props), 3)


@given(tag=tags, redelivered=st.booleans(), exchange=names, rk=names, count=st.integers(0, 2**32 - 1), body=st.binary(max_size=100))
def test_get_ok_matches_pamqp(tag: int, redelivered: bool, exchange: str, rk: str, count: int, body: bytes) -> None:
    props, raw = _props(message_id="m1", priority=3)
    ours = codec.encode_get_ok(2, tag, redelivered, codec.shortstr(exchange), codec.shortstr(rk), count, raw, body, 131072)
    assert ours == F.marshal(C.Basic.GetOk(tag, redelivered, exchange, rk, count), 2) + _pamqp_content(2, props, body, 131072)


@given(exchange=names, rk=names, body=st.binary(max_size=100))
def test_return_matches_pamqp(exchange: str, rk: str, body: bytes) -> None:
    props, raw = _props(correlation_id="abc")
    ours = codec.encode_return(1, 312, "NO_ROUTE", exchange, rk, raw, body, 131072)
    assert ours == F.marshal(C.Basic.Return(312, "NO_ROUTE", exchange, rk), 1) + _pamqp_content(1, props, body, 131072)


@given(channel=st.integers(1, 65535), tag=tags, multiple=st.booleans())
def test_confirm_ack_and_nack_match_pamqp(channel: int, tag: int, multiple: bool) -> None:
    assert codec.encode_ack(channel, tag, multiple) == F.marshal(C.Basic.Ack(tag, multiple), channel)
    assert codec.encode_nack(channel, tag, multiple) == F.marshal(C.Basic.Nack(tag, multiple, requeue=False), channel)


@given(exchange=names, rk=names, mandatory=st.booleans(), immediate=st.booleans())
def test_decode_publish_agrees_with_pamqp(exchange: str, rk: str, mandatory: bool, immediate: bool) -> None:
    frame = F.marshal(C.Basic.Publish(0, exchange, rk, mandatory, immediate), 1)
    payload = frame[7 + 4 : -1]
    assert codec.decode_publish(payload) == (exchange, rk, mandatory, immediate)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, 0),
        ({"delivery_mode": 2}, 2),
        ({"delivery_mode": 1, "content_type": "application/json"}, 1),
        ({"delivery_mode": 2, "content_type": "a", "content_encoding": "gzip", "headers": {"k": [1, "x"], "n": {"a": 1}}}, 2),
        ({"content_type": "a", "headers": {"k": 1}, "priority": 5}, 0),
    ],
)
def test_delivery_mode_from_raw_properties(kw: dict[str, object], expected: int) -> None:
    _, raw = _props(**kw)
    assert codec.delivery_mode(raw) == expected


@pytest.mark.parametrize("size", [0, 1, 4088, 4089, 25_600, 65_536])
def test_deliver_parts_are_the_same_bytes_and_refer_to_the_body(size: int) -> None:
    props, raw = _props(delivery_mode=2)
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    args = (2, codec.shortstr("c"), 9, True, codec.shortstr("x"), codec.shortstr("q"), raw, body, 4096)
    parts = codec.deliver_parts(*args)
    assert b"".join(parts) == codec.encode_deliver(*args)
    views = [p for p in parts if isinstance(p, memoryview)]
    assert all(v.obj is body for v in views), "body frames point into the body, not at copies"
    assert sum(map(len, views)) == size
