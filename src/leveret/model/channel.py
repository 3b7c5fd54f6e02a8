"""Channels, consumers and deliveries: delivery tags, prefetch, acks, requeue.

A :class:`Channel` is the model side of an AMQP channel. It talks to the wire
only through its :class:`ChannelSink`, which the server implements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from leveret.errors import precondition_failed
from leveret.model.message import Message

if TYPE_CHECKING:
    from leveret.model.connection import ClientConnection
    from leveret.model.queue import Queue


class ChannelSink(Protocol):
    """What the model asks of the wire for one channel."""

    def deliver(self, consumer_tag: bytes, delivery_tag: int, msg: Message) -> None: ...
    def cancel_consumer(self, consumer_tag: str) -> None:
        """Send basic.cancel to the client (queue deleted, or consumer timed out in cancel mode)."""

    def close_channel(self, code: int, text: str) -> None:
        """Close the channel from the broker's side (e.g. an acknowledgement timeout)."""


class Delivery:
    """A message sent to a client and not yet settled."""

    __slots__ = ("tag", "queue", "msg", "consumer", "sent_at", "timeout")

    def __init__(
        self, tag: int, queue: Queue, msg: Message, consumer: Consumer | None, sent_at: float, timeout: int | None
    ) -> None:
        self.tag = tag
        self.queue = queue
        self.msg = msg
        self.consumer = consumer
        self.sent_at = sent_at
        self.timeout = timeout  # ms, None: no timeout

    @property
    def deadline(self) -> float | None:
        return None if self.timeout is None else self.sent_at + self.timeout / 1000.0


class Consumer:
    __slots__ = (
        "tag", "tag_bytes", "channel", "queue", "no_ack", "exclusive", "prefetch", "arguments", "deliveries",
        "timeout", "priority",
    )  # fmt: skip

    def __init__(
        self,
        tag: str,
        channel: Channel,
        queue: Queue,
        *,
        no_ack: bool,
        exclusive: bool,
        prefetch: int,
        arguments: dict[str, Any],
        timeout: int | None,
    ) -> None:
        self.tag = tag
        raw = tag.encode("utf-8")
        self.tag_bytes = bytes((len(raw),)) + raw  # pre-encoded shortstr for basic.deliver
        self.channel = channel
        self.queue = queue
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.prefetch = prefetch
        self.arguments = arguments
        self.deliveries: dict[int, Delivery] = {}  # unacked, oldest first
        self.timeout = timeout  # effective ms (smallest of server, queue, consumer), None: off
        # x-priority (an integer, checked by arguments.validate_consume; may be negative): higher is
        # served first while it has room (Queue._next_consumer).
        p = arguments.get("x-priority", 0)
        self.priority = int(p) if isinstance(p, int) and not isinstance(p, bool) else 0

    def can_take(self) -> bool:
        ch = self.channel
        if ch.paused:
            return False
        if self.no_ack:
            return True
        if self.prefetch and len(self.deliveries) >= self.prefetch:
            return False
        return not (ch.global_prefetch and len(ch.unacked) + ch.tx_held >= ch.global_prefetch)


