"""The sans-IO AMQP 0-9-1 connection: frames in, events out; state machines as tables.

Usage::

    conn = AMQPConnection(frame_max=131072, channel_max=2047)
    for event in conn.receive_data(data):   # raises AMQPError on bad input
        ...
    out = conn.send_method(channel, pamqp_method)   # bytes to write

``receive_data`` buffers partial frames; a short buffer simply yields no event yet.
When it raises, the events parsed before the bad frame are in the error's ``events``.
A frame is checked against ``frame_max`` from its 7-byte head, before its payload
is buffered; a content header against ``max_message_size`` and, with the bodies other
channels have announced but not finished (:attr:`AMQPConnection.announced`), against
``max_incomplete_content``, before any of its body is buffered (406 on that channel).
:attr:`AMQPConnection.buffered` is what unfinished bodies hold now. Tables in method
arguments are walked (:mod:`leveret.protocol.tables`) before pamqp decodes them.

Errors are raised as :class:`leveret.errors.ConnectionError_` (the
caller sends connection.close with its code) or
:class:`leveret.errors.ChannelError` carrying the channel in ``.channel``.
After a bad protocol header :class:`BadProtocolHeader` is raised: write
``PROTOCOL_HEADER`` and close the socket.
"""

from __future__ import annotations

import ctypes
import struct
from enum import Enum, auto
from typing import Any

from pamqp import commands
from pamqp.base import Frame

from leveret.errors import AMQPError, ChannelError, ConnectionError_, ReplyCode
from leveret.limits import TableError
from leveret.protocol import codec, tables
from leveret.protocol.events import (
    Ack,
    Event,
    HeaderReceived,
    Heartbeat,
    MethodReceived,
    Nack,
    Publish,
    Reject,
)
from leveret.protocol.texts import NO_HEADER, NO_METHOD, erl_binary, method_name, snippet

_frame_head = struct.Struct(">BHI")
_u32 = struct.Struct(">I")
_header_body_size = struct.Struct(">HHQ")
_tag_bits = struct.Struct(">QB")  # basic.ack / nack / reject: delivery tag, flags


class BadProtocolHeader(Exception):
    """The peer did not open with ``AMQP 0-9-1``: reply with our header, then close."""


class ConnState(Enum):
    AWAIT_HEADER = auto()
    AWAIT_START_OK = auto()
    AWAIT_SECURE_OK = auto()  # not used: PLAIN and AMQPLAIN need no challenge
    AWAIT_TUNE_OK = auto()
    AWAIT_OPEN = auto()
    OPEN = auto()
    CLOSING = auto()  # we sent connection.close; only close / close-ok count now
    CLOSED = auto()


class ChanState(Enum):
    OPEN = auto()
    CLOSING = auto()  # we sent channel.close; everything but close / close-ok is dropped


# Connection-class methods allowed in each state, and the state they lead to.
_CONN_TRANSITIONS: dict[tuple[ConnState, type[Frame]], ConnState] = {
    (ConnState.AWAIT_START_OK, commands.Connection.StartOk): ConnState.AWAIT_TUNE_OK,
    (ConnState.AWAIT_TUNE_OK, commands.Connection.TuneOk): ConnState.AWAIT_OPEN,
    (ConnState.AWAIT_OPEN, commands.Connection.Open): ConnState.OPEN,
    (ConnState.OPEN, commands.Connection.Close): ConnState.CLOSED,
    (ConnState.OPEN, commands.Connection.CloseOk): ConnState.CLOSED,  # tolerated, RabbitMQ ignores it
    (ConnState.OPEN, commands.Connection.Blocked): ConnState.OPEN,
    (ConnState.OPEN, commands.Connection.Unblocked): ConnState.OPEN,
    (ConnState.OPEN, commands.Connection.UpdateSecretOk): ConnState.OPEN,
    (ConnState.OPEN, commands.Connection.UpdateSecret): ConnState.OPEN,
    (ConnState.CLOSING, commands.Connection.Close): ConnState.CLOSED,
    (ConnState.CLOSING, commands.Connection.CloseOk): ConnState.CLOSED,
    (ConnState.AWAIT_TUNE_OK, commands.Connection.Close): ConnState.CLOSED,
    (ConnState.AWAIT_OPEN, commands.Connection.Close): ConnState.CLOSED,
    (ConnState.AWAIT_START_OK, commands.Connection.Close): ConnState.CLOSED,
}

