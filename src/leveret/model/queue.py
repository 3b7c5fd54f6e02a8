"""Queues: ready messages in order, consumers served round-robin.

A queue holds its ready messages in a deque ordered by ``msg_id`` (a priority queue, one
deque per level: :mod:`leveret.model.priority`); deliveries
waiting for an ack live on the channel that received them (see
:mod:`leveret.model.channel`). Requeued messages go back to their original
position with ``redelivered`` set.

The queue arguments that limit what a queue holds (``x-message-ttl``, ``x-expires``,
``x-max-length``, ``x-max-length-bytes``, ``x-overflow``, ``x-dead-letter-*``) are read
once into :class:`Limits`; a queue without them has ``limits = None`` and its hot path
tests only that and ``ttl_watch`` (set once a message with an expiry has entered).
Messages expire only at the head, as in RabbitMQ's classic queues; the broker's periodic
``expire`` drives the heads of idle queues. Removed messages go to the dead-letter
exchange through the queue's :class:`QueueHost` (the broker).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from heapq import merge
from typing import TYPE_CHECKING, Any, Protocol

from leveret.errors import ChannelError
from leveret.model.message import Message
from leveret.model.priority import PriorityReady
from leveret.model.properties import (
    DELIVERY_LIMIT,
    EXPIRED,
    MAXLEN,
    REJECTED,
    expiration_ms,
    has_expiration,
    priority,
)
from leveret.storage.base import MessageRecord, Store

PAGE_IN_BATCH = 512  # bodies read back from the store at a time

# Queue.publish results
ENQUEUED, STORED, REJECTED_PUBLISH = 0, 1, 2

if TYPE_CHECKING:
    from leveret.model.channel import Consumer


class QueueHost(Protocol):
    """What a queue needs from the broker for TTLs, leases and dead letters."""

    clock: Callable[[], float]
    wall_clock: Callable[[], float]  # stored TTL deadlines are wall-clock seconds
    ttl_queues: set[Queue]  # queues whose messages may expire: the periodic expire looks at their heads
    lease_queues: set[Queue]  # queues with x-expires

    def dead_letter(self, queue: Queue, msgs: list[Message], reason: str) -> None:
        """Republish ``msgs`` (bodies in memory) to the queue's dead-letter exchange."""


def _text(v: Any) -> str | None:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v if isinstance(v, str) else None


LIMIT_ARGS = (
    "x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-overflow", "x-dead-letter-exchange",
)  # fmt: skip


class Limits:
    """A queue's TTL, lease, length and dead-letter arguments (validated at declare)."""

    __slots__ = ("message_ttl", "expires", "max_length", "max_bytes", "overflow", "dlx", "dlrk")

    def __init__(self, arguments: dict[str, Any]) -> None:
        def ms(key: str) -> int | None:
            v = arguments.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) else None

        self.message_ttl = ms("x-message-ttl")  # 0 is a TTL: deliver now or never
        self.expires = ms("x-expires")
        self.max_length = ms("x-max-length")
        self.max_bytes = ms("x-max-length-bytes")
        self.overflow = _text(arguments.get("x-overflow")) or "drop-head"
        self.dlx = _text(arguments.get("x-dead-letter-exchange"))
        self.dlrk = _text(arguments.get("x-dead-letter-routing-key"))

    @staticmethod
    def of(arguments: dict[str, Any]) -> Limits | None:
        """The limits of a queue, or None when it has none (the common, fast case)."""
        if not arguments or not any(k in arguments for k in LIMIT_ARGS):
            return None
        return Limits(arguments)

    def over(self, count: int, size: int) -> bool:
        return (self.max_length is not None and count > self.max_length) or (
            self.max_bytes is not None and size > self.max_bytes
        )


