"""The storage interface the broker writes its durable state through.

The broker keeps live queue state in memory; a store is the durable journal of it.
Only durable queues, their bindings/exchanges, and *persistent* messages routed to
durable queues are written here. All methods are called from the broker's event
loop thread and must not block on I/O: a durable implementation queues the
operation for its single writer thread. Operations are applied in call order.

Durability is asked for with :meth:`Store.sync`: the callback runs once every
operation submitted *before* the call is on disk (fsynced). Many calls between two
disk flushes share one flush (group commit). The callback may run on the writer
thread; the caller is responsible for hopping back to its own loop.

This module knows nothing of the broker model, frames or asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class QueueRecord:
    vhost: str
    name: str
    durable: bool = True
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExchangeRecord:
    vhost: str
    name: str
    type: str
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BindingRecord:
    vhost: str
    source: str
    destination: str
    destination_type: str  # "queue" or "exchange"
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One persistent message as it sits in one durable queue.

    ``msg_id`` is assigned by the broker, unique per store and increasing in
    publish order; queue order is ``msg_id`` order. ``properties`` is the raw AMQP
    content-header property section (flags and values) exactly as the publisher
    sent it; it is returned byte for byte. ``delivered`` is true if the message was
    handed to a consumer (it comes back with ``redelivered=true``).
    """

    msg_id: int
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes
    delivered: bool = False


@dataclass(slots=True)
class Recovered:
    """Everything a store holds, as read back at start-up."""

    queues: list[QueueRecord] = field(default_factory=list)
    exchanges: list[ExchangeRecord] = field(default_factory=list)
    bindings: list[BindingRecord] = field(default_factory=list)
    # (vhost, queue name) -> messages in queue order (ascending msg_id)
    messages: dict[tuple[str, str], list[MessageRecord]] = field(default_factory=dict)
    next_msg_id: int = 1
    seconds: float = 0.0  # how long recovery took


class Store(Protocol):
    def open(self) -> Recovered:
        """Open (creating if needed), recover after a crash (a torn tail is dropped), return the contents."""

    def close(self) -> None:
        """Flush everything submitted so far, stop the writer, release files."""

    def save_queue(self, q: QueueRecord) -> None: ...
    def delete_queue(self, vhost: str, name: str) -> None:
        """Delete the queue, its messages and bindings that point to it."""

    def save_exchange(self, x: ExchangeRecord) -> None: ...
    def delete_exchange(self, vhost: str, name: str) -> None: ...
    def save_binding(self, b: BindingRecord) -> None: ...
    def delete_binding(self, b: BindingRecord) -> None: ...

    def append(self, vhost: str, queue: str, msg: MessageRecord) -> None:
        """Enqueue a persistent message at the tail of a durable queue."""

    def remove(self, vhost: str, queue: str, msg_ids: Iterable[int]) -> None:
        """Messages acked (or dropped): they must not come back after a restart."""

    def mark_delivered(self, vhost: str, queue: str, msg_ids: Iterable[int]) -> None:
        """Messages handed to a consumer: after a restart they come back with redelivered=true."""

    def sync(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (possibly from another thread) once all prior operations are durable."""
