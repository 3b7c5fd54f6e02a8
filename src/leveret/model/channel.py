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
        "timeout",
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

    def can_take(self) -> bool:
        ch = self.channel
        if ch.paused:
            return False
        if self.no_ack:
            return True
        if self.prefetch and len(self.deliveries) >= self.prefetch:
            return False
        return not (ch.global_prefetch and len(ch.unacked) >= ch.global_prefetch)


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

    def __repr__(self) -> str:
        return f"<Channel {self.number} unacked={len(self.unacked)} consumers={len(self.consumers)}>"

    # ---- deliveries ----------------------------------------------------------------------------

    def deliver(self, consumer: Consumer, queue: Queue, msg: Message) -> None:
        """Called by the queue's dispatcher: send ``msg`` to ``consumer``."""
        tag = self.next_tag
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

    def _take(self, tag: int, multiple: bool) -> list[Delivery]:
        """Remove and return the deliveries an ack/nack/reject settles, or raise 406."""
        unacked = self.unacked
        if multiple:
            if tag == 0:
                taken = list(unacked.values())
                unacked.clear()
            else:
                if tag not in unacked and (not unacked or tag < next(iter(unacked))):
                    # RabbitMQ: multiple with a tag at or below nothing outstanding is an error
                    raise precondition_failed(f"unknown delivery tag {tag}")
                taken = []
                for t in list(unacked):
                    if t > tag:
                        break
                    taken.append(unacked.pop(t))
        else:
            d = unacked.pop(tag, None)
            if d is None:
                raise precondition_failed(f"unknown delivery tag {tag}")
            taken = [d]
        for d in taken:
            if d.consumer is not None:
                d.consumer.deliveries.pop(d.tag, None)
            else:
                self.gets.pop(d.tag, None)
        return taken

    def ack(self, tag: int, multiple: bool) -> None:
        queues: set[Queue] = set()
        for d in self._take(tag, multiple):
            d.queue.settle(d.msg)
            queues.add(d.queue)
        self._redispatch(queues)

    def reject(self, tag: int, multiple: bool, requeue: bool) -> None:
        """basic.nack / basic.reject."""
        taken = self._take(tag, multiple)
        if requeue:
            self._requeue(taken)
        else:
            queues: set[Queue] = set()
            for d in taken:
                d.queue.reject(d.msg)  # dead-lettered first when the queue has x-dead-letter-exchange
                queues.add(d.queue)
            self._redispatch(queues)

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

