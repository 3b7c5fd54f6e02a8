"""What management needs from a running broker, as a Protocol.

``leveret.app`` implements it over the live model; management tests may use a fake.
All methods are synchronous and called on the broker's event loop thread. Errors
are raised as :class:`leveret.errors.AMQPError` (404 not found, 406 precondition
failed, ...); management maps them to HTTP statuses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from leveret.model.snapshots import (
    BindingSnapshot,
    ChannelSnapshot,
    ConnectionSnapshot,
    ConsumerSnapshot,
    ExchangeSnapshot,
    QueueSnapshot,
    Totals,
)


@dataclass(frozen=True, slots=True)
class GotMessage:
    """A message fetched through management (POST /api/queues/{vhost}/{name}/get)."""

    payload: bytes
    properties: dict[str, Any]  # decoded AMQP basic properties, RabbitMQ management names
    exchange: str
    routing_key: str
    redelivered: bool
    message_count: int  # messages left in the queue after this one


QueueKey = tuple[str, str]  # (vhost, name)


class QueueCounters(NamedTuple):
    """The few numbers rates and overview totals need from one queue; far cheaper than a
    :class:`QueueSnapshot`, so they can be read for every queue every second."""

    vhost: str
    name: str
    messages_ready: int
    messages_unacknowledged: int
    consumers: int
    published: int
    delivered: int
    acked: int
    redelivered: int

    @property
    def messages(self) -> int:
        return self.messages_ready + self.messages_unacknowledged


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node: str  # e.g. "leveret@hostname"
    product_name: str
    product_version: str
    started_at: float  # unix seconds
    listeners: list[dict[str, Any]] = field(default_factory=list)  # [{"protocol": "amqp", "ip_address":..., "port":...}]
    data_dir: str = ""
    pid: int = 0
    rss_bytes: int = 0
    consumer_timeout: int | None = None
    exchange_types: tuple[str, ...] = ("direct", "fanout", "headers", "topic")  # declarable types
    failure: str | None = None  # why the node is not healthy (the store cannot write), None if it is
    alarms: tuple[str, ...] = ()  # resource alarms in effect, RabbitMQ's names: "memory", "disk space"
    tls_cert: str = ""  # the TLS certificate file, "" without TLS (health check certificate-expiration)
    fd_used: int | None = None  # file descriptors open in the process (None: not known here)
    fd_total: int | None = None  # the process's limit (None: unlimited or not known)
    sockets_used: int = 0  # client connections (AMQP and AMQPS sockets)


class Backend(Protocol):
    def node_info(self) -> NodeInfo: ...
    def vhosts(self) -> list[str]: ...
    def queues(self, vhost: str | None = None) -> list[QueueSnapshot]: ...
    def queue(self, vhost: str, name: str) -> QueueSnapshot:
        """Raises AMQPError 404 if missing."""

    def queue_keys(self, vhost: str | None = None) -> list[QueueKey]:
        """Every queue's (vhost, name), cheap enough to call for 100,000 queues per request."""

    def queues_by_key(self, keys: Iterable[QueueKey]) -> list[QueueSnapshot]:
        """Snapshots of these queues, in order, skipping any that no longer exist."""

    def queue_counters(self, keys: Iterable[QueueKey]) -> list[QueueCounters]:
        """Counters of these queues, in order, skipping any that no longer exist."""

    def object_counts(self) -> dict[str, int]:
        """``{"connections", "channels", "exchanges", "queues"}`` without building snapshots."""

    def exchanges(self, vhost: str | None = None) -> list[ExchangeSnapshot]: ...
    def bindings(self, vhost: str | None = None) -> list[BindingSnapshot]: ...
    def consumers(self, vhost: str | None = None) -> list[ConsumerSnapshot]: ...
    def channels(self) -> list[ChannelSnapshot]: ...
    def connections(self) -> list[ConnectionSnapshot]: ...
    def totals(self) -> Totals: ...

    # ``user``: the HTTP user acting (RabbitMQ does these through a channel as that user), whose
    # permissions the model checks (403 ACCESS_REFUSED); None is the broker itself (definitions
    # import, recovery): no check. Another connection's exclusive queue is 405 RESOURCE_LOCKED.
    def declare_queue(
        self, vhost: str, name: str, durable: bool, auto_delete: bool, arguments: dict[str, Any], *,
        user: str | None = None,
    ) -> QueueSnapshot: ...  # fmt: skip
    def delete_queue(
        self, vhost: str, name: str, if_unused: bool = False, if_empty: bool = False, *,
        user: str | None = None,
    ) -> int:  # fmt: skip
        """Returns the number of messages deleted."""

    def purge_queue(self, vhost: str, name: str, *, user: str | None = None) -> int: ...
    def get_messages(
        self, vhost: str, name: str, count: int, requeue: bool, *, user: str | None = None, reject: bool = False
    ) -> list[GotMessage]:
        """Takes up to ``count`` messages; ``user`` needs read on the queue. ``requeue``: they go back,
        marked redelivered; else ``reject`` dead-letters them (the queue's DLX), else they are acked."""

    def publish(
        self, vhost: str, exchange: str, routing_key: str, properties: bytes, body: bytes | bytearray, *,
        persistent: bool = False, user: str | None = None,
    ) -> tuple[bool, bool]:  # fmt: skip
        """basic.publish as ``user`` (its write permission, ``user_id`` check); ``persistent``: the
        properties' delivery_mode is 2. Returns (routed to a queue,
        refused by a queue: a confirm channel would see a nack). AMQPError as the channel would."""

    def delete_exchange(self, vhost: str, name: str, if_unused: bool = False, *, user: str | None = None) -> None:
        """exchange.delete: a missing one is fine; the default and amq.* ones are 403."""

    def unbind(
        self, vhost: str, source: str, destination: str, destination_type: str, routing_key: str,
        arguments: dict[str, Any], *, user: str | None = None,
    ) -> None: ...  # fmt: skip

    def declare_exchange(
        self, vhost: str, name: str, type: str, durable: bool, auto_delete: bool, internal: bool,
        arguments: dict[str, Any], *, user: str | None = None,
    ) -> None: ...  # fmt: skip
    def bind(
        self, vhost: str, source: str, destination: str, destination_type: str, routing_key: str,
        arguments: dict[str, Any], *, user: str | None = None,
    ) -> None: ...  # fmt: skip
    def close_connection(self, name: str, reason: str) -> bool:
        """Close with 320 CONNECTION_FORCED and ``reason``; False if no such connection."""

    # ---- vhosts at run time (PUT/DELETE /api/vhosts/{name}, definitions import) --------------------
    def add_vhost(self, name: str, description: str = "", tags: list[str] | None = None) -> None:
        """Create the vhost (kept in the store), or update the description and tags of an existing one.
        A name AMQP cannot carry raises AMQPError 406."""

    def delete_vhost(self, name: str) -> None:
        """Delete the vhost with its queues, exchanges and permissions; its connections are closed
        (320). AMQPError 404 if there is no such vhost."""

    # ---- policies (PUT/DELETE /api/policies, /api/operator-policies, definitions) ------------------
    def policies(self, vhost: str | None = None, *, operator: bool = False) -> list[dict[str, Any]]:
        """Policies (or operator policies) in RabbitMQ's shape: vhost, name, pattern, apply-to,
        definition, priority."""

    def set_policy(
        self, vhost: str, name: str, pattern: Any, definition: Any, priority: Any = 0, apply_to: Any = "all", *,
        operator: bool = False,
    ) -> bool:  # fmt: skip
        """Add or replace (True if new) and apply at once. ``leveret.model.policy.PolicyError`` with
        RabbitMQ's validation text; AMQPError 404 for a missing vhost."""

    def clear_policy(self, vhost: str, name: str, *, operator: bool = False) -> bool:
        """False if there was no such policy."""

    def vhost_metadata(self, name: str) -> dict[str, Any]:
        """``{"description": str, "tags": [str]}`` of a vhost (empty ones for an unknown name)."""

    # ---- vhost limits (/api/vhost-limits, RabbitMQ's vhost-limits runtime parameter) --------------
    def vhost_limits(self, vhost: str | None = None) -> list[dict[str, Any]]:
        """``[{"vhost": v, "value": {...}}]`` for the vhosts that have limits."""

    def set_vhost_limits(self, vhost: str, limits: Any) -> None:
        """Merge ``limits``: ValueError with RabbitMQ's text; AMQPError 404 for a missing vhost."""

    def clear_vhost_limits(self, vhost: str, key: str) -> None:
        """Remove one limit (``all``: every one); AMQPError 404 for a missing vhost."""

    # ---- global runtime parameters (/api/global-parameters), kept across restarts -----------------
    def global_parameters(self) -> dict[str, Any]:
        """name -> JSON value (a copy)."""

    def set_global_parameter(self, name: str, value: Any) -> bool:
        """True if it existed (replaced)."""

    def clear_global_parameter(self, name: str) -> bool:
        """False if there was none."""
