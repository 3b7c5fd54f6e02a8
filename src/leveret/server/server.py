"""The AMQP listener, the registry of connections, periodic checks, graceful shutdown."""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from leveret.config import Settings, listen_hosts
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
from leveret.server.fds import FdWatch, raise_limit
from leveret.server.tls import ServerTLS, TLSFiles

log = logging.getLogger("leveret.server")


async def listen_all(
    hosts: list[str | None], port: int, bind: Callable[[str | None, int], Awaitable[int]]
) -> tuple[str, int]:
    """Bind ``port`` on each of ``hosts`` (port 0: a free port, then the same one on the rest).
    Returns (the addresses bound, comma-separated, the port). ``::1`` is skipped with a log line on
    a machine without IPv6 (the default listens on both loopbacks); any other failure raises."""
    bound: list[str] = []
    for host in hosts:
        try:
            port = await bind(host, port)
        except OSError as exc:
            if host == "::1" and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                log.info("IPv6 loopback (::1) is not available here: not listening on it")
                continue
            raise
        bound.append("*" if host is None else f"[{host}]" if ":" in host else host)
    return ",".join(bound), port


class Server:
    """Owns the listening socket and every live connection.

    A single 1-second tick drives heartbeats, handshake timeouts and consumer
    acknowledgement timeouts, so no timer exists per connection or per delivery.
    Plain AMQP and AMQPS (with ``settings.tls_cert``) are two listeners feeding the same connections.
    """

    def __init__(self, settings: Settings, broker: Broker) -> None:
        self.settings = settings
        self.broker = broker
        self.connections: set[AMQPServerProtocol] = set()
        # Every connection reads into this one buffer (parsed or copied out before the read returns), as
        # uvloop does for a plain Protocol, minus the bytes object per read; 256 KiB like uvloop's.
        self.read_buffer = bytearray(256 << 10)
        self._listeners: list[asyncio.base_events.Server] = []
        self._tick: asyncio.TimerHandle | None = None
        self.port = 0  # plain AMQP; 0 while off
        self.tls_port = 0  # AMQPS; 0 while off
        self.host = settings.host
        # Raises TLSConfigError (unreadable or mismatched files): the broker does not start.
        self.tls = ServerTLS(tls_files(settings)) if settings.tls_cert is not None else None
        # Only the SQLite store writes to disk; the probe is replaceable (tests).
        probe = None if settings.storage == "memory" else functools.partial(free_bytes, settings.data_dir)
        self.disk_alarm = DiskAlarm(settings.disk_free_limit, probe)
        self.memory_alarm = MemoryAlarm(memory_limit(settings.memory_high_watermark), rss_bytes)
        self.backlog_alarm = BacklogAlarm(settings.store_backlog_limit, broker.store.pending)
        self.alarms = Alarms(self.disk_alarm, self.memory_alarm, self.backlog_alarm)  # any one blocks publishers
        self.fd_watch = FdWatch()
        self.fd_limit = 0  # set at start (raise_limit)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        self.fd_limit = raise_limit()
        self.fd_watch.check(time.monotonic())  # the first counts, before the first tick
        if s.amqp_port is not None:
            self.host, self.port = await self._listen(s.amqp_port)
            for host in self.host.split(","):
                log.info("AMQP listening on %s:%d", host, self.port)
        if self.tls is not None and s.amqps_port is not None:
            # A client that connects and never finishes the TLS handshake is dropped after
            # tls_handshake_timeout; it never becomes a connection, so it holds no broker state.
            host, self.tls_port = await self._listen(
                s.amqps_port, ssl=self.tls.listening, ssl_handshake_timeout=s.tls_handshake_timeout
            )
            for one in host.split(","):
                log.info("AMQPS listening on %s:%d", one, self.tls_port)
        self._schedule_tick(loop)

    async def _listen(self, port: int, **tls: Any) -> tuple[str, int]:
        """Listen on every address of ``--host`` with the same port (the first one's, for port 0)."""
        loop = asyncio.get_running_loop()

        async def bind(host: str | None, port: int) -> int:
            server = await loop.create_server(
                lambda: AMQPServerProtocol(self), host, port, reuse_address=True, backlog=1024, **tls
            )
            self._listeners.append(server)
            return int(server.sockets[0].getsockname()[1])

        hosts, port = await listen_all(listen_hosts(self.settings.host), port, bind)
        return hosts, port

    def _schedule_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._tick = loop.call_later(self.tick_interval, self._on_tick, loop)

    @property
    def tick_interval(self) -> float:
        return 0.5  # consumer timeouts fire within half a second of their deadline

    def check_alarms(self, now: float) -> None:
        """Check every alarm source; when the combined state changed, block the connections that
        publish (or unblock every connection). Run by the tick, and at once by a connection whose
        reading outran it (MemoryAlarm.note)."""
        if self.alarms.check(now):
            self.apply_alarms()

    def apply_alarms(self) -> None:
        """Block every publishing connection while an alarm is active; unblock all when none is."""
        blocked = self.alarms.active
        for c in list(self.connections):
            if c.has_published or not blocked:
                c.set_blocked(blocked)

    def _on_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            now = time.monotonic()
            self.check_alarms(now)
            self.fd_watch.check(now)
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
            if c.lingering:  # closed; the socket waits for the client (AMQPServerProtocol.linger)
                return
            if now - c.opened_at > self.settings.handshake_timeout and c.amqp.state is not ConnState.CLOSING:
                if c.transport is not None and not c.transport.is_closing():
                    log.warning(
                        "closing AMQP connection %s (%s): handshake not completed in %g s", c.log_id, c.name,
                        self.settings.handshake_timeout, extra={"connection": c.name},
                    )  # fmt: skip
                    c.close_logged = True
                    c.close_transport()  # as RabbitMQ: the socket is closed, no connection.close
                    c.loop.call_later(1.0, c.abort)  # in case the peer does not read what is pending
            return
        hb = c.heartbeat
        if hb <= 0:
            return
        if c.read_pauses:  # not reading (disk alarm, durable declare): the client's heartbeats wait unread
            c.last_recv = now
        elif now - c.last_recv > 2 * hb:
            log.warning(
                "closing AMQP connection %s (%s, vhost: '%s', user: '%s'): missed heartbeats from client, timeout: %ds",
                c.log_id, c.name, c.client.vhost, c.client.user, hb,
                extra={"connection": c.name, "user": c.client.user, "vhost": c.client.vhost},
            )  # fmt: skip
            c.close_logged = True
            c.abort()
            return
        if now - c.last_send >= hb / 2:
            c.write(codec.heartbeat())

    async def stop(self) -> None:
        """Close the listener, send connection.close 320 to everyone, wait a bounded time."""
        if self._tick is not None:
            self._tick.cancel()
        for server in self._listeners:
            server.close()
        for c in list(self.connections):
            c.force_close(ReplyCode.CONNECTION_FORCED, "broker forced connection closure with reason 'shutdown'")
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while self.connections and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded poll of a set
            await asyncio.sleep(0.05)
        for c in list(self.connections):
            c.abort()
        for server in self._listeners:
            await server.wait_closed()

    async def abort(self) -> None:
        """Go down as a killed process would: listeners closed, every socket dropped at once (no
        connection.close, no waiting); the clients see their connections reset."""
        if self._tick is not None:
            self._tick.cancel()
        for server in self._listeners:
            server.close()
        for c in list(self.connections):
            c.abort()
        for server in self._listeners:
            await server.wait_closed()
        await asyncio.sleep(0)  # the connections' connection_lost callbacks run now


def tls_files(settings: Settings) -> TLSFiles:
    assert settings.tls_cert is not None
    return TLSFiles(settings.tls_cert, settings.tls_key, settings.tls_ca, settings.tls_verify)
