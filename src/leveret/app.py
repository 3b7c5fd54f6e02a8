"""The one place that wires storage, recovery, model, server and management together."""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from leveret import __version__, logs, sdnotify
from leveret.config import Settings, listen_hosts
from leveret.errors import ReplyCode
from leveret.management.backend import NodeInfo
from leveret.model.access import K_NODE, NODE_INITIALISED, check_password
from leveret.model.broker import Broker
from leveret.server.server import Server, listen_all
from leveret.storage.base import Store
from leveret.storage.lock import DataDirLocked

log = logging.getLogger("leveret")

CLEAN_STOP_MARKER = "clean-stop"  # written after the store is closed; absent after a crash


def open_store(settings: Settings, app: App | None = None) -> Store:
    """The configured store; with ``app``, its failures and space reports go to ``app``."""
    if settings.storage == "memory":
        from leveret.storage.memory import MemoryStore

        return MemoryStore()
    from leveret.storage.sqlite import SqliteStore

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if app is None:
        return SqliteStore(settings.data_dir / "leveret.db")
    return SqliteStore(
        settings.data_dir / "leveret.db",
        disk_free_limit=settings.disk_free_limit,
        wal_preallocate=settings.wal_preallocate,
        on_error=functools.partial(app.from_store, app.store_failed),
        on_stall=functools.partial(app.from_store, app.store_stalled),
        on_low_space=functools.partial(app.from_store, app.store_low_on_space),
    )


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
        self.https_port: int | None = None
        self.prometheus_port: int | None = None
        self.started_at = time.time()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fail_closed: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        check_ports(s)  # before the data directory is touched: a taken port costs nothing
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
        self._loop = asyncio.get_running_loop()
        self.store = open_store(s, self)
        recovered = self.store.open()
        self.store.attach_loop(asyncio.get_running_loop())
        self.broker = Broker(
            self.store,
            clock=time.monotonic,
            consumer_timeout=s.consumer_timeout,
            consumer_timeout_action=s.consumer_timeout_action,
            page_limit=s.queue_ram_limit if s.storage != "memory" else None,
            loopback_users=s.loopback_users,
            vhosts=(),
        )
        self.broker.max_queues = s.max_queues
        nq, nm = self.broker.recover(recovered, assume_delivered=unclean)
        set_aside = recovered.set_aside + self.broker.recovery_set_aside
        if s.storage != "memory" or nq or nm:
            log.info(
                "recovered %d durable queues and %d messages in %.3f s%s%s", nq, nm, recovered.seconds,
                " after an unclean stop: all recovered messages are flagged redelivered" if unclean and nm else "",
                f"; {set_aside} records could not be recovered and are set aside (see the errors above)"
                if set_aside else "",
            )  # fmt: skip
        apply_access_settings(self.broker, s, recovered.definitions)
        await _durable(self.store)  # users made now are on disk before anyone logs in with them
        if len(self.broker.vhosts) > 1:
            log.info("virtual hosts: %s", ", ".join(sorted(self.broker.vhosts)))
        self.server = Server(s, self.broker)
        store_free = getattr(self.store, "disk_free_bytes", None)
        if self.server.disk_alarm.probe is not None and store_free is not None:
            # What the store can still write: it counts the unused part of its WAL reservation.
            self.server.disk_alarm.probe = store_free
        await self.server.start()
        await self._start_management()

    async def _start_management(self) -> None:
        s = self.settings
        assert self.server is not None
        https = s.https_port is not None and self.server.tls is not None
        if s.http_port is None and s.prometheus_port is None and not https:
            return
        try:
            from aiohttp import web

            from leveret.management.live import LiveBackend
        except ImportError:
            log.warning("management API not available in this build")
            return
        assert self.broker is not None
        backend = LiveBackend(self.broker, self.node_info)
        if s.http_port is not None or https:
            from leveret.management.http import build_app

            runner = web.AppRunner(
                build_app(backend, users=s.users, loopback_users=s.loopback_users, access=self.broker.access, logins=self.broker.logins),
                access_log=None,
            )
            await runner.setup()
            self._runners.append(runner)
            if s.http_port is not None:
                self.http_port = await _sites(
                    "HTTP management", s, s.http_port, lambda h, p: web.TCPSite(runner, h, p, reuse_address=True)
                )
            if https:
                assert s.https_port is not None and self.server.tls is not None
                # The AMQPS listener's context: one certificate and one SIGHUP reload for both.
                ctx = self.server.tls.listening
                self.https_port = await _sites(
                    "HTTPS management", s, s.https_port, lambda h, p: _https_site(runner, h, p, ctx, s.tls_handshake_timeout)
                )
        if s.prometheus_port is not None:
            from leveret.management.metrics import build_metrics_app

            metrics_app = build_metrics_app(backend, access=self.broker.access, logins=self.broker.logins)
            runner = web.AppRunner(metrics_app, access_log=None)
            await runner.setup()
            self._runners.append(runner)
            self.prometheus_port = await _sites(
                "Prometheus metrics", s, s.prometheus_port, lambda h, p: web.TCPSite(runner, h, p, reuse_address=True)
            )

    def sighup(self) -> None:
        """SIGHUP: reopen the log file (logrotate) and reload the TLS certificates."""
        if logs.reopen():
            log.info("SIGHUP: log file reopened")
        self.reload_tls()

    def reload_tls(self) -> None:
        """SIGHUP: re-read the TLS certificate, key and CA; new AMQPS and HTTPS connections use them."""
        if self.server is None or self.server.tls is None:
            log.info("SIGHUP: no TLS certificates to reload")
            return
        self.server.tls.reload()

    def node_info(self) -> NodeInfo:
        listeners = []
        host = self.server.host if self.server is not None else self.settings.host
        if self.server is not None and self.server.port:
            listeners.append({"protocol": "amqp", "ip_address": host, "port": self.server.port})
        if self.server is not None and self.server.tls_port:
            listeners.append({"protocol": "amqp/ssl", "ip_address": host, "port": self.server.tls_port})
        if self.http_port is not None:
            listeners.append({"protocol": "http", "ip_address": host, "port": self.http_port})
        if self.https_port is not None:
            listeners.append({"protocol": "https", "ip_address": host, "port": self.https_port})
        if self.prometheus_port is not None:
            listeners.append({"protocol": "http/prometheus", "ip_address": host, "port": self.prometheus_port})
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
            failure=self.store.failure() if self.store is not None else None,
            alarms=self._alarm_names(),
            tls_cert=str(self.settings.tls_cert) if self.settings.tls_cert and self.settings.tls_key else "",
            fd_used=self.server.fd_watch.used if self.server is not None else None,
            fd_total=self.server.fd_watch.limit if self.server is not None else None,
            sockets_used=len(self.server.connections) if self.server is not None else 0,
        )

    def _alarm_names(self) -> tuple[str, ...]:
        """The resource alarms in effect, as RabbitMQ names them (the write backlog has no RabbitMQ
        counterpart: it blocks publishers but is not listed)."""
        server = self.server
        if server is None:
            return ()
        alarms = (("memory", server.memory_alarm), ("disk space", server.disk_alarm))
        return tuple(name for name, alarm in alarms if alarm.active)

    # -- store events: called on any thread, handled on the loop ----------------------------

    def from_store(self, handler: Any, arg: Any) -> None:
        """Hop a store event (writer thread or loop thread) over to the loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(handler, arg)
        except RuntimeError:  # the loop is shutting down
            pass

    def store_low_on_space(self, free: int) -> None:
        """The store's writer found less than the limit free: the alarm goes on now."""
        if self.server is not None and self.server.disk_alarm.note(free):
            self._block_publishers()

    def store_stalled(self, exc: BaseException | None) -> None:
        """The store cannot write for lack of space (``exc``), or can again (None)."""
        if self.server is None or self.store is None:
            return
        reason = None if exc is None else f"storage cannot write: {exc}"
        if self.server.disk_alarm.set_store_failure(reason):
            self._block_publishers()

    def store_failed(self, exc: BaseException) -> None:
        """The store failed for good: fail closed, visibly, and never leave a client waiting for it."""
        reason = (self.store.failure() if self.store is not None else None) or f"storage failed: {exc}"
        server = self.server
        if server is None or self._fail_closed is not None:
            return
        server.disk_alarm.set_store_failure(reason)
        log.error(
            "%s. Closing every connection (541) and refusing new ones: nothing durable can be written. "
            "/api/healthchecks/node reports the failure.", reason,
        )  # fmt: skip
        for c in list(server.connections):
            c.force_close(ReplyCode.INTERNAL_ERROR, reason)
        self._fail_closed = asyncio.ensure_future(server.stop())

    def _block_publishers(self) -> None:
        # The server's tick applies alarms to every connection within half a second; a publisher
        # must not get that long to fill the disk, so those that publish are blocked at once.
        # The combined state is raised too, or an alarm that clears before the next tick would
        # never be seen to change, and these connections would stay blocked.
        server = self.server
        if server is None or not server.disk_alarm.active:
            return
        server.alarms.active = True
        server.apply_alarms()

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

    async def sync_store(self) -> None:
        """Wait until everything handed to the store so far is durable."""
        if self.store is not None:
            await _durable(self.store)

    async def crash(self) -> int:
        """Go down as ``kill -9`` would, for tests of recovery (the embedded broker's ``kill``): every
        socket dropped without a closing frame, what the store has not written yet dropped, no
        clean-stop marker (so the next start flags recovered messages redelivered). The data
        directory keeps what was durable. Returns how many store operations were dropped."""
        if self.server is not None:
            await self.server.abort()
        for r in self._runners:
            await r.cleanup()
        dropped = 0
        if self.store is not None:
            dropped = self.store.discard_pending()
            await asyncio.get_running_loop().run_in_executor(None, self.store.close)
        if self._lock is not None:
            self._lock.release()
        log.warning("broker crashed on purpose (a simulated kill -9): %d store operations were not written", dropped)
        return dropped

    async def stop(self) -> None:
        for r in self._runners:
            await r.cleanup()
        if self._fail_closed is not None:
            await self._fail_closed
        if self.server is not None:
            await self.server.stop()
        if self.store is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.store.close)
            failure = self.store.failure()
            if self.settings.storage != "memory" and failure is None:
                (self.settings.data_dir / CLEAN_STOP_MARKER).touch()
            elif failure is not None:
                # Delivered marks (and acks) may be among what was not written: without the
                # marker, the next start flags every recovered message redelivered.
                log.error("not a clean stop (%s): recovered messages will be flagged redelivered", failure)
        if self._lock is not None:
            self._lock.release()
        log.info("broker stopped")


