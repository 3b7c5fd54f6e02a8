"""``leveretctl move_messages``: drain queues from one broker into another, losing nothing.

For each queue (one source and one target connection per queue, queues in parallel):

- the source is consumed with ``prefetch = window`` and manual acks; each delivery is published to
  the target through the default exchange to the queue of the same name (``mandatory``, so a
  missing queue is a basic.return, not a silent drop) with its content header's properties
  forwarded byte for byte (headers, delivery mode, priority, expiration, ids, timestamps kept);
- the target is in confirm mode; a source message is acked only once the target confirmed it and
  every message before it (one ``multiple`` ack for the confirmed prefix), so the source removes
  only what the target has made safe;
- order within a queue is kept: one channel each way, publishes in delivery order, and what the
  source redelivers after a fault comes back in its original order.

Faults: a dropped connection or a dead broker on either side (``kill -9``, ``rabbitmqctl
close_all_connections``, a cut TCP link) closes both connections of that queue; the source puts
its unacked messages back, and the move reconnects (every ``RETRY_S`` seconds, for up to
``--retry-for`` seconds) and resumes. The connections have no heartbeats: a target that stops
confirming for ``--stall-timeout`` seconds while messages wait counts as a fault too. Nothing is lost: a message leaves the source only after the
target confirmed it. What may be duplicated is bounded: at most the source's unacked messages at the
fault, that is at most ``window`` per queue per fault (the target may hold a message whose confirm,
or whose ack on the source, the fault swallowed). When the source itself is killed, the acks it had
received but not yet written to disk come back too (Leveret writes them with its next group commit).

A target nack (e.g. a full queue with ``overflow: reject-publish``), a returned message (the target
queue was deleted), or a refusal (403, 404, 406) stops that queue's move: its unacked messages stay
on the source. The move of a queue ends when nothing has arrived for ``--idle`` seconds and the
source queue is empty; messages published to it later stay there (the summary says how many).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pamqp import commands as C

from leveret.cli.perf_client import CHANNEL, FRAME_END, URL, AMQPError, PerfClient

#: Seconds between reconnection attempts after a fault.
RETRY_S = 0.5

_frame_head = struct.Struct(">BHI")
_content_head = struct.Struct(">BHIHHQ")  # header frame: type, channel, size, class, weight, body size

#: Reply codes after which a retry would meet the same refusal: stop that queue's move.
FATAL_CODES = frozenset({403, 404, 405, 406, 530})


class MoveError(Exception):
    """A queue's move stopped for a reason a retry would not cure (``queue`` names it)."""

    def __init__(self, queue: str, message: str) -> None:
        super().__init__(f"queue '{queue}': {message}")
        self.queue = queue


@dataclass
class QueueMove:
    """One queue's move: its definition on the source (RabbitMQ's JSON shape) and its counters."""

    name: str
    durable: bool = True
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    moved: int = 0  # confirmed by the target and acked on the source
    published: int = 0  # publishes to the target, retries included
    faults: int = 0
    in_doubt: int = 0  # messages published but unconfirmed when a fault hit: the duplicates' upper bound
    backlog: int = 0  # the source's ready messages, last seen
    left: int = 0  # messages on the source when the move ended
    error: str = ""
    started: float = 0.0
    last_moved: float = 0.0  # when the last message was acked on the source (the idle wait excluded)
    finished: float = 0.0

    @property
    def busy_s(self) -> float:
        """Seconds from the start to the last message moved (or to now while moving)."""
        end = self.last_moved if self.finished else time.monotonic()
        return max(end - self.started, 0.0) if self.started else 0.0

    @property
    def rate(self) -> float:
        return self.moved / self.busy_s if self.busy_s > 0 else 0.0


def select_queues(queues: list[dict[str, Any]], patterns: tuple[str, ...]) -> tuple[list[QueueMove], list[str]]:
    """The queues to move (regular expressions matched against the whole name; none: every queue)
    and the names skipped with the reason (exclusive queues die with their owner; an auto-delete
    queue would be deleted when the move cancels its consumer)."""
    chosen: list[QueueMove] = []
    skipped: list[str] = []
    compiled = [re.compile(p) for p in patterns]
    for q in sorted(queues, key=lambda q: str(q["name"])):
        name = str(q["name"])
        if compiled and not any(p.fullmatch(name) for p in compiled):
            continue
        if q.get("exclusive"):
            skipped.append(f"{name} (exclusive)")
            continue
        if q.get("auto_delete"):
            skipped.append(f"{name} (auto-delete: it would be deleted when the move's consumer leaves)")
            continue
        args = dict(q.get("arguments") or {})
        qtype = q.get("type")
        if qtype and qtype != "classic" and "x-queue-type" not in args:
            args["x-queue-type"] = qtype
        chosen.append(QueueMove(name, bool(q.get("durable", True)), False, args, backlog=int(q.get("messages") or 0)))
    return chosen, skipped


