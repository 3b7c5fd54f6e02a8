"""A :class:`~leveret.storage.base.Store` that keeps everything in dicts.

Nothing reaches a disk: the store survives a broker "restart" only as an object
(tests reuse one instance across a close and an open, which is how it passes the
shared contract suite). ``sync`` calls its callback at once, on the calling thread.
It is the reference the SQLite store is tested against, so it favours plain,
obviously correct code; it is still cheap enough for the broker's hot path.

Not thread-safe: like every store, it is called from the broker's loop thread only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from leveret.storage.base import (
    BindingRecord,
    ExchangeRecord,
    LoopLike,
    MessageRecord,
    QueueRecord,
    Recovered,
    SetAside,
    describe,
)
from leveret.storage.codec import decode_arguments, encode_arguments

log = logging.getLogger("leveret.storage")

_BindingKey = tuple[str, str, str, str, str, str]


class MemoryStore:
    """In-memory store; ``open`` returns what the object holds."""

    __slots__ = ("_bindings", "_definitions", "_exchanges", "_messages", "_queues", "quarantined")

    def __init__(self) -> None:
        self._queues: dict[tuple[str, str], QueueRecord] = {}
        self._exchanges: dict[tuple[str, str], ExchangeRecord] = {}
        self._bindings: dict[_BindingKey, BindingRecord] = {}
        # (vhost, queue) -> msg_id -> record; dicts keep insertion (= publish) order.
        self._messages: dict[tuple[str, str], dict[int, MessageRecord]] = {}
        # What set_aside took out, with the reason: (record or (vhost, queue, message), reason).
        self.quarantined: list[tuple[object, str]] = []
        self._definitions: dict[str, dict[str, str]] = {}

    def open(self) -> Recovered:
        """Return (copies of) the held contents, in the same order the SQLite store uses."""
        start = time.perf_counter()
        messages: dict[tuple[str, str], list[MessageRecord]] = {}
        next_id = 1
        for key in sorted(self._messages):
            held = self._messages[key]
            if not held:
                continue
            records = sorted(held.values(), key=lambda m: m.msg_id)
            messages[key] = records
            next_id = max(next_id, records[-1].msg_id + 1)
        return Recovered(
            queues=[self._queues[k] for k in sorted(self._queues)],
            exchanges=[self._exchanges[k] for k in sorted(self._exchanges)],
            bindings=[self._bindings[k] for k in sorted(self._bindings)],
            messages=messages,
            next_msg_id=next_id,
            seconds=time.perf_counter() - start,
            definitions={kind: dict(held) for kind, held in self._definitions.items()},
        )

    def close(self) -> None:
        """Nothing to flush; the contents stay for the next :meth:`open`."""

    def put_definition(self, kind: str, key: str, value: str | None) -> None:
        held = self._definitions.setdefault(kind, {})
        if value is None:
            held.pop(key, None)
        else:
            held[key] = value

    def save_queue(self, q: QueueRecord) -> None:
        self._queues[q.vhost, q.name] = replace(q, arguments=_copy_arguments(q.arguments))

    def delete_queue(self, vhost: str, name: str) -> None:
        self._queues.pop((vhost, name), None)
        self._messages.pop((vhost, name), None)
        for key in [k for k in self._bindings if k[0] == vhost and k[2] == name and k[3] == "queue"]:
            del self._bindings[key]

    def save_exchange(self, x: ExchangeRecord) -> None:
        self._exchanges[x.vhost, x.name] = replace(x, arguments=_copy_arguments(x.arguments))

    def delete_exchange(self, vhost: str, name: str) -> None:
        self._exchanges.pop((vhost, name), None)
        doomed = [
            k
            for k in self._bindings
            if k[0] == vhost and (k[1] == name or (k[2] == name and k[3] == "exchange"))
        ]
        for key in doomed:
            del self._bindings[key]

    def save_binding(self, b: BindingRecord) -> None:
        text = encode_arguments(b.arguments)
        self._bindings[_binding_key(b, text)] = replace(b, arguments=decode_arguments(text))

    def delete_binding(self, b: BindingRecord) -> None:
        self._bindings.pop(_binding_key(b, encode_arguments(b.arguments)), None)

    def append(self, vhost: str, queue: str, msg: MessageRecord) -> None:
        held = self._messages.get((vhost, queue))
        if held is None:
            held = self._messages[vhost, queue] = {}
        held[msg.msg_id] = msg

    def remove(self, vhost: str, queue: str, msg_ids: Iterable[int]) -> None:
        held = self._messages.get((vhost, queue))
        if held is None:
            return
        for msg_id in msg_ids:
            held.pop(msg_id, None)

    def mark_delivered(self, vhost: str, queue: str, msg_ids: Iterable[int]) -> None:
        held = self._messages.get((vhost, queue))
        if held is None:
            return
        for msg_id in msg_ids:
            msg = held.get(msg_id)
            if msg is not None and not msg.delivered:
                held[msg_id] = replace(msg, delivered=True)

    def read_bodies(self, vhost: str, queue: str, msg_ids: list[int]) -> dict[int, bytes | bytearray]:
        held = self._messages.get((vhost, queue), {})
        return {i: held[i].body for i in msg_ids if i in held}

    def sync(self, callback: Callable[[], None]) -> None:
        """Everything is as durable as it will ever be: call ``callback`` now."""
        try:
            callback()
        except Exception:
            log.exception("storage sync callback failed")

    def attach_loop(self, loop: LoopLike) -> None:
        """Nothing to hand over: every operation is done when its call returns."""

    def set_aside(self, record: SetAside, reason: str) -> None:
        """Take ``record`` (and what goes with it) out; keep it in :attr:`quarantined`."""
        log.error("storage: %s cannot be recovered (%s); it is set aside", describe(record), reason)
        self.quarantined.append((record, reason))
        if isinstance(record, QueueRecord):
            for msg in self._messages.get((record.vhost, record.name), {}).values():
                self.quarantined.append(((record.vhost, record.name, msg), reason))
            self.delete_queue(record.vhost, record.name)
        elif isinstance(record, ExchangeRecord):
            self.delete_exchange(record.vhost, record.name)
        else:
            self.delete_binding(record)

    def set_aside_messages(self, vhost: str, queue: str, msg_ids: list[int], reason: str) -> None:
        """Take the messages out; keep them in :attr:`quarantined`."""
        log.error("storage: messages %s of queue '%s' in vhost '%s' cannot be recovered (%s); they are set aside",
                  msg_ids[:10], queue, vhost, reason)  # fmt: skip
        held = self._messages.get((vhost, queue), {})
        self.quarantined.extend(((vhost, queue, held[i]), reason) for i in msg_ids if i in held)
        self.remove(vhost, queue, msg_ids)

    def pending(self) -> int:
        return 0

    def discard_pending(self) -> int:
        return 0  # every operation is applied as it is made

    def failure(self) -> str | None:
        return None


def _copy_arguments(arguments: dict[str, object]) -> dict[str, object]:
    # Round-trip through the SQLite store's codec: the caller cannot mutate what we
    # hold, and both stores accept and return exactly the same values.
    return decode_arguments(encode_arguments(arguments))


def _binding_key(b: BindingRecord, arguments_text: str) -> _BindingKey:
    return (b.vhost, b.source, b.destination, b.destination_type, b.routing_key, arguments_text)
