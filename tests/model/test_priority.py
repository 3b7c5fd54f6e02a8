"""The pieces of priority queues below the wire: the property parser and the ready list."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as C
from pamqp import header

from leveret.model.message import Message
from leveret.model.priority import PriorityReady
from leveret.model.properties import priority


def raw_properties(**kw: object) -> bytes:
    return header.ContentHeader(0, 0, C.Basic.Properties(**kw)).marshal()[12:]  # type: ignore[arg-type]


@given(
    prio=st.none() | st.integers(0, 255),
    content_type=st.none() | st.text(max_size=20),
    content_encoding=st.none() | st.text(max_size=20),
    headers=st.none() | st.dictionaries(st.text(max_size=8), st.integers(0, 1000) | st.text(max_size=8), max_size=4),
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    correlation_id=st.none() | st.text(max_size=8),
)
def test_priority_is_read_past_every_field_before_it(
    prio: int | None,
    content_type: str | None,
    content_encoding: str | None,
    headers: dict[str, object] | None,
    delivery_mode: int | None,
    correlation_id: str | None,
) -> None:
    props = raw_properties(
        priority=prio, content_type=content_type, content_encoding=content_encoding, headers=headers,
        delivery_mode=delivery_mode, correlation_id=correlation_id,
    )  # fmt: skip
    assert priority(props) == (prio or 0)


def test_empty_or_flagless_properties_have_priority_0() -> None:
    assert priority(b"") == 0
    assert priority(b"\x00\x00") == 0


def msg(i: int, prio: int) -> Message:
    m = Message(i, "", "q", b"\x00\x00", b"x", False)
    m.priority = prio
    return m


@given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=40))
def test_ready_list_serves_highest_first_and_requeue_restores_places(ops: list[tuple[int, bool]]) -> None:
    ready = PriorityReady(3)
    msgs = [msg(i, p) for i, (p, _) in enumerate(ops)]
    for m in msgs:
        ready.append(m)
    expected = sorted(msgs, key=lambda m: (-m.priority, m.msg_id))
    assert list(ready) == expected and len(ready) == len(msgs)
    if msgs:
        assert ready[0] is expected[0]
    taken = [ready.popleft() for _ in range(len(msgs) // 2)]
    assert taken == expected[: len(taken)]
    back = [m for m, (_, requeue) in zip(taken, ops, strict=False) if requeue]
    ready.requeue(back)
    kept = set(map(id, back)) | {id(m) for m in expected[len(taken) :]}
    assert list(ready) == [m for m in expected if id(m) in kept]
    assert len(ready) == len(kept) and bool(ready) == bool(kept)
    ready.clear()
    assert not ready and list(ready) == []
