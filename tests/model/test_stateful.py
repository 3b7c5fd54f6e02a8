"""Random client operations against the model, checked against a simple reference.

Invariants after every step: no message lost or duplicated (each published message is ready, unacked
or settled, exactly one of them), ready messages in publish order (requeue restores the position),
nothing settled is delivered again, prefetch limits hold, delivery tags per channel increase, and
no queue holds ready messages while one of its consumers has room (no stall).
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from leveret.errors import ChannelError
from leveret.model.channel import Channel
from leveret.model.message import Message
from tests.model.conftest import Sink, World


class CheckingSink(Sink):
    """Records deliveries that break the consumer's prefetch at the moment they are made."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.over_prefetch: list[tuple[str, int]] = []

    def deliver(self, consumer_tag: bytes, delivery_tag: int, msg: Message) -> None:
        assert self.channel is not None
        c = self.channel.consumers.get(consumer_tag[1:].decode())
        if c is not None and not c.no_ack and c.prefetch and len(c.deliveries) > c.prefetch:
            self.over_prefetch.append((c.tag, len(c.deliveries)))
        super().deliver(consumer_tag, delivery_tag, msg)

QUEUES = ("q0", "q1")


class BrokerMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.world = World(consumer_timeout=None)
        conn = self.world.connection()
        self.channels: list[tuple[Channel, Sink]] = []
        self.conn = conn
        ch, _ = self.world.channel(conn, 99)
        for q in QUEUES:
            self.world.declare(ch, q, durable=True)
        self.world.broker.close_channel(ch)
        self.published: dict[int, str] = {}  # msg_id -> queue
        self.settled: set[int] = set()
        self.last_tag: dict[int, int] = {}
        self.next_number = 1
        self.n_consumers = 0

    # ---- helpers -------------------------------------------------------------------------

    def _open(self) -> list[tuple[Channel, Sink]]:
        return [(c, s) for c, s in self.channels if not c.closed]

    def _ids_of(self, m: object) -> int:
        return m.msg_id  # type: ignore[attr-defined,no-any-return]

    # ---- rules ---------------------------------------------------------------------------

    @rule()
    def open_channel(self) -> None:
        if len(self._open()) < 4:
            sink = CheckingSink(broker=self.world.broker)
            ch = self.world.broker.open_channel(self.conn, self.next_number, sink)
            sink.channel = ch
            self.channels.append((ch, sink))
            self.next_number += 1

    @rule(q=st.sampled_from(QUEUES), persistent=st.booleans(), n=st.integers(1, 4))
    def publish(self, q: str, persistent: bool, n: int) -> None:
        for _ in range(n):
            msg_id = self.world.broker.next_msg_id
            routed, *_ = self.world.publish(b"%d" % msg_id, q, persistent=persistent)
            assert routed
            self.published[msg_id] = q

    @precondition(lambda self: self._open())
    @rule(data=st.data(), q=st.sampled_from(QUEUES), no_ack=st.booleans(), prefetch=st.integers(0, 3))
    def consume(self, data: st.DataObject, q: str, no_ack: bool, prefetch: int) -> None:
        ch, _ = data.draw(st.sampled_from(self._open()))
        ch.set_qos(prefetch, False)
        self.n_consumers += 1
        self.world.broker.consume(ch, q, f"c{self.n_consumers}", no_ack=no_ack, exclusive=False, arguments={})
        self._settle_no_ack()

    @precondition(lambda self: self._open())
    @rule(data=st.data(), q=st.sampled_from(QUEUES), no_ack=st.booleans())
    def get(self, data: st.DataObject, q: str, no_ack: bool) -> None:
        ch, _ = data.draw(st.sampled_from(self._open()))
        got = self.world.broker.get(ch, q, no_ack)
        if got is not None:
            tag, msg, _ = got
            self._tag(ch, tag)
            if no_ack:
                self._settle(msg.msg_id)

    @precondition(lambda self: any(c.unacked for c, _ in self._open()))
    @rule(data=st.data(), multiple=st.booleans(), action=st.sampled_from(["ack", "requeue", "drop"]))
    def settle(self, data: st.DataObject, multiple: bool, action: str) -> None:
        ch, _ = data.draw(st.sampled_from([(c, s) for c, s in self._open() if c.unacked]))
        tag = data.draw(st.sampled_from(sorted(ch.unacked)))
        covered = [d.msg.msg_id for t, d in ch.unacked.items() if (t <= tag if multiple else t == tag)]
        if action == "ack":
            ch.ack(tag, multiple)
        else:
            ch.reject(tag, multiple, action == "requeue")
        if action != "requeue":
            for i in covered:
                self._settle(i)
        self._settle_no_ack()

    @precondition(lambda self: self._open())
    @rule(data=st.data())
    def ack_unknown_tag_is_406(self, data: st.DataObject) -> None:
        ch, _ = data.draw(st.sampled_from(self._open()))
        try:
            ch.ack(ch.next_tag + 5, False)
        except ChannelError as e:
            assert e.code == 406
        else:
            raise AssertionError("an unknown delivery tag was accepted")

    @precondition(lambda self: any(c.consumers for c, _ in self._open()))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        ch, _ = data.draw(st.sampled_from([(c, s) for c, s in self._open() if c.consumers]))
        tag = data.draw(st.sampled_from(sorted(ch.consumers)))
        self.world.broker.cancel(ch, tag)

    @precondition(lambda self: self._open())
    @rule(data=st.data())
    def close_channel(self, data: st.DataObject) -> None:
        ch, _ = data.draw(st.sampled_from(self._open()))
        self.world.broker.close_channel(ch)
        self._settle_no_ack()

    @precondition(lambda self: self._open())
    @rule(data=st.data())
    def recover(self, data: st.DataObject) -> None:
        ch, _ = data.draw(st.sampled_from(self._open()))
        ch.recover()
        self._settle_no_ack()

    @precondition(lambda self: self._open())
    @rule(data=st.data(), paused=st.booleans())
    def flow(self, data: st.DataObject, paused: bool) -> None:
        ch, _ = data.draw(st.sampled_from(self._open()))
        ch.set_paused(paused)
        self._settle_no_ack()

    # ---- bookkeeping ---------------------------------------------------------------------

    def _tag(self, ch: Channel, tag: int) -> None:
        assert tag > self.last_tag.get(ch.number, 0), "delivery tags must increase per channel"
        self.last_tag[ch.number] = tag

    def _settle(self, msg_id: int) -> None:
        assert msg_id not in self.settled, f"message {msg_id} settled twice"
        self.settled.add(msg_id)

    def _settle_no_ack(self) -> None:
        """Deliveries to no-ack consumers are settled on delivery; pick them up from the sinks."""
        for ch, sink in self.channels:
            for ctag, tag, body, _ in sink.delivered[getattr(sink, "_seen", 0) :]:
                self._tag(ch, tag)
                if tag not in ch.unacked and int(body) not in self.settled:
                    consumer = ch.consumers.get(ctag)
                    if consumer is not None and consumer.no_ack:
                        self._settle(int(body))
            sink._seen = len(sink.delivered)  # type: ignore[attr-defined]

    # ---- invariants ----------------------------------------------------------------------

    @invariant()
    def conservation_and_order(self) -> None:
        if not hasattr(self, "world"):
            return
        self._settle_no_ack()
        vh = self.world.broker.vhosts["/"]
        ready: list[int] = []
        for q in QUEUES:
            ids = [m.msg_id for m in vh.queues[q].ready]
            assert ids == sorted(ids), f"{q} out of order: {ids}"
            assert all(self.published[i] == q for i in ids)
            ready += ids
        unacked = [d.msg.msg_id for c, _ in self.channels if not c.closed for d in c.unacked.values()]
        everything = ready + unacked + sorted(self.settled)
        assert len(everything) == len(set(everything)), "a message is in two places at once"
        assert set(everything) == set(self.published), "a message was lost or invented"
        for q in QUEUES:
            queue = vh.queues[q]
            assert queue.unacked == sum(1 for c, _ in self._open() for d in c.unacked.values() if d.queue is queue)

    @invariant()
    def prefetch_and_no_stall(self) -> None:
        if not hasattr(self, "world"):
            return
        # A lowered prefetch leaves existing deliveries alone; what must never happen is a new
        # delivery to a consumer that is at its limit, so the limit is checked at delivery time.
        for _, sink in self.channels:
            assert not sink.over_prefetch, f"delivered beyond prefetch: {sink.over_prefetch}"
        for q in self.world.broker.vhosts["/"].queues.values():
            if q.ready:
                assert not any(c.can_take() for c in q.consumers), f"{q.name} stalls with a free consumer"


BrokerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestBrokerModel = BrokerMachine.TestCase
