"""Frame encoding, and a hand-written codec for the hot methods.

pamqp encodes and decodes every method; it is the reference. The methods on the
per-message path (publish, deliver, get-ok, return, ack, nack, reject) are encoded
and decoded here with ``struct`` because pamqp costs ~12 µs a message each way.
``tests/protocol/test_codec.py`` checks these byte for byte against pamqp.

Content headers are never re-encoded: the broker keeps the raw property section
(``flags + values``) a publisher sent and writes it back as is.
"""

from __future__ import annotations

import struct

from pamqp import frame as pamqp_frame
from pamqp.base import Frame

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_END_BYTE = b"\xce"
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_OVERHEAD = 8  # type(1) + channel(2) + size(4) + end(1)

BASIC = 60
# (class_id << 16) | method_id for the hot methods
BASIC_PUBLISH = (60 << 16) | 40
BASIC_RETURN = (60 << 16) | 50
BASIC_DELIVER = (60 << 16) | 60
BASIC_GET_OK = (60 << 16) | 71
BASIC_ACK = (60 << 16) | 80
BASIC_REJECT = (60 << 16) | 90
BASIC_NACK = (60 << 16) | 120

_frame_head = struct.Struct(">BHI")
_method_head = struct.Struct(">BHIHH")  # frame head + class id + method id
_header_head = struct.Struct(">BHIHHQ")  # frame head + class, weight, body size
_u64 = struct.Struct(">Q")
_tag_redelivered = struct.Struct(">Q?")  # basic.deliver's delivery tag and redelivered bit
_end_header_head = struct.Struct(">BBHIHHQ")  # a frame's end octet, then a content header's head
_end_frame_head = struct.Struct(">BBHI")  # a frame's end octet, then the next frame's head
_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")
_ack = struct.Struct(">BHIHHQB")
_HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"

# Property flags of basic properties, in wire order.
FLAG_CONTENT_TYPE = 0x8000
FLAG_CONTENT_ENCODING = 0x4000
FLAG_HEADERS = 0x2000
FLAG_DELIVERY_MODE = 0x1000
FLAG_PRIORITY = 0x0800
FLAG_EXPIRATION = 0x0100


def heartbeat() -> bytes:
    return _HEARTBEAT


def encode_method(channel: int, method: Frame) -> bytes:
    """Any method, through pamqp (the cold path)."""
    return pamqp_frame.marshal(method, channel)


def unchecked(cls: type[Frame], **fields: object) -> Frame:
    """A pamqp method built without pamqp's name validation.

    pamqp only accepts queue and exchange names matching ``[a-zA-Z0-9-_.:@#,/+ ]``;
    RabbitMQ accepts any UTF-8 name up to 255 bytes, so replies that echo a client's
    name (declare-ok, consume-ok, cancel) are built with this.
    """
    m = cls()
    for k, v in fields.items():
        setattr(m, k, v)
    m.validate = _no_validation  # type: ignore[method-assign]  # marshal() validates again otherwise
    return m


def _no_validation() -> None:
    pass


def shortstr(s: str) -> bytes:
    """``s`` as an AMQP short string, for values the broker reports (exchange and routing key of a
    delivery, get-ok or return; reply texts).

    Never raises: a value over 255 bytes is cut at the last whole character that fits. The model
    refuses such names and keys at every entry point, but a message stored before that check (or
    dead-lettered through a queue declared before it) must still be deliverable: one message that
    cannot be encoded would otherwise fail every delivery from its queue.
    """
    encoded = _shortstrs.get(s)
    if encoded is not None:
        return encoded
    b = s.encode("utf-8", "surrogatepass")
    if len(b) > 255:
        b = b[:255].decode("utf-8", "ignore").encode("utf-8")
    encoded = bytes((len(b),)) + b
    if len(_shortstrs) >= _SHORTSTRS_KEPT:
        _shortstrs.clear()
    _shortstrs[s] = encoded
    return encoded


