"""The storage interface the broker writes its durable state through.

The broker keeps live queue state in memory; a store is the durable journal of it.
Only durable queues, their bindings/exchanges, and *persistent* messages routed to
durable queues are written here. All methods are called from the broker's event
loop thread and must not block on I/O: a durable implementation queues the
operation for its single writer thread. Operations are applied in call order.

Durability is asked for with :meth:`Store.sync`: the callback runs once every
operation submitted *before* the call is on disk (fsynced). Many calls between two
disk flushes share one flush (group commit). The callback may run on the writer
thread; the caller is responsible for hopping back to its own loop. If the store
fails (disk full, I/O error) the callbacks of operations that did not reach the
disk are not called: a confirm must not be sent for them. A store may hold them
and call them late, once the operations are written (the SQLite store does when
disk space returns); it reports the failure by :meth:`Store.failure` and by other
means (the SQLite store's ``on_error``, ``on_stall``).

Arguments of queues, exchanges and bindings are AMQP field tables; a store keeps
them losslessly (see :mod:`leveret.storage.codec`) and raises :class:`TypeError`
at the call site for a value it cannot keep (:class:`ValueError` for one nested deeper
than :data:`leveret.storage.codec.MAX_DEPTH`).

This module knows nothing of the broker model, frames or asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..values import fast_init


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


@fast_init
@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One persistent message as it sits in one durable queue.

    ``msg_id`` is assigned by the broker, increasing in publish order; queue order is
    ``msg_id`` order. A store keys messages by (queue, ``msg_id``): one published
    message routed to several durable queues may be appended to each with the same
    id, but an id must not be appended twice to the same queue while it is there.
    ``properties`` is the raw AMQP content-header property section (flags and
    values) exactly as the publisher sent it; it is returned byte for byte.
    ``delivered`` is true if the message was handed to a consumer (it comes back
    with ``redelivered=true``). ``expires_at`` is when its TTL runs out, in wall-clock
    seconds (``time.time()``), None without one: a TTL keeps running while the broker is down.
    """

    msg_id: int
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes | bytearray
    delivered: bool = False
    expires_at: float | None = None


@dataclass(slots=True)
class Recovered:
    """Everything a store holds, as read back at start-up."""

    queues: list[QueueRecord] = field(default_factory=list)
    exchanges: list[ExchangeRecord] = field(default_factory=list)
    bindings: list[BindingRecord] = field(default_factory=list)
    # (vhost, queue name) -> messages in queue order (ascending msg_id)
    messages: dict[tuple[str, str], list[MessageRecord]] = field(default_factory=dict)
    next_msg_id: int = 1  # one more than the highest msg_id held (1 if none)
    seconds: float = 0.0  # how long recovery took
    set_aside: int = 0  # records the store could not read and set aside (see Store.set_aside)
    # Definitions other than queues, exchanges and bindings (users, vhosts, permissions, ...):
    # kind -> key -> JSON text, as given to Store.put_definition.
    definitions: dict[str, dict[str, str]] = field(default_factory=dict)


SetAside = QueueRecord | ExchangeRecord | BindingRecord


def describe(record: SetAside) -> str:
    """A record's name for a log line: its kind, name(s) and vhost."""
    if isinstance(record, BindingRecord):
        return (
            f"binding from exchange '{record.source}' to {record.destination_type} '{record.destination}'"
            f" with routing key '{record.routing_key}' in vhost '{record.vhost}'"
        )
    kind = "queue" if isinstance(record, QueueRecord) else "exchange"
    return f"{kind} '{record.name}' in vhost '{record.vhost}'"


class LoopLike(Protocol):
    """The two calls of an asyncio event loop a store may use (see :meth:`Store.attach_loop`)."""

    def call_soon(self, callback: Callable[[], object], /) -> object: ...

    def call_later(self, delay: float, callback: Callable[[], object], /) -> object: ...


