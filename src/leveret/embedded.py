"""Leveret inside a Python process: the real broker for a test suite, with no Docker and no fake.

Two ways in::

    async with leveret.Broker() as broker:          # in a running event loop; the broker shares it
        ...  # connect to broker.url

    with leveret.run_in_thread() as broker:         # from synchronous code: its own loop in a thread
        ...

Every option of ``leveret server`` is a keyword with the same name (``consumer_timeout=60_000``,
``storage="memory"``, ``max_queues=10``, ``users={"app": "pw"}``, ...; see :data:`OPTIONS`). What
differs from the command's defaults, for tests: listeners on 127.0.0.1 only, every enabled port 0 (a
free one: read ``broker.port`` and ``broker.http_port``), the Prometheus listener off, the memory alarm
off (it would measure the whole host process), a 1 s shutdown grace, and the data in a temporary
directory removed at close unless ``data_dir`` is given (then it is kept, and a later broker on the
same directory recovers it) or ``keep_data=True``.

A broker keeps its ports across :meth:`Broker.restart` and :meth:`Broker.kill`, so clients reconnect
to the same URL. ``kill`` simulates ``kill -9``: sockets dropped without a closing frame, what the
store had not written dropped, no clean-stop marker. Messages that were unacknowledged come back
flagged redelivered, as after a real crash.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import logging.handlers
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from leveret import logs
from leveret.app import App, CannotStart
from leveret.config import Settings
from leveret.model import stats
from leveret.model.broker import Broker as Model
from leveret.model.snapshots import QueueSnapshot
from leveret.storage.lock import DataDirLocked

T = TypeVar("T")

log = logging.getLogger("leveret")

# The keywords a broker takes: every option of `leveret server` (under its Python name, as the
# Settings field it sets) and the settings the command derives (default_pass, user_tags, ...).
OPTIONS = frozenset(f.name for f in dataclasses.fields(Settings)) | {"users_file", "default_pass_file"}

# Where the defaults for tests differ from those of `leveret server`.
TEST_DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "amqp_port": 0,
    "http_port": 0,
    "prometheus_port": None,
    "amqps_port": 0,
    "https_port": 0,
    "memory_high_watermark": 0.0,
    "shutdown_timeout": 1.0,
    "wal_preallocate": False,  # 64 MiB of zeros per start buys faster fsyncs only for long runs
    "storage": "sqlite",
}

# Options with a fixed set of values (`leveret server --help` lists the same).
CHOICES: dict[str, tuple[Any, ...]] = {
    "storage": ("sqlite", "memory"),
    "log_level": ("debug", "info", "warning", "error"),
    "log_format": ("text", "json"),
    "consumer_timeout_action": ("close", "cancel"),
    "tls_verify": (None, "none", "peer", "require"),
    "tls_login_from": ("common_name", "subject_alternative_name"),
}

__all__ = ["OPTIONS", "Broker", "BrokerTimeout", "ThreadedBroker", "run_in_thread"]


class BrokerTimeout(AssertionError):
    """A ``wait_until`` condition did not hold in time; the message shows the queues as they were."""


def make_settings(data_dir: Path, options: dict[str, Any]) -> Settings:
    """Settings from ``leveret server``'s option names (Python spelling), with the test defaults.

    Raises TypeError for a name that is no option. Values are Python values: None turns a listener or
    the consumer timeout off; ``queue_ram_limit=0`` keeps everything in RAM as the command's 0 does;
    tags and user lists may also be given as the command's comma-separated text.
    """
    unknown = sorted(set(options) - OPTIONS - {"data_dir"})
    if unknown:
        raise TypeError(f"unknown broker option(s): {', '.join(unknown)}; the options: {', '.join(sorted(OPTIONS))}")
    values = {**TEST_DEFAULTS, **options}
    for name, allowed in CHOICES.items():
        if name in values and values[name] not in allowed:
            raise ValueError(f"{name}={values[name]!r}: one of {', '.join(map(repr, allowed))}")
    users = dict(values.pop("users", None) or {})
    user_tags = {k: _tags(v) for k, v in (values.pop("user_tags", None) or {}).items()}
    users_file = values.pop("users_file", None)
    if users_file is not None:
        from leveret.cli.users import read_users_file

        from_file, file_tags = read_users_file(Path(users_file))
        users.update(from_file)
        user_tags.update(file_tags)
    default_pass_file = values.pop("default_pass_file", None)
    if default_pass_file is not None:
        from leveret.cli.users import read_secret_file

        values["default_pass"] = read_secret_file(Path(default_pass_file), "default_pass_file")
    for name in ("default_user_tags", "loopback_users"):
        if name in values:
            values[name] = _tags(values[name])
    if isinstance(values.get("vhosts"), str):
        values["vhosts"] = tuple(values["vhosts"].split())
    for name in ("log_file", "tls_cert", "tls_key", "tls_ca"):
        if values.get(name) is not None:
            values[name] = Path(values[name])
    if values.get("queue_ram_limit") == 0:
        values["queue_ram_limit"] = None
    if values.get("consumer_timeout") == 0:
        values["consumer_timeout"] = None
    values["data_dir"] = data_dir
    return Settings(users=users, user_tags=user_tags, **values)


def _tags(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        from leveret.cli.users import parse_tags

        return parse_tags(value)
    return tuple(value)


class Broker:
    """A Leveret broker in the running event loop: ``async with Broker(**options) as broker``.

    Start it with ``await broker.start()`` (or ``async with``) and end it with ``await broker.close()``.
    Its methods are called on the loop it runs in. ``vhost`` is the virtual host that :attr:`url`,
    :meth:`queues` and the ``wait_*`` helpers use by default ("/").
    """

    def __init__(
        self, *, data_dir: str | Path | None = None, keep_data: bool = False, log_lines: int = 2000, **options: Any
    ) -> None:
        make_settings(Path("."), dict(options))  # unknown names and bad values fail here, not at start
        self._options = options
        self._given_dir = Path(data_dir) if data_dir is not None else None
        self.keep_data = keep_data
        self._tmp: Path | None = None
        self.settings: Settings | None = None
        self.app: App | None = None
        self.vhost = "/"
        self.log = LogBuffer(log_lines, options.get("log_level", "info"))
        self.dropped_on_kill = 0  # store operations the last kill() dropped

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self) -> Broker:
        """Start (again, after :meth:`stop` or ``kill(restart=False)``) on the same ports and data.

        Raises :class:`leveret.app.CannotStart` (a one-line reason) if it cannot."""
        if self.app is not None:
            raise RuntimeError("the broker is already running")
        if self.settings is None:
            if self._given_dir is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="leveret-"))
            self.settings = make_settings(self._given_dir or self._tmp or Path("."), dict(self._options))
        self.log.attach(self.settings)
        app = App(self.settings)
        try:
            await app.start()
        except Exception as exc:
            await app.abort()
            if isinstance(exc, CannotStart):
                raise
            text = str(exc) if isinstance(exc, OSError | DataDirLocked) else f"{type(exc).__name__}: {exc}"
            raise CannotStart(text) from exc
        self.app = app
        self._pin_ports(app)
        return self

    def _pin_ports(self, app: App) -> None:
        # Port 0 picked free ports; a restart takes the same ones, so clients reconnect to the same URL.
        s = self.settings
        assert s is not None and app.server is not None
        if s.amqp_port is not None:
            s.amqp_port = app.server.port
        if s.tls_cert is not None and s.amqps_port is not None:
            s.amqps_port = app.server.tls_port
        if app.http_port is not None:
            s.http_port = app.http_port
        if app.https_port is not None:
            s.https_port = app.https_port
        if app.prometheus_port is not None:
            s.prometheus_port = app.prometheus_port

    async def stop(self) -> None:
        """Stop as on SIGTERM (clients get connection.close 320); :meth:`start` brings it back."""
        app, self.app = self.app, None
        if app is not None:
            await app.stop()

    async def restart(self) -> None:
        """A clean stop and a start, as ``systemctl restart`` would do: durable state comes back."""
        await self.stop()
        await self.start()

    async def kill(self, *, restart: bool = True) -> None:
        """Crash as ``kill -9`` would, then (unless ``restart=False``) start again on the same ports.

        Sockets are dropped without connection.close, what the store had not yet written is lost
        (nothing confirmed is), nothing in memory survives; unacknowledged messages of durable queues
        come back flagged redelivered. With ``storage="memory"`` nothing comes back."""
        app, self.app = self.app, None
        if app is None:
            raise RuntimeError("the broker is not running")
        self.dropped_on_kill = await app.crash()
        if restart:
            await self.start()

    async def close(self) -> None:
        """Stop, and remove the temporary data directory (unless ``keep_data``). Idempotent."""
        try:
            await self.stop()
        finally:
            self.log.detach()
            if self._tmp is not None and not self.keep_data:
                shutil.rmtree(self._tmp, ignore_errors=True)

    async def __aenter__(self) -> Broker:
        try:
            return await self.start()
        except BaseException:
            await self.close()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- where it is -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.app is not None

    @property
    def data_dir(self) -> Path | None:
        return self.settings.data_dir if self.settings is not None and self.settings.storage != "memory" else None

    @property
    def port(self) -> int:
        """The AMQP port (0 before the first start)."""
        return (self.settings.amqp_port or 0) if self.settings is not None else 0

    @property
    def http_port(self) -> int | None:
        return self.settings.http_port if self.settings is not None else None

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:PORT/`` for the vhost "/", ``.../NAME`` for another (quoted)."""
        return self.url_for(self.vhost)

    def url_for(self, vhost: str, user: str = "guest", password: str = "guest") -> str:
        path = "" if vhost == "/" else urllib.parse.quote(vhost, safe="")
        return f"amqp://{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@127.0.0.1:{self.port}/{path}"

    @property
    def http_url(self) -> str | None:
        """The management API's base URL (``http://127.0.0.1:PORT``), None with ``http_port=None``."""
        port = self.http_port
        return f"http://127.0.0.1:{port}" if port else None

    # -- looking inside (on the broker's loop) ------------------------------------------------

    @property
    def model(self) -> Model:
        if self.app is None or self.app.broker is None:
            raise RuntimeError("the broker is not running")
        return self.app.broker

    def queues(self, vhost: str | None = None) -> list[QueueSnapshot]:
        """Snapshots of the queues of ``vhost`` (default: :attr:`vhost`; ``"*"``: every vhost), with the
        fields of ``leveretctl list_queues``: name, messages, messages_ready, messages_unacknowledged,
        consumers, durable, arguments, ..."""
        return stats.queues(self.model, None if vhost == "*" else vhost or self.vhost)

    def queue(self, name: str, vhost: str | None = None) -> QueueSnapshot | None:
        """One queue's snapshot, None if there is no such queue."""
        vh = self.model.vhosts.get(vhost or self.vhost)
        q = vh.queues.get(name) if vh is not None else None
        return stats.queue_snapshot(q, self.model.consumer_timeout) if q is not None else None

    def connections(self) -> int:
        """How many client connections are open (every vhost)."""
        return len(self.model.connections)

    async def add_vhost(self, name: str, user: str = "guest") -> None:
        """Create ``name`` (durably) and give ``user`` full permissions on it."""
        model = self.model
        model.add_vhost(name)
        model.access.set_permissions(user, name, ".*", ".*", ".*")
        assert self.app is not None
        await self.app.sync_store()

    def delete_vhost(self, name: str, *, missing_ok: bool = False) -> None:
        """Delete ``name`` with everything in it; its connections are closed (320)."""
        if missing_ok and name not in self.model.vhosts:
            return
        self.model.delete_vhost(name)

    # -- waiting ---------------------------------------------------------------------------------

    async def wait_until(self, condition: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.01) -> T:  # noqa: ASYNC109 - a deadline reported with the broker's state
        """Poll ``condition()`` until it returns something true, and return that. Raises
        :class:`BrokerTimeout` after ``timeout`` seconds, with the queues' state in its message."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise BrokerTimeout(_timeout_text(condition, timeout, self._state()))
            await asyncio.sleep(interval)

    async def wait_for_queue(
        self, name: str, *, messages: int | None = None, ready: int | None = None, unacked: int | None = None,
        consumers: int | None = None, vhost: str | None = None, timeout: float = 10.0,  # noqa: ASYNC109
    ) -> QueueSnapshot:  # fmt: skip
        """Wait until queue ``name`` exists and has the given counts (those given); return its snapshot.

        ``wait_for_queue("tasks", messages=0)`` waits until it is empty (nothing ready, nothing
        unacknowledged); ``unacked=2`` until two deliveries are waiting for their ack."""
        return await self.wait_until(
            _queue_condition(self.queue, name, messages, ready, unacked, consumers, vhost), timeout
        )

    def _state(self) -> str:
        try:
            return describe_queues(self.queues("*"))
        except RuntimeError as exc:
            return str(exc)


def _queue_condition(
    lookup: Callable[[str, str | None], QueueSnapshot | None], name: str, messages: int | None, ready: int | None,
    unacked: int | None, consumers: int | None, vhost: str | None,
) -> Callable[[], QueueSnapshot | None]:  # fmt: skip
    wanted = {"messages": messages, "messages_ready": ready, "messages_unacknowledged": unacked, "consumers": consumers}
    wanted = {k: v for k, v in wanted.items() if v is not None}

    def condition() -> QueueSnapshot | None:
        q = lookup(name, vhost)
        if q is None or any(getattr(q, k) != v for k, v in wanted.items()):
            return None
        return q

    text = ", ".join(f"{k}={v}" for k, v in wanted.items())
    condition.__qualname__ = f"queue {name!r}" + (f" with {text}" if text else " exists")
    return condition


def _timeout_text(condition: Callable[[], Any], timeout: float, state: str) -> str:
    what = getattr(condition, "__qualname__", repr(condition))
    return f"{what}: not true within {timeout:g} s; the broker's queues now:\n{state}"


def describe_queues(queues: list[QueueSnapshot]) -> str:
    """One line a queue: vhost, name, ready, unacked, consumers."""
    if not queues:
        return "  (no queues)"
    return "\n".join(
        f"  {q.vhost} {q.name}: {q.messages_ready} ready, {q.messages_unacknowledged} unacked, "
        f"{q.consumers} consumers"
        for q in sorted(queues, key=lambda q: (q.vhost, q.name))
    )


class ThreadedBroker:
    """A broker on its own event loop in a background thread, driven from synchronous code (or from
    another event loop). Made by :func:`run_in_thread`; ``with`` starts and closes it.

    Every method blocks until the broker's loop has done it. ``wait_until`` and ``wait_for_queue``
    poll from the calling thread; from a coroutine on another loop use their ``_async`` twins, which
    sleep instead of blocking that loop.
    """

    def __init__(self, **options: Any) -> None:
        self.core = Broker(**options)
        self.vhost = "/"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._shared = False

    def _view(self, vhost: str) -> ThreadedBroker:
        """This broker seen from one vhost (url, queues, waits), which may not stop, restart or kill
        it (a broker shared by a test session)."""
        view = ThreadedBroker.__new__(ThreadedBroker)
        view.core, view._loop, view._thread = self.core, self._loop, self._thread
        view.vhost, view._shared = vhost, True
        return view

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60.0) -> T:
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            raise RuntimeError("the broker's thread is not running")
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, loop)
        return fut.result(timeout)

    def _sync(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self._call(call())

    def _own(self, what: str) -> None:
        if self._shared:
            raise RuntimeError(
                f"cannot {what} the broker shared by the test session; mark the test "
                "@pytest.mark.leveret (options as keywords) to get a broker of its own"
            )

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> ThreadedBroker:
        self._own("start")
        if self._thread is None:
            loop = _new_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            self._loop = loop
            self._thread = threading.Thread(target=run, name="leveret-broker", daemon=True)
            self._thread.start()
            ready.wait()
        try:
            self._call(self.core.start())
        except BaseException:
            self.close()
            raise
        return self

    def stop(self) -> None:
        self._own("stop")
        self._call(self.core.stop())

    def restart(self) -> None:
        self._own("restart")
        self._call(self.core.restart())

    def kill(self, *, restart: bool = True) -> None:
        self._own("kill")
        self._call(self.core.kill(restart=restart))

    def close(self) -> None:
        """Stop the broker, end its thread and loop, remove its temporary directory. Idempotent."""
        self._own("close")
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if not loop.is_closed():
                self._call(self.core.close())
                self._call(loop.shutdown_default_executor())
        finally:
            if not loop.is_closed():
                loop.call_soon_threadsafe(loop.stop)
                thread.join(30)
                loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> ThreadedBroker:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- where it is -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.core.running

    @property
    def settings(self) -> Settings | None:
        return self.core.settings

    @property
    def data_dir(self) -> Path | None:
        return self.core.data_dir

    @property
    def port(self) -> int:
        return self.core.port

    @property
    def http_port(self) -> int | None:
        return self.core.http_port

    @property
    def http_url(self) -> str | None:
        return self.core.http_url

    @property
    def url(self) -> str:
        return self.core.url_for(self.vhost)

    def url_for(self, vhost: str, user: str = "guest", password: str = "guest") -> str:
        return self.core.url_for(vhost, user, password)

    @property
    def log(self) -> LogBuffer:
        return self.core.log

    @property
    def dropped_on_kill(self) -> int:
        return self.core.dropped_on_kill

    # -- looking inside --------------------------------------------------------------------------

    def queues(self, vhost: str | None = None) -> list[QueueSnapshot]:
        return self._sync(lambda: self.core.queues(vhost or self.vhost))

    def queue(self, name: str, vhost: str | None = None) -> QueueSnapshot | None:
        return self._sync(lambda: self.core.queue(name, vhost or self.vhost))

    def connections(self) -> int:
        return self._sync(self.core.connections)

    def add_vhost(self, name: str, user: str = "guest") -> None:
        self._call(self.core.add_vhost(name, user))

    def delete_vhost(self, name: str, *, missing_ok: bool = False) -> None:
        self._sync(lambda: self.core.delete_vhost(name, missing_ok=missing_ok))

    # -- waiting ---------------------------------------------------------------------------------

    def wait_until(self, condition: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.01) -> T:
        """As :meth:`Broker.wait_until`, blocking the calling thread."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise BrokerTimeout(_timeout_text(condition, timeout, self._state()))
            time.sleep(interval)

    async def wait_until_async(self, condition: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.01) -> T:  # noqa: ASYNC109 - a deadline reported with the broker's state
        """As :meth:`wait_until`, sleeping on the caller's event loop (asyncio, or trio under anyio)."""
        sleep = _sleeper()
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise BrokerTimeout(_timeout_text(condition, timeout, self._state()))
            await sleep(interval)

    def wait_for_queue(
        self, name: str, *, messages: int | None = None, ready: int | None = None, unacked: int | None = None,
        consumers: int | None = None, vhost: str | None = None, timeout: float = 10.0,
    ) -> QueueSnapshot:  # fmt: skip
        """As :meth:`Broker.wait_for_queue`, blocking the calling thread."""
        return self.wait_until(_queue_condition(self.queue, name, messages, ready, unacked, consumers, vhost), timeout)

    async def wait_for_queue_async(
        self, name: str, *, messages: int | None = None, ready: int | None = None, unacked: int | None = None,
        consumers: int | None = None, vhost: str | None = None, timeout: float = 10.0,  # noqa: ASYNC109
    ) -> QueueSnapshot:  # fmt: skip
        """As :meth:`wait_for_queue`, sleeping on the caller's event loop."""
        condition = _queue_condition(self.queue, name, messages, ready, unacked, consumers, vhost)
        return await self.wait_until_async(condition, timeout)

    def _state(self) -> str:
        try:
            return self._sync(self.core._state)
        except RuntimeError as exc:
            return str(exc)