# shortstr() of recent values (exchange names and routing keys, encoded for every delivery). Cleared when
# it holds this many; values are at most 255 bytes, so it stays under ~300 KiB.
_SHORTSTRS_KEPT = 1024
_shortstrs: dict[str, bytes] = {}


def content_parts(channel: int, properties: bytes, body: bytes | bytearray, frame_max: int) -> list[bytes | memoryview]:
    """Content header frame plus body frames, as buffers to write in a row (writev), the body not copied."""
    n = len(body)
    parts: list[bytes | memoryview] = [
        _header_head.pack(FRAME_HEADER, channel, 12 + len(properties), BASIC, 0, n), properties, FRAME_END_BYTE
    ]
    chunk = frame_max - FRAME_OVERHEAD
    mv = memoryview(body)
    for i in range(0, n, chunk):
        piece = mv[i : i + chunk]
        parts += (_frame_head.pack(FRAME_BODY, channel, len(piece)), piece, FRAME_END_BYTE)
    return parts


def deliver_parts(
    channel: int,
    consumer_tag: bytes,
    delivery_tag: int,
    redelivered: bool,
    exchange: bytes,
    routing_key: bytes,
    properties: bytes,
    body: bytes | bytearray,
    frame_max: int,
) -> list[bytes | memoryview]:
    """:func:`encode_deliver` as a list of buffers that refer to ``body`` (for large bodies: no copy)."""
    args = b"".join((consumer_tag, _u64.pack(delivery_tag), b"\x01" if redelivered else b"\x00", exchange, routing_key))
    head = b"".join((_method_head.pack(FRAME_METHOD, channel, 4 + len(args), BASIC, 60), args, FRAME_END_BYTE))
    parts = content_parts(channel, properties, body, frame_max)
    parts[0] = head + parts[0]
    return parts


def _content(channel: int, properties: bytes, body: bytes | bytearray, frame_max: int) -> bytes:
    """Content header frame plus body frames, split to fit ``frame_max``."""
    n = len(body)
    head = _header_head.pack(FRAME_HEADER, channel, 12 + len(properties), BASIC, 0, n)
    if n == 0:
        return head + properties + FRAME_END_BYTE
    chunk = frame_max - FRAME_OVERHEAD
    if n <= chunk:
        return b"".join(
            (head, properties, FRAME_END_BYTE, _frame_head.pack(FRAME_BODY, channel, n), body, FRAME_END_BYTE)
        )
    parts: list[bytes | memoryview] = [head, properties, FRAME_END_BYTE]
    mv = memoryview(body)
    for i in range(0, n, chunk):
        piece = mv[i : i + chunk]
        parts += (_frame_head.pack(FRAME_BODY, channel, len(piece)), piece, FRAME_END_BYTE)
    return b"".join(parts)


def encode_deliver(
    channel: int,
    consumer_tag: bytes,
    delivery_tag: int,
    redelivered: bool,
    exchange: bytes,
    routing_key: bytes,
    properties: bytes,
    body: bytes | bytearray,
    frame_max: int,
) -> bytes:
    """basic.deliver + content. ``consumer_tag``, ``exchange``, ``routing_key`` are pre-encoded shortstrs."""
    n = len(body)
    if 0 < n <= frame_max - FRAME_OVERHEAD:  # one body frame, the usual case: one join
        return b"".join(
            (
                _method_head.pack(FRAME_METHOD, channel, 13 + len(consumer_tag) + len(exchange) + len(routing_key), BASIC, 60),
                consumer_tag,
                _tag_redelivered.pack(delivery_tag, redelivered),
                exchange,
                routing_key,
                _end_header_head.pack(FRAME_END, FRAME_HEADER, channel, 12 + len(properties), BASIC, 0, n),
                properties,
                _end_frame_head.pack(FRAME_END, FRAME_BODY, channel, n),
                body,
                FRAME_END_BYTE,
            )
        )
    args = b"".join((consumer_tag, _u64.pack(delivery_tag), b"\x01" if redelivered else b"\x00", exchange, routing_key))
    return (
        _method_head.pack(FRAME_METHOD, channel, 4 + len(args), BASIC, 60)
        + args
        + FRAME_END_BYTE
        + _content(channel, properties, body, frame_max)
    )


