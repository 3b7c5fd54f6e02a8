"""The broker: vhosts, connections, and the operations the server calls.

Every method is synchronous; the caller passes time in through the injected clock.
Errors are raised as :class:`leveret.errors.AMQPError` with RabbitMQ's codes and texts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from leveret.errors import ChannelError, ConnectionError_, ReplyCode
from leveret.model import arguments as A
from leveret.model.channel import Channel, ChannelSink, Consumer, Delivery
from leveret.model.connection import ClientConnection
from leveret.model.exchange import TYPES
from leveret.model.message import Message
from leveret.model.queue import Queue
from leveret.model.vhost import VHost, server_name
from leveret.storage.base import Recovered, Store

log = logging.getLogger("leveret.model")

TIMEOUT_TEXT = (
    "delivery acknowledgement on channel {channel} timed out. Timeout value used: {ms} ms. "
    "This timeout value can be configured, see consumers doc guide to learn more"
)


class Broker:
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float],
        consumer_timeout: int | None = 1_800_000,
        consumer_timeout_action: str = "close",
        page_limit: int | None = None,
    ) -> None:
        self.store = store
        self.page_limit = page_limit  # per durable queue: ready bytes kept in RAM before paging
        self.clock = clock
        self.consumer_timeout = consumer_timeout or None
        self.consumer_timeout_action = consumer_timeout_action
        self.vhosts: dict[str, VHost] = {"/": VHost("/", store, page_limit)}
        self.connections: dict[str, ClientConnection] = {}
        self.next_msg_id = 1
        # broker-wide counters (management rates)
        self.published = self.confirmed = self.returned = 0
        # counters of deleted queues, so broker-wide totals never go backwards
        self.delivered_deleted = self.acked_deleted = self.redelivered_deleted = 0

    # ---- recovery ------------------------------------------------------------------------------

    def recover(self, rec: Recovered, *, assume_delivered: bool = False) -> tuple[int, int]:
        """Rebuild durable state from the store. Returns (queues, messages) recovered.

        ``assume_delivered`` (after a crash) flags every message redelivered, since the
        delivered marks of the last moments may not have reached the disk.
        """
        self.next_msg_id = max(self.next_msg_id, rec.next_msg_id)
        for x in rec.exchanges:
            vh = self.vhosts.setdefault(x.vhost, VHost(x.vhost, self.store, self.page_limit))
            if x.name not in vh.exchanges:
                vh.exchanges[x.name] = TYPES[x.type](
                    x.vhost, x.name, durable=True, auto_delete=x.auto_delete, internal=x.internal, arguments=x.arguments
                )
        nmsg = 0
        for qr in rec.queues:
            vh = self.vhosts.setdefault(qr.vhost, VHost(qr.vhost, self.store, self.page_limit))
            q = Queue(
                qr.vhost, qr.name, durable=True, exclusive_owner=None, auto_delete=qr.auto_delete,
                arguments=dict(qr.arguments), store=self.store, page_limit=self.page_limit,
                consumer_timeout=A.ms_argument(qr.arguments, "x-consumer-timeout", f"queue '{qr.name}'"),
            )  # fmt: skip
            vh.queues[qr.name] = q
            vh.exchanges[""].bind(qr.name, qr.name, {})
            for m in rec.messages.get((qr.vhost, qr.name), ()):
                q.restore(
                    Message(
                        m.msg_id, m.exchange, m.routing_key, m.properties, m.body, True, m.delivered or assume_delivered
                    )
                )
                nmsg += 1
        for b in rec.bindings:
            bvh = self.vhosts.get(b.vhost)
            if bvh and b.source in bvh.exchanges and b.destination in bvh.queues:
                bvh.exchanges[b.source].bind(b.destination, b.routing_key, dict(b.arguments))
        return len(rec.queues), nmsg

    # ---- connections and channels --------------------------------------------------------------

    def vhost(self, name: str) -> VHost:
        vh = self.vhosts.get(name)
        if vh is None:
            raise ConnectionError_(ReplyCode.NOT_ALLOWED, f"vhost {name} not found")
        return vh

    def vhost_or_404(self, name: str) -> VHost:
        """For management: a missing vhost is 404 rather than a connection error."""
        vh = self.vhosts.get(name)
        if vh is None:
            raise ChannelError(ReplyCode.NOT_FOUND, f"no vhost '{name}'")
        return vh

    def connect(self, conn: ClientConnection) -> None:
        self.vhost(conn.vhost)
        self.connections[conn.name] = conn

    def disconnect(self, conn: ClientConnection) -> None:
        """The connection is gone: requeue its deliveries, drop its exclusive queues."""
        for ch in list(conn.channels.values()):
            self.close_channel(ch)
        vh = self.vhosts.get(conn.vhost)
        for q in list(conn.exclusive_queues):
            if vh is not None:
                self._delete_queue(vh, q)
        conn.exclusive_queues.clear()
        self.connections.pop(conn.name, None)

    def open_channel(self, conn: ClientConnection, number: int, sink: ChannelSink) -> Channel:
        ch = Channel(conn, number, sink, self.clock)
        conn.channels[number] = ch
        return ch

    def close_channel(self, ch: Channel) -> None:
        if ch.closed:
            return
        ch.connection.channels.pop(ch.number, None)
        for c in ch.release():
            self._maybe_auto_delete(c.queue)

    # ---- queues and exchanges ------------------------------------------------------------------

    def declare_queue(
        self, ch: Channel, name: str, *, passive: bool, durable: bool, exclusive: bool, auto_delete: bool,
        arguments: dict[str, Any],
    ) -> Queue:  # fmt: skip
        return self.vhost(ch.connection.vhost).declare_queue(
            ch.connection, name, passive=passive, durable=durable, exclusive=exclusive, auto_delete=auto_delete,
            arguments=arguments,
        )  # fmt: skip

    def delete_queue(self, vhost: str, name: str, *, if_unused: bool, if_empty: bool, conn: ClientConnection | None) -> int:
        vh = self.vhost(vhost)
        q = vh.queues.get(name)
        if q is None:
            return 0  # RabbitMQ: deleting a missing queue succeeds
        vh.get_queue(name, conn)
        vh.check_delete(q, if_unused, if_empty)
        return self._delete_queue(vh, q)

    def _delete_queue(self, vh: VHost, q: Queue) -> int:
        for c in list(q.consumers):
            q.remove_consumer(c)
            c.channel.consumers.pop(c.tag, None)
            if c.channel.connection.cancel_notify and not c.channel.closed:
                c.channel.sink.cancel_consumer(c.tag)
        self.delivered_deleted += q.delivered
        self.acked_deleted += q.acked
        self.redelivered_deleted += q.redelivered
        return vh.delete_queue(q)

    def purge_queue(self, vhost: str, name: str, conn: ClientConnection | None) -> int:
        return self.vhost(vhost).get_queue(name, conn).purge()

    def _maybe_auto_delete(self, q: Queue) -> None:
        if q.auto_delete and q.had_consumer and not q.consumers and not q.deleted:
            self._delete_queue(self.vhosts[q.vhost], q)

    # ---- messages ------------------------------------------------------------------------------

    def publish(
        self, vhost: str, exchange: str, routing_key: str, properties: bytes, body: bytes, persistent: bool
    ) -> tuple[bool, bool]:
        """Route a message. Returns (routed to at least one queue, journalled in the store)."""
        vh = self.vhosts[vhost]
        x = vh.exchanges.get(exchange)
        if x is None:
            raise ChannelError(ReplyCode.NOT_FOUND, f"no exchange '{exchange}' in vhost '{vhost}'", 60, 40)
        if x.internal:
            raise ChannelError(ReplyCode.ACCESS_REFUSED, f"cannot publish to internal exchange '{exchange}' in vhost '{vhost}'", 60, 40)
        self.published += 1
        names = x.route(routing_key)
        queues = vh.queues
        msg_id = self.next_msg_id
        self.next_msg_id = msg_id + 1
        routed = stored = False
        first = True
        for qn in names:
            q = queues.get(qn)
            if q is None:
                continue
            m = Message(msg_id, exchange, routing_key, properties, body, persistent)
            if not first:
                m = m.copy()
            first = False
            routed = True
            if q.publish(m):
                stored = True
        return routed, stored

    def consume(
        self, ch: Channel, queue: str, tag: str, *, no_ack: bool, exclusive: bool, arguments: dict[str, Any]
    ) -> Consumer:
        conn = ch.connection
        q = self.vhost(conn.vhost).get_queue(queue, conn)
        if not tag:
            tag = server_name("amq.ctag-")
        elif tag in ch.consumers:
            raise ConnectionError_(ReplyCode.NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'", 60, 20)
        if q.consumers and (exclusive or q.exclusive_consumer):
            raise ChannelError(ReplyCode.ACCESS_REFUSED, f"queue '{queue}' in vhost '{conn.vhost}' in exclusive use", 60, 20)
        A.validate_consume(queue, conn.vhost, arguments)
        own = A.ms_argument(arguments, "x-consumer-timeout", f"consumer on queue '{queue}' in vhost '{conn.vhost}'")
        timeout = _smallest(self.consumer_timeout, q.consumer_timeout, own)
        c = Consumer(
            tag, ch, q, no_ack=no_ack, exclusive=exclusive, prefetch=ch.prefetch, arguments=arguments, timeout=timeout
        )
        ch.consumers[tag] = c
        q.add_consumer(c)
        return c

    def cancel(self, ch: Channel, tag: str) -> bool:
        """basic.cancel: the consumer stops; its unacked deliveries stay on the channel."""
        c = ch.consumers.pop(tag, None)
        if c is None:
            return False
        c.queue.remove_consumer(c)
        # Its deliveries remain unacked on the channel; they now belong to no consumer.
        for d in c.deliveries.values():
            d.consumer = None
            ch.gets[d.tag] = d
        c.deliveries.clear()
        self._maybe_auto_delete(c.queue)
        return True

    def get(self, ch: Channel, queue: str, no_ack: bool) -> tuple[int, Message, int] | None:
        conn = ch.connection
        q = self.vhost(conn.vhost).get_queue(queue, conn)
        got = ch.get(q, no_ack, _smallest(self.consumer_timeout, q.consumer_timeout))
        if got is None:
            return None
        return got[0], got[1], len(q.ready)

    # ---- consumer acknowledgement timeouts -----------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        """Act on every delivery whose acknowledgement deadline has passed (oldest first)."""
        for conn in list(self.connections.values()):
            for ch in list(conn.channels.values()):
                if ch.unacked and not ch.closed:
                    self._check_channel(ch, now)

    def _check_channel(self, ch: Channel, now: float) -> None:
        expired: Delivery | None = None
        for c in list(ch.consumers.values()):
            if c.deliveries:
                d = next(iter(c.deliveries.values()))
                dl = d.deadline
                if dl is not None and dl <= now and (expired is None or d.tag < expired.tag):
                    expired = d
        for d in ch.gets.values():
            dl = d.deadline
            if dl is not None and dl <= now and (expired is None or d.tag < expired.tag):
                expired = d
            break  # oldest get only
        if expired is None:
            return
        stuck = expired.consumer
        log.warning(
            "Consumer '%s' on channel %d and queue '%s' in vhost '%s' has timed out waiting for a consumer "
            "acknowledgement of a delivery with delivery tag = %d. Timeout used: %d ms. Connection: %s",
            stuck.tag if stuck else "(basic.get)", ch.number, expired.queue.name, expired.queue.vhost, expired.tag,
            expired.timeout, ch.connection.name,
        )  # fmt: skip
        if self.consumer_timeout_action == "cancel" and stuck is not None and ch.connection.cancel_notify:
            ch.consumers.pop(stuck.tag, None)
            stuck.queue.remove_consumer(stuck)
            ch.requeue_consumer(stuck)
            ch.sink.cancel_consumer(stuck.tag)
            return
        ch.sink.close_channel(ReplyCode.PRECONDITION_FAILED, TIMEOUT_TEXT.format(channel=ch.number, ms=expired.timeout))


def _smallest(*values: int | None) -> int | None:
    vs = [v for v in values if v]
    return min(vs) if vs else None