def check_ports(s: Settings) -> None:
    """Fail at once, naming the option to change, if a configured listener's port is taken.

    Binds each port (as the listeners will, with SO_REUSEADDR) and lets it go again; port 0
    (a free one) and listeners that are off are skipped. Raises CannotStart."""
    ports = [("--amqp-port", s.amqp_port), ("--http-port", s.http_port), ("--prometheus-port", s.prometheus_port)]
    if s.tls_cert is not None:
        ports += [("--amqps-port", s.amqps_port), ("--https-port", s.https_port)]
    for option, port in ports:
        if not port:
            continue
        addrs = []
        for host in listen_hosts(s.host):
            try:
                addrs += socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            except socket.gaierror as exc:
                raise CannotStart(f"--host {host}: {exc.strerror}") from None
        for family, *_, addr in addrs:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(addr)
                except OSError as exc:
                    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) and addr[0] == "::1":
                        continue  # no IPv6 here: listen_all skips it too
                    raise CannotStart(
                        f"port {port} on {s.host or '*'} is not available ({exc.strerror or exc}): "
                        f"another process listens there; choose another with {option}"
                    ) from None


def apply_access_settings(broker: Broker, s: Settings, stored: dict[str, dict[str, str]]) -> None:
    """Users and vhosts from the settings. On a node's first start (nothing stored yet), the default
    vhost and user with its tags and permissions, as RabbitMQ creates guest on "/"; then, at every
    start, the ``--vhost`` vhosts and the ``--user`` administrators (full permissions on the default
    vhost and those). Vhosts that only come back through their durable objects (a data dir written
    before vhosts were stored) are stored now."""
    access = broker.access
    if NODE_INITIALISED not in stored.get(K_NODE, {}):
        if s.default_vhost:
            broker.add_vhost(s.default_vhost)
        if s.default_user:
            access.add_user(s.default_user, s.default_pass, s.default_user_tags)
            if s.default_vhost:
                access.set_permissions(s.default_user, s.default_vhost, *s.default_permissions)
            log.info("first start: created user '%s' and vhost '%s'", s.default_user, s.default_vhost)
        broker.store.put_definition(K_NODE, NODE_INITIALISED, "true")
    for name in list(broker.vhosts):
        if name not in broker.vhost_meta:
            broker.add_vhost(name)
    for name in s.vhosts:
        broker.add_vhost(name)
    for name, password in s.users.items():
        user = access.users.get(name)
        tags = s.user_tags.get(name)
        if user is None or not check_password(password, user.password_hash, user.hashing_algorithm):
            access.add_user(name, password, tags if tags is not None else user.tags if user else ("administrator",))
        elif tags is not None and tags != user.tags:
            access.set_tags(name, tags)
        for vhost in {s.default_vhost, *s.vhosts} - {""}:
            if (name, vhost) not in access.permissions:
                access.set_permissions(name, vhost, ".*", ".*", ".*")


