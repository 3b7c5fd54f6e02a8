"""Field tables are walked without recursion, and a table too deep costs nothing to refuse (issue 11, item 1)."""

from __future__ import annotations

import struct
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands as C
from pamqp import encode
from pamqp import frame as F

from leveret.errors import ConnectionError_, ReplyCode
from leveret.limits import MAX_TABLE_DEPTH, TableError, scan_table
from leveret.protocol.connection import AMQPConnection
from leveret.protocol.tables import TABLE_METHODS, check_method
from tests.protocol.fuzz_target import HANDSHAKE


def nested_array(depth: int) -> bytes:
    """An 'A' value ``depth`` arrays deep, built from the inside out without recursion."""
    v = b"A" + struct.pack(">I", 0)
    for _ in range(depth - 1):
        v = b"A" + struct.pack(">I", len(v)) + v
    return v


def table_with(value: bytes, key: bytes = b"k") -> bytes:
    body = bytes([len(key)]) + key + value
    return struct.pack(">I", len(body)) + body


def declare_frame(table: bytes, queue: str = "q") -> bytes:
    """queue.declare on channel 1 whose arguments are the raw ``table``."""
    args = struct.pack(">HHH", 50, 10, 0) + bytes([len(queue)]) + queue.encode() + b"\x00" + table
    return b"\x01" + struct.pack(">HI", 1, len(args)) + args + b"\xce"


def opened() -> AMQPConnection:
    conn = AMQPConnection(frame_max=1 << 20)
    conn.receive_data(HANDSHAKE)
    return conn


def depth_of(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max((depth_of(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((depth_of(x) for x in v), default=0)
    return 0


scalars = st.none() | st.booleans() | st.integers(-(2**31), 2**31 - 1) | st.text(max_size=5) | st.floats(-1000.0, 1000.0)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=12
)


@settings(max_examples=300, deadline=None)
@given(table=st.dictionaries(st.text(max_size=6), values, max_size=4), trailer=st.binary(max_size=4))
def test_scan_agrees_with_pamqp_on_valid_tables(table: dict[str, Any], trailer: bytes) -> None:
    raw = encode.field_table(table)
    assert scan_table(raw + trailer, 0, None) == (len(raw), max(1, depth_of(table)))


def test_depth_counts_the_outer_table_and_every_container() -> None:
    assert scan_table(encode.field_table({}))[1] == 1
    assert scan_table(encode.field_table({"a": 1}))[1] == 1
    assert scan_table(encode.field_table({"a": [{"b": 1}]}))[1] == 3
    # RabbitMQ's x-death header: headers table, x-death array, death table, routing-keys array
    x_death = {"x-death": [{"count": 1, "routing-keys": ["rk"], "queue": "q"}]}
    assert scan_table(encode.field_table(x_death))[1] == 4


def test_the_limit_is_exact() -> None:
    assert scan_table(table_with(nested_array(MAX_TABLE_DEPTH - 1)))[1] == MAX_TABLE_DEPTH
    with pytest.raises(TableError) as e:
        scan_table(table_with(nested_array(MAX_TABLE_DEPTH)))
    assert e.value.too_deep


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x00\x00",
        struct.pack(">I", 5) + b"\x01k",  # runs past the end
        table_with(b"Z"),  # unknown type
        table_with(b"S" + struct.pack(">I", 99) + b"ab"),  # value past the table
        table_with(b"I\x00"),  # fixed-size value cut short
        table_with(b"A" + struct.pack(">I", 3) + b"F" + struct.pack(">I", 0)),  # item past its array
        struct.pack(">I", 2) + b"\x05k",  # key past the table
    ],
)
def test_malformed_tables_raise_table_error(raw: bytes) -> None:
    with pytest.raises(TableError) as e:
        scan_table(raw)
    assert not e.value.too_deep


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=200))
def test_any_bytes_give_a_result_or_table_error(data: bytes) -> None:
    try:
        end, depth = scan_table(data, 0, None)
    except TableError:
        return
    assert 4 <= end <= len(data) and depth >= 1


def test_every_method_with_a_table_is_pre_scanned() -> None:
    names = sorted(C.INDEX_MAPPING[i].name for i in TABLE_METHODS)
    assert names == sorted(
        ["Connection.Start", "Connection.StartOk", "Exchange.Declare", "Exchange.Bind", "Exchange.Unbind",
         "Queue.Declare", "Queue.Bind", "Queue.Unbind", "Basic.Consume"]
    )  # fmt: skip


@pytest.mark.parametrize(
    "method",
    [
        C.Queue.Declare(queue="q", durable=True, arguments={"a": [1, {"b": "c"}]}),
        C.Queue.Bind(queue="q", exchange="x", routing_key="rk", arguments={"x-match": "any"}),
        C.Queue.Unbind(queue="q", exchange="x", routing_key="rk", arguments={}),
        C.Exchange.Declare(exchange="x", exchange_type="topic", arguments={"alternate-exchange": "ae"}),
        C.Exchange.Bind(destination="d", source="s", routing_key="k", arguments={"a": 1}),
        C.Basic.Consume(queue="q", consumer_tag="t", arguments={"x-priority": 3}),
        C.Connection.StartOk(client_properties={"capabilities": {"a": True}}, mechanism="PLAIN", response="\0a\0b"),
    ],
)
def test_valid_methods_pass_the_pre_scan(method: Any) -> None:
    payload = F.marshal(method, 1)[7:-1]
    check_method(method.index, payload, 4)


def test_a_deep_frame_is_refused_and_costs_nothing() -> None:
    """The issue's repro: an array nested 20,000 deep in a ~100 KB queue.declare. pamqp's recursion
    cost 20-25 MB each time; the pre-scan refuses it before decoding, with a clear 501."""
    frame = declare_frame(table_with(nested_array(20_000)))
    assert 90_000 < len(frame) < 110_000
    conn = opened()
    tracemalloc.start()
    try:
        with pytest.raises(ConnectionError_) as e:
            conn.receive_data(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, peak  # the frame's own copies (~100 KB each), no decode
    assert e.value.code == ReplyCode.FRAME_ERROR
    assert (e.value.class_id, e.value.method_id) == (50, 10)
    assert f"nested deeper than {MAX_TABLE_DEPTH} levels" in e.value.text


def test_depth_at_the_limit_is_decoded() -> None:
    conn = opened()
    events = conn.receive_data(declare_frame(table_with(nested_array(MAX_TABLE_DEPTH - 1))))
    assert type(events[0].method) is C.Queue.Declare  # type: ignore[union-attr]


def test_a_deep_client_properties_table_closes_the_connection() -> None:
    conn = AMQPConnection()
    conn.receive_data(b"AMQP\x00\x00\x09\x01")
    props = table_with(nested_array(1000), b"capabilities")
    args = struct.pack(">HH", 10, 11) + props + b"\x05PLAIN" + struct.pack(">I", 2) + b"\0a" + b"\x05en_US"
    with pytest.raises(ConnectionError_) as e:
        conn.receive_data(b"\x01\x00\x00" + struct.pack(">I", len(args)) + args + b"\xce")
    assert e.value.code == ReplyCode.FRAME_ERROR and (e.value.class_id, e.value.method_id) == (10, 11)


def test_a_malformed_table_gets_rabbitmqs_cannot_decode() -> None:
    conn = opened()
    with pytest.raises(ConnectionError_) as e:
        conn.receive_data(declare_frame(table_with(b"Z")))
    assert e.value.code == ReplyCode.FRAME_ERROR
    assert e.value.text.startswith("FRAME_ERROR - cannot decode <<")