def encode_get_ok(
    channel: int,
    delivery_tag: int,
    redelivered: bool,
    exchange: bytes,
    routing_key: bytes,
    message_count: int,
    properties: bytes,
    body: bytes | bytearray,
    frame_max: int,
) -> bytes:
    args = b"".join(
        (_u64.pack(delivery_tag), b"\x01" if redelivered else b"\x00", exchange, routing_key, _u32.pack(message_count))
    )
    return (
        _method_head.pack(FRAME_METHOD, channel, 4 + len(args), BASIC, 71)
        + args
        + FRAME_END_BYTE
        + _content(channel, properties, body, frame_max)
    )


def encode_return(
    channel: int,
    reply_code: int,
    reply_text: str,
    exchange: str,
    routing_key: str,
    properties: bytes,
    body: bytes | bytearray,
    frame_max: int,
) -> bytes:
    args = _u16.pack(reply_code) + shortstr(reply_text) + shortstr(exchange) + shortstr(routing_key)
    return (
        _method_head.pack(FRAME_METHOD, channel, 4 + len(args), BASIC, 50)
        + args
        + FRAME_END_BYTE
        + _content(channel, properties, body, frame_max)
    )


def encode_ack(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """basic.ack from the broker (publisher confirm)."""
    return _ack.pack(FRAME_METHOD, channel, 13, BASIC, 80, delivery_tag, 1 if multiple else 0) + FRAME_END_BYTE


def encode_nack(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """basic.nack from the broker (publisher confirm failure); requeue is unused here."""
    return _ack.pack(FRAME_METHOD, channel, 13, BASIC, 120, delivery_tag, 1 if multiple else 0) + FRAME_END_BYTE


def decode_shortstr(buf: bytes | bytearray | memoryview, pos: int) -> tuple[str, int]:
    """Returns (string, new position). Raises ValueError/IndexError on malformed input."""
    n = buf[pos]
    end = pos + 1 + n
    if end > len(buf):
        raise ValueError("short string runs past the end of the frame")
    return bytes(buf[pos + 1 : end]).decode("utf-8"), end


def decode_publish(payload: bytes) -> tuple[str, str, bool, bool]:
    """Arguments of basic.publish (``payload`` starts after class and method ids)."""
    # ticket (short) is ignored, as in RabbitMQ
    exchange, pos = decode_shortstr(payload, 2)
    routing_key, pos = decode_shortstr(payload, pos)
    bits = payload[pos]
    return exchange, routing_key, bool(bits & 1), bool(bits & 2)


def decode_tag_bits(payload: bytes) -> tuple[int, int]:
    """(delivery_tag, bits) of basic.ack / basic.nack / basic.reject."""
    if len(payload) < 9:
        raise ValueError("method arguments truncated")
    return _u64.unpack_from(payload, 0)[0], payload[8]


def delivery_mode(properties: bytes) -> int:
    """delivery-mode from a raw property section (0 when absent)."""
    if len(properties) < 2:
        return 0
    flags = (properties[0] << 8) | properties[1]
    if not flags & FLAG_DELIVERY_MODE:
        return 0
    pos = 2
    try:
        if flags & FLAG_CONTENT_TYPE:
            pos += 1 + properties[pos]
        if flags & FLAG_CONTENT_ENCODING:
            pos += 1 + properties[pos]
        if flags & FLAG_HEADERS:
            pos += 4 + _u32.unpack_from(properties, pos)[0]
        return properties[pos]
    except (IndexError, struct.error):  # a truncated property section: transient
        return 0
