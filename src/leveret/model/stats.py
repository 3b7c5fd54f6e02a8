"""Frozen snapshots of live model objects, for management (never live references)."""

from __future__ import annotations

from leveret.model.broker import Broker
from leveret.model.queue import Queue
from leveret.model.snapshots import (
    BindingSnapshot,
    ChannelSnapshot,
    ConnectionSnapshot,
    ConsumerSnapshot,
    ExchangeSnapshot,
    QueueSnapshot,
    Totals,
)


def queue_snapshot(q: Queue, default_timeout: int | None) -> QueueSnapshot:
    owner = q.exclusive_owner
    timeout = min((t for t in (default_timeout, q.consumer_timeout) if t), default=None)
    return QueueSnapshot(
        vhost=q.vhost, name=q.name, durable=q.durable, auto_delete=q.auto_delete, exclusive=owner is not None,
        arguments=dict(q.arguments), type=q.type, messages_ready=len(q.ready), messages_unacknowledged=q.unacked,
        consumers=len(q.consumers), message_bytes_ready=q.ready_bytes, message_bytes_unacknowledged=q.unacked_bytes,
        consumer_timeout=timeout, exclusive_owner=getattr(owner, "name", None), published=q.published,
        delivered=q.delivered, acked=q.acked, redelivered=q.redelivered,
        policy=q.policy.name if q.policy is not None else None,
        operator_policy=q.operator_policy.name if q.operator_policy is not None else None,
        effective_policy_definition=dict(q.effective_policy),
    )  # fmt: skip


def queues(b: Broker, vhost: str | None = None) -> list[QueueSnapshot]:
    return [
        queue_snapshot(q, b.consumer_timeout)
        for vh in b.vhosts.values()
        if vhost is None or vh.name == vhost
        for q in vh.queues.values()
    ]


def exchanges(b: Broker, vhost: str | None = None) -> list[ExchangeSnapshot]:
    return [
        ExchangeSnapshot(x.vhost, x.name, x.type, x.durable, x.auto_delete, x.internal, dict(x.arguments),
                         x.policy.name if x.policy is not None else None)
        for vh in b.vhosts.values()
        if vhost is None or vh.name == vhost
        for x in vh.exchanges.values()
    ]


def bindings(b: Broker, vhost: str | None = None) -> list[BindingSnapshot]:
    return [
        BindingSnapshot(x.vhost, x.name, dest, dest_type, rk, dict(args))
        for vh in b.vhosts.values()
        if vhost is None or vh.name == vhost
        for x in vh.exchanges.values()
        for (dest_type, dest, rk, _), args in x.bindings.items()
    ]


def consumers(b: Broker, vhost: str | None = None) -> list[ConsumerSnapshot]:
    return [
        ConsumerSnapshot(
            conn.vhost, c.queue.name, c.tag, conn.name, ch.number, not c.no_ack, c.exclusive, c.prefetch,
            dict(c.arguments), c.timeout,
        )  # fmt: skip
        for conn in b.connections.values()
        if vhost is None or conn.vhost == vhost
        for ch in conn.channels.values()
        for c in ch.consumers.values()
    ]


def channels(b: Broker) -> list[ChannelSnapshot]:
    return [
        ChannelSnapshot(
            conn.name, ch.number, conn.vhost, conn.user, len(ch.consumers), len(ch.unacked), ch.prefetch,
            ch.global_prefetch, ch.confirm, transactional=ch.tx is not None,
            messages_uncommitted=ch.tx_publishes_held, acks_uncommitted=ch.tx_held,
        )  # fmt: skip
        for conn in b.connections.values()
        for ch in conn.channels.values()
    ]


def connections(b: Broker) -> list[ConnectionSnapshot]:
    return [
        ConnectionSnapshot(
            name=c.name, vhost=c.vhost, user=c.user, peer_host=c.peer[0], peer_port=c.peer[1], host=c.local[0],
            port=c.local[1], channels=len(c.channels), connected_at=c.connected_at,
            client_properties=dict(c.client_properties), recv_oct=c.recv_oct, send_oct=c.send_oct,
            heartbeat=c.heartbeat, frame_max=c.frame_max, channel_max=c.channel_max,
        )  # fmt: skip
        for c in b.connections.values()
    ]


def totals(b: Broker) -> Totals:
    delivered = acked = redelivered = 0
    for vh in b.vhosts.values():
        for q in vh.queues.values():
            delivered += q.delivered
            acked += q.acked
            redelivered += q.redelivered
    delivered += b.delivered_deleted
    acked += b.acked_deleted
    redelivered += b.redelivered_deleted
    return Totals(
        published=b.published, delivered=delivered, acked=acked, redelivered=redelivered, confirmed=b.confirmed,
        returned=b.returned,
    )
