"""Frozen statistics snapshots the model hands to management (trio's statistics() habit).

Management turns these into RabbitMQ-shaped JSON and CLI rows; it never reaches
into live model objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    vhost: str
    name: str
    durable: bool
    auto_delete: bool
    exclusive: bool
    arguments: dict[str, Any]
    type: str  # "classic" or "quorum" (as declared; storage is the same)
    messages_ready: int
    messages_unacknowledged: int
    consumers: int
    message_bytes_ready: int
    message_bytes_unacknowledged: int
    consumer_timeout: int | None  # effective queue-level timeout in ms (None: off)
    exclusive_owner: str | None  # connection name holding an exclusive queue
    # cumulative counters
    published: int = 0
    delivered: int = 0
    acked: int = 0
    redelivered: int = 0
    # the policy and operator policy applied (names), and their merged definition
    policy: str | None = None
    operator_policy: str | None = None
    effective_policy_definition: dict[str, Any] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        return self.messages_ready + self.messages_unacknowledged

    @property
    def message_bytes(self) -> int:
        return self.message_bytes_ready + self.message_bytes_unacknowledged


@dataclass(frozen=True, slots=True)
class ExchangeSnapshot:
    vhost: str
    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: dict[str, Any]
    policy: str | None = None  # the name of the policy applied


@dataclass(frozen=True, slots=True)
class BindingSnapshot:
    vhost: str
    source: str
    destination: str
    destination_type: str
    routing_key: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ConsumerSnapshot:
    vhost: str
    queue: str
    consumer_tag: str
    connection: str  # connection name, e.g. "127.0.0.1:50000 -> 127.0.0.1:5672"
    channel: int
    ack_required: bool
    exclusive: bool
    prefetch_count: int
    arguments: dict[str, Any]
    consumer_timeout: int | None


@dataclass(frozen=True, slots=True)
class ChannelSnapshot:
    connection: str
    number: int
    vhost: str
    user: str
    consumer_count: int
    messages_unacknowledged: int
    prefetch_count: int
    global_prefetch_count: int
    confirm: bool
    state: str = "running"
    transactional: bool = False
    messages_uncommitted: int = 0
    acks_uncommitted: int = 0


@dataclass(frozen=True, slots=True)
class ConnectionSnapshot:
    name: str
    vhost: str
    user: str
    peer_host: str
    peer_port: int
    host: str
    port: int
    channels: int
    connected_at: float  # unix seconds
    client_properties: dict[str, Any] = field(default_factory=dict)
    state: str = "running"
    recv_oct: int = 0
    send_oct: int = 0
    heartbeat: int = 0
    frame_max: int = 0
    channel_max: int = 0


@dataclass(frozen=True, slots=True)
class Totals:
    """Cumulative message counters for the whole broker (for rates)."""

    published: int = 0
    delivered: int = 0
    acked: int = 0
    redelivered: int = 0
    confirmed: int = 0
    returned: int = 0
