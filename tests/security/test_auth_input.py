"""What a client can put in a login response: bounded work, a 403, never a deep recursion."""

from __future__ import annotations

import struct
import tracemalloc

import pytest

from leveret.errors import ConnectionError_
from leveret.server import auth


def deep_amqplain(depth: int) -> bytes:
    """An AMQPLAIN response (a field table without its length prefix) whose LOGIN is an array nested
    ``depth`` deep."""
    value = b"A" + struct.pack(">I", 0)
    for _ in range(depth - 1):
        value = b"A" + struct.pack(">I", len(value)) + value
    return b"\x05LOGIN" + value


def test_deep_amqplain_response_is_refused_without_recursing() -> None:
    response = deep_amqplain(20_000)  # ~100 KB, fits a frame
    tracemalloc.start()
    try:
        with pytest.raises(ConnectionError_) as err:
            auth.parse_response("AMQPLAIN", response)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.code == 403
    # pamqp decoding it recursively held ~tens of MB of frames and traceback; the walk holds a stack.
    assert peak < 5 << 20, f"peak {peak} bytes"


def test_amqplain_within_the_depth_limit_still_logs_in() -> None:
    from pamqp import encode

    table = encode.field_table({"LOGIN": "guest", "PASSWORD": "guest", "x": [[[1]]]})[4:]
    assert auth.parse_response("AMQPLAIN", table) == ("guest", "guest")
