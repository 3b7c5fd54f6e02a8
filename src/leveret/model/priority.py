"""The ready list of a priority queue (classic queue with ``x-max-priority``).

RabbitMQ's classic priority queue (rabbit_priority_queue) keeps one sub-queue per priority level,
0 to ``x-max-priority``: a message's level is its ``priority`` property, 0 when it has none and
``x-max-priority`` when it has more. Higher levels are served first; within a level, publish order.
A requeued message goes back to its place in its own level. Dropping the head (``x-overflow``
drop-head) and TTL expiry look at the head of the highest non-empty level, as RabbitMQ does.

:class:`PriorityReady` has the part of :class:`collections.deque` that :class:`~leveret.model.queue.Queue`
uses on its ready list (append, popleft, ``[0]``, iteration in delivery order, len, clear), plus
``requeue``, so a plain queue keeps its plain deque and pays nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from heapq import merge

from leveret.model.message import Message


def _msg_id(m: Message) -> int:
    return m.msg_id


class PriorityReady:
    """Ready messages in ``max_priority + 1`` FIFO levels, served highest first."""

    __slots__ = ("levels", "_count")

    def __init__(self, max_priority: int) -> None:
        self.levels: list[deque[Message]] = [deque() for _ in range(max_priority + 1)]
        self._count = 0

    def append(self, msg: Message) -> None:
        self.levels[msg.priority].append(msg)
        self._count += 1

    def _top(self) -> deque[Message]:
        for level in reversed(self.levels):
            if level:
                return level
        raise IndexError("the ready list is empty")

    def popleft(self) -> Message:
        msg = self._top().popleft()
        self._count -= 1
        return msg

    def __getitem__(self, index: int) -> Message:
        if index != 0:
            raise IndexError("only the head of a priority ready list can be read by index")
        return self._top()[0]

    def __iter__(self) -> Iterator[Message]:
        for level in reversed(self.levels):
            yield from level

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def clear(self) -> None:
        for level in self.levels:
            level.clear()
        self._count = 0

    def requeue(self, msgs: list[Message]) -> None:
        """Put messages back at their original places (by ``msg_id``) in their levels."""
        by_level: dict[int, list[Message]] = {}
        for m in msgs:
            by_level.setdefault(m.priority, []).append(m)
        for p, group in by_level.items():
            group.sort(key=_msg_id)
            level = self.levels[p]
            if not level or group[-1].msg_id < level[0].msg_id:
                level.extendleft(reversed(group))
            else:
                self.levels[p] = deque(merge(level, group, key=_msg_id))
        self._count += len(msgs)
