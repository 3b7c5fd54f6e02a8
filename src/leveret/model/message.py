"""A message as one queue holds it."""

from __future__ import annotations


class Message:
    """One message in one queue.

    ``properties`` is the raw content-header property section, forwarded unchanged.
    ``msg_id`` orders the queue: a requeued message goes back to its original place.
    ``stored`` is true when the message is in the durable store (persistent, in a
    durable queue), so acks and deliveries must be journalled. ``body`` is None while
    the message is paged out to the store (a deep queue); ``size`` is always its length.
    ``expires`` is the clock time its TTL runs out (queue ``x-message-ttl`` or its own
    ``expiration``, the smaller), None when it has none. ``priority`` is its level in a
    priority queue (0 elsewhere). ``delivery_count`` counts its returns in a quorum queue.
    """

    __slots__ = (
        "msg_id", "exchange", "routing_key", "properties", "body", "size", "persistent", "redelivered", "stored",
        "expires", "priority", "delivery_count",
    )  # fmt: skip

    def __init__(
        self,
        msg_id: int,
        exchange: str,
        routing_key: str,
        properties: bytes,
        body: bytes | bytearray | None,
        persistent: bool,
        redelivered: bool = False,
    ) -> None:
        self.msg_id = msg_id
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties
        self.body = body
        self.size = len(body) if body is not None else 0
        self.persistent = persistent
        self.redelivered = redelivered
        self.stored = False
        self.expires: float | None = None
        self.priority = 0
        # In a quorum queue: how many times it came back unacked (sent as x-delivery-count); None elsewhere.
        self.delivery_count: int | None = None

    def copy(self) -> Message:
        m = Message(
            self.msg_id, self.exchange, self.routing_key, self.properties, self.body, self.persistent, self.redelivered
        )
        m.size = self.size
        m.expires = self.expires
        m.priority = self.priority
        return m

    def __repr__(self) -> str:
        return f"<Message {self.msg_id} {self.size}B{' redelivered' if self.redelivered else ''}>"
