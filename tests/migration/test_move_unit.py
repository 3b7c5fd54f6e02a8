"""The move's bookkeeping without sockets: which source messages may be acked after which confirms
(only a confirmed prefix, whatever order the confirms come in), what stops a queue, what counts as in
doubt at a fault, and which queues are chosen."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from pamqp import commands as C

from leveret.cli.move import MoveError, QueueMove, Session, select_queues


class FakeClient:
    """What Session uses of a PerfClient: ``out``, ``props``, ``ack``, ``flush``, ``frame_max``."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.props = b"\x10\x00\x02"  # delivery-mode 2
        self.frame_max = 4096
        self.acks: list[tuple[int, bool]] = []

    def ack(self, tag: int, multiple: bool = False) -> None:
        self.acks.append((tag, multiple))

    def flush(self) -> None:
        pass


def session(window: int = 10) -> tuple[Session, FakeClient, FakeClient, QueueMove]:
    async def make() -> tuple[Session, FakeClient, FakeClient, QueueMove]:
        src, tgt, q = FakeClient(), FakeClient(), QueueMove("q")
        return Session(q, src, tgt, window), src, tgt, q  # type: ignore[arg-type]

    return asyncio.run(make())


def deliver(s: Session, tags: range, body: bytes = b"hello") -> None:
    for tag in tags:
        s.on_deliver(tag, body)


def test_publishes_forward_the_properties_unchanged() -> None:
    s, src, tgt, _ = session()
    src.props = b"\x90\x00\x02" + b"\x00\x00\x00\x00"  # delivery-mode and an empty headers table
    deliver(s, range(1, 2), b"x" * 5000)  # larger than one frame
    method, header, body = tgt.out
    assert method[7:11] == b"\x00\x3c\x00\x28" and method.endswith(b"\x01q\x01\xce")  # basic.publish to q, mandatory
    assert header[19:-1] == src.props and struct.unpack(">Q", header[11:19])[0] == 5000
    assert body.count(b"\xce") >= 2  # split in frames of frame_max


def test_acks_only_the_confirmed_prefix_whatever_the_confirm_order() -> None:
    s, src, _, q = session()
    deliver(s, range(101, 106))  # source tags 101..105 -> target seqs 1..5
    s.on_confirm(2, False, True)
    s.on_confirm(3, False, True)
    s.on_confirm_batch_end()
    assert src.acks == [] and q.moved == 0  # seq 1 is not confirmed: nothing may go
    s.on_confirm(1, False, True)
    s.on_confirm_batch_end()
    assert src.acks == [(103, True)] and q.moved == 3
    s.on_confirm(5, True, True)  # multiple: 4 and 5
    s.on_confirm_batch_end()
    assert src.acks == [(103, True), (105, True)] and q.moved == 5 and not s.pending


def test_a_nack_or_a_return_stops_the_queue_and_acks_nothing() -> None:
    s, src, _, _ = session()
    deliver(s, range(1, 4))
    s.on_confirm(1, False, False)
    s.on_confirm_batch_end()
    assert src.acks == []
    err = s.failed.result()
    assert isinstance(err, MoveError) and "basic.nack" in str(err)
    s2, src2, _, _ = session()
    deliver(s2, range(1, 2))
    s2.on_return(C.Basic.Return(reply_code=312, reply_text="NO_ROUTE", exchange="", routing_key="q"))
    assert isinstance(s2.failed.result(), MoveError) and "312 NO_ROUTE" in str(s2.failed.result())
    assert src2.acks == []


def test_in_doubt_at_a_fault() -> None:
    s, _, _, _ = session(window=10)
    deliver(s, range(1, 31))
    s.on_confirm(25, True, True)
    s.on_confirm_batch_end()
    assert s.in_doubt() == 5  # the target's fault: the unconfirmed
    s.fail_source(ConnectionError("gone"))
    assert s.in_doubt() == 10  # the source's: all it may have had unacked, the window


def test_select_queues() -> None:
    listed: list[dict[str, Any]] = [
        {"name": "tasks", "durable": True, "auto_delete": False, "exclusive": False, "arguments": {},
         "type": "quorum", "messages": 7},
        {"name": "tasks-low", "durable": True, "arguments": {"x-max-priority": 3}, "type": "classic"},
        {"name": "amq.gen-1", "durable": False, "exclusive": True},
        {"name": "scratch", "durable": False, "auto_delete": True},
    ]  # fmt: skip
    chosen, skipped = select_queues(listed, ())
    assert [(q.name, q.arguments, q.backlog) for q in chosen] == [
        ("tasks", {"x-queue-type": "quorum"}, 7), ("tasks-low", {"x-max-priority": 3}, 0)]  # fmt: skip
    assert [s.split(" ")[0] for s in skipped] == ["amq.gen-1", "scratch"]
    chosen, _ = select_queues(listed, ("tasks",))  # the whole name: not tasks-low
    assert [q.name for q in chosen] == ["tasks"]
    chosen, _ = select_queues(listed, ("tasks.*",))
    assert [q.name for q in chosen] == ["tasks", "tasks-low"]