async def _connect(url: URL, name: str) -> PerfClient:
    return await PerfClient.connect(url, name=name)


async def _passive(client: PerfClient, queue: str) -> int:
    ok = await client.rpc(CHANNEL, C.Queue.Declare(queue=queue, passive=True))
    assert isinstance(ok, C.Queue.DeclareOk)
    return int(ok.message_count or 0)


async def missing_queues(target: URL, queues: list[QueueMove]) -> list[str]:
    """Names of ``queues`` the target lacks (a passive declare each, on a connection of its own,
    since a 404 closes the channel)."""
    missing = []
    for q in queues:
        client = await _connect(target, "leveretctl move_messages (check)")
        try:
            await _passive(client, q.name)
        except AMQPError as e:
            if e.code != 404:
                raise MoveError(q.name, f"the target refused a passive declare: {e}") from None
            missing.append(q.name)
        finally:
            await client.close()
    return missing


async def create_queues(target: URL, queues: list[QueueMove], names: list[str]) -> None:
    """Declare ``names`` on the target from the source's definitions (durability, arguments, type)."""
    client = await _connect(target, "leveretctl move_messages (create)")
    try:
        for q in queues:
            if q.name in names:
                try:
                    await client.rpc(CHANNEL, C.Queue.Declare(queue=q.name, durable=q.durable,
                                                              auto_delete=q.auto_delete, arguments=q.arguments))  # fmt: skip
                except AMQPError as e:
                    raise MoveError(q.name, f"the target refused to create it: {e}") from None
    finally:
        await client.close()


class Session:
    """One pair of connections moving one queue until it is drained, or a fault (raised)."""

    def __init__(self, q: QueueMove, src: PerfClient, tgt: PerfClient, window: int) -> None:
        self.q, self.src, self.tgt, self.window = q, src, tgt, window
        self.seq = 0  # publishes on this target channel (the confirm sequence)
        self.floor = 0  # every seq <= floor is confirmed
        self.confirmed_above: set[int] = set()  # confirmed out of order, above the floor
        self.pending: deque[tuple[int, int]] = deque()  # (seq, source delivery tag), in order
        self.failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self.source_failed = False  # the fault was the source's (else the target's, or a refusal)
        self.delivered = 0
        self.last_confirm = time.monotonic()
        self.last_delivery = time.monotonic()
        rk = q.name.encode()
        args = b"\x00\x00" + b"\x00" + bytes((len(rk),)) + rk + b"\x01"  # ticket, exchange "", rk, mandatory
        self.method = _frame_head.pack(1, CHANNEL, 4 + len(args)) + b"\x00\x3c\x00\x28" + args + FRAME_END
        self.chunk = tgt.frame_max - 8

    def fail(self, err: BaseException) -> None:
        if not self.failed.done():
            self.failed.set_result(err)

    def fail_source(self, err: BaseException) -> None:
        if not self.failed.done():
            self.source_failed = True
        self.fail(err)

    def in_doubt(self) -> int:
        """How many messages this fault may duplicate. The target's fault: those published and not
        confirmed (the source, closed in order, has taken every ack sent). The source's: all it may
        have had unacked, the deliveries in flight (at most the window)."""
        if self.source_failed:
            return min(self.window, self.delivered)
        return len(self.pending)

    # ---- callbacks (inside data_received) ------------------------------------------------------
    def on_deliver(self, tag: int, body: bytes) -> None:
        props = self.src.props
        n = len(body)
        out = self.tgt.out
        out.append(self.method)
        out.append(_content_head.pack(2, CHANNEL, 12 + len(props), 60, 0, n) + props + FRAME_END)
        if n <= self.chunk:
            if n:
                out.append(_frame_head.pack(3, CHANNEL, n) + body + FRAME_END)
        else:
            out.append(PerfClient.body_frames(body, self.chunk))
        if not self.pending:
            self.last_confirm = time.monotonic()  # the stall clock starts with the first unconfirmed
        self.seq += 1
        self.delivered += 1
        self.q.published += 1
        self.pending.append((self.seq, tag))
        self.last_delivery = time.monotonic()

    def on_confirm(self, tag: int, multiple: bool, ok: bool) -> None:
        self.last_confirm = time.monotonic()
        if not ok:
            self.fail(MoveError(self.q.name, "the target refused a message (basic.nack: is the target queue "
                                             "full with overflow reject-publish?); it stays on the source"))  # fmt: skip
            return
        if multiple:
            if tag > self.floor:
                self.floor = tag
                self.confirmed_above = {s for s in self.confirmed_above if s > tag}
        elif tag == self.floor + 1:
            self.floor = tag
        else:
            self.confirmed_above.add(tag)
        while self.floor + 1 in self.confirmed_above:
            self.floor += 1
            self.confirmed_above.discard(self.floor)

    def on_confirm_batch_end(self) -> None:
        """Ack on the source, at once, every message of the confirmed prefix."""
        last = 0
        n = 0
        pending = self.pending
        while pending and pending[0][0] <= self.floor:
            last = pending.popleft()[1]
            n += 1
        if n:
            self.src.ack(last, multiple=True)
            self.src.flush()
            self.q.moved += n
            self.q.last_moved = time.monotonic()

    def on_return(self, m: C.Basic.Return) -> None:
        self.fail(MoveError(self.q.name, f"the target returned a message ({m.reply_code} {m.reply_text}): "
                                         "its queue is gone; the message stays on the source"))  # fmt: skip

    # ---- the run -------------------------------------------------------------------------------
    async def run(self, idle_s: float, on_tick: Callable[[], None], stall_s: float = 60.0) -> None:
        src, tgt = self.src, self.tgt
        src.keep_properties = True
        src.on_deliver = self.on_deliver
        src.on_batch_end = tgt.flush  # this read's publishes go out in one write
        tgt.on_confirm = self.on_confirm
        tgt.on_batch_end = self.on_confirm_batch_end
        tgt.on_return = self.on_return
        src.on_error = self.fail_source
        tgt.on_error = self.fail
        await tgt.confirm_select()
        await src.qos(self.window)
        self.q.backlog = await _passive(src, self.q.name)
        await src.consume(self.q.name, no_ack=False, tag="leveretctl-move")
        last_count = time.monotonic()
        while True:
            done, _ = await asyncio.wait([self.failed], timeout=0.2)
            if done:
                raise self.failed.result()
            on_tick()
            now = time.monotonic()
            if self.pending and now - self.last_confirm > stall_s:
                # no heartbeats on these connections: a link that went silent is noticed here
                raise AMQPError(0, f"no confirm from the target for {stall_s:.0f}s")
            if now - last_count >= 1.0:
                self.q.backlog = await _passive(src, self.q.name)
                last_count = now
            if not self.pending and now - self.last_delivery >= idle_s:
                if await _passive(src, self.q.name) == 0:
                    break
        # stop the consumer; what it delivered before cancel-ok is all there is to finish
        await src.rpc(CHANNEL, C.Basic.Cancel(consumer_tag="leveretctl-move"))
        while self.pending:
            done, _ = await asyncio.wait([self.failed], timeout=0.05)
            if done:
                raise self.failed.result()
            if time.monotonic() - self.last_confirm > stall_s:
                raise AMQPError(0, f"no confirm from the target for {stall_s:.0f}s")
        self.q.left = await _passive(src, self.q.name)
        self.q.backlog = self.q.left


