"""The :class:`Backend` over a live broker model (what ``leveret server`` serves)."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Iterable
from typing import Any

from pamqp import decode as pamqp_decode
from pamqp.header import ContentHeader

from leveret.errors import ChannelError, ReplyCode, resource_locked
from leveret.management.backend import GotMessage, NodeInfo, QueueCounters, QueueKey
from leveret.model import stats
from leveret.model.access import CONFIGURE, QUEUE, READ
from leveret.model.broker import Broker
from leveret.model.exchange import TYPES as EXCHANGE_TYPES
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

PROPERTY_NAMES = {
    "content_type": "content_type", "content_encoding": "content_encoding", "headers": "headers",
    "delivery_mode": "delivery_mode", "priority": "priority", "correlation_id": "correlation_id",
    "reply_to": "reply_to", "expiration": "expiration", "message_id": "message_id", "timestamp": "timestamp",
    "message_type": "type", "user_id": "user_id", "app_id": "app_id", "cluster_id": "cluster_id",
}  # fmt: skip


def decode_properties(raw: bytes) -> dict[str, Any]:
    """Raw AMQP basic properties -> management's dict (only the properties that are set).

    What pamqp cannot decode (text that is not UTF-8, an unknown field type, a table nested too
    deeply) is decoded field by field instead: text with U+FFFD for bad bytes, and a header value
    that cannot be read at all as ``"<undecodable: N bytes>"``, with the headers before it kept.
    """
    try:
        return _decode_whole(raw)
    except Exception:  # pamqp raises many kinds; the fallback below copes with each
        return _decode_fieldwise(raw)


def _decode_whole(raw: bytes) -> dict[str, Any]:
    header = ContentHeader()
    header.unmarshal(struct.pack(">HHQ", 60, 0, 0) + raw)
    (flags,) = struct.unpack_from(">H", raw)
    out: dict[str, Any] = {}
    # Only the properties whose flag bit is set (pamqp defaults some unset ones, e.g. cluster_id to "").
    for bit, (attr, name) in zip(range(15, 1, -1), PROPERTY_NAMES.items(), strict=True):
        if not flags & (1 << bit):
            continue
        v = getattr(header.properties, attr, None)
        if v is not None:
            out[name] = int(v.timestamp()) if attr == "timestamp" and hasattr(v, "timestamp") else v
    return out


# The wire type of each property, in flag-bit order.
_KINDS = ("s", "s", "t", "o", "o", "s", "s", "s", "s", "q", "s", "s", "s", "s")


def _decode_fieldwise(raw: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        (flags,) = struct.unpack_from(">H", raw)
        pos = 2
        for bit, name, kind in zip(range(15, 1, -1), PROPERTY_NAMES.values(), _KINDS, strict=True):
            if not flags & (1 << bit):
                continue
            if kind == "s":
                size = raw[pos]
                _need(raw, pos + 1 + size)
                out[name] = raw[pos + 1 : pos + 1 + size].decode("utf-8", "replace")
                pos += 1 + size
            elif kind == "o":
                out[name] = raw[pos]
                pos += 1
            elif kind == "q":
                (out[name],) = struct.unpack_from(">Q", raw, pos)
                pos += 8
            else:
                (size,) = struct.unpack_from(">I", raw, pos)
                _need(raw, pos + 4 + size)
                out[name] = _decode_table(raw[pos + 4 : pos + 4 + size])
                pos += 4 + size
    except (IndexError, struct.error):
        out["undecodable"] = "the properties end early"
    return out


def _need(raw: bytes, end: int) -> None:
    if end > len(raw):
        raise IndexError("cut short")


def _decode_table(body: bytes) -> dict[str, Any]:
    """A field table's entries, one at a time, stopping at the first that cannot be read."""
    out: dict[str, Any] = {}
    pos = 0
    while pos < len(body):
        size = body[pos]
        key = body[pos + 1 : pos + 1 + size].decode("utf-8", "replace")
        pos += 1 + size
        try:
            used, value = pamqp_decode.embedded_value(body[pos:])
        except Exception:  # unknown type, bad text, nested too deeply, cut short
            out[key] = f"<undecodable: {len(body) - pos} bytes>"
            break
        out[key] = value
        pos += used
    return out


