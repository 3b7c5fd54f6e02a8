"""Queues: ready messages in order, consumers served round-robin.

A queue holds its ready messages in a deque ordered by ``msg_id``; deliveries
waiting for an ack live on the channel that received them (see
:mod:`leveret.model.channel`). Requeued messages go back to their original
position with ``redelivered`` set.
"""

from __future__ import annotations

from collections import deque
from heapq import merge
from typing import TYPE_CHECKING, Any

from leveret.model.message import Message
from leveret.storage.base import MessageRecord, Store

if TYPE_CHECKING:
    from leveret.model.channel import Consumer


class Queue:
    __slots__ = (
        "vhost", "name", "durable", "exclusive_owner", "auto_delete", "arguments", "type", "consumer_timeout",
        "ready", "ready_bytes", "unacked", "unacked_bytes", "consumers", "_rr", "store", "had_consumer",
        "published", "delivered", "acked", "redelivered", "deleted", "single_active",
    )  # fmt: skip

    def __init__(
        self,
        vhost: str,
        name: str,
        *,
        durable: bool,
        exclusive_owner: object | None,
        auto_delete: bool,
        arguments: dict[str, Any],
        store: Store,
        consumer_timeout: int | None = None,
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments = arguments
        self.type = str(arguments.get("x-queue-type", "classic"))
        self.consumer_timeout = consumer_timeout  # x-consumer-timeout, ms
        self.ready: deque[Message] = deque()
        self.ready_bytes = 0
        self.unacked = 0
        self.unacked_bytes = 0
        self.consumers: list[Consumer] = []
        self._rr = 0
        self.store = store
        self.had_consumer = False
        self.deleted = False
        self.single_active = False
        self.published = self.delivered = self.acked = self.redelivered = 0

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} ready={len(self.ready)} unacked={self.unacked}>"

    @property
    def message_count(self) -> int:
        return len(self.ready)

    # ---- messages in ---------------------------------------------------------------------------

    def publish(self, msg: Message) -> bool:
        """Enqueue at the tail and dispatch. Returns True if the message was journalled."""
        self.published += 1
        stored = False
        if msg.persistent and self.durable:
            msg.stored = stored = True
            self.store.append(
                self.vhost,
                self.name,
                MessageRecord(msg.msg_id, msg.exchange, msg.routing_key, msg.properties, msg.body),
            )
        self.ready.append(msg)
        self.ready_bytes += len(msg.body)
        if self.consumers:
            self.dispatch()
        return stored

    def restore(self, msg: Message) -> None:
        """Put back a message recovered from the store (already journalled)."""
        msg.stored = True
        self.ready.append(msg)
        self.ready_bytes += len(msg.body)

    def requeue(self, msgs: list[Message]) -> None:
        """Return unacked messages to their original positions, marked redelivered."""
        if not msgs:
            return
        for m in msgs:
            m.redelivered = True
            self.ready_bytes += len(m.body)
            self.unacked_bytes -= len(m.body)
        self.unacked -= len(msgs)
        if self.deleted:
            return
        msgs.sort(key=_msg_id)
        ready = self.ready
        if not ready or msgs[-1].msg_id < ready[0].msg_id:
            ready.extendleft(reversed(msgs))
        else:
            self.ready = deque(merge(ready, msgs, key=_msg_id))
        self.dispatch()

    # ---- messages out --------------------------------------------------------------------------

    def take(self) -> Message | None:
        """Pop the head for basic.get; the caller accounts it as unacked or settled."""
        if not self.ready:
            return None
        msg = self.ready.popleft()
        self.ready_bytes -= len(msg.body)
        return msg

    def dispatch(self) -> None:
        """Hand ready messages to consumers with room, round-robin."""
        consumers = self.consumers
        ready = self.ready
        while ready:
            n = len(consumers)
            if n == 0:
                return
            start = self._rr % n
            for i in range(n):
                c = consumers[(start + i) % n]
                if c.can_take():
                    break
            else:
                return
            self._rr = (start + i + 1) % n
            msg = ready.popleft()
            self.ready_bytes -= len(msg.body)
            c.channel.deliver(c, self, msg)

    def settle(self, msg: Message) -> None:
        """An unacked delivery was acked (or rejected without requeue): it leaves the queue."""
        self.unacked -= 1
        self.unacked_bytes -= len(msg.body)
        self.acked += 1
        if msg.stored and not self.deleted:
            self.store.remove(self.vhost, self.name, (msg.msg_id,))

    def drop(self, msg: Message) -> None:
        """A message that left the queue without an ack cycle (no-ack delivery, purge)."""
        if msg.stored and not self.deleted:
            self.store.remove(self.vhost, self.name, (msg.msg_id,))

    def purge(self) -> int:
        """Delete the ready messages (not the unacked ones). Returns how many."""
        n = len(self.ready)
        stored = [m.msg_id for m in self.ready if m.stored]
        if stored:
            self.store.remove(self.vhost, self.name, stored)
        self.ready.clear()
        self.ready_bytes = 0
        return n

    # ---- consumers -----------------------------------------------------------------------------

    def add_consumer(self, c: Consumer) -> None:
        self.consumers.append(c)
        self.had_consumer = True
        self.dispatch()

    def remove_consumer(self, c: Consumer) -> None:
        try:
            i = self.consumers.index(c)
        except ValueError:
            return
        del self.consumers[i]
        if i < self._rr:
            self._rr -= 1

    @property
    def exclusive_consumer(self) -> bool:
        return any(c.exclusive for c in self.consumers)


def _msg_id(m: Message) -> int:
    return m.msg_id