def _transient(err: BaseException) -> bool:
    if isinstance(err, MoveError):
        return False
    if isinstance(err, AMQPError):
        return err.code not in FATAL_CODES
    return isinstance(err, OSError | TimeoutError | ConnectionError)


async def move_queue(q: QueueMove, source: URL, target: URL, *, window: int, idle_s: float, retry_for: float,
                     on_tick: Callable[[], None], stall_s: float = 60.0) -> None:  # fmt: skip
    """Move ``q`` until drained; reconnect after transient faults for up to ``retry_for`` seconds
    each; record a fatal error in ``q.error``."""
    q.started = time.monotonic()
    failing_since: float | None = None
    while True:
        src = tgt = None
        session: Session | None = None
        try:
            src = await _connect(source, f"leveretctl move_messages {q.name} (source)")
            tgt = await _connect(target, f"leveretctl move_messages {q.name} (target)")
            session = Session(q, src, tgt, window)
            failing_since = None
            await session.run(idle_s, on_tick, stall_s)
            q.finished = time.monotonic()
            return
        except Exception as err:  # noqa: BLE001 - every failure is sorted into retry or stop here
            if session is not None and session.delivered:
                q.faults += 1
                q.in_doubt += session.in_doubt()
            if not _transient(err):
                q.error = str(err) if isinstance(err, MoveError) else f"queue '{q.name}': {err}"
                q.finished = time.monotonic()
                return
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > retry_for:
                q.error = f"queue '{q.name}': gave up after {retry_for:.0f}s of failures, the last: {err}"
                q.finished = time.monotonic()
                return
        finally:
            # A healthy source is closed in order (connection.close after the acks sent), so that it
            # takes every ack before it requeues the rest; a failed side is dropped.
            for client in (tgt, src):
                if client is not None and client.transport is not None:
                    with contextlib.suppress(Exception):
                        if client.error is not None and client.error.code == 0:
                            client.transport.abort()
                        else:
                            await client.close(wait_s=2.0)
        await asyncio.sleep(RETRY_S)
        on_tick()


async def move_all(queues: list[QueueMove], source: URL, target: URL, *, window: int, idle_s: float,
                   retry_for: float, on_tick: Callable[[], None], stall_s: float = 60.0) -> None:  # fmt: skip
    await asyncio.gather(*(move_queue(q, source, target, window=window, idle_s=idle_s, retry_for=retry_for,
                                      on_tick=on_tick, stall_s=stall_s) for q in queues))  # fmt: skip
