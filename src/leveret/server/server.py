"""The AMQP listener, the registry of connections, periodic checks, graceful shutdown."""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from leveret.config import Settings
from leveret.errors import ReplyCode
from leveret.model.broker import Broker
from leveret.protocol import codec
from leveret.protocol.connection import ConnState
from leveret.server.alarms import (
    Alarms,
    BacklogAlarm,
    DiskAlarm,
    MemoryAlarm,
    free_bytes,
    memory_limit,
    rss_bytes,
)
from leveret.server.connection import AMQPServerProtocol

log = logging.getLogger("leveret.server")


class Server:
    """Owns the listening socket and every live connection.

    A single 1-second tick drives heartbeats, handshake timeouts and consumer
    acknowledgement timeouts, so no timer exists per connection or per delivery.
    """

    def __init__(self, settings: Settings, broker: Broker) -> None:
        self.settings = settings
        self.broker = broker
        self.connections: set[AMQPServerProtocol] = set()
        self._server: asyncio.base_events.Server | None = None
        self._tick: asyncio.TimerHandle | None = None
        self.port = 0
        self.host = settings.host
        # Only the SQLite store writes to disk; the probe is replaceable (tests).
        probe = None if settings.storage == "memory" else functools.partial(free_bytes, settings.data_dir)
        self.disk_alarm = DiskAlarm(settings.disk_free_limit, probe)
        self.memory_alarm = MemoryAlarm(memory_limit(settings.memory_high_watermark), rss_bytes)
        self.backlog_alarm = BacklogAlarm(settings.store_backlog_limit, broker.store.pending)
        self.alarms = Alarms(self.disk_alarm, self.memory_alarm, self.backlog_alarm)  # any one blocks publishers

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: AMQPServerProtocol(self), self.settings.host, self.settings.amqp_port, reuse_address=True, backlog=1024
        )
        sock = self._server.sockets[0]
        self.host, self.port = sock.getsockname()[:2]
        log.info("AMQP listening on %s:%d", self.host, self.port)
        self._schedule_tick(loop)

    def _schedule_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._tick = loop.call_later(self.tick_interval, self._on_tick, loop)

    @property
    def tick_interval(self) -> float:
        return 0.5  # consumer timeouts fire within half a second of their deadline

    def _on_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            now = time.monotonic()
            if self.alarms.check(now):
                blocked = self.alarms.active
                for c in list(self.connections):
                    if c.has_published or not blocked:
                        c.set_blocked(blocked)
            for c in list(self.connections):
                self._check_connection(c, now)
            self.broker.check_timeouts(now)
            self.broker.expire(now)  # message TTLs at idle queues' heads, x-expires leases
            for c in list(self.connections):
                if c.out:
                    c.flush()
        except Exception:
            log.exception("error in periodic tick")
        finally:
            self._schedule_tick(loop)

    def _check_connection(self, c: AMQPServerProtocol, now: float) -> None:
        if c.client is None:
            if now - c.opened_at > self.settings.handshake_timeout and c.amqp.state is not ConnState.CLOSING:
                if c.transport is not None and not c.transport.is_closing():
                    log.warning("closing connection %s: handshake not completed in %g s", c.name, self.settings.handshake_timeout)
                    c.close_transport()  # as RabbitMQ: the socket is closed, no connection.close
                    c.loop.call_later(1.0, c.abort)  # in case the peer does not read what is pending
            return
        hb = c.heartbeat
        if hb <= 0:
            return
        if c.read_pauses:  # not reading (disk alarm, durable declare): the client's heartbeats wait unread
            c.last_recv = now
        elif now - c.last_recv > 2 * hb:
            log.warning("closing connection %s: missed heartbeats from client, timeout: %ds", c.name, hb)
            c.abort()
            return
        if now - c.last_send >= hb / 2:
            c.write(codec.heartbeat())

    async def stop(self) -> None:
        """Close the listener, send connection.close 320 to everyone, wait a bounded time."""
        if self._tick is not None:
            self._tick.cancel()
        if self._server is not None:
            self._server.close()
        for c in list(self.connections):
            c.force_close(ReplyCode.CONNECTION_FORCED, "broker forced connection closure with reason 'shutdown'")
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while self.connections and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded poll of a set
            await asyncio.sleep(0.05)
        for c in list(self.connections):
            c.abort()
        if self._server is not None:
            await self._server.wait_closed()
