"""The arguments codec (leveret.storage.codec): lossless, canonical, and safe at any depth."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leveret.storage.codec import (
    MAX_DEPTH,
    MAX_TABLE_DEPTH,
    ArgumentsTooDeep,
    decode_arguments,
    encode_arguments,
    text_depth,
)

# Every value type an AMQP field table can hold (as the protocol codec decodes them).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.datetimes(timezones=st.just(UTC)),
)
keys = st.one_of(st.text(max_size=8), st.sampled_from(["$bytes", "$dict", "$decimal", "$datetime"]))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=30,
)
tables = st.dictionaries(keys, values, max_size=5)


@given(tables)
@settings(max_examples=300, deadline=None)
def test_round_trip_is_lossless_and_canonical(table: dict[str, Any]) -> None:
    text = encode_arguments(table)
    back = decode_arguments(text)
    assert back == table
    assert encode_arguments(back) == text


def nested_tables(levels: int, leaf: Any = 1, key: str = "k") -> dict[str, Any]:
    """``levels`` tables one inside the other (the outermost is level 1)."""
    value: Any = leaf
    for _ in range(levels):
        value = {key: value}
    return dict(value)


def nested_arrays(levels: int) -> dict[str, Any]:
    value: Any = "leaf"
    for _ in range(levels - 1):
        value = [value]
    return {"a": value}


@pytest.mark.parametrize("levels", [489, MAX_DEPTH - 1, MAX_DEPTH])
def test_deep_tables_round_trip(levels: int) -> None:
    # 489 is the depth that once made recovery die with RecursionError in _untag.
    table = nested_tables(levels)
    text = encode_arguments(table)
    assert text_depth(text) == levels
    assert decode_arguments(text) == table


def test_deep_arrays_round_trip() -> None:
    table = nested_arrays(MAX_DEPTH)
    assert decode_arguments(encode_arguments(table)) == table


def test_max_table_depth_fits_even_when_every_level_is_wrapped() -> None:
    # A table whose only key is a tag name takes two levels ({"$dict": {...}}); a bytes leaf one more.
    table = nested_tables(MAX_TABLE_DEPTH, leaf=b"\x00", key="$bytes")
    text = encode_arguments(table)
    assert text_depth(text) <= MAX_DEPTH
    assert decode_arguments(text) == table
    with pytest.raises(ArgumentsTooDeep):
        encode_arguments(nested_tables(MAX_TABLE_DEPTH + 1, leaf=b"\x00", key="$bytes"))


@pytest.mark.parametrize("make", [nested_tables, nested_arrays])
@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 20_000])
def test_too_deep_values_raise_value_error_not_recursion_error(make: Any, levels: int) -> None:
    with pytest.raises(ArgumentsTooDeep) as e:
        encode_arguments(make(levels))
    assert isinstance(e.value, ValueError)


def test_a_table_that_contains_itself_is_refused() -> None:
    table: dict[str, Any] = {}
    table["me"] = table
    with pytest.raises(ArgumentsTooDeep):
        encode_arguments(table)


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 1_500, 100_000])
def test_too_deep_stored_text_raises_value_error(levels: int) -> None:
    # Text an older version could have written (or a damaged file): never a RecursionError.
    for text in ('{"k":' * levels + "1" + "}" * levels, '{"a":' + "[" * levels + "]" * levels + "}"):
        with pytest.raises(ArgumentsTooDeep):
            decode_arguments(text)


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    table = {"s": "[" * 2000 + '\\"{' * 1000}
    assert decode_arguments(encode_arguments(table)) == table


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        "1",
        '"s"',
        '{"a": {"$bytes": 5}}',
        '{"a": {"$bytes": "!!not base64!!"}}',
        '{"a": {"$decimal": "one"}}',
        '{"a": {"$decimal": []}}',
        '{"a": {"$datetime": "yesterday"}}',
        '{"a": {"$datetime": null}}',
        '{"a": {"$dict": [1]}}',
        '{"$dict": 3}',
    ],
)
def test_malformed_text_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        decode_arguments(text)


def test_unstorable_values_raise_type_error() -> None:
    with pytest.raises(TypeError):
        encode_arguments({"a": object()})
    with pytest.raises(TypeError):
        encode_arguments({"a": {1: "non-str key"}})


def _on_a_deep_stack(frames: int, fn: Any) -> Any:
    if frames <= 0:
        return fn()
    return _on_a_deep_stack(frames - 1, fn)


def test_deep_value_on_a_deep_stack_is_a_value_error() -> None:
    # json recurses in C against the interpreter's limit: with little stack left even a
    # value within MAX_DEPTH can be too deep for it. The caller still gets a ValueError.
    table = nested_tables(MAX_DEPTH - 1)
    text = encode_arguments(table)
    spare = 60
    frames = sys.getrecursionlimit() - spare - len(_stack())
    for call in (lambda: encode_arguments(table), lambda: decode_arguments(text)):
        try:
            _on_a_deep_stack(frames, call)
        except ValueError:
            pass  # ArgumentsTooDeep, or it fit: both are fine, a RecursionError is not


def _stack() -> list[Any]:
    import inspect

    return inspect.stack(0)


def test_every_scalar_type_round_trips() -> None:
    table = {
        "none": None, "t": True, "f": False, "i8": -128, "u64": 2**64 - 1, "i64": -(2**63), "big": 2**100,
        "float": 1.5, "s": "héllo", "b": b"\x00\xff", "dec": Decimal("-12.345"),
        "ts": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "naive": datetime(2024, 1, 2),
        "arr": [1, [b"x", {"$bytes": "not a tag"}]], "empty": {}, "empty_arr": [],
    }  # fmt: skip
    assert decode_arguments(encode_arguments(table)) == table