async def _durable(store: Store) -> None:
    """Wait until everything handed to ``store`` so far is durable (its callback may run on any thread)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def resolve() -> None:
        if not done.done():
            done.set_result(None)

    def synced() -> None:
        loop.call_soon_threadsafe(resolve)

    store.sync(synced)
    try:
        await asyncio.wait_for(done, 30)
    except TimeoutError:  # a failing store says why itself; the start goes on
        log.warning("the store did not confirm the users and vhosts written at start within 30 s")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _https_site(runner: Any, host: str | None, port: int, ctx: Any, handshake_timeout: float) -> Any:
    """aiohttp's TCPSite with the TLS handshake timeout it does not expose (asyncio's default is 60 s):
    a half-open HTTPS handshake is dropped as soon as a half-open AMQPS one."""
    from aiohttp import web

    class HTTPSSite(web.TCPSite):
        async def start(self) -> None:
            await web.BaseSite.start(self)  # registers the site with its runner
            assert self._runner.server is not None
            self._server = await asyncio.get_running_loop().create_server(
                self._runner.server, self._host, self._port, ssl=self._ssl_context,
                ssl_handshake_timeout=handshake_timeout, backlog=self._backlog, reuse_address=True,
            )  # fmt: skip

    return HTTPSSite(runner, host, port, ssl_context=ctx)


def _one_line(exc: BaseException) -> str:
    # These explain themselves (and keep the texts they always had); anything else is named.
    if isinstance(exc, OSError | DataDirLocked | CannotStart):
        return " ".join(str(exc).split())
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    text = text if len(text) <= 500 else text[:500] + "..."
    return f"{text} (--log-level debug shows where)"


async def _sites(what: str, s: Settings, port: int, make: Callable[[str | None, int], Any]) -> int:
    """An aiohttp site on each address of ``--host``, all on one port (the first one's, for port 0)."""

    async def bind(host: str | None, port: int) -> int:
        site = make(host, port)
        await site.start()
        return _site_port(site)

    hosts, bound = await listen_all(listen_hosts(s.host), port, bind)
    for host in hosts.split(","):
        log.info("%s listening on %s:%d", what, host, bound)
    return bound


def _site_port(site: Any) -> int:
    server = site._server  # aiohttp keeps the asyncio server here
    return int(server.sockets[0].getsockname()[1])


class CannotStart(Exception):
    """The broker could not start; ``str()`` says why, in one line."""


async def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, then shut down cleanly; SIGHUP reopens the log file and reloads the TLS
    certificates.

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
    loop.add_signal_handler(signal.SIGHUP, app.sighup)
    log.info("Leveret %s started (pid %d); press Ctrl-C to stop", __version__, os.getpid())
    sdnotify.notify(f"READY=1\nSTATUS=AMQP on port {app.server.port if app.server else 0}\nMAINPID={os.getpid()}")
    watchdog = _watchdog(sdnotify.watchdog_interval())
    await stop.wait()
    log.info("shutting down")
    sdnotify.notify("STOPPING=1")
    if watchdog is not None:
        watchdog.cancel()
    await app.stop()


def _watchdog(interval: float | None) -> asyncio.Task[None] | None:
    """systemd's watchdog: WATCHDOG=1 every ``interval`` seconds from the event loop, so a stuck loop
    stops the keep-alives and systemd restarts the broker."""
    if interval is None:
        return None

    async def ping() -> None:
        while True:
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    return asyncio.get_running_loop().create_task(ping())


def run(settings: Settings) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
