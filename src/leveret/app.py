"""The one place that wires storage, recovery, model, server and management together."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from typing import Any

from leveret import __version__
from leveret.config import Settings
from leveret.management.backend import NodeInfo
from leveret.model.broker import Broker
from leveret.server.server import Server
from leveret.storage.base import Store
from leveret.storage.lock import DataDirLocked

log = logging.getLogger("leveret")

CLEAN_STOP_MARKER = "clean-stop"  # written after the store is closed; absent after a crash


def open_store(settings: Settings) -> Store:
    if settings.storage == "memory":
        from leveret.storage.memory import MemoryStore

        return MemoryStore()
    from leveret.storage.sqlite import SqliteStore

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteStore(settings.data_dir / "leveret.db")


class App:
    """A running broker: start() brings everything up, stop() takes it down in order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store | None = None
        self.broker: Broker | None = None
        self.server: Server | None = None
        self._lock: Any = None
        self._runners: list[Any] = []
        self.http_port: int | None = None
        self.prometheus_port: int | None = None
        self.started_at = time.time()

    async def start(self) -> None:
        s = self.settings
        if s.storage != "memory":
            from leveret.storage.lock import DataDirLock

            s.data_dir.mkdir(parents=True, exist_ok=True)
            self._lock = DataDirLock(s.data_dir)
            self._lock.acquire()  # raises DataDirLocked naming the holder's PID
            log.info("data directory: %s", s.data_dir)
        # Delivered marks are journalled in the batch after the delivery, so after a crash a
        # message may have reached a consumer without its mark on disk. Without the clean-stop
        # marker every recovered message is flagged redelivered: never a duplicate that looks new.
        marker = s.data_dir / CLEAN_STOP_MARKER
        had_store = s.storage != "memory" and (s.data_dir / "leveret.db").exists()
        unclean = had_store and not marker.exists()
        if s.storage != "memory":
            marker.unlink(missing_ok=True)
        self.store = open_store(s)
        recovered = self.store.open()
        self.store.attach_loop(asyncio.get_running_loop())
        self.broker = Broker(
            self.store,
            clock=time.monotonic,
            consumer_timeout=s.consumer_timeout,
            consumer_timeout_action=s.consumer_timeout_action,
            page_limit=s.queue_ram_limit if s.storage != "memory" else None,
        )
        nq, nm = self.broker.recover(recovered, assume_delivered=unclean)
        set_aside = recovered.set_aside + self.broker.recovery_set_aside
        if s.storage != "memory" or nq or nm:
            log.info(
                "recovered %d durable queues and %d messages in %.3f s%s%s", nq, nm, recovered.seconds,
                " after an unclean stop: all recovered messages are flagged redelivered" if unclean and nm else "",
                f"; {set_aside} records could not be recovered and are set aside (see the errors above)"
                if set_aside else "",
            )  # fmt: skip
        for name in s.vhosts:
            self.broker.add_vhost(name)
        if len(self.broker.vhosts) > 1:
            log.info("virtual hosts: %s", ", ".join(sorted(self.broker.vhosts)))
        self.server = Server(s, self.broker)
        await self.server.start()
        await self._start_management()

    async def _start_management(self) -> None:
        s = self.settings
        if s.http_port is None and s.prometheus_port is None:
            return
        try:
            from aiohttp import web

            from leveret.management.live import LiveBackend
        except ImportError:
            log.warning("management API not available in this build")
            return
        assert self.broker is not None and self.server is not None
        backend = LiveBackend(self.broker, self.node_info)
        if s.http_port is not None:
            from leveret.management.http import build_app

            runner = web.AppRunner(build_app(backend, users=s.users, loopback_users=s.loopback_users), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, s.host, s.http_port, reuse_address=True)
            await site.start()
            self.http_port = _site_port(site)
            self._runners.append(runner)
            log.info("HTTP management listening on %s:%d", s.host, self.http_port)
        if s.prometheus_port is not None:
            from leveret.management.metrics import build_metrics_app

            runner = web.AppRunner(build_metrics_app(backend), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, s.host, s.prometheus_port, reuse_address=True)
            await site.start()
            self.prometheus_port = _site_port(site)
            self._runners.append(runner)
            log.info("Prometheus metrics listening on %s:%d", s.host, self.prometheus_port)

    def node_info(self) -> NodeInfo:
        listeners = [{"protocol": "amqp", "ip_address": self.settings.host, "port": self.server.port if self.server else 0}]
        if self.http_port is not None:
            listeners.append({"protocol": "http", "ip_address": self.settings.host, "port": self.http_port})
        if self.prometheus_port is not None:
            listeners.append({"protocol": "http/prometheus", "ip_address": self.settings.host, "port": self.prometheus_port})
        return NodeInfo(
            node=f"leveret@{socket.gethostname()}",
            product_name="Leveret",
            product_version=__version__,
            started_at=self.started_at,
            listeners=listeners,
            data_dir=str(self.settings.data_dir) if self.settings.storage != "memory" else "",
            pid=os.getpid(),
            rss_bytes=_rss_bytes(),
            consumer_timeout=self.settings.consumer_timeout,
        )

    async def abort(self) -> None:
        """Undo a :meth:`start` that failed part way: release what it took, write no clean-stop marker."""
        for r in self._runners:
            await r.cleanup()
        if self.server is not None:
            await self.server.stop()
        if self.store is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.store.close)
        if self._lock is not None:
            self._lock.release()

    async def stop(self) -> None:
        for r in self._runners:
            await r.cleanup()
        if self.server is not None:
            await self.server.stop()
        if self.store is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.store.close)
            if self.settings.storage != "memory":
                (self.settings.data_dir / CLEAN_STOP_MARKER).touch()
        if self._lock is not None:
            self._lock.release()
        log.info("broker stopped")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _one_line(exc: BaseException) -> str:
    # These two explain themselves (and keep the texts they always had); anything else is named.
    if isinstance(exc, OSError | DataDirLocked):
        return " ".join(str(exc).split())
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    text = text if len(text) <= 500 else text[:500] + "..."
    return f"{text} (--log-level debug shows where)"


def _site_port(site: Any) -> int:
    server = site._server  # aiohttp keeps the asyncio server here
    return int(server.sockets[0].getsockname()[1])


class CannotStart(Exception):
    """The broker could not start; ``str()`` says why, in one line."""


async def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, then shut down cleanly.

    Raises :class:`CannotStart` if start-up fails, whatever the cause (the full
    traceback is logged at DEBUG level, not printed: one line says what is wrong).
    """
    app = App(settings)
    try:
        await app.start()
    except Exception as exc:
        log.debug("start-up failed", exc_info=exc)
        try:
            await app.abort()
        except Exception as again:  # what start took may be half made; the first cause matters
            log.debug("cleaning up after a failed start failed too", exc_info=again)
        raise CannotStart(_one_line(exc)) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("Leveret %s started (pid %d); press Ctrl-C to stop", __version__, os.getpid())
    await stop.wait()
    log.info("shutting down")
    await app.stop()


def run(settings: Settings) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
