"""An in-memory :class:`~leveret.management.backend.Backend` for management tests.

It models just enough (queues holding messages, consumers, connections, exchanges,
bindings, counters) to exercise every route without the broker core. ``load_rate``
makes ``totals()`` and queue counters grow with wall time, simulating traffic for
rate and dashboard tests.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from leveret.errors import not_found, precondition_failed, resource_locked
from leveret.management.backend import GotMessage, NodeInfo, QueueCounters, QueueKey
from leveret.model.snapshots import (
    BindingSnapshot,
    ChannelSnapshot,
    ConnectionSnapshot,
    ConsumerSnapshot,
    ExchangeSnapshot,
    QueueSnapshot,
    Totals,
)


@dataclass
class FakeQueue:
    vhost: str
    name: str
    durable: bool = True
    auto_delete: bool = False
    exclusive: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    ready: list[bytes] = field(default_factory=list)
    unacked: list[bytes] = field(default_factory=list)
    consumers: int = 0
    owner: str | None = None
    published: int = 0
    delivered: int = 0
    acked: int = 0
    redelivered: int = 0


class FakeBackend:
    def __init__(self, load_rate: float = 0.0) -> None:
        self.lock = threading.Lock()
        self.started = time.time()
        self.load_rate = load_rate
        self._vhosts = ["/", "other"]
        self.vhost_meta: dict[str, dict[str, Any]] = {}
        self.qs: dict[tuple[str, str], FakeQueue] = {}
        self.xs: dict[tuple[str, str], ExchangeSnapshot] = {}
        self.bs: list[BindingSnapshot] = []
        self.conns: dict[str, ConnectionSnapshot] = {}
        self.chans: list[ChannelSnapshot] = []
        self.cons: list[ConsumerSnapshot] = []
        self.closed: list[tuple[str, str]] = []
        self.base_totals = Totals()
        self.globals: dict[str, Any] = {}
        for vh in self._vhosts:
            for name, kind in (("", "direct"), ("amq.direct", "direct"), ("amq.fanout", "fanout"),
                               ("amq.topic", "topic"), ("amq.headers", "headers")):  # fmt: skip
                self.xs[(vh, name)] = ExchangeSnapshot(vh, name, kind, True, False, False, {})

    # ---- global runtime parameters -------------------------------------------------
    def global_parameters(self) -> dict[str, Any]:
        return dict(self.globals)

    def set_global_parameter(self, name: str, value: Any) -> bool:
        existed = name in self.globals
        self.globals[name] = value
        return existed

    def clear_global_parameter(self, name: str) -> bool:
        return self.globals.pop(name, None) is not None

    # ---- helpers for tests -------------------------------------------------------
    def add_queue(self, vhost: str, name: str, ready: int = 0, unacked: int = 0, **kw: Any) -> FakeQueue:
        q = FakeQueue(vhost, name, **kw)
        q.ready = [f"msg-{i}".encode() for i in range(ready)]
        q.unacked = [b"x" * 10 for _ in range(unacked)]
        self.qs[(vhost, name)] = q
        self.bs.append(BindingSnapshot(vhost, "", name, "queue", name, {}))
        return q

    def add_connection(self, name: str, user: str = "guest", vhost: str = "/") -> ConnectionSnapshot:
        c = ConnectionSnapshot(
            name=name, vhost=vhost, user=user, peer_host="127.0.0.1", peer_port=50000, host="127.0.0.1",
            port=5672, channels=1, connected_at=self.started,
            client_properties={"product": b"pika", "capabilities": {"basic.nack": True}},
            heartbeat=60, frame_max=131072, channel_max=2047,
        )  # fmt: skip
        self.conns[name] = c
        self.chans.append(ChannelSnapshot(name, 1, vhost, user, 0, 0, 1, 0, False))
        return c

    def add_consumer(self, vhost: str, queue: str, tag: str, connection: str) -> None:
        self.qs[(vhost, queue)].consumers += 1
        self.cons.append(ConsumerSnapshot(vhost, queue, tag, connection, 1, True, False, 1, {}, 1_800_000))

    def _load(self) -> int:
        return int(self.load_rate * (time.time() - self.started))

    def _snap(self, q: FakeQueue) -> QueueSnapshot:
        extra = self._load()
        return QueueSnapshot(
            vhost=q.vhost, name=q.name, durable=q.durable, auto_delete=q.auto_delete, exclusive=q.exclusive,
            arguments=dict(q.arguments), type=str(q.arguments.get("x-queue-type", "classic")),
            messages_ready=len(q.ready), messages_unacknowledged=len(q.unacked), consumers=q.consumers,
            message_bytes_ready=sum(map(len, q.ready)), message_bytes_unacknowledged=sum(map(len, q.unacked)),
            consumer_timeout=1_800_000, exclusive_owner=q.owner,
            published=q.published + extra, delivered=q.delivered + extra, acked=q.acked + extra,
            redelivered=q.redelivered,
        )  # fmt: skip

    def _q(self, vhost: str, name: str) -> FakeQueue:
        q = self.qs.get((vhost, name))
        if q is None:
            raise not_found(f"no queue '{name}' in vhost '{vhost}'")
        return q

    # ---- Backend -----------------------------------------------------------------
    def node_info(self) -> NodeInfo:
        return NodeInfo(
            node="leveret@testhost", product_name="Leveret", product_version="0.1.0", started_at=self.started,
            listeners=[{"protocol": "amqp", "ip_address": "127.0.0.1", "port": 5672}],
            data_dir="/tmp/leveret-test", pid=4242, rss_bytes=50_000_000, consumer_timeout=1_800_000,
        )  # fmt: skip

    def vhosts(self) -> list[str]:
        return list(self._vhosts)

    def queues(self, vhost: str | None = None) -> list[QueueSnapshot]:
        with self.lock:
            return [self._snap(q) for q in self.qs.values() if vhost is None or q.vhost == vhost]

    def queue(self, vhost: str, name: str) -> QueueSnapshot:
        with self.lock:
            return self._snap(self._q(vhost, name))

    def queue_keys(self, vhost: str | None = None) -> list[QueueKey]:
        with self.lock:
            return [k for k in self.qs if vhost is None or k[0] == vhost]

    def queues_by_key(self, keys: Iterable[QueueKey]) -> list[QueueSnapshot]:
        with self.lock:
            return [self._snap(self.qs[k]) for k in keys if k in self.qs]

    def queue_counters(self, keys: Iterable[QueueKey]) -> list[QueueCounters]:
        snaps = self.queues_by_key(keys)
        return [
            QueueCounters(s.vhost, s.name, s.messages_ready, s.messages_unacknowledged, s.consumers, s.published,
                          s.delivered, s.acked, s.redelivered)  # fmt: skip
            for s in snaps
        ]

    def object_counts(self) -> dict[str, int]:
        return {"connections": len(self.conns), "channels": len(self.chans), "exchanges": len(self.xs),
                "queues": len(self.qs)}  # fmt: skip

    def exchanges(self, vhost: str | None = None) -> list[ExchangeSnapshot]:
        return [x for x in self.xs.values() if vhost is None or x.vhost == vhost]

    def bindings(self, vhost: str | None = None) -> list[BindingSnapshot]:
        return [b for b in self.bs if vhost is None or b.vhost == vhost]

    def consumers(self, vhost: str | None = None) -> list[ConsumerSnapshot]:
        return [c for c in self.cons if vhost is None or c.vhost == vhost]

    def channels(self) -> list[ChannelSnapshot]:
        return list(self.chans)

    def connections(self) -> list[ConnectionSnapshot]:
        return list(self.conns.values())

    def totals(self) -> Totals:
        extra = self._load()
        t = self.base_totals
        return dataclasses.replace(t, published=t.published + extra, delivered=t.delivered + extra,
                                   acked=t.acked + extra)  # fmt: skip

    def declare_queue(
        self, vhost: str, name: str, durable: bool, auto_delete: bool, arguments: dict[str, Any], *,
        user: str | None = None,
    ) -> QueueSnapshot:  # fmt: skip
        if vhost not in self._vhosts:
            raise not_found(f"no vhost '{vhost}'")
        with self.lock:
            q = self.qs.get((vhost, name))
            if q is None:
                q = self.add_queue(vhost, name, durable=durable, auto_delete=auto_delete, arguments=arguments)
            elif (q.durable, q.auto_delete, q.arguments) != (durable, auto_delete, arguments):
                raise precondition_failed(f"inequivalent arg 'durable' for queue '{name}' in vhost '{vhost}'")
            return self._snap(q)

    def delete_queue(
        self, vhost: str, name: str, if_unused: bool = False, if_empty: bool = False, *,
        user: str | None = None,
    ) -> int:  # fmt: skip
        with self.lock:
            q = self._q(vhost, name)
            if q.owner is not None:
                raise resource_locked(f"cannot obtain exclusive access to locked queue '{name}'")
            if if_unused and q.consumers:
                raise precondition_failed(f"queue '{name}' in vhost '{vhost}' in use")
            if if_empty and (q.ready or q.unacked):
                raise precondition_failed(f"queue '{name}' in vhost '{vhost}' not empty")
            del self.qs[(vhost, name)]
            self.bs = [b for b in self.bs if not (b.vhost == vhost and b.destination == name)]
            return len(q.ready)

    def purge_queue(self, vhost: str, name: str, *, user: str | None = None) -> int:
        with self.lock:
            q = self._q(vhost, name)
            n = len(q.ready)
            q.ready.clear()
            return n

    def get_messages(
        self, vhost: str, name: str, count: int, requeue: bool, *, user: str | None = None, reject: bool = False
    ) -> list[GotMessage]:
        with self.lock:
            q = self._q(vhost, name)
            taken = q.ready[:count]
            if not requeue:
                del q.ready[:count]
            out = []
            for i, body in enumerate(taken):
                left = len(q.ready) - (0 if not requeue else i + 1)
                out.append(GotMessage(body, {"delivery_mode": 2, "headers": {"k": b"v"}}, "", name, False,
                                      max(left, 0)))  # fmt: skip
            return out

    def declare_exchange(
        self, vhost: str, name: str, type: str, durable: bool, auto_delete: bool, internal: bool,
        arguments: dict[str, Any], *, user: str | None = None,
    ) -> None:  # fmt: skip
        if vhost not in self._vhosts:
            raise not_found(f"no vhost '{vhost}'")
        new = ExchangeSnapshot(vhost, name, type, durable, auto_delete, internal, dict(arguments))
        old = self.xs.get((vhost, name))
        if old is not None and old != new:
            raise precondition_failed(f"inequivalent arg 'type' for exchange '{name}'")
        self.xs[(vhost, name)] = new

    def bind(
        self, vhost: str, source: str, destination: str, destination_type: str, routing_key: str,
        arguments: dict[str, Any], *, user: str | None = None,
    ) -> None:  # fmt: skip
        if (vhost, source) not in self.xs:
            raise not_found(f"no exchange '{source}'")
        if destination_type == "queue" and (vhost, destination) not in self.qs:
            raise not_found(f"no queue '{destination}'")
        b = BindingSnapshot(vhost, source, destination, destination_type, routing_key, dict(arguments))
        if b not in self.bs:
            self.bs.append(b)

    def publish(
        self, vhost: str, exchange: str, routing_key: str, properties: bytes, body: bytes, *,
        persistent: bool = False, user: str | None = None,
    ) -> tuple[bool, bool]:  # fmt: skip
        with self.lock:
            if exchange == "" and (vhost, routing_key) in self.qs:
                self.qs[(vhost, routing_key)].ready.append(body)
                return True, False
            return False, False

    def delete_exchange(self, vhost: str, name: str, if_unused: bool = False, *, user: str | None = None) -> None:
        self.xs.pop((vhost, name), None)
        self.bs = [b for b in self.bs if b.vhost != vhost or name not in (b.source, b.destination)]

    def unbind(
        self, vhost: str, source: str, destination: str, destination_type: str, routing_key: str,
        arguments: dict[str, Any], *, user: str | None = None,
    ) -> None:  # fmt: skip
        b = BindingSnapshot(vhost, source, destination, destination_type, routing_key, dict(arguments))
        if b in self.bs:
            self.bs.remove(b)

    def close_connection(self, name: str, reason: str) -> bool:
        if name not in self.conns:
            return False
        del self.conns[name]
        self.chans = [c for c in self.chans if c.connection != name]
        self.closed.append((name, reason))
        return True

    def add_vhost(self, name: str, description: str = "", tags: list[str] | None = None) -> None:
        if name not in self._vhosts:
            self._vhosts.append(name)
        self.vhost_meta[name] = {"description": description, "tags": list(tags or [])}

    def delete_vhost(self, name: str) -> None:
        if name not in self._vhosts:
            raise not_found(f"no vhost '{name}'")
        self._vhosts.remove(name)
        self.vhost_meta.pop(name, None)
        self.qs = {k: q for k, q in self.qs.items() if k[0] != name}

    def vhost_metadata(self, name: str) -> dict[str, Any]:
        meta = self.vhost_meta.get(name, {})
        return {"description": meta.get("description", ""), "tags": list(meta.get("tags", []))}

    # policies: kept in a model Policies registry (no queues to apply them to here)
    def policies(self, vhost: str | None = None, *, operator: bool = False) -> list[dict[str, Any]]:
        return [p.record() for p in self._policies().all(vhost, operator=operator)]

    def set_policy(
        self, vhost: str, name: str, pattern: Any, definition: Any, priority: Any = 0, apply_to: Any = "all", *,
        operator: bool = False,
    ) -> bool:  # fmt: skip
        from leveret.model.policy import make_policy

        if vhost not in self._vhosts:
            raise not_found(f"no vhost '{vhost}'")
        p = make_policy(vhost, name, pattern, definition, priority, apply_to, operator=operator)
        return self._policies().put(p, operator=operator)

    def clear_policy(self, vhost: str, name: str, *, operator: bool = False) -> bool:
        return self._policies().remove(vhost, name, operator=operator)

    # vhost limits: a dict, checked with the model's rules
    def vhost_limits(self, vhost: str | None = None) -> list[dict[str, Any]]:
        limits: dict[str, dict[str, int]] = getattr(self, "_vhost_limits", {})
        return [{"vhost": v, "value": dict(lim)} for v, lim in sorted(limits.items()) if vhost in (None, v)]

    def set_vhost_limits(self, vhost: str, limits: Any) -> None:
        from leveret.model import limits as L

        if vhost not in self._vhosts:
            raise not_found(f"no vhost '{vhost}'")
        self._vhost_limits = getattr(self, "_vhost_limits", {})
        self._vhost_limits[vhost] = L.merged(self._vhost_limits.get(vhost, {}), limits, L.VHOST_KEYS, "limits")

    def clear_vhost_limits(self, vhost: str, key: str) -> None:
        from leveret.model import limits as L

        if vhost not in self._vhosts:
            raise not_found(f"no vhost '{vhost}'")
        self._vhost_limits = getattr(self, "_vhost_limits", {})
        left = L.cleared(self._vhost_limits.get(vhost, {}), key)
        if left:
            self._vhost_limits[vhost] = left
        else:
            self._vhost_limits.pop(vhost, None)

    def _policies(self) -> Any:
        from leveret.model.policy import Policies

        if not hasattr(self, "_policy_registry"):
            self._policy_registry = Policies()
        return self._policy_registry
