"""The model's one validation of names, keys and arguments, and its readers of raw properties, against
any input (issue 11, items 1 and 3).

The HTTP API and definitions imports call these same VHost methods (management/live.py), so what is
checked here is checked for every way in.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leveret.errors import AMQPError, ChannelError, ReplyCode
from leveret.limits import MAX_TABLE_DEPTH
from leveret.model import properties as P
from leveret.model.headers import headers_table
from leveret.model.validation import value_depth
from leveret.model.vhost import VHost
from leveret.storage.memory import MemoryStore


def deep(levels: int, leaf: Any = 1) -> Any:
    v: Any = leaf
    for i in range(levels):
        v = [v] if i % 2 else {"k": v}
    return v


@pytest.fixture
def vh() -> VHost:
    return VHost("/", MemoryStore())


def refused(fn: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(ChannelError) as e:
        fn(*args, **kw)
    assert e.value.code == ReplyCode.PRECONDITION_FAILED
    return e.value.text


def test_value_depth_is_iterative() -> None:
    assert value_depth(1) == 0
    assert value_depth({"a": [1]}) == 2
    assert value_depth(deep(MAX_TABLE_DEPTH)) == MAX_TABLE_DEPTH
    assert value_depth(deep(200_000), stop=10**9) == 200_000  # recursion would have died at ~1,000
    assert value_depth(deep(200_000)) == MAX_TABLE_DEPTH + 1  # stops once over the limit


def test_argument_depth_counts_the_arguments_table(vh: VHost) -> None:
    vh.declare_queue(None, "ok", arguments={"a": deep(MAX_TABLE_DEPTH - 1)})
    text = refused(vh.declare_queue, None, "no", arguments={"a": deep(MAX_TABLE_DEPTH)})
    assert text == (
        f"PRECONDITION_FAILED - invalid arg 'a' for queue 'no' in vhost '/': tables and arrays nested deeper "
        f"than {MAX_TABLE_DEPTH} levels"
    )
    assert "no" not in vh.queues
    refused(vh.declare_exchange, "x", "direct", arguments={"a": deep(100_000)})
    vh.declare_queue(None, "q")
    refused(vh.bind, None, "q", "amq.direct", "k", {"a": deep(MAX_TABLE_DEPTH)})
    refused(vh.bind_exchange, "amq.fanout", "amq.direct", "k", {"a": deep(MAX_TABLE_DEPTH)})


@pytest.mark.parametrize("name", ["q" * 256, "é" * 128, "\ud800"])
def test_names_must_fit_a_short_string(vh: VHost, name: str) -> None:
    assert "queue name is" in refused(vh.declare_queue, None, name)
    assert "exchange name is" in refused(vh.declare_exchange, name, "direct")
    vh.declare_queue(None, "q" * 255)
    vh.declare_exchange("x" * 255, "fanout")


def test_routing_keys_must_fit_a_short_string(vh: VHost) -> None:
    vh.declare_queue(None, "q")
    vh.bind(None, "q", "amq.direct", "k" * 255, {})
    for call in (
        lambda: vh.bind(None, "q", "amq.direct", "k" * 256, {}),
        lambda: vh.unbind(None, "q", "amq.direct", "k" * 256, {}),
        lambda: vh.bind_exchange("amq.fanout", "amq.direct", "k" * 256, {}),
        lambda: vh.unbind_exchange("amq.fanout", "amq.direct", "k" * 256, {}),
    ):
        assert "routing key is too long: 256 bytes" in refused(call)


@pytest.mark.parametrize("key", ["x-dead-letter-exchange", "x-dead-letter-routing-key"])
def test_short_string_arguments_of_queues(vh: VHost, key: str) -> None:
    args = {"x-dead-letter-exchange": "dlx", key: "k" * 256}
    assert "{value_too_long,256}" in refused(vh.declare_queue, None, "q", arguments=args)
    vh.declare_queue(None, "q", arguments={**args, key: "k" * 255})


def test_alternate_exchange_must_fit(vh: VHost) -> None:
    refused(vh.declare_exchange, "x", "direct", arguments={"alternate-exchange": b"a" * 256})
    vh.declare_exchange("x", "direct", arguments={"alternate-exchange": "a" * 255})


# ---- readers of raw properties: any bytes give a value or an AMQPError, never another exception -----

READERS = {
    "headers_table": headers_table,
    "priority": P.priority,
    "with_delivery_count": lambda p: P.with_delivery_count(p, 3),
    "sender_selected": P.sender_selected,
    "expiration_ms": P.expiration_ms,
    "check_user_id": lambda p: P.check_user_id(p, "guest"),
    "dead_letter": lambda p: P.dead_letter(
        p, reason="rejected", queue="q", exchange="", routing_key="k", new_routing_key=False, now=0
    ),
}


def _headers_props(table_body: bytes, flags: int = 0x2000) -> bytes:
    return struct.pack(">H", flags) + struct.pack(">I", len(table_body)) + table_body


_TAGS = b"tbBsuIifLldTDVSxFAZ\x00"


@st.composite
def header_like(draw: st.DrawFn) -> bytes:
    """Property sections whose headers table is plausible: entries with real and bad tags, lengths
    right or wrong, containers nested a little or a lot."""
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from([b"CC", b"BCC", b"x-death", b"a", b"x-delivery-count", b""]))
        tag = draw(st.sampled_from(list(_TAGS)))
        inner = draw(st.binary(max_size=12))
        if draw(st.booleans()):
            inner = struct.pack(">I", max(0, len(inner) + draw(st.sampled_from([0, 0, 0, 1, -1, 100])))) + inner
        parts.append(bytes([len(key)]) + key + bytes([tag]) + inner)
    body = b"".join(parts)
    flags = draw(st.sampled_from([0x2000, 0x2000 | 0x0100, 0x2000 | 0x0010, 0x8000 | 0x2000, 0xFFFF]))
    return _headers_props(body, flags)[: draw(st.integers(0, 400))]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(props=st.binary(max_size=64) | header_like())
def test_property_readers_never_raise_anything_but_amqp_errors(props: bytes) -> None:
    for name, read in READERS.items():
        try:
            read(props)
        except AMQPError:
            pass
        except Exception as exc:  # pragma: no cover - the bug this test looks for
            raise AssertionError(f"{name}({props!r}) raised {exc!r}") from exc


def test_a_header_nested_far_too_deep_is_read_without_recursion() -> None:
    value = b"A" + struct.pack(">I", 0)
    for _ in range(50_000):
        value = b"A" + struct.pack(">I", len(value)) + value
    props = _headers_props(b"\x01a" + b"I\x00\x00\x00\x07" + b"\x04deep" + value)
    table = headers_table(props)
    assert table["a"] == 7 and "deep" in table and table["deep"] != []
    P.dead_letter(props, reason="expired", queue="q", exchange="", routing_key="k", new_routing_key=False, now=0)