class Channel:
    """Delivery tags (from 1, per channel), unacked deliveries, prefetch, consumers."""

    def __init__(self, connection: ClientConnection, number: int, sink: ChannelSink, clock: Clock) -> None:
        self.connection = connection
        self.number = number
        self.sink = sink
        self.clock = clock
        self.next_tag = 1
        self.unacked: dict[int, Delivery] = {}  # by tag, oldest first
        self.gets: dict[int, Delivery] = {}  # the unacked ones fetched by basic.get
        self.consumers: dict[str, Consumer] = {}
        self.prefetch = 0  # for consumers created afterwards (global=false)
        self.global_prefetch = 0  # shared by the channel (global=true)
        self.paused = False  # the connection's transport buffer is full
        self.confirm = False
        self.closed = False
        # tx.select'ed: the acks/nacks/rejects waiting for tx.commit, as (requeue, deliveries),
        # requeue None for an ack. They left ``unacked`` (a second ack of the tag is an error, as
        # in RabbitMQ) but still count against prefetch until the commit. None: not transactional.
        self.tx: list[tuple[bool | None, list[Delivery]]] | None = None
        self.tx_held = 0
        self.tx_publishes_held = 0  # publishes the server holds for tx.commit (for management)
        # Direct reply-to: the channel's pseudo-queue (not in any vhost), fed by replies routed to its
        # generated name, consumed by its one no-ack reply consumer (Broker.consume_replies).
        self.reply_queue: Queue | None = None

    def __repr__(self) -> str:
        return f"<Channel {self.number} unacked={len(self.unacked)} consumers={len(self.consumers)}>"

    # ---- deliveries ----------------------------------------------------------------------------

    def deliver(self, consumer: Consumer, queue: Queue, msg: Message) -> None:
        """Called by the queue's dispatcher: send ``msg`` to ``consumer``."""
        tag = self.next_tag
        if queue is self.reply_queue:  # a direct reply: RabbitMQ 3.10 sends the next tag, unused
            queue.delivered += 1
            self.sink.deliver(consumer.tag_bytes, tag, msg)
            return
        self.next_tag = tag + 1
        queue.delivered += 1
        if msg.redelivered:
            queue.redelivered += 1
        if consumer.no_ack:
            queue.drop(msg)
        else:
            d = Delivery(tag, queue, msg, consumer, self.clock(), consumer.timeout)
            self.unacked[tag] = d
            consumer.deliveries[tag] = d
            queue.unacked += 1
            queue.unacked_bytes += msg.size
            if msg.stored and not msg.redelivered:
                queue.store.mark_delivered(queue.vhost, queue.name, (msg.msg_id,))
        self.sink.deliver(consumer.tag_bytes, tag, msg)

    def get(self, queue: Queue, no_ack: bool, timeout: int | None) -> tuple[int, Message] | None:
        """basic.get: take the head of ``queue``. Returns (delivery tag, message) or None if empty."""
        msg = queue.take()
        if msg is None:
            return None
        tag = self.next_tag
        self.next_tag = tag + 1
        queue.delivered += 1
        if msg.redelivered:
            queue.redelivered += 1
        if no_ack:
            queue.drop(msg)
        else:
            self.unacked[tag] = self.gets[tag] = Delivery(tag, queue, msg, None, self.clock(), timeout)
            queue.unacked += 1
            queue.unacked_bytes += msg.size
            if msg.stored and not msg.redelivered:
                queue.store.mark_delivered(queue.vhost, queue.name, (msg.msg_id,))
        return tag, msg

    def _take(self, tag: int, multiple: bool, detach: bool = True) -> list[Delivery]:
        """Remove and return the deliveries an ack/nack/reject settles, or raise 406.

        ``detach=False`` (a transaction) leaves them in their consumer's (or basic.get's) books.
        """
        unacked = self.unacked
        if multiple:
            if tag == 0:
                taken = list(unacked.values())
                unacked.clear()
            else:
                if tag not in unacked and (not unacked or tag < next(iter(unacked))):
                    # RabbitMQ: multiple with a tag at or below nothing outstanding is an error
                    raise precondition_failed(f"unknown delivery tag {tag}")
                # Tags are in order: walk from the oldest to ``tag`` only (copying every key made
                # acking a long backlog one "multiple" at a time quadratic).
                upto = []
                for t in unacked:
                    if t > tag:
                        break
                    upto.append(t)
                taken = [unacked.pop(t) for t in upto]
        else:
            d = unacked.pop(tag, None)
            if d is None:
                raise precondition_failed(f"unknown delivery tag {tag}")
            taken = [d]
        if detach:
            for d in taken:
                self._detach(d)
        return taken

    def _detach(self, d: Delivery) -> bool:
        """Drop ``d`` from its consumer's (or basic.get's) books; False if it was no longer there."""
        if d.consumer is not None:
            return d.consumer.deliveries.pop(d.tag, None) is not None
        return self.gets.pop(d.tag, None) is not None

    def ack(self, tag: int, multiple: bool) -> None:
        if self.tx is not None:
            self._tx_hold(None, self._take(tag, multiple, detach=False))
            return
        queues: set[Queue] = set()
        for d in self._take(tag, multiple):
            d.queue.settle(d.msg)
            queues.add(d.queue)
        self._redispatch(queues)

    def reject(self, tag: int, multiple: bool, requeue: bool) -> None:
        """basic.nack / basic.reject."""
        if self.tx is not None:
            self._tx_hold(requeue, self._take(tag, multiple, detach=False))
            return
        taken = self._take(tag, multiple)
        if requeue:
            self._requeue(taken)
        else:
            queues: set[Queue] = set()
            for d in taken:
                d.queue.reject(d.msg)  # dead-lettered first when the queue has x-dead-letter-exchange
                queues.add(d.queue)
            self._redispatch(queues)

    # ---- transactions (tx.select / commit / rollback) -------------------------------------------

    def tx_select(self) -> None:
        if self.tx is None:
            self.tx = []

    def _tx_hold(self, requeue: bool | None, taken: list[Delivery]) -> None:
        assert self.tx is not None
        self.tx.append((requeue, taken))
        self.tx_held += len(taken)

    def tx_commit(self) -> None:
        """Apply the held acks, nacks and rejects, in the order they came (publishes are the caller's)."""
        assert self.tx is not None
        pending, self.tx, self.tx_held = self.tx, [], 0
        queues: set[Queue] = set()
        for requeue, taken in pending:
            # A delivery requeued meanwhile (consumer timeout in cancel mode) is no longer ours.
            live = [d for d in taken if self._detach(d)]
            if requeue:
                self._requeue(live)
                continue
            for d in live:
                if requeue is None:
                    d.queue.settle(d.msg)
                else:
                    d.queue.reject(d.msg)
                queues.add(d.queue)
        self._redispatch(queues)

    def tx_rollback(self) -> None:
        """Forget the held acks, nacks and rejects: those deliveries are unacked again."""
        assert self.tx is not None
        pending, self.tx, self.tx_held = self.tx, [], 0
        back = [d for _, taken in pending for d in taken if self._still_held(d)]
        if back:
            for d in back:
                self.unacked[d.tag] = d
            self.unacked = dict(sorted(self.unacked.items()))

    def _still_held(self, d: Delivery) -> bool:
        return (d.tag in d.consumer.deliveries) if d.consumer is not None else (d.tag in self.gets)

    def recover(self) -> None:
        """basic.recover(requeue=true): every unacked delivery goes back to its queue."""
        taken = list(self.unacked.values())
        self.unacked.clear()
        self.gets.clear()
        for c in self.consumers.values():
            c.deliveries.clear()
        self._requeue(taken)

    def requeue_consumer(self, consumer: Consumer) -> None:
        """Requeue the unacked deliveries of one consumer (timeout in cancel mode)."""
        taken = list(consumer.deliveries.values())
        consumer.deliveries.clear()
        for d in taken:
            self.unacked.pop(d.tag, None)
        self._requeue(taken)

    def _requeue(self, taken: list[Delivery]) -> None:
        by_queue: dict[Queue, list[Message]] = {}
        for d in taken:
            by_queue.setdefault(d.queue, []).append(d.msg)
        for q, msgs in by_queue.items():
            q.requeue(msgs)
        self._redispatch(set(by_queue))

    def _redispatch(self, queues: set[Queue]) -> None:
        """Room freed on this channel: the queues it consumes from may send more."""
        for q in queues:
            if q.ready and q.consumers:
                q.dispatch()
        if self.global_prefetch:
            for c in list(self.consumers.values()):
                if c.queue not in queues and c.queue.ready:
                    c.queue.dispatch()

    # ---- flow ----------------------------------------------------------------------------------

    def set_paused(self, paused: bool) -> None:
        """The transport's write buffer filled (True) or drained (False)."""
        self.paused = paused
        if not paused:
            for c in list(self.consumers.values()):
                if c.queue.ready:
                    c.queue.dispatch()

    def set_qos(self, prefetch_count: int, global_: bool) -> None:
        if global_:
            self.global_prefetch = prefetch_count
        else:
            # Applies to consumers created afterwards (RabbitMQ) and, as users asked for
            # (rabbitmq-server#11948, Celery's dynamic prefetch), to the existing ones too.
            self.prefetch = prefetch_count
            for c in self.consumers.values():
                c.prefetch = prefetch_count
        for c in list(self.consumers.values()):
            if c.queue.ready:
                c.queue.dispatch()

    # ---- teardown ------------------------------------------------------------------------------

    def release(self) -> list[Consumer]:
        """The channel closed: cancel its consumers and requeue everything unacked.

        Returns the consumers removed, so the caller can auto-delete their queues.
        """
        self.closed = True
        consumers = list(self.consumers.values())
        for c in consumers:
            c.queue.remove_consumer(c)
        self.consumers.clear()
        taken = list(self.unacked.values())
        if self.tx:  # acked in a transaction that was never committed: back to their queues
            taken += [d for _, held in self.tx for d in held if self._still_held(d)]
        self.tx = None
        self.tx_held = 0
        self.unacked.clear()
        self.gets.clear()
        by_queue: dict[Queue, list[Message]] = {}
        for d in taken:
            by_queue.setdefault(d.queue, []).append(d.msg)
        for q, msgs in by_queue.items():
            q.requeue(msgs)
        return consumers


class Clock(Protocol):
    def __call__(self) -> float: ...