def run_in_thread(*, data_dir: str | Path | None = None, keep_data: bool = False, **options: Any) -> ThreadedBroker:
    """A broker on its own loop in a background thread: ``with run_in_thread(**options) as broker``.

    The options are those of :class:`Broker`. ``with`` starts it and closes it (thread, sockets and
    temporary directory gone at the end)."""
    return ThreadedBroker(data_dir=data_dir, keep_data=keep_data, **options)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it installs
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _sleeper() -> Callable[[float], Awaitable[None]]:
    try:
        import sniffio

        library = sniffio.current_async_library()
    except Exception:
        library = "asyncio"
    if library == "trio":
        import importlib

        sleep: Callable[[float], Awaitable[None]] = importlib.import_module("trio").sleep
        return sleep
    return asyncio.sleep


class LogBuffer(logging.Handler):
    """The last ``maxlen`` lines Leveret logged (every logger under ``leveret``) while attached.

    While at least one buffer is attached, the ``leveret`` logger's level is the lowest asked for; it
    is put back when the last one detaches. The lines come from every broker in this process.
    """

    _attached: list[LogBuffer] = []
    _saved_level: int | None = None
    _guard = threading.Lock()

    def __init__(self, maxlen: int, level: str) -> None:
        super().__init__(getattr(logging, level.upper()))
        self.lines: collections.deque[str] = collections.deque(maxlen=maxlen)
        self.count = 0  # lines ever recorded: a mark to read "what came since" from
        self.file: logging.handlers.WatchedFileHandler | None = None
        self.setFormatter(logging.Formatter(logs.TEXT_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a bad format string in a log call must not break the broker
            line = f"{record.levelname} {record.name}: {record.msg!r}"
        self.lines.append(line)
        self.count += 1

    def since(self, mark: int) -> list[str]:
        """Lines recorded after ``count`` was ``mark`` (those still held)."""
        lines = list(self.lines)
        return lines[max(0, len(lines) - (self.count - mark)) :]

    def attach(self, settings: Settings | None = None) -> None:
        """Start recording (and, with ``settings.log_file``, appending to that file as ``log_format``)."""
        logger = logging.getLogger("leveret")
        with LogBuffer._guard:
            if self in LogBuffer._attached:
                return
            if settings is not None and settings.log_file is not None and self.file is None:
                self.file = logging.handlers.WatchedFileHandler(settings.log_file, encoding="utf-8")
                self.file.setLevel(self.level)
                fmt = logs.JsonFormatter() if settings.log_format == "json" else logging.Formatter(logs.TEXT_FORMAT)
                self.file.setFormatter(fmt)
                logger.addHandler(self.file)
            if not LogBuffer._attached:
                LogBuffer._saved_level = logger.level
            LogBuffer._attached.append(self)
            logger.addHandler(self)
            logger.setLevel(min(b.level for b in LogBuffer._attached))

    def detach(self) -> None:
        logger = logging.getLogger("leveret")
        with LogBuffer._guard:
            if self not in LogBuffer._attached:
                return
            LogBuffer._attached.remove(self)
            logger.removeHandler(self)
            if self.file is not None:
                logger.removeHandler(self.file)
                self.file.close()
                self.file = None
            if LogBuffer._attached:
                logger.setLevel(min(b.level for b in LogBuffer._attached))
            else:
                logger.setLevel(LogBuffer._saved_level or logging.NOTSET)
