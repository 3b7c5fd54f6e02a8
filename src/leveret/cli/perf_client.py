"""A minimal asyncio AMQP 0-9-1 client for `leveret perf`: one connection, one channel.

Only what a load generator needs: connect (PLAIN), declare/delete a queue, qos,
confirm.select, consume, publish, ack. Cold methods go through pamqp (already a
dependency of the broker); the per-message frames (publish out; deliver, content and
confirm acks in) are built and split with ``struct`` so that the client, which shares
a 2-core machine with the broker in a benchmark, costs a few microseconds a message.

Callbacks run inside ``data_received``:

- ``on_deliver(delivery_tag, body)`` for each complete basic.deliver;
- ``on_confirm(delivery_tag, multiple, ok)`` for basic.ack / basic.nack in confirm mode;
- ``on_batch_end()`` once per read, after the callbacks (acks written there go out in one write);
- ``on_return(method)`` for a basic.return (a mandatory publish nobody took; its content is skipped).

With ``keep_properties`` set, :attr:`props` holds the raw property bytes (flags and list, as on the
wire) of the delivery being assembled, so ``on_deliver`` can forward them unchanged (``leveretctl
move_messages``).

A connection.close or channel.close from the broker sets :attr:`error`, fails the
pending RPC and fires ``on_error``; the load generator reports it and stops.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self
from urllib.parse import unquote, urlsplit

from pamqp import commands as C
from pamqp import frame as pamqp_frame
from pamqp.base import Frame
from pamqp.common import FieldTable

from leveret import __version__

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_END = b"\xce"
CHANNEL = 1

_frame_head = struct.Struct(">BHI")
_method_ids = struct.Struct(">HH")
_u64 = struct.Struct(">Q")
_ack_frame = struct.Struct(">BHIHHQB")
_header_head = struct.Struct(">BHIHHQ")


@dataclass(frozen=True, slots=True)
class URL:
    host: str
    port: int
    user: str
    password: str
    vhost: str
    tls: bool

    @classmethod
    def parse(cls, url: str) -> URL:
        """``amqp[s]://user:pass@host:port/vhost`` as RabbitMQ clients read it (``%2F`` is ``/``)."""
        u = urlsplit(url)
        if u.scheme not in ("amqp", "amqps"):
            raise ValueError(f"not an amqp:// or amqps:// URL: {url!r}")
        tls = u.scheme == "amqps"
        vhost = unquote(u.path[1:]) if len(u.path) > 1 else "/"
        return cls(
            host=u.hostname or "localhost", port=u.port or (5671 if tls else 5672),
            user=unquote(u.username) if u.username else "guest",
            password=unquote(u.password) if u.password else "guest", vhost=vhost, tls=tls,
        )  # fmt: skip


