"""Typed AMQP field tables and a small synchronous client, for the restart-safety property test.

Client libraries choose the wire type of a value for you (pika sends every small int as a
signed 32-bit 'I'); :func:`encode_value` writes exactly the type it is given, so a test can
send every type RabbitMQ knows: t b B s u I i l f d D S x T V A F. Values are ``(type, value)``
pairs; ``A`` holds a list of pairs, ``F`` a list of (key, pair).

:class:`Ops` speaks AMQP over :class:`tests.e2e.raw.RawClient`: methods with tables are
encoded by hand, the rest with pamqp. A method the broker refuses raises :class:`Refused`
after the channel (or connection) is reopened, so a caller can go on with the next one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from pamqp import commands as C

from tests.e2e.raw import RawClient

Typed = tuple[str, Any]

_INT_FORMATS = {"b": ">b", "B": ">B", "s": ">h", "u": ">H", "I": ">i", "i": ">I", "l": ">q"}
INT_RANGES = {
    "b": (-(2**7), 2**7 - 1), "B": (0, 2**8 - 1), "s": (-(2**15), 2**15 - 1), "u": (0, 2**16 - 1),
    "I": (-(2**31), 2**31 - 1), "i": (0, 2**32 - 1), "l": (-(2**63), 2**63 - 1),
}  # fmt: skip


def shortstr(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    assert len(raw) < 256, raw
    return bytes([len(raw)]) + raw


def longstr(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


def encode_value(value: Typed) -> bytes:
    kind, v = value
    out = kind.encode()
    if kind == "t":
        return out + (b"\x01" if v else b"\x00")
    if kind in _INT_FORMATS:
        return out + struct.pack(_INT_FORMATS[kind], v)
    if kind == "f":
        return out + struct.pack(">f", v)
    if kind == "d":
        return out + struct.pack(">d", v)
    if kind == "D":
        scale, raw = v
        return out + struct.pack(">BI", scale, raw)
    if kind in "Sx":
        return out + longstr(v.encode() if isinstance(v, str) else v)
    if kind == "T":
        return out + struct.pack(">Q", v)
    if kind == "V":
        return out
    if kind == "A":
        return out + longstr(b"".join(encode_value(item) for item in v))
    if kind == "F":
        return out + encode_table(v)
    raise ValueError(kind)


def encode_table(items: list[tuple[str, Typed]]) -> bytes:
    return longstr(b"".join(shortstr(k) + encode_value(v) for k, v in items))


# ---- content properties -------------------------------------------------------------------------

_PROPERTY_FLAGS = (
    ("content_type", 0x8000, "s"), ("content_encoding", 0x4000, "s"), ("headers", 0x2000, "F"),
    ("delivery_mode", 0x1000, "o"), ("priority", 0x0800, "o"), ("correlation_id", 0x0400, "s"),
    ("reply_to", 0x0200, "s"), ("expiration", 0x0100, "s"), ("message_id", 0x0080, "s"),
    ("timestamp", 0x0040, "Q"), ("type", 0x0020, "s"), ("user_id", 0x0010, "s"), ("app_id", 0x0008, "s"),
)  # fmt: skip


def encode_properties(props: dict[str, Any]) -> bytes:
    """The property section of a content header (flags, then the values present)."""
    flags, out = 0, b""
    for name, flag, kind in _PROPERTY_FLAGS:
        if name not in props:
            continue
        flags |= flag
        v = props[name]
        out += shortstr(v) if kind == "s" else encode_table(v) if kind == "F" else bytes([v]) if kind == "o" else struct.pack(">Q", v)  # fmt: skip
    return struct.pack(">H", flags) + out


def _method(channel: int, class_id: int, method_id: int, payload: bytes) -> bytes:
    body = struct.pack(">HH", class_id, method_id) + payload
    return struct.pack(">BHI", 1, channel, len(body)) + body + b"\xce"


# ---- the client ----------------------------------------------------------------------------------


class Refused(Exception):
    """The broker closed the channel (or connection) instead of answering."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code


