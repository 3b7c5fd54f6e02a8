"""leveret.values.fast_init: a faster __init__ for frozen, slotted dataclasses, and nothing else changed."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import dataclass

import pytest

from leveret.protocol.events import Ack, Heartbeat, Publish
from leveret.storage.base import MessageRecord
from leveret.values import fast_init


@fast_init
@dataclass(frozen=True, slots=True)
class Point:
    x: int
    y: int = 7


def test_the_value_classes_built_per_message_use_it() -> None:
    for cls in (Publish, Ack, Heartbeat, MessageRecord):
        names = cls.__init__.__code__.co_names
        # dataclass's own frozen __init__ goes through object.__setattr__ under this name
        assert "__dataclass_builtins_object__" not in names, cls
        assert all(n.startswith("_set_") for n in names), (cls, names)


def test_same_signature_defaults_and_value_semantics() -> None:
    p = Point(1)
    assert (p.x, p.y) == (1, 7) and Point(1, 2).y == 2 and Point(x=3, y=4) == Point(3, 4)
    assert p == Point(1, 7) and hash(p) == hash(Point(1, 7)) and p != Point(2)
    assert repr(p) == "Point(x=1, y=7)"
    assert dataclasses.replace(p, y=9) == Point(1, 9)
    assert pickle.loads(pickle.dumps(p)) == p and copy.copy(p) == p
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, 2, 3)  # type: ignore[call-arg]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 5  # type: ignore[misc]
    assert not hasattr(p, "__dict__")


def test_message_record_and_events_are_still_values() -> None:
    m = MessageRecord(1, "ex", "rk", b"p", b"body")
    assert (m.delivered, m.expires_at) == (False, None)
    assert m == MessageRecord(1, "ex", "rk", b"p", b"body", False, None)
    assert [Ack(1, 5, True), Heartbeat()] == [Ack(1, 5, True), Heartbeat()]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.delivered = True  # type: ignore[misc]


def test_refuses_what_it_cannot_do_faithfully() -> None:
    @dataclass(slots=True)
    class Mutable:
        x: int

    @dataclass(frozen=True)
    class NoSlots:
        x: int

    @dataclass(frozen=True, slots=True)
    class Factory:
        x: list[int] = dataclasses.field(default_factory=list)

    @dataclass(frozen=True, slots=True)
    class PostInit:
        x: int

        def __post_init__(self) -> None:
            pass

    for cls in (Mutable, NoSlots, Factory, PostInit):
        with pytest.raises(TypeError):
            fast_init(cls)
