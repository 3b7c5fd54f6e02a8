"""The server side of one open channel: the model's :class:`ChannelSink`, writing deliveries,
cancels and publisher confirms to its connection (:mod:`leveret.server.connection`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pamqp import commands as C

from leveret.errors import ChannelError, ReplyCode
from leveret.model.channel import Channel
from leveret.model.message import Message
from leveret.model.properties import with_delivery_count
from leveret.protocol import codec
from leveret.protocol.events import Publish

if TYPE_CHECKING:
    from leveret.server.connection import AMQPServerProtocol

# Bodies from this size on are delivered as buffers that point into the body (writev), not copied
# into one bytes object, and output holding them goes to the transport with writelines.
LARGE_BODY = 64 * 1024


class ServerChannel:
    """Server-side state of one open channel; the model's :class:`ChannelSink`."""

    __slots__ = (
        "conn", "number", "model", "confirm_seq", "confirmed", "needs_sync", "syncs_in_flight", "dirty", "nacks",
        "tx_publishes",
    )  # fmt: skip

    def __init__(self, conn: AMQPServerProtocol, number: int) -> None:
        self.conn = conn
        self.number = number
        self.model: Channel = None  # type: ignore[assignment]  # set right after creation
        self.confirm_seq = 0  # last publish sequence number in confirm mode
        self.confirmed = 0  # highest sequence number confirmed
        self.needs_sync = False  # a publish since the last confirm was journalled
        self.syncs_in_flight = 0
        self.dirty = False
        self.nacks: list[int] = []  # sequence numbers refused by a queue (x-overflow reject-publish), ascending
        self.tx_publishes: list[Publish] = []  # held for tx.commit (the model holds the acks)

    # ChannelSink
    def deliver(self, consumer_tag: bytes, delivery_tag: int, msg: Message) -> None:
        assert msg.body is not None  # the queue pages a body in before it dispatches the message
        # Quorum queues (RabbitMQ 3.10): a consumer sees x-delivery-count once the count is above 0.
        props = msg.properties if not msg.delivery_count else with_delivery_count(msg.properties, msg.delivery_count)
        if len(msg.body) >= LARGE_BODY:  # frames that point into the body, written with writev: no copy
            self.conn.write_parts(
                codec.deliver_parts(
                    self.number, consumer_tag, delivery_tag, msg.redelivered, codec.shortstr(msg.exchange),
                    codec.shortstr(msg.routing_key), props, msg.body, self.conn.amqp.frame_max,
                ),  # fmt: skip
                len(msg.body),
            )
            return
        self.conn.write(
            codec.encode_deliver(
                self.number, consumer_tag, delivery_tag, msg.redelivered, codec.shortstr(msg.exchange),
                codec.shortstr(msg.routing_key), props, msg.body, self.conn.amqp.frame_max,
            )  # fmt: skip
        )

    def cancel_consumer(self, consumer_tag: str) -> None:
        self.conn.write(codec.encode_method(self.number, codec.unchecked(C.Basic.Cancel, consumer_tag=consumer_tag, nowait=True)))

    def close_channel(self, code: int, text: str) -> None:
        self.conn.channel_error(ChannelError(ReplyCode(code), text, channel=self.number))
        self.conn.flush()

    def confirm_publish(self, stored: bool, rejected: bool = False) -> None:
        self.confirm_seq += 1
        if rejected:
            self.nacks.append(self.confirm_seq)
        if stored:
            self.needs_sync = True
        if not self.dirty:
            self.dirty = True
            self.conn.confirm_dirty.append(self)

    def send_confirm(self, upto: int) -> None:
        """Confirm every publish up to ``upto``: acks (multiple where possible), a nack for each refused one."""
        if upto > self.confirmed and not self.model.closed:
            nacks = self.nacks
            while nacks and nacks[0] <= upto:
                seq = nacks.pop(0)
                if seq - 1 > self.confirmed:
                    self.conn.write(codec.encode_ack(self.number, seq - 1, seq - 1 - self.confirmed > 1))
                self.conn.write(codec.encode_nack(self.number, seq, False))
                self.conn.broker.confirmed += seq - self.confirmed
                self.confirmed = seq
            if upto > self.confirmed:
                self.conn.write(codec.encode_ack(self.number, upto, upto - self.confirmed > 1))
                self.conn.broker.confirmed += upto - self.confirmed
                self.confirmed = upto
