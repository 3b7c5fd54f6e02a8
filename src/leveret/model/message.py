"""A message as one queue holds it."""

from __future__ import annotations


class Message:
    """One message in one queue.

    ``properties`` is the raw content-header property section, forwarded unchanged.
    ``msg_id`` orders the queue: a requeued message goes back to its original place.
    ``stored`` is true when the message is in the durable store (persistent, in a
    durable queue), so acks and deliveries must be journalled.
    """

    __slots__ = ("msg_id", "exchange", "routing_key", "properties", "body", "persistent", "redelivered", "stored")

    def __init__(
        self,
        msg_id: int,
        exchange: str,
        routing_key: str,
        properties: bytes,
        body: bytes,
        persistent: bool,
        redelivered: bool = False,
    ) -> None:
        self.msg_id = msg_id
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties
        self.body = body
        self.persistent = persistent
        self.redelivered = redelivered
        self.stored = False

    def copy(self) -> Message:
        return Message(
            self.msg_id, self.exchange, self.routing_key, self.properties, self.body, self.persistent, self.redelivered
        )

    def __repr__(self) -> str:
        return f"<Message {self.msg_id} {len(self.body)}B{' redelivered' if self.redelivered else ''}>"
