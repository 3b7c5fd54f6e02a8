from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from leveret.model.broker import Broker
from leveret.model.channel import Channel
from leveret.model.connection import ClientConnection
from leveret.model.message import Message
from leveret.storage.memory import MemoryStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Sink:
    """Records what the model asks the wire to do for one channel."""

    delivered: list[tuple[str, int, bytes, bool]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    closed: list[tuple[int, str]] = field(default_factory=list)
    broker: Broker | None = None
    channel: Channel | None = None

    def deliver(self, consumer_tag: bytes, delivery_tag: int, msg: Message) -> None:
        self.delivered.append((consumer_tag[1:].decode(), delivery_tag, msg.body, msg.redelivered))

    def cancel_consumer(self, consumer_tag: str) -> None:
        self.cancelled.append(consumer_tag)

    def close_channel(self, code: int, text: str) -> None:
        self.closed.append((code, text))
        if self.broker and self.channel:
            self.broker.close_channel(self.channel)

    def bodies(self, tag: str | None = None) -> list[bytes]:
        return [b for t, _, b, _ in self.delivered if tag is None or t == tag]


class ConnSink:
    def force_close(self, code: int, text: str) -> None:
        pass


class World:
    def __init__(self, **kw: Any) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore()
        self.broker = Broker(self.store, clock=self.clock, **kw)
        self.broker.access.add_user("guest", "guest", ("administrator",))
        self.broker.access.set_permissions("guest", "/", ".*", ".*", ".*")
        self._n = 0

    def connection(self, cancel_notify: bool = True) -> ClientConnection:
        self._n += 1
        caps = {"consumer_cancel_notify": cancel_notify}
        c = ClientConnection(
            f"c{self._n}", user="guest", vhost="/", peer=("127.0.0.1", self._n), local=("127.0.0.1", 5672),
            client_properties={"capabilities": caps}, sink=ConnSink(), connected_at=0.0,
        )  # fmt: skip
        self.broker.connect(c)
        return c

    def channel(self, conn: ClientConnection | None = None, number: int = 1) -> tuple[Channel, Sink]:
        conn = conn or self.connection()
        sink = Sink(broker=self.broker)
        ch = self.broker.open_channel(conn, number, sink)
        sink.channel = ch
        return ch, sink

    def declare(self, ch: Channel, name: str = "q", durable: bool = True, **kw: Any) -> Any:
        args = kw.pop("arguments", {})
        return self.broker.declare_queue(
            ch, name, passive=False, durable=durable, exclusive=kw.pop("exclusive", False),
            auto_delete=kw.pop("auto_delete", False), arguments=args,
        )  # fmt: skip

    def publish(self, body: bytes, queue: str = "q", persistent: bool = False) -> tuple[bool, bool]:
        props = b"\x10\x00\x02" if persistent else b"\x00\x00"
        return self.broker.publish("/", "", queue, props, body, persistent)


@pytest.fixture
def world() -> World:
    return World()