_CLOSE_OR_CLOSE_OK = (b"\x00\x0a\x00\x32", b"\x00\x0a\x00\x33")  # connection.close, close-ok
# Connection states in which frames on channels other than 0 are allowed.
_CHANNELS_ALLOWED = (ConnState.OPEN, ConnState.CLOSING)

# Bodies of this size or more are assembled in one buffer of their size, allocated at their content
# header: their frames are copied (or read from the socket) into it, not kept as frames and joined.
DIRECT_BODY_MIN = 64 << 10
_OWN_READ_BUFFER = 64 << 10  # the read buffer of a connection not given one


def _uninitialised_bytearray() -> Any:
    """``bytearray`` of a size, left as malloc gives it (``bytearray(n)`` writes n zeros first: 5 % of the
    broker's CPU with 16 MiB bodies). Only for a body whose every byte is written before anyone reads it."""
    try:
        new = ctypes.pythonapi.PyByteArray_FromStringAndSize
    except AttributeError:  # not CPython
        return bytearray
    new.restype = ctypes.py_object
    new.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    return lambda size: new(None, size)


_new_body = _uninitialised_bytearray()

# Decoded basic.publish arguments (exchange, routing key, flags) by their raw bytes, per connection: a
# publisher mostly sends the same few. Cleared when it holds this many.
_PUBLISH_ARGS_KEPT = 64
_HOT = {codec.BASIC_PUBLISH, codec.BASIC_ACK, codec.BASIC_NACK, codec.BASIC_REJECT}


class _PendingContent:
    """A basic.publish waiting for its header and body frames."""

    __slots__ = (
        "exchange", "routing_key", "mandatory", "immediate", "properties", "body_size", "parts", "got", "body",
        "frame_at",
    )  # fmt: skip

    def __init__(self, exchange: str, routing_key: str, mandatory: bool, immediate: bool) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.mandatory = mandatory
        self.immediate = immediate
        self.properties: bytes | None = None
        self.body_size = 0
        self.parts: list[bytes] = []
        self.got = 0
        self.body: bytearray | None = None  # a large body, its frames copied or read into it as they come
        self.frame_at = 0  # where in ``body`` the frame being read starts


