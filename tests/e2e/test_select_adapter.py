"""pika's asynchronous SelectConnection: callback ordering the blocking adapter hides."""

from __future__ import annotations

from typing import Any

import pika
import pytest

from tests.e2e.conftest import params
from tests.helpers import ThreadBroker

pytestmark = pytest.mark.timeout(30)


class Flow:
    """Drives one SelectConnection through a scripted sequence and records events in order."""

    def __init__(self, port: int) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.error: BaseException | None = None
        self.conn = pika.SelectConnection(
            params(port),
            on_open_callback=self._on_open,
            on_open_error_callback=lambda _c, err: self._fail(err),
            on_close_callback=lambda _c, reason: self.events.append(("closed", str(reason))),
        )
        self.ch: Any = None
        self.timeout = self.conn.ioloop.call_later(
            10, lambda: self._fail(TimeoutError("flow did not finish"))
        )

    def _fail(self, err: BaseException) -> None:
        self.error = err
        self.conn.ioloop.stop()

    def _on_open(self, conn: Any) -> None:
        conn.channel(on_open_callback=self._on_channel)

    def _on_channel(self, ch: Any) -> None:
        self.ch = ch
        self.start(ch)

    def start(self, ch: Any) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        self.conn.ioloop.remove_timeout(self.timeout)
        if self.conn.is_open:
            self.conn.close()
        else:
            self.conn.ioloop.stop()

    def run(self) -> list[tuple[Any, ...]]:
        self.conn.add_on_close_callback(lambda *_: self.conn.ioloop.stop())
        try:
            self.conn.ioloop.start()
        finally:
            self.conn.ioloop.close()  # its wake-up socket pair
        if self.error is not None:
            raise self.error
        return self.events


def test_return_arrives_before_the_confirm_and_acks_cover_every_publish(broker: ThreadBroker) -> None:
    n_routable = 20

    class Publisher(Flow):
        def start(self, ch: Any) -> None:
            ch.add_on_return_callback(
                lambda _ch, m, p, body: self.events.append(("return", m.reply_code, m.reply_text, body))
            )
            ch.confirm_delivery(
                self._on_confirm, callback=lambda _f: ch.queue_declare("sel", callback=self._declared)
            )
            self.acked: set[int] = set()
            self.last = 0

        def _declared(self, _frame: Any) -> None:
            ch = self.ch
            ch.basic_publish("", "nowhere", b"unroutable", mandatory=True)  # seq 1
            for i in range(n_routable):  # seq 2..21, written back to back
                ch.basic_publish("", "sel", str(i).encode(), mandatory=True)
            ch.basic_publish("", "nowhere", b"again", mandatory=True)  # seq 22

        def _on_confirm(self, frame: Any) -> None:
            m = frame.method
            self.events.append(
                ("ack" if isinstance(m, pika.spec.Basic.Ack) else "nack", m.delivery_tag, m.multiple)
            )
            covered = range(self.last + 1, m.delivery_tag + 1) if m.multiple else [m.delivery_tag]
            assert not self.acked.intersection(covered)
            self.acked.update(covered)
            self.last = max(self.last, m.delivery_tag)
            if len(self.acked) == n_routable + 2:
                self.finish()

    flow = Publisher(broker.port)
    events = flow.run()
    assert flow.acked == set(range(1, n_routable + 3))
    returns = [i for i, e in enumerate(events) if e[0] == "return"]
    assert [events[i][1:] for i in returns] == [(312, "NO_ROUTE", b"unroutable"), (312, "NO_ROUTE", b"again")]
    first_ack = next(i for i, e in enumerate(events) if e[0] == "ack")
    assert returns[0] < first_ack  # basic.return for seq 1 precedes any ack covering seq 1
    ack_22 = next(i for i, e in enumerate(events) if e[0] == "ack" and e[1] == n_routable + 2)
    assert returns[1] < ack_22
    assert not any(e[0] == "nack" for e in events)


def test_select_adapter_consumer_acks_and_receives_in_order(broker: ThreadBroker) -> None:
    class Worker(Flow):
        def start(self, ch: Any) -> None:
            ch.basic_qos(
                prefetch_count=2, callback=lambda _f: ch.queue_declare("selc", callback=self._declared)
            )

        def _declared(self, _frame: Any) -> None:
            for i in range(10):
                self.ch.basic_publish("", "selc", str(i).encode())
            self.ch.basic_consume(
                "selc",
                self._on_message,
                callback=lambda f: self.events.append(("consume-ok", f.method.consumer_tag)),
            )

        def _on_message(self, ch: Any, m: Any, p: Any, body: bytes) -> None:
            self.events.append(("msg", m.delivery_tag, body))
            ch.basic_ack(m.delivery_tag)
            if body == b"9":
                self.finish()

    events = Worker(broker.port).run()
    assert events[0][0] == "consume-ok" and events[0][1].startswith("ctag")  # pika picks its own tag
    msgs = [e for e in events if e[0] == "msg"]
    assert msgs == [("msg", i + 1, str(i).encode()) for i in range(10)]