class Queue:
    __slots__ = (
        "vhost", "name", "durable", "exclusive_owner", "auto_delete", "arguments", "type", "consumer_timeout",
        "ready", "ready_bytes", "unacked", "unacked_bytes", "consumers", "_rr", "_rr_prio", "prioritised", "store",
        "had_consumer",
        "published", "delivered", "acked", "redelivered", "deleted", "page_limit",
        "limits", "host", "ttl_watch", "used_at", "max_priority", "quorum", "delivery_limit",
        "single_active", "policy", "operator_policy", "effective_policy",
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
        host: QueueHost | None = None,
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments = arguments
        self.type = str(arguments.get("x-queue-type", "classic"))
        self.consumer_timeout = consumer_timeout  # x-consumer-timeout, ms
        # x-max-priority (classic queues; RabbitMQ 3.x ignores it on quorum queues): 0 = none.
        mp = arguments.get("x-max-priority") if self.type == "classic" else None
        self.max_priority = mp if type(mp) is int and 0 < mp <= 255 else 0
        self.ready: deque[Message] | PriorityReady = PriorityReady(self.max_priority) if self.max_priority else deque()
        # A quorum queue counts each message's returns (x-delivery-count) and, with x-delivery-limit,
        # dead-letters (or drops) one returned more often than that (rabbit_fifo, RabbitMQ 3.10).
        self.quorum = self.type == "quorum"
        dl = arguments.get("x-delivery-limit") if self.quorum else None
        self.delivery_limit: int | None = dl if type(dl) is int and dl >= 0 else None
        # x-single-active-consumer: only the longest-registered consumer is served; the others wait
        # their turn, in registration order (RabbitMQ's single active consumer).
        self.single_active = arguments.get("x-single-active-consumer") is True
        self.ready_bytes = 0
        self.unacked = 0
        self.unacked_bytes = 0
        self.consumers: list[Consumer] = []  # by x-priority, highest first; in arrival order within one
        self._rr = 0
        # Consumer priorities: set while the consumers do not all have the same x-priority; then
        # each priority level takes turns on its own (_rr_prio: level -> next index within it).
        self.prioritised = False
        self._rr_prio: dict[int, int] = {}
        self.store = store
        self.had_consumer = False
        self.deleted = False
        self.published = self.delivered = self.acked = self.redelivered = 0
        # Ready bytes past which new persistent messages keep their body only in the store.
        self.page_limit: int | None = page_limit
        self.limits = Limits.of(arguments)
        self.host = host
        self.ttl_watch = False  # a message with an expiry may be in the queue (ready or unacked)
        self.used_at = 0.0  # x-expires: when the queue was last used (declared, got from, consumed)
        if host is not None and self.limits is not None and self.limits.expires is not None:
            self.used_at = host.clock()
            host.lease_queues.add(self)
        # The policy and operator policy applied (see leveret.model.policy), their merged definition.
        self.policy: Any = None
        self.operator_policy: Any = None
        self.effective_policy: dict[str, Any] = {}

    def set_policy(self, policy: Any, operator_policy: Any, definition: dict[str, Any]) -> None:
        """Apply a (new, changed or removed) policy: the limits, delivery limit and consumer timeout are
        derived again from the arguments and ``definition`` (:func:`effective_arguments`). Messages already
        queued keep their expiry (a new message-ttl does not reach them, as in RabbitMQ); a lower length
        limit drops (or dead-letters) the oldest excess at once under drop-head."""
        from leveret.model.policy import effective_arguments  # policy imports this module

        self.policy, self.operator_policy, self.effective_policy = policy, operator_policy, definition
        args = effective_arguments(self.type, self.arguments, definition)
        self.limits = Limits.of(args)
        if self.quorum:
            dl = args.get("x-delivery-limit")
            self.delivery_limit = dl if type(dl) is int and dl >= 0 else None
        ct = definition.get("consumer-timeout")
        if type(ct) is int and ct > 0 and "x-consumer-timeout" not in self.arguments:
            self.consumer_timeout = ct
        host = self.host
        if host is not None and self.limits is not None and self.limits.expires is not None:
            if self not in host.lease_queues:
                self.used_at = host.clock()
                host.lease_queues.add(self)
        if self.limits is not None:
            self._drop_head()

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} ready={len(self.ready)} unacked={self.unacked}>"

    # ---- messages in ---------------------------------------------------------------------------

    def publish(self, msg: Message, ttl: int | None = None) -> int:
        """Enqueue at the tail and dispatch. Returns STORED if the message was journalled,
        ENQUEUED if not, REJECTED_PUBLISH if x-overflow refused it.

        ``ttl`` is the message's own ``expiration`` in ms.
        """
        if self.max_priority:
            msg.priority = min(priority(msg.properties), self.max_priority)
        if self.quorum:
            msg.delivery_count = 0
        if self.limits is not None or ttl is not None:
            return self._publish_limited(msg, ttl)
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

    def _publish_limited(self, msg: Message, ttl: int | None) -> int:
        """publish() for a queue with limits or a message with its own TTL (rabbit_amqqueue_process)."""
        lim = self.limits
        host = self.host
        assert host is not None
        now = host.clock()
        if lim is not None:
            if lim.message_ttl is not None:
                ttl = lim.message_ttl if ttl is None else min(ttl, lim.message_ttl)
            if lim.overflow != "drop-head" and lim.over(len(self.ready) + 1, self.ready_bytes + msg.size):
                if lim.overflow == "reject-publish-dlx":
                    self._dead_letter([msg], MAXLEN)
                return REJECTED_PUBLISH
        expires_at = None
        if ttl is not None:
            msg.expires = now + ttl / 1000.0
            expires_at = host.wall_clock() + ttl / 1000.0
            self._watch()
        self.published += 1
        stored = ENQUEUED
        if msg.persistent and self.durable:
            msg.stored = True
            stored = STORED
            self.store.append(
                self.vhost,
                self.name,
                MessageRecord(
                    msg.msg_id, msg.exchange, msg.routing_key, msg.properties, msg.body, expires_at=expires_at,  # type: ignore[arg-type]
                ),
            )
        self.ready.append(msg)
        self.ready_bytes += msg.size
        self.dispatch()  # also expires the head (a TTL of 0 that no consumer took at once)
        if lim is not None and (lim.max_length is not None or lim.max_bytes is not None):
            self._drop_head()
        return stored

    def _watch(self) -> None:
        if not self.ttl_watch:
            self.ttl_watch = True
            if self.host is not None:
                self.host.ttl_queues.add(self)

    def _drop_head(self) -> None:
        """x-overflow drop-head: drop (or dead-letter) the oldest ready messages while over a limit."""
        lim = self.limits
        if lim is None or lim.overflow != "drop-head":
            return
        dropped = []
        ready = self.ready
        while ready and lim.over(len(ready), self.ready_bytes):
            m = ready.popleft()
            self.ready_bytes -= m.size
            dropped.append(m)
        if dropped:
            self._discard(dropped, MAXLEN)

    def expire(self, now: float) -> None:
        """Remove (or dead-letter) the expired messages at the head. RabbitMQ expires only there."""
        ready = self.ready
        expired = []
        while ready:
            e = ready[0].expires
            if e is None or e > now:
                break
            m = ready.popleft()
            self.ready_bytes -= m.size
            expired.append(m)
        if expired:
            self._discard(expired, EXPIRED)

    def _discard(self, msgs: list[Message], reason: str) -> None:
        """Messages that left the ready list without a delivery: dead-letter them, then forget them."""
        if self.limits is not None and self.limits.dlx is not None and not self.deleted:
            if any(m.body is None for m in msgs):
                bodies = self.store.read_bodies(
                    self.vhost, self.name, [m.msg_id for m in msgs if m.body is None]
                )
                for m in msgs:
                    if m.body is None:
                        m.body = bodies.get(m.msg_id)
            self._dead_letter([m for m in msgs if m.body is not None], reason)
        stored = [m.msg_id for m in msgs if m.stored]
        if stored and not self.deleted:
            self.store.remove(self.vhost, self.name, stored)

    def _dead_letter(self, msgs: list[Message], reason: str) -> None:
        if self.host is not None and self.limits is not None and self.limits.dlx is not None:
            self.host.dead_letter(self, msgs, reason)

    def reject(self, msg: Message) -> None:
        """An unacked delivery was rejected without requeue: dead-letter it (if so configured), settle it."""
        if not self.deleted:
            self._dead_letter([msg], REJECTED)
        self.settle(msg)

    def touch(self) -> None:
        """The queue was used (declared again, basic.get, last consumer gone): its x-expires lease restarts."""
        if self.limits is not None and self.limits.expires is not None and self.host is not None:
            self.used_at = self.host.clock()

    def restore(self, msg: Message, expires_at: float | None = None) -> None:
        """Put back a message recovered from the store (already journalled).

        ``expires_at`` (wall-clock seconds, as stored) is when its TTL runs out: the time the broker
        was down counts, as in RabbitMQ; one already past expires at the first look. A record
        written before TTL deadlines were stored (schema 1) has none: its TTL starts again.
        """
        msg.stored = True
        if self.max_priority:
            msg.priority = min(priority(msg.properties), self.max_priority)
        if self.quorum:
            msg.delivery_count = 0  # not stored: counting starts again after a restart
        if expires_at is not None and self.host is not None:
            msg.expires = self.host.clock() + (expires_at - self.host.wall_clock())
            self._watch()
            self._append_restored(msg)
            return
        lim = self.limits
        if (lim is not None and lim.message_ttl is not None) or has_expiration(msg.properties):
            try:
                ttl = expiration_ms(msg.properties)
            except ChannelError:  # checked at publish; unreachable unless the store was edited
                ttl = None
            if lim is not None and lim.message_ttl is not None:
                ttl = lim.message_ttl if ttl is None else min(ttl, lim.message_ttl)
            if ttl is not None and self.host is not None:
                msg.expires = self.host.clock() + ttl / 1000.0
                self._watch()
        self._append_restored(msg)

    def _append_restored(self, msg: Message) -> None:
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
        if self.quorum:
            msgs = self._count_returns(msgs)
            if not msgs:
                return
        ready = self.ready
        if isinstance(ready, PriorityReady):
            ready.requeue(msgs)
        else:
            msgs.sort(key=_msg_id)
            if not ready or msgs[-1].msg_id < ready[0].msg_id:
                ready.extendleft(reversed(msgs))
            else:
                self.ready = deque(merge(ready, msgs, key=_msg_id))
        self.dispatch()
        if self.limits is not None:
            self._drop_head()

    def _count_returns(self, msgs: list[Message]) -> list[Message]:
        """Quorum queue: one more return each; those past x-delivery-limit leave (dead-lettered with
        reason ``delivery_limit``, or dropped). Returns the ones that go back to the queue."""
        limit = self.delivery_limit
        over = []
        for m in msgs:
            m.delivery_count = (m.delivery_count or 0) + 1
            if limit is not None and m.delivery_count > limit:
                over.append(m)
        if not over:
            return msgs
        for m in over:
            self.ready_bytes -= m.size
        self._discard(over, DELIVERY_LIMIT)
        return [m for m in msgs if limit is None or (m.delivery_count or 0) <= limit]

    # ---- messages out --------------------------------------------------------------------------

    def take(self) -> Message | None:
        """Pop the head for basic.get; the caller accounts it as unacked or settled."""
        if self.ttl_watch and self.host is not None:
            self.expire(self.host.clock())
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
        # At most PAGE_IN_BATCH messages and a quarter of the queue's RAM limit in bytes (at least one
        # message): 512 bodies of 16 MiB would otherwise be 8 GiB read back at once, the loop waiting.
        budget = (self.page_limit or 0) // 4
        for m in self.ready:
            if m.body is None:
                wanted[m.msg_id] = m
                budget -= m.size
                if len(wanted) >= PAGE_IN_BATCH or budget <= 0:
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
        if self.ttl_watch:
            self._dispatch_ttl()
            return
        ready = self.ready
        while ready:
            c = self._next_consumer()
            if c is None:
                return
            self._deliver_head(c)

    def _next_consumer(self) -> Consumer | None:
        """The next consumer with room, round-robin from the last one served; None if all are full."""
        consumers = self.consumers
        if self.single_active:
            return consumers[0] if consumers and consumers[0].can_take() else None
        if self.prioritised:
            return self._next_by_priority()
        n = len(consumers)
        if not n:
            return None
        start = self._rr % n
        c = consumers[start]
        if c.can_take():  # the usual case: the next in turn has room
            self._rr = start + 1 if start + 1 < n else 0
            return c
        for i in range(1, n):
            c = consumers[(start + i) % n]
            if c.can_take():
                self._rr = (start + i + 1) % n
                return c
        return None

    def _next_by_priority(self) -> Consumer | None:
        """The highest-priority consumer with room (a full one is skipped, never waited for), equal
        priorities round-robin, as RabbitMQ's consumer priorities (rabbit_queue_consumers)."""
        consumers = self.consumers
        n = len(consumers)
        i = 0
        while i < n:
            level = consumers[i].priority
            j = i + 1
            while j < n and consumers[j].priority == level:
                j += 1
            size = j - i
            start = self._rr_prio.get(level, 0) % size
            for k in range(size):
                c = consumers[i + (start + k) % size]
                if c.can_take():
                    self._rr_prio[level] = (start + k + 1) % size
                    return c
            i = j
        return None

    def _deliver_head(self, c: Consumer) -> None:
        ready = self.ready
        if ready[0].body is None:
            self._page_in()
        msg = ready.popleft()
        self.ready_bytes -= msg.size
        c.channel.deliver(c, self, msg)

    def _dispatch_ttl(self) -> None:
        """dispatch() for a queue that may hold messages with an expiry: the head is checked first."""
        assert self.host is not None
        now = self.host.clock()
        ready = self.ready
        expired: list[Message] = []  # dead-lettered after the loop, so no publish re-enters it
        while ready and self.consumers:
            e = ready[0].expires
            if e is not None and e < now:  # not <=: a TTL of 0 still goes to a consumer that can take it
                m = ready.popleft()
                self.ready_bytes -= m.size
                expired.append(m)
                continue
            c = self._next_consumer()
            if c is None:
                break
            self._deliver_head(c)
        if expired:
            self._discard(expired, EXPIRED)
        self.expire(now)

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
        consumers = self.consumers
        if self.single_active or not consumers or consumers[-1].priority >= c.priority:
            consumers.append(c)  # single active consumer (3.10): the longest-registered, whatever its priority
        else:
            at = next(i for i, other in enumerate(consumers) if other.priority < c.priority)
            consumers.insert(at, c)
        self.prioritised = consumers[0].priority != consumers[-1].priority
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
        self.prioritised = bool(self.consumers) and self.consumers[0].priority != self.consumers[-1].priority
        if not self.consumers:
            self.touch()
        elif i == 0 and self.single_active and self.ready:
            self.dispatch()  # the next consumer in line is active now

    @property
    def exclusive_consumer(self) -> bool:
        return any(c.exclusive for c in self.consumers)


def _msg_id(m: Message) -> int:
    return m.msg_id
