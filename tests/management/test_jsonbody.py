"""jsonbody.loads_sliced parses as json.loads does (values and errors), a slice at a time."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leveret.management import jsonbody

values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=5), inner, max_size=5)),
    max_leaves=30,
)


def sliced(text: str) -> Any:
    return asyncio.run(jsonbody.loads_sliced(text))


@settings(max_examples=300, deadline=None)
@given(doc=st.dictionaries(st.text(max_size=8), values, max_size=6), indent=st.sampled_from([None, 0, 2, "\t"]))
def test_same_value_as_json_loads(doc: dict[str, Any], indent: int | str | None) -> None:
    text = json.dumps(doc, indent=indent)
    assert sliced(text) == json.loads(text)


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(
    st.text(alphabet='{}[]:," \n0123456789truefalsnl\\ab', max_size=30),
    values.map(json.dumps).map(lambda t: "{" + '"k": ' + t),
    values.map(json.dumps).map(lambda t: '{"k": ' + t + ", }"),
))  # fmt: skip
def test_same_errors_as_json_loads(text: str) -> None:
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            sliced(text)
    else:
        assert sliced(text) == expected


def test_yields_between_elements_and_deep_nesting_is_a_recursion_error() -> None:
    turns = 0

    async def count_turns() -> Any:
        nonlocal turns
        task = asyncio.ensure_future(jsonbody.loads_sliced(json.dumps({"queues": [{"n": i} for i in range(2000)]})))
        while not task.done():
            turns += 1
            await asyncio.sleep(0)
        return task.result()

    assert len(asyncio.run(count_turns())["queues"]) == 2000 and turns >= 2000 // jsonbody.ELEMENTS_PER_TURN
    with pytest.raises(RecursionError):
        sliced('{"queues": [' + "[" * 100_000 + "]" * 100_000 + "]}")