class LiveBackend:
    def __init__(self, broker: Broker, node_info: Callable[[], NodeInfo]) -> None:
        self.broker = broker
        self._node_info = node_info

    def node_info(self) -> NodeInfo:
        return dataclasses.replace(self._node_info(), exchange_types=tuple(sorted(EXCHANGE_TYPES)))

    def vhosts(self) -> list[str]:
        return list(self.broker.vhosts)

    def policies(self, vhost: str | None = None, *, operator: bool = False) -> list[dict[str, Any]]:
        return [p.record() for p in self.broker.list_policies(vhost, operator=operator)]

    def set_policy(
        self, vhost: str, name: str, pattern: Any, definition: Any, priority: Any = 0, apply_to: Any = "all", *,
        operator: bool = False,
    ) -> bool:  # fmt: skip
        return self.broker.set_policy(vhost, name, pattern, definition, priority, apply_to, operator=operator)

    def clear_policy(self, vhost: str, name: str, *, operator: bool = False) -> bool:
        return self.broker.clear_policy(vhost, name, operator=operator)

    def vhost_limits(self, vhost: str | None = None) -> list[dict[str, Any]]:
        return [{"vhost": v, "value": dict(lim)} for v, lim in sorted(self.broker.vhost_limits.items())
                if vhost is None or v == vhost]  # fmt: skip

    def set_vhost_limits(self, vhost: str, limits: Any) -> None:
        self.broker.set_vhost_limits(vhost, limits)

    def clear_vhost_limits(self, vhost: str, key: str) -> None:
        self.broker.clear_vhost_limits(vhost, key)

    def global_parameters(self) -> dict[str, Any]:
        return dict(self.broker.global_parameters)

    def set_global_parameter(self, name: str, value: Any) -> bool:
        return self.broker.set_global_parameter(name, value)

    def clear_global_parameter(self, name: str) -> bool:
        return self.broker.clear_global_parameter(name)

    def queues(self, vhost: str | None = None) -> list[QueueSnapshot]:
        return stats.queues(self.broker, vhost)

    def queue(self, vhost: str, name: str) -> QueueSnapshot:
        q = self.broker.vhost_or_404(vhost).get_queue(name)
        return stats.queue_snapshot(q, self.broker.consumer_timeout)

    def queue_keys(self, vhost: str | None = None) -> list[QueueKey]:
        return [
            (vh.name, name)
            for vh in self.broker.vhosts.values()
            if vhost is None or vh.name == vhost
            for name in vh.queues
        ]

    def _live(self, keys: Iterable[QueueKey]) -> list[Queue]:
        vhosts = self.broker.vhosts
        out = []
        for vhost, name in keys:
            vh = vhosts.get(vhost)
            q = vh.queues.get(name) if vh is not None else None
            if q is not None:
                out.append(q)
        return out

    def queues_by_key(self, keys: Iterable[QueueKey]) -> list[QueueSnapshot]:
        timeout = self.broker.consumer_timeout
        return [stats.queue_snapshot(q, timeout) for q in self._live(keys)]

    def queue_counters(self, keys: Iterable[QueueKey]) -> list[QueueCounters]:
        return [
            QueueCounters(q.vhost, q.name, len(q.ready), q.unacked, len(q.consumers), q.published, q.delivered,
                          q.acked, q.redelivered)  # fmt: skip
            for q in self._live(keys)
        ]

    def object_counts(self) -> dict[str, int]:
        b = self.broker
        return {
            "connections": len(b.connections),
            "channels": sum(len(c.channels) for c in b.connections.values()),
            "exchanges": sum(len(vh.exchanges) for vh in b.vhosts.values()),
            "queues": sum(len(vh.queues) for vh in b.vhosts.values()),
        }

    def exchanges(self, vhost: str | None = None) -> list[ExchangeSnapshot]:
        return stats.exchanges(self.broker, vhost)

    def bindings(self, vhost: str | None = None) -> list[BindingSnapshot]:
        return stats.bindings(self.broker, vhost)

    def consumers(self, vhost: str | None = None) -> list[ConsumerSnapshot]:
        return stats.consumers(self.broker, vhost)

    def channels(self) -> list[ChannelSnapshot]:
        return stats.channels(self.broker)

    def connections(self) -> list[ConnectionSnapshot]:
        return stats.connections(self.broker)

    def totals(self) -> Totals:
        return stats.totals(self.broker)

    def declare_queue(
        self, vhost: str, name: str, durable: bool, auto_delete: bool, arguments: dict[str, Any], *,
        user: str | None = None,
    ) -> QueueSnapshot:  # fmt: skip
        q = self.broker.vhost_or_404(vhost).declare_queue(
            None, name, durable=durable, auto_delete=auto_delete, arguments=arguments, user=user
        )
        return stats.queue_snapshot(q, self.broker.consumer_timeout)

    def _queue_for(self, vhost: str, name: str, user: str | None, what: str) -> Queue:
        """The queue for an HTTP delete, purge or get: 404 if missing, then 403 unless ``user`` has
        ``what`` on it, then 405 if it is exclusive: an exclusive queue belongs to its AMQP
        connection, and the HTTP user acts as another connection would (RabbitMQ's channel)."""
        q = self.broker.vhost_or_404(vhost).get_queue(name)
        self.broker.access.check(user, vhost, QUEUE, name, what)
        if q.exclusive_owner is not None:
            raise resource_locked(
                f"cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'. It could be "
                "originally declared on another connection or the exclusive property value does not match "
                "that of the original declaration."
            )
        return q

    def delete_queue(
        self, vhost: str, name: str, if_unused: bool = False, if_empty: bool = False, *,
        user: str | None = None,
    ) -> int:  # fmt: skip
        self._queue_for(vhost, name, user, CONFIGURE)
        return self.broker.delete_queue(
            vhost, name, if_unused=if_unused, if_empty=if_empty, conn=None, user=user
        )

    def purge_queue(self, vhost: str, name: str, *, user: str | None = None) -> int:
        self._queue_for(vhost, name, user, READ)
        return self.broker.purge_queue(vhost, name, None, user=user)

    def get_messages(
        self, vhost: str, name: str, count: int, requeue: bool, *, user: str | None = None, reject: bool = False
    ) -> list[GotMessage]:
        q = self._queue_for(vhost, name, user, READ)
        taken = []
        for _ in range(max(0, count)):
            m = q.take()
            if m is None:
                break
            taken.append(m)
            # Counted like the basic.get RabbitMQ's management plugin does on its own channel.
            q.delivered += 1
            if m.redelivered:
                q.redelivered += 1
            elif requeue and m.stored:
                q.store.mark_delivered(q.vhost, q.name, (m.msg_id,))
        out = [
            GotMessage(bytes(m.body or b""), decode_properties(m.properties), m.exchange, m.routing_key, m.redelivered,
                       len(q.ready) + len(taken) - i - 1)  # fmt: skip
            for i, m in enumerate(taken)
        ]
        if requeue:
            q.unacked += len(taken)
            q.unacked_bytes += sum(m.size for m in taken)
            q.requeue(taken)
        elif reject:  # basic.reject without requeue: dead-lettered as "rejected"
            q.unacked += len(taken)
            q.unacked_bytes += sum(m.size for m in taken)
            for m in taken:
                q.reject(m)
        else:
            for m in taken:
                q.drop(m)
        return out

    def declare_exchange(
        self, vhost: str, name: str, type: str, durable: bool, auto_delete: bool, internal: bool,
        arguments: dict[str, Any], *, user: str | None = None,
    ) -> None:  # fmt: skip
        self.broker.vhost_or_404(vhost).declare_exchange(
            name, type, durable=durable, auto_delete=auto_delete, internal=internal, arguments=arguments,
            user=user,
        )  # fmt: skip

    def bind(
        self, vhost: str, source: str, destination: str, destination_type: str, routing_key: str,
        arguments: dict[str, Any], *, user: str | None = None,
    ) -> None:  # fmt: skip
        vh = self.broker.vhost_or_404(vhost)
        if destination_type == "exchange":
            vh.bind_exchange(destination, source, routing_key, arguments, user=user)
        elif destination_type == "queue":
            vh.bind(None, destination, source, routing_key, arguments, user=user)
        else:
            raise ChannelError(ReplyCode.PRECONDITION_FAILED, f"unknown destination_type '{destination_type}'")

    def publish(
        self, vhost: str, exchange: str, routing_key: str, properties: bytes, body: bytes | bytearray, *,
        persistent: bool = False, user: str | None = None,
    ) -> tuple[bool, bool]:  # fmt: skip
        self.broker.vhost_or_404(vhost)
        routed, _, refused = self.broker.publish(vhost, exchange, routing_key, properties, body, persistent, user)
        return routed, refused

    def delete_exchange(self, vhost: str, name: str, if_unused: bool = False, *, user: str | None = None) -> None:
        self.broker.vhost_or_404(vhost).delete_exchange(name, if_unused, user=user)

    def unbind(
        self, vhost: str, source: str, destination: str, destination_type: str, routing_key: str,
        arguments: dict[str, Any], *, user: str | None = None,
    ) -> None:  # fmt: skip
        vh = self.broker.vhost_or_404(vhost)
        if destination_type == "exchange":
            vh.unbind_exchange(destination, source, routing_key, arguments, user=user)
        else:
            vh.unbind(None, destination, source, routing_key, arguments, user=user)

    def close_connection(self, name: str, reason: str) -> bool:
        conn = self.broker.connections.get(name)
        if conn is None:
            return False
        conn.sink.force_close(ReplyCode.CONNECTION_FORCED, reason)
        return True

    def add_vhost(self, name: str, description: str = "", tags: list[str] | None = None) -> None:
        self.broker.add_vhost(name, description, tags)

    def delete_vhost(self, name: str) -> None:
        self.broker.delete_vhost(name)

    def vhost_metadata(self, name: str) -> dict[str, Any]:
        meta = self.broker.vhost_meta.get(name) or {}
        return {"description": str(meta.get("description") or ""), "tags": list(meta.get("tags") or [])}
