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

PAGE_IN_BATCH = 512  # bodies read back from the store at a time

if TYPE_CHECKING:
    from leveret.model.channel import Consumer


class Queue:
    __slots__ = (
        "vhost", "name", "durable", "exclusive_owner", "auto_delete", "arguments", "type", "consumer_timeout",
        "ready", "ready_bytes", "unacked", "unacked_bytes", "consumers", "_rr", "store", "had_consumer",
        "published", "delivered", "acked", "redelivered", "deleted", "single_active", "page_limit",
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
        page_limit: int | None = None,
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
        # Ready bytes past which new persistent messages keep their body only in the store.
        self.page_limit: int | None = page_limit

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
                MessageRecord(msg.msg_id, msg.exchange, msg.routing_key, msg.properties, msg.body),  # type: ignore[arg-type]
            )
            if self.page_limit is not None and self.ready_bytes >= self.page_limit:
                msg.body = None  # a deep queue: the store holds the body until it nears the head
        self.ready.append(msg)
        self.ready_bytes += msg.size
        if self.consumers:
            self.dispatch()
        return stored

    def restore(self, msg: Message) -> None:
        """Put back a message recovered from the store (already journalled)."""
        msg.stored = True
        if self.page_limit is not None and self.ready_bytes >= self.page_limit:
            msg.body = None
        self.ready.append(msg)
        self.ready_bytes += msg.size

    def requeue(self, msgs: list[Message]) -> None:
        """Return unacked messages to their original positions, marked redelivered."""
        if not msgs:
            return
        for m in msgs:
            m.redelivered = True
            self.ready_bytes += m.size
            self.unacked_bytes -= m.size
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
        if self.ready[0].body is None:
            self._page_in()
        msg = self.ready.popleft()
        self.ready_bytes -= msg.size
        return msg

    def _page_in(self) -> None:
        """Read the bodies of the next paged-out messages at the head back from the store."""
        wanted: dict[int, Message] = {}
        for m in self.ready:
            if m.body is None:
                wanted[m.msg_id] = m
                if len(wanted) >= PAGE_IN_BATCH:
                    break
            elif len(wanted) >= PAGE_IN_BATCH // 2:
                break
        bodies = self.store.read_bodies(self.vhost, self.name, list(wanted))
        for msg_id, m in wanted.items():
            body = bodies.get(msg_id)
            if body is None:
                raise RuntimeError(f"message {msg_id} of queue '{self.name}' is missing from the store")
            m.body = body

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
            if ready[0].body is None:
                self._page_in()
            msg = ready.popleft()
            self.ready_bytes -= msg.size
            c.channel.deliver(c, self, msg)

    def settle(self, msg: Message) -> None:
        """An unacked delivery was acked (or rejected without requeue): it leaves the queue."""
        self.unacked -= 1
        self.unacked_bytes -= msg.size
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