@dataclass(frozen=True)
class Got:
    """One message read with basic.get: exactly what the broker sent."""

    exchange: str
    routing_key: str
    redelivered: bool
    properties: bytes
    body: bytes


@dataclass(frozen=True)
class Method:
    """A method frame from the broker, decoded by hand (pamqp validates names against a regex)."""

    ids: tuple[int, int]
    payload: bytes

    def shortstr(self, pos: int) -> tuple[str, int]:
        n = self.payload[pos]
        return self.payload[pos + 1 : pos + 1 + n].decode("utf-8", "surrogateescape"), pos + 1 + n

    def close(self) -> tuple[int, str]:
        code = struct.unpack_from(">H", self.payload)[0]
        return code, self.shortstr(2)[0]


CONNECTION_CLOSE, CHANNEL_CLOSE, CHANNEL_CLOSE_OK = (10, 50), (20, 40), (20, 41)
GET_OK, GET_EMPTY, ACK, NACK, QOS_OK = (60, 71), (60, 72), (60, 80), (60, 120), (60, 11)


class Ops:
    """One connection, one channel in confirm mode; every call waits for its reply."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ch = 0
        self.c = self._connect()
        self._open_channel()

    def _connect(self) -> RawClient:
        c = RawClient(self.port, timeout=10)
        c.handshake(frame_max=131072)
        return c

    def _open_channel(self) -> None:
        self.ch = self.ch % 2000 + 1
        self.c.open_channel(self.ch)
        self.c.send(self.ch, C.Confirm.Select())
        self.c.expect(C.Confirm.SelectOk)
        self.tag = 0

    def close(self) -> None:
        try:
            self.c.close()
        except OSError:
            pass

    def _next(self, timeout: float = 10) -> tuple[int, int, bytes]:
        """The next frame (type, channel, payload), heartbeats skipped."""
        while True:
            raw = self.c.recv_frame_bytes(timeout)
            kind, channel, size = struct.unpack_from(">BHI", raw)
            if kind != 8:
                return kind, channel, raw[7 : 7 + size]

    def _reply(self, timeout: float = 10) -> Method:
        """The next method on our channel; a channel or connection close raises :class:`Refused`."""
        while True:
            kind, channel, payload = self._next(timeout)
            if kind != 1:
                continue
            method = Method(struct.unpack_from(">HH", payload), payload[4:])
            if method.ids == CONNECTION_CLOSE:
                self.c.send(0, C.Connection.CloseOk())
                self.close()
                self.c = self._connect()
                self.ch = 0
                self._open_channel()
                raise Refused(*method.close())
            if channel != self.ch:
                continue
            if method.ids == CHANNEL_CLOSE:
                self.c.send(self.ch, C.Channel.CloseOk())
                self._open_channel()
                raise Refused(*method.close())
            return method

    def call(self, class_id: int, method_id: int, payload: bytes) -> Method:
        self.c.send_raw(_method(self.ch, class_id, method_id, payload))
        return self._reply()

    # -- the operations ---------------------------------------------------------------------------

    def declare_queue(self, name: str, durable: bool, args: list[tuple[str, Typed]]) -> None:
        self.call(50, 10, b"\0\0" + shortstr(name) + bytes([2 if durable else 0]) + encode_table(args))

    def declare_exchange(self, name: str, type_: str, durable: bool, args: list[tuple[str, Typed]]) -> None:
        bits = 2 if durable else 0
        self.call(40, 10, b"\0\0" + shortstr(name) + shortstr(type_) + bytes([bits]) + encode_table(args))

    def bind(self, queue: str, exchange: str, key: str, args: list[tuple[str, Typed]]) -> None:
        self.call(
            50,
            20,
            b"\0\0" + shortstr(queue) + shortstr(exchange) + shortstr(key) + b"\0" + encode_table(args),
        )

    def unbind(self, queue: str, exchange: str, key: str, args: list[tuple[str, Typed]]) -> None:
        self.call(50, 50, b"\0\0" + shortstr(queue) + shortstr(exchange) + shortstr(key) + encode_table(args))

    def bind_exchange(
        self, dest: str, source: str, key: str, args: list[tuple[str, Typed]], unbind: bool = False
    ) -> None:
        payload = b"\0\0" + shortstr(dest) + shortstr(source) + shortstr(key) + b"\0" + encode_table(args)
        self.call(40, 40 if unbind else 30, payload)

    def delete_queue(self, name: str) -> None:
        self.call(50, 40, b"\0\0" + shortstr(name) + b"\0")

    def purge(self, name: str) -> None:
        self.call(50, 30, b"\0\0" + shortstr(name) + b"\0")

    def delete_exchange(self, name: str) -> None:
        self.call(40, 20, b"\0\0" + shortstr(name) + b"\0")

    def publish(self, exchange: str, key: str, properties: bytes, body: bytes) -> bool:
        """Publish and wait for the confirm: True for basic.ack, False for basic.nack."""
        head = struct.pack(">HHQ", 60, 0, len(body)) + properties
        frames = [_method(self.ch, 60, 40, b"\0\0" + shortstr(exchange) + shortstr(key) + b"\0")]
        frames.append(struct.pack(">BHI", 2, self.ch, len(head)) + head + b"\xce")
        chunk = 131072 - 8
        for i in range(0, len(body), chunk):
            part = body[i : i + chunk]
            frames.append(struct.pack(">BHI", 3, self.ch, len(part)) + part + b"\xce")
        self.c.send_raw(b"".join(frames))
        self.tag += 1
        while True:
            reply = self._reply()
            if reply.ids in (ACK, NACK) and struct.unpack_from(">Q", reply.payload)[0] >= self.tag:
                return reply.ids == ACK

    def get(self, queue: str) -> tuple[int, Got] | None:
        """basic.get without auto-ack: (delivery tag, message), or None when the queue is empty."""
        method = self.call(60, 70, b"\0\0" + shortstr(queue) + b"\0")
        if method.ids == GET_EMPTY:
            return None
        assert method.ids == GET_OK, method
        tag, redelivered = struct.unpack_from(">QB", method.payload)
        exchange, pos = method.shortstr(9)
        routing_key, _ = method.shortstr(pos)
        kind, _, payload = self._next()
        assert kind == 2, kind
        size = struct.unpack_from(">Q", payload, 4)[0]
        properties = bytes(payload[12:])
        body = b""
        while len(body) < size:
            kind, _, part = self._next()
            assert kind == 3, kind
            body += part
        return tag, Got(exchange, routing_key, bool(redelivered), properties, body)

    def settle(self, tag: int, how: str) -> None:
        """ack, reject / nack with requeue (``-requeue``) or without (``-drop``); no reply comes."""
        if how == "ack":
            self.c.send(self.ch, C.Basic.Ack(delivery_tag=tag))
        elif how.startswith("reject"):
            self.c.send(self.ch, C.Basic.Reject(delivery_tag=tag, requeue=how.endswith("requeue")))
        else:
            self.c.send(self.ch, C.Basic.Nack(delivery_tag=tag, requeue=how.endswith("requeue")))

    def read_all(self, queue: str) -> list[Got]:
        """Every ready message of ``queue`` in order, all put back (the channel is closed)."""
        got = []
        while (item := self.get(queue)) is not None:
            got.append(item[1])
        self.c.send(self.ch, C.Channel.Close(reply_code=200, reply_text="snapshot", class_id=0, method_id=0))
        while self._reply().ids != CHANNEL_CLOSE_OK:
            pass
        self._open_channel()
        return got

    def barrier(self) -> None:
        """A round trip: everything sent before (acks, rejects) has been handled."""
        self.c.send(self.ch, C.Basic.Qos(prefetch_count=0))
        while self._reply().ids != QOS_OK:
            pass