class AMQPConnection:
    """Parses client bytes into events and tracks connection and channel states."""

    def __init__(
        self,
        *,
        frame_max: int = 131072,
        channel_max: int = 2047,
        max_message_size: int = 128 << 20,
        max_incomplete_content: int = 64 << 20,
        read_buffer: bytearray | None = None,
    ) -> None:
        self.state = ConnState.AWAIT_HEADER
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.max_message_size = max_message_size
        # Body bytes the content headers of unfinished publishes may announce, all channels together
        # (never below one message of max_message_size).
        self.max_incomplete_content = max(max_incomplete_content, max_message_size)
        self.channels: dict[int, ChanState] = {}
        self._pending: dict[int, _PendingContent] = {}
        self._buf = bytearray()  # an unfinished frame (or the protocol header), kept between reads
        # Where reads go (get_buffer), when not into a large body: connections of one event loop may share
        # one, as everything read is parsed or copied out before buffer_updated returns.
        self._scratch = read_buffer
        self._view: memoryview | None = None  # of _scratch, made once
        self._direct: tuple[int, _PendingContent, int] | None = None  # reading a body frame into its body
        self._end_of: tuple[int, _PendingContent] | None = None  # that frame's frame-end octet is next
        self._consumed = 0  # bytes _parse used, even when it raised
        self.announced = 0  # body bytes announced by the content headers of unfinished publishes
        self.buffered = 0  # body bytes of unfinished publishes held so far
        self.publishing = False  # a basic.publish frame has arrived (the connection is a publisher)
        self._publish_args: dict[bytes, tuple[str, str, bool, bool]] = {}

    # ---- input -------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer; returns the complete events they finish.

        The same parser as :meth:`get_buffer` / :meth:`buffer_updated`, fed by copying ``data`` in."""
        events: list[Event] = []
        view = memoryview(data)
        off, n = 0, len(data)
        try:
            while off < n:
                into = self.get_buffer()
                k = min(len(into), n - off)
                into[:k] = view[off : off + k]
                off += k
                events += self.buffer_updated(k)
        except AMQPError as err:
            err.events = events + err.events
            raise
        return events

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next bytes from the peer go (``asyncio.BufferedProtocol.get_buffer``): the body of a
        large message itself while one of its frames is being read, else the read buffer. The caller
        writes into it and calls :meth:`buffer_updated`; it must not ``release()`` it (it is kept)."""
        d = self._direct
        if d is not None:
            p = d[1]
            return memoryview(p.body)[p.got : p.got + d[2]]  # type: ignore[arg-type]
        view = self._view
        if view is None:
            scratch = self._scratch if self._scratch is not None else bytearray(_OWN_READ_BUFFER)
            view = self._view = memoryview(scratch)
        if self._end_of is not None and not self._buf:
            # The frame end of a body frame read into its body, and the next frame's head: if that is the
            # body's next frame, its payload goes straight into the body too.
            return view[:8]
        return view

    def buffer_updated(self, nbytes: int) -> list[Event]:
        """``nbytes`` were written into the buffer :meth:`get_buffer` returned; returns the complete events
        they finish (raises :class:`AMQPError` with the events before the bad frame in ``.events``)."""
        d = self._direct
        if d is not None:
            channel, p, rem = d
            p.got += nbytes
            if self._pending.get(channel) is p:  # not dropped (channel closed) while its frame was read
                self.buffered += nbytes
            rem -= nbytes
            if rem:
                self._direct = (channel, p, rem)
            else:
                self._direct = None
                self._end_of = (channel, p)
            return []
        view = self._view
        assert view is not None
        buf = self._buf
        events: list[Event] = []
        self._consumed = 0
        if buf or self.state is ConnState.AWAIT_HEADER:
            buf += view[:nbytes]
            bview = memoryview(buf)
            try:
                self._parse(buf, bview, len(buf), events)
            finally:
                bview.release()
                if self._consumed:
                    del buf[: self._consumed]
        else:  # parsed where it was read; only an unfinished frame is copied
            try:
                self._parse(view.obj, view, nbytes, events)  # type: ignore[arg-type]
            finally:
                if self._consumed < nbytes:
                    buf += view[self._consumed : nbytes]
        return events

    def _parse(self, buf: bytearray, view: memoryview, n: int, events: list[Event]) -> int:
        """Parse the frames in ``buf[:n]`` (``view`` is a memoryview of ``buf``); returns how many bytes were
        used, also left in ``_consumed`` when it raises."""
        pos = 0
        if self.state is ConnState.AWAIT_HEADER:
            if n < 8:
                if not codec.PROTOCOL_HEADER.startswith(bytes(buf[:n])):
                    raise BadProtocolHeader(bytes(buf[:n]))
                return 0
            if bytes(buf[:8]) != codec.PROTOCOL_HEADER:
                raise BadProtocolHeader(bytes(buf[:8]))
            pos = 8
            self.state = ConnState.AWAIT_START_OK
            events.append(HeaderReceived())
        frame_max = self.frame_max
        try:
            if self._end_of is not None:
                if n - pos < 1:
                    return pos
                channel, done = self._end_of
                self._end_of = None
                if buf[pos] != codec.FRAME_END:
                    raise ConnectionError_(
                        ReplyCode.FRAME_ERROR,
                        f"{snippet(codec.FRAME_BODY, bytes(done.body[done.frame_at : done.got]))}: "  # type: ignore[index]
                        f"{{invalid_frame_end_marker,{buf[pos]}}}",
                    )
                pos += 1
                self._body_frame_done(channel, done, events)
            while n - pos >= 7:
                ftype, channel, size = _frame_head.unpack_from(buf, pos)
                if size + 8 > frame_max:
                    raise ConnectionError_(
                        ReplyCode.FRAME_ERROR,
                        f"{snippet(ftype, b'')}: {{frame_too_large,{size},{frame_max - 8}}}",
                    )
                end = pos + 7 + size
                if ftype == 1 and size >= 4 and end < n and self.state is ConnState.OPEN:  # a whole method frame
                    index = _u32.unpack_from(buf, pos + 7)[0]
                    if index == 0x003C0028:  # basic.publish
                        after = self._publish_whole(buf, view, pos, end, n, channel, events)
                        if after:
                            pos = after
                            continue
                    elif (
                        index == 0x003C0050  # basic.ack, as the general path would take it
                        and size == 13
                        and buf[end] == 0xCE
                        and self.channels.get(channel) is ChanState.OPEN
                        and channel not in self._pending
                    ):
                        tag, bits = _tag_bits.unpack_from(buf, pos + 11)
                        events.append(Ack(channel, tag, bool(bits & 1)))
                        pos = end + 1
                        continue
                if ftype == codec.FRAME_BODY and self.state is ConnState.OPEN:
                    p = self._pending.get(channel)
                    if p is not None and p.body is not None and self.channels.get(channel) is ChanState.OPEN:
                        # A large message's body frame: its payload is copied into the body (or read into
                        # it, for the part still to come), never into a frame of its own.
                        if p.got + size > p.body_size:
                            raise ConnectionError_(
                                ReplyCode.FRAME_ERROR, f"content body exceeds declared size {p.body_size}"
                            )
                        avail = min(n, end) - pos - 7
                        p.frame_at = p.got
                        if avail:
                            memoryview(p.body)[p.got : p.got + avail] = view[pos + 7 : pos + 7 + avail]
                            p.got += avail
                            self.buffered += avail
                        if end >= n:  # the frame goes on past what was read
                            if size > avail:
                                self._direct = (channel, p, size - avail)
                            else:
                                self._end_of = (channel, p)
                            pos = n
                            return pos
                        if buf[end] != codec.FRAME_END:
                            raise ConnectionError_(
                                ReplyCode.FRAME_ERROR,
                                f"{snippet(ftype, bytes(buf[pos + 7 : end]))}: {{invalid_frame_end_marker,{buf[end]}}}",
                            )
                        pos = end + 1
                        self._body_frame_done(channel, p, events)
                        continue
                if n - end < 1:
                    break
                if buf[end] != codec.FRAME_END:
                    raise ConnectionError_(
                        ReplyCode.FRAME_ERROR,
                        f"{snippet(ftype, bytes(buf[pos + 7 : end]))}: {{invalid_frame_end_marker,{buf[end]}}}",
                    )
                payload = bytes(view[pos + 7 : end])
                pos = end + 1
                if self.state is ConnState.CLOSED:
                    continue
                if self.state is ConnState.CLOSING and (
                    channel or ftype != codec.FRAME_METHOD or payload[:4] not in _CLOSE_OR_CLOSE_OK
                ):
                    continue  # we sent connection.close: only connection.close / close-ok count now
                if channel and ftype != codec.FRAME_HEARTBEAT and self.state not in _CHANNELS_ALLOWED:
                    # RabbitMQ: nothing but connection methods before connection.open
                    raise ConnectionError_(ReplyCode.UNEXPECTED_FRAME, snippet(ftype, payload))
                if ftype == codec.FRAME_METHOD:
                    self._on_method(channel, payload, events)
                elif ftype == codec.FRAME_HEADER:
                    self._on_header(channel, payload, events)
                elif ftype == codec.FRAME_BODY:
                    self._on_body(channel, payload, events)
                elif ftype == codec.FRAME_HEARTBEAT:
                    if channel != 0:
                        raise ConnectionError_(ReplyCode.UNEXPECTED_FRAME, snippet(ftype, payload))
                    events.append(Heartbeat())
                else:
                    raise ConnectionError_(ReplyCode.FRAME_ERROR, f"{snippet(ftype, payload)}: unknown_frame")
        except AMQPError as err:
            err.events = events  # what came before the bad frame still counts
            raise
        finally:
            self._consumed = pos
        return pos

    def _publish_whole(
        self, buf: bytearray, view: memoryview, pos: int, end: int, n: int, channel: int, events: list[Event]
    ) -> int:
        """The fast path for a small message: when the basic.publish frame at ``pos`` (ending at ``end``), its
        content header and its one body frame are all in ``buf[:n]`` and all is well, append one Publish
        and return where the next frame starts. Returns 0 for anything else (a missing or bad frame, a
        closing channel, a large body, limits): the general path then parses the same bytes, one frame at
        a time, and reports any error as it always does."""
        hpos = end + 1
        if n - hpos < 7 or buf[end] != 0xCE:
            return 0
        htype, hchannel, hsize = _frame_head.unpack_from(buf, hpos)
        hend = hpos + 7 + hsize
        if htype != 2 or hchannel != channel or hsize < 14 or hend >= n or buf[hend] != 0xCE:
            return 0
        class_id, _weight, body_size = _header_body_size.unpack_from(buf, hpos + 7)
        if (
            class_id != 60
            or hsize + 8 > self.frame_max
            or body_size >= DIRECT_BODY_MIN
            or body_size > self.max_message_size
            or self.announced + body_size > self.max_incomplete_content
            or self.channels.get(channel) is not ChanState.OPEN
            or channel in self._pending
        ):
            return 0
        after: int = hend + 1
        if body_size:
            if n - after < 7:
                return 0
            btype, bchannel, bsize = _frame_head.unpack_from(buf, after)
            bend = after + 7 + bsize
            if (
                btype != 3
                or bchannel != channel
                or bsize != body_size
                or bsize + 8 > self.frame_max
                or bend >= n
                or buf[bend] != 0xCE
            ):
                return 0
            body = bytes(view[after + 7 : bend])
            after = bend + 1
        else:
            body = b""
        args = bytes(view[pos + 11 : end])
        known = self._publish_args.get(args)
        if known is None:
            try:
                known = codec.decode_publish(args)
            except (UnicodeDecodeError, ValueError, IndexError):
                return 0
            if len(self._publish_args) >= _PUBLISH_ARGS_KEPT:
                self._publish_args.clear()
            self._publish_args[args] = known
        self.publishing = True
        exchange, routing_key, mandatory, immediate = known
        events.append(
            Publish(channel, exchange, routing_key, mandatory, immediate, bytes(view[hpos + 19 : hend]), body)
        )
        return after

    def _body_frame_done(self, channel: int, p: _PendingContent, events: list[Event]) -> None:
        """A whole body frame of a large message is in its body: the message is complete when all are."""
        if p.got < p.body_size or self._pending.get(channel) is not p:
            return
        del self._pending[channel]
        self.announced -= p.body_size
        self.buffered -= p.got
        if self.state is not ConnState.OPEN or self.channels.get(channel) is not ChanState.OPEN:
            return  # closed while the frame was read
        assert p.properties is not None and p.body is not None
        events.append(Publish(channel, p.exchange, p.routing_key, p.mandatory, p.immediate, p.properties, p.body))

    def _on_method(self, channel: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) < 4:
            raise ConnectionError_(ReplyCode.FRAME_ERROR, f"{snippet(codec.FRAME_METHOD, payload)}: unknown_frame")
        index = _u32.unpack_from(payload, 0)[0]
        if channel in self._pending and self.channels.get(channel) is ChanState.OPEN:
            raise ConnectionError_(ReplyCode.UNEXPECTED_FRAME, NO_HEADER, 60, 40)
        if channel == 0:
            self._on_connection_method(index, payload, events)
            return
        if self.state is not ConnState.OPEN:
            if self.state is ConnState.CLOSING:
                return  # we are closing: drop everything but connection.close(-ok)
            raise ConnectionError_(ReplyCode.CHANNEL_ERROR, f"expected 'connection.open', got {method_name(index)}")
        state = self.channels.get(channel)
        if state is ChanState.CLOSING:
            # Only close / close-ok matter on a channel we are closing.
            if index == 0x00140028:  # channel.close
                events.append(MethodReceived(channel, commands.Channel.Close()))
            elif index == 0x00140029:  # channel.close-ok
                del self.channels[channel]
                self._drop_pending(channel)
            return
        if state is None:
            if index != 0x0014000A:  # channel.open
                raise ConnectionError_(ReplyCode.CHANNEL_ERROR, "expected 'channel.open'", index >> 16, index & 0xFFFF)
            # RabbitMQ counts open channels against channel_max; it does not check the number itself.
            if self.channel_max and len(self.channels) >= self.channel_max:
                raise ConnectionError_(
                    ReplyCode.NOT_ALLOWED,
                    f"number of channels opened ({len(self.channels)}) has reached the negotiated channel_max "
                    f"({self.channel_max})",
                    20,
                    10,
                )
            self.channels[channel] = ChanState.OPEN
        elif index == 0x0014000A:
            raise ConnectionError_(ReplyCode.CHANNEL_ERROR, "second 'channel.open' seen", 20, 10)
        if index in _HOT:
            self._on_hot(channel, index, payload, events)
            return
        method = self._decode(index, payload)
        if index == 0x00140028:  # channel.close from the client: the channel is gone once we reply
            del self.channels[channel]
            self._drop_pending(channel)
        elif index == 0x00140029 or index >> 16 == 10:  # close-ok for a close we never sent; connection.*
            raise ConnectionError_(ReplyCode.COMMAND_INVALID, "unimplemented method", index >> 16, index & 0xFFFF)
        events.append(MethodReceived(channel, method))

    def _on_connection_method(self, index: int, payload: bytes, events: list[Event]) -> None:
        if index >> 16 != 10:
            if self.state is ConnState.OPEN:
                raise ConnectionError_(
                    ReplyCode.CHANNEL_ERROR, "unexpected method in connection state running", index >> 16, index & 0xFFFF
                )
            raise ConnectionError_(
                ReplyCode.COMMAND_INVALID, f"{method_name(index)} on channel 0 (only connection methods are allowed)"
            )
        method = self._decode(index, payload)
        nxt = _CONN_TRANSITIONS.get((self.state, type(method)))
        if nxt is None:
            if self.state is ConnState.CLOSING:
                return
            raise ConnectionError_(ReplyCode.COMMAND_INVALID, f"unexpected {method.name} in state {self.state.name}")
        self.state = nxt
        events.append(MethodReceived(0, method))

    @staticmethod
    def _decode(index: int, payload: bytes) -> Frame:
        cls: Any = commands.INDEX_MAPPING.get(index)
        if cls is None:
            raise ConnectionError_(ReplyCode.NOT_IMPLEMENTED, f"unknown method {index >> 16}.{index & 0xFFFF}")
        try:
            tables.check_method(index, payload, 4)
        except TableError as err:
            if err.too_deep:
                # Not malformed, but more than Leveret decodes (see leveret.limits): say so plainly.
                raise ConnectionError_(
                    ReplyCode.FRAME_ERROR, f"cannot decode {cls.name}: {err}", index >> 16, index & 0xFFFF
                ) from None
            raise ConnectionError_(
                ReplyCode.FRAME_ERROR, f"cannot decode {erl_binary(payload[4:68], False)}", index >> 16, index & 0xFFFF
            ) from None
        method: Frame = cls()
        try:
            method.unmarshal(payload[4:])
        except UnicodeDecodeError:
            raise ConnectionError_(ReplyCode.FRAME_ERROR, "Malformed UTF-8 in shortstr") from None
        except Exception:  # pamqp raises struct.error, ValueError, IndexError, its own errors
            # RabbitMQ's text: the argument octets as an Erlang binary
            raise ConnectionError_(
                ReplyCode.FRAME_ERROR, f"cannot decode {erl_binary(payload[4:68], False)}", index >> 16, index & 0xFFFF
            ) from None
        return method

    def _on_hot(self, channel: int, index: int, payload: bytes, events: list[Event]) -> None:
        try:
            if index == codec.BASIC_PUBLISH:
                exchange, rk, mandatory, immediate = codec.decode_publish(payload[4:])
                self._pending[channel] = _PendingContent(exchange, rk, mandatory, immediate)
                self.publishing = True
                return
            tag, bits = codec.decode_tag_bits(payload[4:])
        except UnicodeDecodeError:
            raise ConnectionError_(ReplyCode.FRAME_ERROR, "Malformed UTF-8 in shortstr") from None
        except (ValueError, IndexError):
            raise ConnectionError_(
                ReplyCode.FRAME_ERROR, f"cannot decode {erl_binary(payload[4:68], False)}", 60, index & 0xFFFF
            ) from None
        if index == codec.BASIC_ACK:
            events.append(Ack(channel, tag, bool(bits & 1)))
        elif index == codec.BASIC_NACK:
            events.append(Nack(channel, tag, bool(bits & 1), bool(bits & 2)))
        else:
            events.append(Reject(channel, tag, bool(bits & 1)))

    def _on_header(self, channel: int, payload: bytes, events: list[Event]) -> None:
        p = self._pending.get(channel)
        if p is None or p.properties is not None:
            if self.channels.get(channel) is ChanState.CLOSING:
                return
            raise ConnectionError_(ReplyCode.UNEXPECTED_FRAME, NO_METHOD)
        if len(payload) < 14:
            raise ConnectionError_(ReplyCode.FRAME_ERROR, f"{snippet(codec.FRAME_HEADER, payload)}: unknown_frame")
        class_id, _weight, body_size = _header_body_size.unpack_from(payload, 0)
        if class_id != 60:
            raise ConnectionError_(
                ReplyCode.UNEXPECTED_FRAME,
                f"expected content header for class 60, got one for class {class_id} instead",
                60,
                40,
            )
        if body_size > self.max_message_size:
            # RabbitMQ: channel error 406 with this text, then the body frames are dropped.
            self._refuse_content(
                channel,
                # RabbitMQ says "configured" unless the limit is its hard maximum (512 MiB).
                f"message size {body_size} is larger than {'max' if self.max_message_size == 512 << 20 else 'configured max'}"
                f" size {self.max_message_size}",
            )
        if body_size and self.announced + body_size > self.max_incomplete_content:
            # Leveret's own bound, checked before any body byte is buffered: without it one connection
            # could hold channel_max unfinished 16 MiB messages. Refused as the size check above is.
            self._refuse_content(
                channel,
                f"message size {body_size} would take the content of unfinished messages on this connection "
                f"over {self.max_incomplete_content} bytes ({self.announced} announced)",
            )
        p.properties = payload[12:]
        p.body_size = body_size
        if body_size >= DIRECT_BODY_MIN:
            p.body = _new_body(body_size)  # filled in order: complete only when p.got reaches body_size
        if body_size == 0:
            del self._pending[channel]
            events.append(Publish(channel, p.exchange, p.routing_key, p.mandatory, p.immediate, p.properties, b""))
        else:
            self.announced += body_size

    def _refuse_content(self, channel: int, text: str) -> None:
        """Channel error 406 for a content header; the channel drops its body frames until close-ok."""
        del self._pending[channel]
        self.channels[channel] = ChanState.CLOSING
        raise ChannelError(ReplyCode.PRECONDITION_FAILED, text, 60, 40, channel)

    def _drop_pending(self, channel: int) -> None:
        """Forget the unfinished publish on ``channel`` (if any) and the bytes it held."""
        p = self._pending.pop(channel, None)
        if p is not None and p.properties is not None:
            self.announced -= p.body_size
            self.buffered -= p.got

    def _on_body(self, channel: int, payload: bytes, events: list[Event]) -> None:
        p = self._pending.get(channel)
        if p is None or p.properties is None:
            if self.channels.get(channel) is ChanState.CLOSING:
                return
            if p is None:
                raise ConnectionError_(ReplyCode.UNEXPECTED_FRAME, NO_METHOD)
            raise ConnectionError_(ReplyCode.UNEXPECTED_FRAME, NO_HEADER, 60, 40)
        p.got += len(payload)
        if p.got > p.body_size:
            raise ConnectionError_(ReplyCode.FRAME_ERROR, f"content body exceeds declared size {p.body_size}")
        if p.got == p.body_size:
            del self._pending[channel]
            self.announced -= p.body_size
            self.buffered -= p.got - len(payload)
            if p.parts:
                p.parts.append(payload)
                body = b"".join(p.parts)
            else:
                body = payload
            events.append(Publish(channel, p.exchange, p.routing_key, p.mandatory, p.immediate, p.properties, body))
        else:
            p.parts.append(payload)
            self.buffered += len(payload)

    # ---- output ------------------------------------------------------------------------------

    def send_method(self, channel: int, method: Frame) -> bytes:
        return codec.encode_method(channel, method)

    def close_channel(self, channel: int, code: int, text: str, class_id: int = 0, method_id: int = 0) -> bytes:
        """channel.close from the broker; the channel drops input until close-ok."""
        self.channels[channel] = ChanState.CLOSING
        self._drop_pending(channel)
        return codec.encode_method(channel, commands.Channel.Close(code, text, class_id, method_id))

    def close(self, code: int, text: str, class_id: int = 0, method_id: int = 0) -> bytes:
        """connection.close from the broker; input is dropped until close-ok."""
        self.state = ConnState.CLOSING
        return codec.encode_method(0, commands.Connection.Close(code, text, class_id, method_id))

    def release(self) -> int:
        """Drop every unfinished publish and the input buffer (the connection is gone); returns the
        bytes let go, so the caller can hand a large amount back to the OS."""
        freed = self.buffered + len(self._buf)
        self._pending.clear()
        self._buf = bytearray()
        self._direct = self._end_of = None
        self.announced = self.buffered = 0
        return freed

    def tune(self, frame_max: int, channel_max: int) -> None:
        """Apply the values negotiated by tune / tune-ok."""
        self.frame_max = frame_max
        self.channel_max = channel_max