class Store(Protocol):
    def open(self) -> Recovered:
        """Open (creating if needed), recover after a crash (a torn tail is dropped), return the contents."""

    def close(self) -> None:
        """Flush everything submitted so far, stop the writer, release files."""

    def save_queue(self, q: QueueRecord) -> None:
        """Insert or replace the queue with the same (vhost, name)."""

    def delete_queue(self, vhost: str, name: str) -> None:
        """Delete the queue, its messages and bindings that point to it."""

    def save_exchange(self, x: ExchangeRecord) -> None:
        """Insert or replace the exchange with the same (vhost, name)."""

    def delete_exchange(self, vhost: str, name: str) -> None:
        """Delete the exchange and the bindings from it or to it (exchange-to-exchange)."""

    def save_binding(self, b: BindingRecord) -> None:
        """Add the binding; all its fields, arguments included, are its identity (as in AMQP)."""

    def delete_binding(self, b: BindingRecord) -> None:
        """Remove the binding equal to ``b`` (a missing one is ignored)."""

    def append(self, vhost: str, queue: str, msg: MessageRecord) -> None:
        """Enqueue a persistent message at the tail of a durable queue.

        ``msg.msg_id`` must not currently be in this queue; ``properties`` and ``body``
        must be immutable ``bytes`` (a store may write them later, on another thread).
        """

    def remove(self, vhost: str, queue: str, msg_ids: Iterable[int]) -> None:
        """Messages acked (or dropped): they must not come back after a restart.

        ``msg_ids`` is consumed during the call, so the caller may reuse its list.
        Unknown ids are ignored.
        """

    def mark_delivered(self, vhost: str, queue: str, msg_ids: Iterable[int]) -> None:
        """Messages handed to a consumer: after a restart they come back with redelivered=true.

        ``msg_ids`` is consumed during the call; unknown ids are ignored.
        """

    def read_bodies(self, vhost: str, queue: str, msg_ids: list[int]) -> dict[int, bytes | bytearray]:
        """Bodies of messages of a durable queue, by id (blocking; used to page in a deep queue).

        Sees every operation submitted before the call; ids not held are left out.
        """

    def sync(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (possibly from another thread) once all prior operations are durable.

        Callbacks run in the order their ``sync`` calls were made. An exception raised
        by a callback is logged and does not affect the store or other callbacks.
        """

    def attach_loop(self, loop: LoopLike) -> None:
        """Optional tuning: the caller runs ``loop`` and calls every mutating method on its thread.

        A store may use the loop to hand work over once per turn (and to commit small turns
        in place); a store that gains nothing from it ignores it.
        """

    def put_definition(self, kind: str, key: str, value: str | None) -> None:
        """Keep (or, with ``value`` None, forget) one definition record: a JSON text the store
        does not interpret (users, vhosts, permissions). ``open`` returns them in
        ``Recovered.definitions``."""

    def set_aside(self, record: SetAside, reason: str) -> None:
        """Quarantine a record the broker could not recover: out of the live state, kept for inspection.

        Logs an error naming the record and ``reason``. A queue takes its messages and
        the bindings to it along, an exchange the bindings from and to it, so nothing of
        it comes back under a queue or exchange declared later with the same name.
        Called after :meth:`open`, before the broker takes traffic; a store also sets
        aside, by itself, records it cannot read at all (counted in ``Recovered.set_aside``).
        """

    def set_aside_messages(self, vhost: str, queue: str, msg_ids: list[int], reason: str) -> None:
        """Quarantine messages of ``queue`` the broker could not recover (as :meth:`set_aside`)."""

    def pending(self) -> int:
        """Operations submitted but not yet written: how far the store lags behind.

        The broker may stop reading from publishers while this is high (flow control).
        """

    def discard_pending(self) -> int:
        """Drop every operation submitted but not yet written, as a ``kill -9`` of the process would;
        return how many were dropped.

        Their ``sync`` callbacks are never called (nothing is confirmed for them). Used to simulate a
        crash (:meth:`leveret.embedded.Broker.kill`) before :meth:`close`; a batch already being written
        is left to finish. A store that writes at once (the in-memory one) has nothing to drop.
        """

    def failure(self) -> str | None:
        """Why the store cannot write right now (no disk space, failed), or None while it can.

        Health checks report it; the broker writes no clean-stop marker while it is set.
        """
