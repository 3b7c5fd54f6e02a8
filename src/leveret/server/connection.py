"""One asyncio Protocol per client connection.

Reads bytes into the sans-IO :class:`AMQPConnection`, turns events into calls on
the :class:`Broker`, and writes what comes back. Output is gathered in a list and
written once per event-loop turn. Publisher confirms are sent at the end of each
read batch, or once the store reports the batch durable (group commit).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import select
import socket
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pamqp import commands as C

from leveret.errors import AMQPError, ConnectionError_, ReplyCode
from leveret.model.connection import ClientConnection
from leveret.model.properties import asks_direct_reply
from leveret.protocol import codec
from leveret.protocol.connection import AMQPConnection, BadProtocolHeader, ConnState
from leveret.protocol.events import Ack, HeaderReceived, Heartbeat, MethodReceived, Nack, Publish, Reject
from leveret.server import tls
from leveret.server.channel import LARGE_BODY, ServerChannel
from leveret.server.methods import METHOD_HANDLERS, send_start

if TYPE_CHECKING:
    from leveret.server.server import Server

log = logging.getLogger("leveret.connection")

# Log lines name a connection as RabbitMQ's do, "<0.N.0> (peer -> local)"; N counts this node's
# connections (RabbitMQ shows the connection process's pid there), so one connection's lines can be
# found with one grep, and log tooling written for RabbitMQ's lines reads these.
_serial = itertools.count(1)

# While an alarm blocks a connection, its socket is polled this often for a hang-up (see _watch_peer).
PEER_WATCH_INTERVAL = 1.0
_HANGUP = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR

# Output gathered in one loop turn is written at the end of the turn, or as soon as it reaches this size.
OUT_FLUSH_BYTES = 256 * 1024

class AMQPServerProtocol(asyncio.BufferedProtocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.broker = server.broker
        s = server.settings
        self.settings = s
        self.amqp = AMQPConnection(
            frame_max=s.frame_max, channel_max=s.channel_max, max_message_size=s.max_message_size,
            max_incomplete_content=s.max_incomplete_content, read_buffer=server.read_buffer,
        )  # fmt: skip
        self.get_buffer = self.amqp.get_buffer  # type: ignore[method-assign]
        self.memory_alarm = server.memory_alarm
        self.transport: asyncio.Transport | None = None
        self.client: ClientConnection | None = None
        self.channels: dict[int, ServerChannel] = {}
        self.out: list[bytes | memoryview] = []
        self.out_bytes = 0  # size of what ``out`` holds
        self.flush_scheduled = False
        self.confirm_dirty: list[ServerChannel] = []
        self.name = "?"
        self.log_id = "<0.0.0>"
        self.received = False  # any byte yet: RabbitMQ logs "accepting" only then (not TCP health checks)
        self.close_logged = False  # a line already said why the connection closes
        self.released: ClientConnection | None = None  # the client, after a close handshake released it
        self.peer = ("?", 0)
        self.local = ("?", 0)
        self.user = ""
        self.cert_user: str | None = None  # from a verified TLS client certificate: EXTERNAL logs in as it
        self.client_properties: dict[str, Any] = {}
        self.opened_at = time.monotonic()
        self.last_recv = self.last_send = self.opened_at
        self.heartbeat = 0
        self.closing = False
        self.paused = False
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()  # when_durable runs callbacks in place on it
        # Durable declares: their -ok waits for the store's fsync; input after them waits too.
        self.awaiting_sync: list[tuple[int, bytes]] | None = None
        self.deferred: tuple[list[Any], AMQPError | None] | None = None
        self.read_pauses: set[str] = set()  # why reading is paused: "sync", "disk"
        self.blocked = False  # by an alarm
        self.watching_peer = False  # _watch_peer is scheduled
        self.lingering = False  # close-ok sent, waiting for the client to close the socket (linger)

    @property
    def has_published(self) -> bool:
        """A publisher from its first basic.publish frame (not its first whole message): alarms block
        it even while it holds only unfinished content."""
        return self.amqp.publishing

    # ---- transport callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transport is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer = transport.get_extra_info("peername") or ("?", 0)
        local = transport.get_extra_info("sockname") or ("?", 0)
        self.peer, self.local = (str(peer[0]), int(peer[1])), (str(local[0]), int(local[1]))
        self.name = f"{self.peer[0]}:{self.peer[1]} -> {self.local[0]}:{self.local[1]}"
        self.log_id = f"<0.{next(_serial)}.0>"
        self.cert_user = tls.cert_login(tls.peer_certificate(transport), self.settings.tls_login_from)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        freed = self.amqp.release()  # unfinished publishes: up to max_incomplete_content
        if freed:
            self.memory_alarm.freed(freed)
        if self.client is not None:
            client, self.client = self.client, None
            try:
                self.broker.disconnect(client)
            except Exception:
                log.exception("error releasing connection %s", self.name)
            self._log_close(client)
        elif self.released is not None:
            self._log_close(self.released)
        elif not self.received:
            log.debug("closing AMQP connection %s (%s): closed with no data received", self.log_id, self.name,
                      extra={"connection": self.name})  # fmt: skip
        elif not self.close_logged:
            log.info("closing AMQP connection %s (%s)", self.log_id, self.name, extra={"connection": self.name})  # fmt: skip

    def _log_close(self, client: ClientConnection) -> None:
        """RabbitMQ's lines: info after a close handshake, warning when the socket just went away."""
        fields = {"connection": self.name, "user": client.user, "vhost": client.vhost}
        if self.amqp.state is not ConnState.OPEN:
            log.info("closing AMQP connection %s (%s, vhost: '%s', user: '%s')", self.log_id, self.name,
                     client.vhost, client.user, extra=fields)  # fmt: skip
        elif not self.close_logged:
            log.warning(
                "closing AMQP connection %s (%s, vhost: '%s', user: '%s'): client unexpectedly closed TCP connection",
                self.log_id, self.name, client.vhost, client.user, extra=fields,
            )  # fmt: skip

    def pause_writing(self) -> None:
        self.paused = True
        for ch in self.channels.values():
            ch.model.set_paused(True)

    def resume_writing(self) -> None:
        self.paused = False
        for ch in list(self.channels.values()):
            ch.model.set_paused(False)

    def get_buffer(self, sizehint: int) -> memoryview:
        # Reads go into the event loop's shared read buffer, or straight into a large message's body
        # (no copy of its frames); see AMQPConnection.get_buffer. (__init__ puts that method itself in
        # this one's place: one Python call less per read.)
        return self.amqp.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            self._data_received(nbytes)
        except Exception as exc:  # a bug: log it, close this connection with 541, keep serving the rest
            self.internal_error(exc, "reading")

    def data_received(self, data: bytes) -> None:
        """The same, for bytes handed over whole (tests)."""
        amqp = self.amqp
        view = memoryview(data)
        off = 0
        while off < len(data) and not self.closing:
            into = amqp.get_buffer()
            k = min(len(into), len(data) - off)
            into[:k] = view[off : off + k]
            off += k
            self.buffer_updated(k)

    def internal_error(self, exc: BaseException, doing: str) -> None:
        """An exception that is not a protocol error: log its traceback, close with 541 INTERNAL_ERROR."""
        log.error("internal error on connection %s while %s", self.name, doing, exc_info=exc)
        try:
            self.out.clear()  # half-written replies would only confuse the client
            self.out_bytes = 0
            self._handle_error(ConnectionError_(ReplyCode.INTERNAL_ERROR, f"internal error while {doing}: {type(exc).__name__}"))
        except Exception:
            log.exception("cannot close connection %s after an internal error", self.name)
            self.abort()

    def _data_received(self, nbytes: int) -> None:
        self.last_recv = time.monotonic()
        if not self.received:
            self.received = True
            log.info("accepting AMQP connection %s (%s)", self.log_id, self.name, extra={"connection": self.name})  # fmt: skip
        if self.client is not None:
            self.client.recv_oct += nbytes
        try:
            events = self.amqp.buffer_updated(nbytes)
        except BadProtocolHeader:
            assert self.transport is not None
            self.transport.write(codec.PROTOCOL_HEADER)
            self.transport.close()
            return
        except AMQPError as err:
            events = err.events  # handle what came before the bad frame, then the error
            error: AMQPError | None = err
        else:
            error = None
        if self.memory_alarm.note(nbytes):  # reading outran the tick's check of the alarms
            self.server.check_alarms(time.monotonic())
        if self.deferred is not None:  # read before pause_reading took effect: keep the order
            self.deferred = (self.deferred[0] + events, error or self.deferred[1])
            return
        self._process(events, error)

    def _process(self, events: list[Any], error: AMQPError | None) -> None:
        try:
            self._handle_events(events)
            if error is not None:
                if self.deferred is not None:
                    self.deferred = (self.deferred[0], error)
                else:
                    self._handle_error(error)
        finally:
            if self.confirm_dirty:
                self._flush_confirms()
            if self.has_published and self.server.alarms.active and not self.blocked:
                self.set_blocked(True)
            self.flush()

    def _handle_events(self, events: list[Any]) -> None:
        broker = self.broker
        channels = self.channels
        closed: set[int] = set()  # channels closed by an error earlier in this batch
        for i, ev in enumerate(events):
            try:
                t = type(ev)
                if closed and getattr(ev, "channel", 0) in closed:
                    # Parsed before the channel was closed: drop it, as RabbitMQ drops everything
                    # but channel.close / close-ok once it has sent channel.close.
                    if t is MethodReceived and type(ev.method) is C.Channel.Close:
                        self._on_method(ev.channel, ev.method)
                    continue
                if t is Publish:
                    ch = channels[ev.channel]
                    if ch.model.closed:
                        continue
                    if ev.immediate:
                        raise ConnectionError_(ReplyCode.NOT_IMPLEMENTED, "immediate=true", 60, 40)
                    props = ev.properties
                    if len(props) > 1 and props[0] & 0x02 and asks_direct_reply(props):  # reply-to is set
                        ev = replace(ev, properties=broker.direct_reply_to(ch.model, props))  # or 406
                        props = ev.properties
                    if ch.model.tx is not None:  # checked now (404, 403, 406), routed at tx.commit
                        broker.check_publish(self.client.vhost, ev.exchange, props, ev.routing_key, self.user)  # type: ignore[union-attr]
                        ch.tx_publishes.append(ev)
                        ch.model.tx_publishes_held += 1
                        continue
                    routed, stored, rejected = broker.publish(
                        self.client.vhost,  # type: ignore[union-attr]
                        ev.exchange, ev.routing_key, ev.properties, ev.body, codec.delivery_mode(ev.properties) == 2,
                        self.user,
                    )  # fmt: skip
                    if not routed and ev.mandatory:
                        self.return_unroutable(ev)
                    if ch.model.confirm:
                        ch.confirm_publish(stored, rejected)
                elif t is Ack:
                    channels[ev.channel].model.ack(ev.delivery_tag, ev.multiple)
                elif t is MethodReceived:
                    self._on_method(ev.channel, ev.method)
                    if self.awaiting_sync is not None:  # a durable declare: the rest waits for its -ok
                        self.deferred = (events[i + 1 :], None)
                        return
                elif t is Nack:
                    channels[ev.channel].model.reject(ev.delivery_tag, ev.multiple, ev.requeue)
                elif t is Reject:
                    channels[ev.channel].model.reject(ev.delivery_tag, False, ev.requeue)
                elif t is HeaderReceived:
                    send_start(self)
                elif t is Heartbeat:
                    pass
            except AMQPError as err:
                if not err.hard and not err.channel:
                    err.channel = getattr(ev, "channel", 0)
                if not err.class_id:  # RabbitMQ names the method that failed in the close
                    err.class_id, err.method_id = _ids(ev.method) if t is MethodReceived else _HOT_IDS.get(t, (0, 0))
                self._handle_error(err)
                if err.hard:
                    return
                closed.add(err.channel)
            except Exception as exc:  # a bug: never let it take the broker down
                what = ev.method.name if t is MethodReceived else t.__name__
                self.internal_error(exc, f"handling {what}")
                return

    def return_unroutable(self, ev: Publish) -> None:
        """basic.return 312 NO_ROUTE for a mandatory message that reached no queue."""
        self.broker.returned += 1
        self.write(
            codec.encode_return(
                ev.channel, ReplyCode.NO_ROUTE, "NO_ROUTE", ev.exchange, ev.routing_key,
                ev.properties, ev.body, self.amqp.frame_max,
            )  # fmt: skip
        )

    def commit_publishes(self, ch: ServerChannel) -> bool:
        """tx.commit: route the publishes the channel held, in order. True if one was journalled."""
        held, ch.tx_publishes = ch.tx_publishes, []
        ch.model.tx_publishes_held = 0
        vhost = self.client.vhost  # type: ignore[union-attr]
        any_stored = False
        for ev in held:
            routed, stored, _ = self.broker.publish(
                vhost, ev.exchange, ev.routing_key, ev.properties, ev.body, codec.delivery_mode(ev.properties) == 2,
                self.user,
            )
            any_stored = any_stored or stored
            if not routed and ev.mandatory:
                self.return_unroutable(ev)
        return any_stored

    # ---- output --------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.out.append(data)
        self.out_bytes += len(data)
        if self.out_bytes >= OUT_FLUSH_BYTES:
            # Hand it to the transport now: if its buffer is full, pause_writing runs inside this
            # write and stops the dispatch loop that is producing deliveries (bounded output).
            self.flush()
            return
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def write_parts(self, parts: list[bytes | memoryview], body_size: int) -> None:
        """Like :meth:`write` for buffers written in a row; ``body_size`` is about their total."""
        self.out += parts
        self.out_bytes += body_size
        if self.out_bytes >= OUT_FLUSH_BYTES:
            self.flush()
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        size = self.out_bytes
        self.out_bytes = 0
        out = self.out
        if not out or self.transport is None or self.transport.is_closing():
            out.clear()
            return
        if len(out) == 1:
            data = out[0]
        elif size >= LARGE_BODY:
            # writev of the buffers as they are (uvloop does not copy them; asyncio joins them itself).
            self.out = []
            self.transport.writelines(out)
            self._sent(sum(map(len, out)))
            return
        else:
            data = b"".join(out)
        out.clear()
        self.transport.write(data)
        self._sent(len(data))

    def _sent(self, nbytes: int) -> None:
        self.last_send = time.monotonic()
        if self.client is not None:
            self.client.send_oct += nbytes

    def _flush_confirms(self) -> None:
        need_sync: list[tuple[ServerChannel, int]] = []
        for ch in self.confirm_dirty:
            ch.dirty = False
            if ch.needs_sync or ch.syncs_in_flight:
                ch.needs_sync = False
                ch.syncs_in_flight += 1
                need_sync.append((ch, ch.confirm_seq))
            else:
                ch.send_confirm(ch.confirm_seq)
        self.confirm_dirty.clear()
        if need_sync:
            self.when_durable(self._synced, need_sync)

    def when_durable(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the loop once everything stored so far is durable.

        The store calls back on its writer thread, or on the loop thread itself when it
        committed in place at the end of a turn: then ``fn`` runs at once, which saves
        a loop iteration and two syscalls on every confirm of a lone publisher.
        """
        loop, loop_thread = self.loop, self.loop_thread

        def durable() -> None:
            if threading.get_ident() == loop_thread:
                fn(*args)
            else:
                loop.call_soon_threadsafe(fn, *args)

        self.broker.store.sync(durable)

    def _synced(self, done: list[tuple[ServerChannel, int]]) -> None:
        for ch, upto in done:
            ch.syncs_in_flight -= 1
            ch.send_confirm(upto)
        self.flush()

    # ---- durable declares and reading pauses ----------------------------------------------------

    def reply_when_durable(self, channel: int, data: bytes) -> None:
        """Send ``data`` (the -ok of a durable declare/bind/delete) once the store has fsynced it.

        The connection's later input is held (and reading paused) until then, so every
        reply keeps its order and a client that saw the -ok can rely on the object
        surviving a crash.
        """
        if self.awaiting_sync is not None:
            self.awaiting_sync.append((channel, data))
            return
        self.awaiting_sync = [(channel, data)]
        self.pause_input("sync")
        self.when_durable(self._declare_synced)

    def _declare_synced(self) -> None:
        replies, self.awaiting_sync = self.awaiting_sync or [], None
        deferred, self.deferred = self.deferred, None
        if self.client is None or self.transport is None or self.transport.is_closing():
            return
        for channel, data in replies:
            if channel in self.channels:
                self.write(data)
        if deferred is not None:
            try:
                self._process(*deferred)
            except Exception as exc:
                self.internal_error(exc, "handling input held for a durable declare")
        if self.awaiting_sync is None:
            self.resume_input("sync")
        self.flush()

    def hold(self, delay: float, fn: Any) -> None:
        """Run ``fn`` (a handler's work) after ``delay`` seconds; the connection's later input waits
        for it, in order (as for a durable declare). An AMQPError from ``fn`` closes as usual."""
        if self.awaiting_sync is None:
            self.awaiting_sync = []
        self.pause_input("sync")

        def later() -> None:
            if self.transport is None or self.transport.is_closing():
                return
            try:
                fn()
            except AMQPError as err:
                self.awaiting_sync = self.deferred = None
                self._handle_error(err)
                self.flush()
                return
            except Exception as exc:
                self.internal_error(exc, "handling held input")
                return
            replies, self.awaiting_sync = self.awaiting_sync or [], None
            deferred, self.deferred = self.deferred, None
            for _, data in replies:
                self.write(data)
            if deferred is not None:
                self._process(*deferred)
            if self.awaiting_sync is None:
                self.resume_input("sync")
            self.flush()

        self.loop.call_later(delay, later)

    def pause_input(self, reason: str) -> None:
        if not self.read_pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self.read_pauses.add(reason)

    def resume_input(self, reason: str) -> None:
        if reason not in self.read_pauses:
            return
        self.read_pauses.discard(reason)
        if not self.read_pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def set_blocked(self, blocked: bool) -> None:
        """Resource alarm (disk, memory, store backlog): stop (or resume) reading from this publishing connection.

        ``connection.blocked``/``unblocked`` go only to clients that announced the
        ``connection.blocked`` capability. Reading stops, so acks on this connection
        wait too (as in RabbitMQ: publish and consume on separate connections).
        """
        if blocked == self.blocked or self.client is None:
            return
        self.blocked = blocked
        caps = self.client_properties.get("capabilities")
        notify = isinstance(caps, dict) and bool(caps.get("connection.blocked"))
        if blocked:
            if notify:
                self.write(codec.encode_method(0, C.Connection.Blocked(reason=self.server.alarms.reason)))
            self.pause_input("disk")
            if not self.watching_peer:
                self.watching_peer = True
                self.loop.call_later(PEER_WATCH_INTERVAL, self._watch_peer)
        else:
            if notify:
                self.write(codec.encode_method(0, C.Connection.Unblocked()))
            self.last_recv = time.monotonic()  # heartbeats were not read while blocked
            self.resume_input("disk")

    def _watch_peer(self) -> None:
        """While an alarm keeps this connection unread, notice a peer that hung up.

        Nothing reads the socket, so its EOF would go unseen (a client without heartbeats is never
        timed out) and the connection would keep what it buffered, up to max_incomplete_content of
        unfinished messages, for as long as the alarm lasts: which that memory itself may prolong.
        So, once a second while blocked, poll the socket (no read) for a hang-up, and drop the
        connection if there is one.
        """
        if not self.blocked or self.transport is None or self.transport.is_closing():
            self.watching_peer = False
            return
        sock = self.transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        if fd >= 0:
            poller = select.poll()
            poller.register(fd, _HANGUP)
            if any(ev & _HANGUP for _, ev in poller.poll(0)):
                log.info("connection %s (%s): the client hung up while blocked by an alarm", self.log_id, self.name)
                self.close_logged = True
                self.watching_peer = False
                self.abort()
                return
        self.loop.call_later(PEER_WATCH_INTERVAL, self._watch_peer)

    # ---- errors and closing --------------------------------------------------------------------

    def _handle_error(self, err: AMQPError) -> None:
        if err.hard:
            self.connection_error(err)
        else:
            self.channel_error(err)
        self.flush()

    def channel_error(self, err: AMQPError) -> None:
        n = err.channel
        log.info("channel %d on %s closed: %s", n, self.name, err.text)
        ch = self.channels.pop(n, None)
        if ch is None:
            # an error on a channel that is not open is a connection error
            self.connection_error(ConnectionError_(ReplyCode.CHANNEL_ERROR, f"channel {n} is not open"))
            return
        self.broker.close_channel(ch.model)
        self.write(self.amqp.close_channel(n, err.code, err.text, err.class_id, err.method_id))

    def connection_error(self, err: AMQPError) -> None:
        # CLOSED with the transport still open: the client's connection.close was parsed in this batch
        # but not handled yet (an earlier frame failed); the error still gets its connection.close.
        if self.amqp.state is ConnState.CLOSING or self.transport is None or self.transport.is_closing():
            return
        if self.lingering:  # closed already (close-ok sent): a broker-side close just drops the socket
            self.abort()
            return
        client = self.client
        if client is None:
            log.warning("Error on AMQP connection %s (%s): %s", self.log_id, self.name, err.text,
                        extra={"connection": self.name})  # fmt: skip
        else:
            log.warning(
                "Error on AMQP connection %s (%s, vhost: '%s', user: '%s'): %s", self.log_id, self.name,
                client.vhost, client.user, err.text,
                extra={"connection": self.name, "user": client.user, "vhost": client.vhost},
            )  # fmt: skip
        self.write(self.amqp.close(err.code, err.text, err.class_id, err.method_id))
        if self.read_pauses:  # we must read the close-ok
            self.read_pauses.clear()
            self.deferred = None
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()
        self._release()
        # close-ok should come quickly; don't wait for it forever
        self.loop.call_later(1.0, self.abort)

    def force_close(self, code: int, text: str) -> None:
        """ConnectionSink: close from the broker's side (management, shutdown)."""
        self.connection_error(ConnectionError_(ReplyCode(code), text))
        self.flush()

    def _release(self) -> None:
        for ch in self.channels.values():
            self.broker.close_channel(ch.model)
        self.channels.clear()
        if self.client is not None:
            client, self.client = self.client, None
            self.released = client
            self.broker.disconnect(client)

    def abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def linger(self) -> None:
        """After close-ok: keep the socket open for the client to close, as RabbitMQ does, so a client
        still writing (publishes in flight, other threads closing channels) sees its close complete
        instead of EPIPE/ECONNRESET. What it sends now is ignored; the socket is dropped after the
        negotiated heartbeat if it is under 30 s, else 30 s (rabbit_reader's CLOSING_TIMEOUT)."""
        self.flush()
        self.lingering = True
        hb = self.heartbeat
        self.loop.call_later(hb if 0 < hb < 30 else 30, self.abort)

    def close_transport(self) -> None:
        self.flush()
        if self.transport is not None:
            self.transport.close()

    # ---- connection class ----------------------------------------------------------------------

    def _on_method(self, channel: int, m: Any) -> None:
        handler = METHOD_HANDLERS.get(type(m))
        if handler is None and type(m) is not C.Channel.Open:
            raise ConnectionError_(ReplyCode.NOT_IMPLEMENTED, f"{m.name} is not implemented", *_ids(m))
        if channel == 0:
            assert handler is not None
            handler(self, None, m)
            return
        ch = self.channels.get(channel)
        if ch is None:
            if type(m) is C.Channel.Close:
                # It crossed the channel.close we sent: RabbitMQ answers close-ok and still
                # waits for the close-ok to its own close.
                self.write(codec.encode_method(channel, C.Channel.CloseOk()))
                return
            if type(m) is not C.Channel.Open:
                raise ConnectionError_(ReplyCode.CHANNEL_ERROR, "expected 'channel.open'", *_ids(m))
            self.open_channel(channel)
            self.write(codec.encode_method(channel, C.Channel.OpenOk()))
            return
        assert handler is not None
        handler(self, ch, m)

    def open_client(self, vhost: str) -> None:
        client = ClientConnection(
            self.name, user=self.user, vhost=vhost, peer=self.peer, local=self.local,
            client_properties=self.client_properties, sink=self, connected_at=time.time(),
        )  # fmt: skip
        client.heartbeat = self.heartbeat
        client.frame_max = self.amqp.frame_max
        client.channel_max = self.amqp.channel_max
        self.broker.connect(client)
        self.client = client
        log.info(
            "connection %s (%s): user '%s' authenticated and granted access to vhost '%s'", self.log_id, self.name,
            self.user, vhost, extra={"connection": self.name, "user": self.user, "vhost": vhost},
        )  # fmt: skip

    def open_channel(self, number: int) -> None:
        assert self.client is not None
        ch = ServerChannel(self, number)
        ch.model = self.broker.open_channel(self.client, number, ch)
        if self.paused:
            ch.model.paused = True
        self.channels[number] = ch


_HOT_IDS: dict[type, tuple[int, int]] = {Ack: (60, 80), Reject: (60, 90), Nack: (60, 120)}


def _ids(m: Any) -> tuple[int, int]:
    idx = getattr(m, "index", 0)
    return idx >> 16, idx & 0xFFFF