class AMQPError(Exception):
    """The broker closed the connection or channel (``code`` is its reply code), or the socket went away."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}" if code else text)
        self.code = code
        self.text = text


class PerfClient(asyncio.Protocol):
    """One AMQP connection with channel 1 open; see the module docstring for the callbacks."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.frame_max = 131072
        self.error: AMQPError | None = None
        self._rpc: deque[asyncio.Future[Frame]] = deque()
        self._drain: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] = self.loop.create_future()
        self.paused = False
        # content being assembled: [delivery_tag, remaining body bytes, parts]
        self._tag = 0
        self._remaining = -1
        self._parts: list[bytes] = []
        self.on_deliver: Callable[[int, bytes], None] | None = None
        self.on_confirm: Callable[[int, bool, bool], None] | None = None
        self.on_batch_end: Callable[[], None] | None = None
        self.on_error: Callable[[AMQPError], None] | None = None
        self.on_return: Callable[[C.Basic.Return], None] | None = None
        self.keep_properties = False
        self.props = b""
        self.out: list[bytes] = []

    # ---- connecting ----------------------------------------------------------------------------

    @classmethod
    async def connect(cls, url: URL, name: str = "leveret perf", wait_s: float = 10.0) -> Self:
        loop = asyncio.get_running_loop()
        ctx = ssl.create_default_context() if url.tls else None
        _, client = await asyncio.wait_for(
            loop.create_connection(cls, url.host, url.port, ssl=ctx), wait_s
        )  # fmt: skip
        await asyncio.wait_for(client._handshake(url, name), wait_s)
        return client

    async def _handshake(self, url: URL, name: str) -> None:
        start = self._expect()
        self._write(PROTOCOL_HEADER)
        await start
        tune = self._expect()
        self._send(
            0,
            C.Connection.StartOk(
                client_properties={
                    "product": "leveret perf", "version": __version__, "connection_name": name,
                    "capabilities": {"publisher_confirms": True, "basic.nack": True},
                },
                mechanism="PLAIN", response=f"\0{url.user}\0{url.password}", locale="en_US",
            ),
        )  # fmt: skip
        t = await tune
        assert isinstance(t, C.Connection.Tune)
        self.frame_max = min(t.frame_max or 131072, 131072)
        # heartbeat 0: a perf run is short and keeps the socket busy
        self._send(0, C.Connection.TuneOk(channel_max=1, frame_max=self.frame_max, heartbeat=0))
        await self.rpc(0, C.Connection.Open(virtual_host=url.vhost))
        await self.rpc(CHANNEL, C.Channel.Open())

    # ---- RPCs (cold path, pamqp) ---------------------------------------------------------------

    def _expect(self) -> asyncio.Future[Frame]:
        fut: asyncio.Future[Frame] = self.loop.create_future()
        if self.error is not None:
            fut.set_exception(self.error)
        else:
            self._rpc.append(fut)
        return fut

    async def rpc(self, channel: int, method: Frame) -> Frame:
        """Send a synchronous method and wait for its reply."""
        fut = self._expect()
        self._send(channel, method)
        return await fut

    async def queue_declare(self, queue: str, durable: bool, arguments: FieldTable | None = None) -> int:
        ok = await self.rpc(CHANNEL, C.Queue.Declare(queue=queue, durable=durable, arguments=arguments))
        assert isinstance(ok, C.Queue.DeclareOk)
        return int(ok.message_count or 0)

    async def queue_delete(self, queue: str) -> None:
        await self.rpc(CHANNEL, C.Queue.Delete(queue=queue))

    async def qos(self, prefetch: int) -> None:
        await self.rpc(CHANNEL, C.Basic.Qos(prefetch_count=prefetch))

    async def confirm_select(self) -> None:
        await self.rpc(CHANNEL, C.Confirm.Select())

    async def consume(self, queue: str, no_ack: bool, tag: str) -> None:
        await self.rpc(CHANNEL, C.Basic.Consume(queue=queue, consumer_tag=tag, no_ack=no_ack))

    async def close(self, wait_s: float = 5.0) -> None:
        """connection.close, wait (bounded) for close-ok, then close the socket."""
        if self.transport is None or self.transport.is_closing():
            return
        if self.error is None:
            try:
                await asyncio.wait_for(self.rpc(0, C.Connection.Close(200, "bye", 0, 0)), wait_s)
            except (AMQPError, TimeoutError):
                pass
        self.transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), wait_s)
        except TimeoutError:
            self.transport.abort()

    # ---- hot path: output ----------------------------------------------------------------------

    def publish_frames(self, routing_key: str, persistent: bool, size: int) -> tuple[bytes, bytes, int]:
        """(method+header frames, body frame head, body chunk) for publishing ``size``-byte bodies.

        The body of one message is then ``head + body + FRAME_END`` when it fits one frame;
        :meth:`body_frames` splits larger bodies.
        """
        rk = routing_key.encode()
        args = b"\x00\x00" + b"\x00" + bytes((len(rk),)) + rk + b"\x00"  # ticket, exchange "", rk, bits
        method = _frame_head.pack(1, CHANNEL, 4 + len(args)) + _method_ids.pack(60, 40) + args + FRAME_END
        props = b"\x10\x00" + (b"\x02" if persistent else b"\x01")  # delivery-mode only
        header = _header_head.pack(2, CHANNEL, 12 + len(props), 60, 0, size) + props + FRAME_END
        chunk = self.frame_max - 8
        return method + header, _frame_head.pack(3, CHANNEL, size) if size <= chunk else b"", chunk

    @staticmethod
    def body_frames(body: bytes, chunk: int) -> bytes:
        parts: list[bytes] = []
        for i in range(0, len(body), chunk):
            piece = body[i : i + chunk]
            parts += (_frame_head.pack(3, CHANNEL, len(piece)), piece, FRAME_END)
        return b"".join(parts)

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """Queued; written at the end of this read (or with the next :meth:`flush`)."""
        self.out.append(
            _ack_frame.pack(1, CHANNEL, 13, 60, 80, delivery_tag, 1 if multiple else 0) + FRAME_END
        )

    def flush(self) -> None:
        if self.out:
            data = b"".join(self.out)
            self.out.clear()
            self._write(data)

    def write(self, data: bytes) -> None:
        self._write(data)

    async def drained(self) -> None:
        """Returns once the transport is below its high-water mark again."""
        if self.paused:
            if self._drain is None:
                self._drain = self.loop.create_future()
            await self._drain
        if self.error is not None:
            raise self.error

    def _send(self, channel: int, method: Frame) -> None:
        self._write(pamqp_frame.marshal(method, channel))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # ---- transport callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None:
            self._fail(AMQPError(0, f"connection lost: {exc}" if exc else "connection closed by the broker"))
        if not self._lost.done():
            self._lost.set_result(None)
        self._wake()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

    def _wake(self) -> None:
        d, self._drain = self._drain, None
        if d is not None and not d.done():
            d.set_result(None)

    def _fail(self, err: AMQPError) -> None:
        if self.error is None:
            self.error = err
        while self._rpc:
            fut = self._rpc.popleft()
            if not fut.done():
                fut.set_exception(err)
        self._wake()
        if self.on_error is not None:
            self.on_error(err)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        n = len(buf)
        pos = 0
        unpack_head = _frame_head.unpack_from
        try:
            while n - pos >= 8:
                ftype, channel, size = unpack_head(buf, pos)
                end = pos + 7 + size
                if end >= n:
                    break
                if buf[end] != 0xCE:
                    raise AMQPError(501, f"frame end byte is {buf[end]:#x}, not 0xce")
                if ftype == 3:  # body
                    part = bytes(buf[pos + 7 : end])
                    self._remaining -= size
                    if self._remaining <= 0:
                        self._remaining = -1
                        if self._parts:
                            self._parts.append(part)
                            part = b"".join(self._parts)
                            self._parts = []
                        if self.on_deliver is not None:
                            self.on_deliver(self._tag, part)
                    else:
                        self._parts.append(part)
                elif ftype == 1:
                    cid, mid = _method_ids.unpack_from(buf, pos + 7)
                    if cid == 60 and mid == 60:  # basic.deliver: tag after the consumer tag
                        p = pos + 11
                        self._tag = _u64.unpack_from(buf, p + 1 + buf[p])[0]
                    elif cid == 60 and (mid == 80 or mid == 120):  # confirm ack / nack
                        tag = _u64.unpack_from(buf, pos + 11)[0]
                        if self.on_confirm is not None:
                            self.on_confirm(tag, bool(buf[pos + 19] & 1), mid == 80)
                    else:
                        self._method(bytes(buf[pos : end + 1]))
                elif ftype == 2:  # content header of a delivery
                    self._remaining = _u64.unpack_from(buf, pos + 11)[0]
                    if self.keep_properties:
                        self.props = bytes(buf[pos + 19 : end])
                    if self._remaining == 0:
                        self._remaining = -1
                        if self.on_deliver is not None:
                            self.on_deliver(self._tag, b"")
                # heartbeats (8) are ignored: we asked for none
                pos = end + 1
        except AMQPError as err:
            self._fail(err)
            if self.transport is not None:
                self.transport.abort()
        finally:
            del buf[:pos]
            if self.on_batch_end is not None:
                self.on_batch_end()
            self.flush()

    def _method(self, frame: bytes) -> None:
        _, _, m = pamqp_frame.unmarshal(frame)
        if isinstance(m, C.Connection.Close | C.Channel.Close):
            reply: Frame = (
                C.Connection.CloseOk() if isinstance(m, C.Connection.Close) else C.Channel.CloseOk()
            )
            self._send(0 if isinstance(m, C.Connection.Close) else CHANNEL, reply)
            self._fail(AMQPError(m.reply_code or 0, m.reply_text or ""))
            return
        if isinstance(m, C.Basic.Cancel):
            self._fail(AMQPError(0, f"consumer {m.consumer_tag} cancelled by the broker"))
            return
        if isinstance(m, C.Basic.Return):
            self._tag = 0  # its content follows: not a delivery
            if self.on_return is not None:
                self.on_return(m)
            return
        if isinstance(m, C.Connection.Blocked | C.Connection.Unblocked):
            return
        if self._rpc and isinstance(m, Frame):
            fut = self._rpc.popleft()
            if not fut.done():
                fut.set_result(m)


def describe(err: BaseException) -> str:
    """One line for an error (``AMQPError`` already reads well)."""
    return str(err) if isinstance(err, AMQPError) else f"{type(err).__name__}: {err}"
