"""Bad client input as raw frames, with the reply Leveret gives and what RabbitMQ 3.10.8 gave.

Each :class:`Case` opens a connection and channel 1 with :class:`RawClient`, sends its bad input, and
expects one frame back: a ``connection.close`` (hard) or ``channel.close`` (soft) with a reply code,
text and the failing method's class and method ids. ``rabbitmq`` records what a real RabbitMQ 3.10.8
answered to the same bytes (``bench/bad_input_vs_rabbitmq.py`` replays them against any broker);
where it differs from ``text``, Leveret's answer is the deliberate one and ``note`` says why.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

from tests.e2e.raw import RawClient


def frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return bytes([ftype]) + channel.to_bytes(2, "big") + len(payload).to_bytes(4, "big") + payload + b"\xce"


def method_payload(class_id: int, method_id: int, args: bytes = b"") -> bytes:
    return struct.pack(">HH", class_id, method_id) + args


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[RawClient], None]
    code: int
    text: str
    ids: tuple[int, int] = (0, 0)
    hard: bool = True
    rabbitmq: str = "same"  # what RabbitMQ 3.10.8 replied, when it differs
    note: str = ""

    def outcome(self, frame: Any) -> tuple[bool, int, str, tuple[int, int]]:
        return isinstance(frame, C.Connection.Close), frame.reply_code, frame.reply_text, (frame.class_id, frame.method_id)


def _bad_frame_end(c: RawClient) -> None:
    raw = bytearray(pframe.marshal(C.Basic.Qos(0, 1, False), 1))
    raw[-1] = 0
    c.send_raw(bytes(raw))


def _publish_then(c: RawClient, then: bytes, immediate: bool = False) -> None:
    c.send(1, C.Basic.Publish(exchange="", routing_key="q", immediate=immediate))
    c.send_raw(then)


def _declare(name: str, **args: Any) -> Callable[[RawClient], None]:
    return lambda c: c.send(1, C.Queue.Declare(queue=name, exclusive=True, arguments=args))


def _consume_with(arguments: dict[str, Any]) -> Callable[[RawClient], None]:
    def send(c: RawClient) -> None:
        c.send(1, C.Queue.Declare(queue="", exclusive=True))
        q = c.expect(C.Queue.DeclareOk).queue
        c.send(1, C.Basic.Consume(queue=q, arguments=arguments))

    return send


def _reuse_tag(c: RawClient) -> None:
    c.send(1, C.Queue.Declare(queue="", exclusive=True))
    q = c.expect(C.Queue.DeclareOk).queue
    c.send(1, C.Basic.Consume(queue=q, consumer_tag="t"))
    c.expect(C.Basic.ConsumeOk)
    c.send(1, C.Basic.Consume(queue=q, consumer_tag="t"))


BAD_UTF8_DECLARE = method_payload(50, 10, b"\x00\x00" + bytes([3]) + b"\xff\xfe\x80" + b"\x00" + b"\x00\x00\x00\x00")
NO_HEADER = "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead"
NO_METHOD = "UNEXPECTED_FRAME - expected method frame, got non method frame instead"
PF = "PRECONDITION_FAILED - invalid arg"

CASES: list[Case] = [
    # ---- framing: 501 FRAME_ERROR, connection closed --------------------------------------------
    Case("bad frame end", _bad_frame_end, 501,
         "FRAME_ERROR - type 1, all octets = <<0,60,0,10,0,0,0,0,0,1,0>>: {invalid_frame_end_marker,0}"),
    Case("unknown frame type", lambda c: c.send_raw(frame(9, 0, b"")), 501,
         "FRAME_ERROR - type 9, all octets = <<>>: unknown_frame"),
    Case("unknown frame type on a channel", lambda c: c.send_raw(frame(5, 1, b"abc")), 501,
         'FRAME_ERROR - type 5, all octets = <<"abc">>: unknown_frame'),
    Case("frame above frame_max", lambda c: c.send_raw(frame(3, 1, b"x" * 131073)), 501,
         "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,131073,131064}"),
    Case("garbage", lambda c: c.send_raw(b"hello world this is garbage\r\n\r\n"), 501,
         "FRAME_ERROR - type 104, all octets = <<>>: {frame_too_large,1819222135,131064}"),
    Case("content header too short", lambda c: _publish_then(c, frame(2, 1, b"\x00\x3c")), 501,
         "FRAME_ERROR - type 2, all octets = <<0,60>>: unknown_frame"),
    Case("method arguments truncated", lambda c: c.send_raw(frame(1, 1, method_payload(50, 10, b"\x00"))), 501,
         "FRAME_ERROR - cannot decode <<0>>", (50, 10)),
    Case("queue name not UTF-8", lambda c: c.send_raw(frame(1, 1, BAD_UTF8_DECLARE)), 501,
         "FRAME_ERROR - Malformed UTF-8 in shortstr"),
    Case("body longer than declared", lambda c: _publish_then(
        c, pframe.marshal(pheader.ContentHeader(0, 1, C.Basic.Properties()), 1) + pframe.marshal(pbody.ContentBody(b"xyz"), 1)),
         501, "FRAME_ERROR - content body exceeds declared size 1",
         rabbitmq="no reply (waits)", note="RabbitMQ leaves the connection hanging; a clear 501 is better"),
    # ---- channels: 504 CHANNEL_ERROR, 530 -------------------------------------------------------
    Case("method on a channel not open", lambda c: c.send(5, C.Basic.Qos(0, 1, False)), 504,
         "CHANNEL_ERROR - expected 'channel.open'", (60, 10)),
    Case("second channel.open", lambda c: c.send(1, C.Channel.Open()), 504,
         "CHANNEL_ERROR - second 'channel.open' seen", (20, 10)),
    Case("basic method on channel 0", lambda c: c.send(0, C.Basic.Qos(0, 1, False)), 504,
         "CHANNEL_ERROR - unexpected method in connection state running", (60, 10)),
    # ---- content out of sequence: 505 UNEXPECTED_FRAME ------------------------------------------
    Case("body without publish", lambda c: c.send(1, pbody.ContentBody(b"x")), 505, NO_METHOD),
    Case("header without publish", lambda c: c.send(1, pheader.ContentHeader(0, 1, C.Basic.Properties())), 505, NO_METHOD),
    Case("method instead of content header", lambda c: _publish_then(c, pframe.marshal(C.Basic.Qos(0, 1, False), 1)),
         505, NO_HEADER, (60, 40)),
    Case("body instead of content header", lambda c: _publish_then(c, pframe.marshal(pbody.ContentBody(b"x"), 1)),
         505, NO_HEADER, (60, 40)),
    Case("content header of another class", lambda c: _publish_then(c, frame(2, 1, struct.pack(">HHQH", 50, 0, 1, 0))),
         505, "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 instead", (60, 40)),
    Case("heartbeat on a channel", lambda c: c.send_raw(frame(8, 1, b"")), 505, "UNEXPECTED_FRAME - type 8, all octets = <<>>"),
    # ---- 503 COMMAND_INVALID, 540 NOT_IMPLEMENTED -----------------------------------------------
    Case("connection method on a channel", lambda c: c.send(1, C.Connection.Blocked("x")), 503,
         "COMMAND_INVALID - unimplemented method", (10, 60)),
    Case("unsolicited channel.close-ok", lambda c: c.send(1, C.Channel.CloseOk()), 503,
         "COMMAND_INVALID - unimplemented method", (20, 41)),
    Case("unknown exchange type", lambda c: c.send(1, C.Exchange.Declare(exchange="xx1", exchange_type="bogus")), 503,
         "COMMAND_INVALID - unknown exchange type 'bogus'", (40, 10)),
    Case("unknown method", lambda c: c.send_raw(frame(1, 1, method_payload(60, 999))), 540,
         "NOT_IMPLEMENTED - unknown method 60.999", rabbitmq="TCP reset, no close",
         note="RabbitMQ's reader crashes on it; the spec's 540 is the useful answer"),
    Case("unknown class", lambda c: c.send_raw(frame(1, 1, method_payload(99, 10))), 540,
         "NOT_IMPLEMENTED - unknown method 99.10", rabbitmq="TCP reset, no close"),
    Case("basic.qos prefetch_size", lambda c: c.send(1, C.Basic.Qos(prefetch_size=10)), 540,
         "NOT_IMPLEMENTED - prefetch_size!=0 (10)", (60, 10)),
    Case("channel.flow active=false", lambda c: c.send(1, C.Channel.Flow(active=False)), 540,
         "NOT_IMPLEMENTED - active=false", (20, 20)),
    Case("publish immediate", lambda c: _publish_then(
        c, pframe.marshal(pheader.ContentHeader(0, 0, C.Basic.Properties()), 1), immediate=True), 540,
         "NOT_IMPLEMENTED - immediate=true", (60, 40)),
    # ---- 530 NOT_ALLOWED ------------------------------------------------------------------------
    Case("consumer tag reused", _reuse_tag, 530, "NOT_ALLOWED - attempt to reuse consumer tag 't'", (60, 20)),
    # ---- soft errors: 406 PRECONDITION_FAILED, channel closed -----------------------------------
    Case("message above max size", lambda c: _publish_then(
        c, pframe.marshal(pheader.ContentHeader(0, 200 * 1024 * 1024, C.Basic.Properties()), 1)), 406,
         "PRECONDITION_FAILED - message size 209715200 is larger than configured max size 134217728", (60, 40), hard=False,
         rabbitmq="same text once the whole body is in (checked with max_message_size = 1000)",
         note="refused from the content header, before any body is buffered"),
    Case("ack of an unknown tag", lambda c: c.send(1, C.Basic.Ack(99, False)), 406,
         "PRECONDITION_FAILED - unknown delivery tag 99", (60, 80), hard=False),
    Case("x-message-ttl a string", _declare("tq1", **{"x-message-ttl": "abc"}), 406,
         f"{PF} 'x-message-ttl' for queue 'tq1' in vhost '/': \"expected integer, got longstr\"", (50, 10), hard=False),
    Case("x-message-ttl negative", _declare("tq2", **{"x-message-ttl": -5}), 406,
         f"{PF} 'x-message-ttl' for queue 'tq2' in vhost '/': {{value_negative,-5}}", (50, 10), hard=False),
    Case("x-expires zero", _declare("tq4", **{"x-expires": 0}), 406,
         f"{PF} 'x-expires' for queue 'tq4' in vhost '/': {{value_zero,0}}", (50, 10), hard=False),
    Case("x-expires too large", _declare("tq4b", **{"x-expires": 2**40}), 406,
         f"{PF} 'x-expires' for queue 'tq4b' in vhost '/': {{value_too_large,1099511627776}}", (50, 10), hard=False),
    Case("x-max-length a string", _declare("tq3", **{"x-max-length": "x"}), 406,
         f"{PF} 'x-max-length' for queue 'tq3' in vhost '/': \"expected integer, got longstr\"", (50, 10), hard=False),
    Case("x-max-priority above 255", _declare("tq6", **{"x-max-priority": 300}), 406,
         f"{PF} 'x-max-priority' for queue 'tq6' in vhost '/': {{max_value_exceeded,300}}", (50, 10), hard=False),
    Case("x-queue-type unknown", _declare("tq5", **{"x-queue-type": "nope"}), 406,
         f"{PF} 'x-queue-type' for queue 'tq5' in vhost '/': \"unsupported queue type 'nope'\"", (50, 10), hard=False),
    Case("x-overflow unknown", _declare("tq7", **{"x-overflow": "explode"}), 406,
         f"{PF} 'x-overflow' for queue 'tq7' in vhost '/': invalid_overflow", (50, 10), hard=False),
    Case("x-overflow an integer", _declare("tq8", **{"x-overflow": 3}), 406,
         f"{PF} 'x-overflow' for queue 'tq8' in vhost '/': {{unacceptable_type,byte}}", (50, 10), hard=False),
    Case("x-queue-mode unknown", _declare("tq9", **{"x-queue-mode": "weird"}), 406,
         f"{PF} 'x-queue-mode' for queue 'tq9' in vhost '/': \"unsupported queue mode 'weird'\"", (50, 10), hard=False),
    Case("x-single-active-consumer a string", _declare("tq10", **{"x-single-active-consumer": "yes"}), 406,
         f"{PF} 'x-single-active-consumer' for queue 'tq10' in vhost '/': {{unacceptable_type,longstr}}", (50, 10),
         hard=False),
    Case("x-dead-letter-exchange an integer", _declare("tq11", **{"x-dead-letter-exchange": 5}), 406,
         "PRECONDITION_FAILED - invalid type 'byte' for arg 'x-dead-letter-exchange' in queue 'tq11' in vhost '/'",
         (50, 10), hard=False),
    Case("x-dead-letter-routing-key without exchange", _declare("tq12", **{"x-dead-letter-routing-key": "rk"}), 406,
         f"{PF} 'x-dead-letter-routing-key' for queue 'tq12' in vhost '/': routing_key_but_no_dlx_defined", (50, 10),
         hard=False),
    Case("x-priority a string in basic.consume", _consume_with({"x-priority": "high"}), 406,
         "", (60, 20), hard=False),  # text names the server-named queue: checked by prefix in the test
    # ---- 404 ------------------------------------------------------------------------------------
    Case("consume from a missing queue", lambda c: c.send(1, C.Basic.Consume(queue="nope-q")), 404,
         "NOT_FOUND - no queue 'nope-q' in vhost '/'", (60, 20), hard=False),
]  # fmt: skip
