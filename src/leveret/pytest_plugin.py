"""pytest plugin: a real Leveret broker for a test suite (registered through the ``pytest11`` entry point).

Fixtures:

- ``leveret_url``: an AMQP URL for the test (``amqp://guest:guest@127.0.0.1:PORT/VHOST``);
- ``leveret_broker``: the broker behind it (a :class:`leveret.embedded.ThreadedBroker` seen from the
  test's vhost: ``url``, ``queues()``, ``queue(name)``, ``wait_for_queue(...)``, ``wait_until(...)``
  and their ``_async`` twins, ``http_url``, ``log``).

One broker serves the whole session (per xdist worker), each test in a fresh vhost deleted after it,
so tests never see each other's queues. A test marked ``@pytest.mark.leveret(**options)`` gets a
broker of its own, started with those options (any ``leveret server`` option), which it may
``restart()`` and ``kill()``. Nothing starts unless a test asks for one of the fixtures.

The broker runs on its own event loop in a thread, so tests may use any client: blocking (pika,
kombu, Celery, Dramatiq) or async on their own loop (aio-pika under pytest-asyncio or anyio).

Options: ``--leveret-log-level`` (the level of the broker log kept for failure reports, default
info), ``--leveret-keep-data`` (keep the brokers' data directories and say where they are),
``--leveret-storage`` (the shared broker's storage: sqlite, the default, or memory). A
failing test that used a broker gets a "leveret broker log" section with the lines the broker
logged during the test.

This module imports only pytest and the standard library at import time: it is loaded by every
pytest run where leveret is installed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from leveret.embedded import ThreadedBroker

MARKER = "leveret"
_SESSION = pytest.StashKey["SessionBroker"]()
_USED = pytest.StashKey["tuple[ThreadedBroker, int]"]()
LOG_SECTION = "leveret broker log"
LOG_SECTION_LINES = 200


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("leveret", "Leveret broker for tests")
    group.addoption(
        "--leveret-log-level", default="info", choices=("debug", "info", "warning", "error"),
        help="Level of the broker log kept for the report of a failing test (default: info).",
    )  # fmt: skip
    group.addoption(
        "--leveret-storage", default="sqlite", choices=("sqlite", "memory"),
        help="Storage of the session's shared broker (default: sqlite, in a temporary directory; memory "
        "skips the disk: no fsync before a confirm). A test's own broker takes storage= in its marker.",
    )  # fmt: skip
    group.addoption(
        "--leveret-keep-data", action="store_true", default=False,
        help="Keep the test brokers' data directories (their paths are printed at the end).",
    )  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**options): the test gets a Leveret broker of its own (leveret_broker, leveret_url), "
        "started with these `leveret server` options as keywords; it may restart() and kill() it.",
    )
    config.stash[_SESSION] = SessionBroker(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is not None:
        session.close()


class BrokerDidNotStart(Exception):
    """The test's broker could not start; the message says why and shows its last log lines."""


class SessionBroker:
    """The session's shared broker, started on first use; and the names of per-test vhosts."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.broker: ThreadedBroker | None = None
        self.count = 0
        self.kept: list[str] = []
        self._propagate: bool | None = None

    def options(self) -> dict[str, Any]:
        return {
            "log_level": self.config.getoption("leveret_log_level"),
            "keep_data": bool(self.config.getoption("leveret_keep_data")),
        }

    def make(self, **options: Any) -> ThreadedBroker:
        """A started broker with the session's log and keep-data options (``options`` win)."""
        from leveret.embedded import ThreadedBroker

        # The broker's lines go to its own buffer (shown for a failing test), not to the captured
        # log of whatever test happens to run.
        logger = logging.getLogger("leveret")
        if self._propagate is None:
            self._propagate = logger.propagate
            logger.propagate = False
        from leveret.app import CannotStart

        broker = ThreadedBroker(**{**self.options(), **options})
        try:
            broker.start()
        except CannotStart as exc:
            recent = "\n".join(list(broker.log.lines)[-20:])
            raise BrokerDidNotStart(f"Leveret could not start: {exc}\nits last log lines:\n{recent}") from None
        if broker.core.keep_data and broker.data_dir is not None:
            self.kept.append(str(broker.data_dir))
        return broker

    def shared(self) -> ThreadedBroker:
        if self.broker is None:
            self.broker = self.make(storage=self.config.getoption("leveret_storage"))
        return self.broker

    def vhost_name(self, nodeid: str) -> str:
        self.count += 1
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", nodeid.rsplit("::", 1)[-1]).strip("-")[:60]
        return f"test-{self.count:04d}-{name}"

    def close(self) -> None:
        broker, self.broker = self.broker, None
        try:
            if broker is not None:
                broker.close()
        finally:
            if self._propagate is not None:
                logging.getLogger("leveret").propagate = self._propagate
                self._propagate = None


@pytest.fixture(scope="session")
def _leveret_session_broker(pytestconfig: pytest.Config) -> Iterator[ThreadedBroker]:
    session = pytestconfig.stash[_SESSION]
    yield session.shared()
    session.close()


@pytest.fixture
def leveret_broker(request: pytest.FixtureRequest) -> Iterator[ThreadedBroker]:
    """The test's broker: the session's one, seen from a fresh vhost of the test's own (deleted after
    it); or, for a test marked ``@pytest.mark.leveret(**options)``, a broker of its own."""
    session = request.config.stash[_SESSION]
    marker = request.node.get_closest_marker(MARKER)
    if marker is not None:
        if marker.args:
            raise pytest.UsageError(f"@pytest.mark.{MARKER} takes broker options as keywords only")
        own = session.make(**marker.kwargs)
        request.node.stash[_USED] = (own, own.log.count)
        try:
            yield own
        finally:
            own.close()
        return
    shared: ThreadedBroker = request.getfixturevalue("_leveret_session_broker")
    vhost = session.vhost_name(request.node.nodeid)
    shared.add_vhost(vhost)
    view = shared._view(vhost)
    request.node.stash[_USED] = (view, shared.log.count)
    try:
        yield view
    finally:
        if shared.running:
            shared.delete_vhost(vhost, missing_ok=True)  # closes the connections the test left open (320)


@pytest.fixture
def leveret_url(leveret_broker: ThreadedBroker) -> str:
    """``amqp://guest:guest@127.0.0.1:PORT/VHOST``: the test's own vhost on the session's broker."""
    return leveret_broker.url


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    used = item.stash.get(_USED, None)
    if used is not None and report.failed:
        broker, mark = used
        lines = broker.log.since(mark)
        state = "" if broker.running else "the broker is NOT running (killed or stopped, not started again)\n"
        if len(lines) > LOG_SECTION_LINES:
            state += f"... {len(lines) - LOG_SECTION_LINES} earlier lines left out\n"
            lines = lines[-LOG_SECTION_LINES:]
        text = state + ("\n".join(lines) if lines else "(nothing logged during the test)")
        report.sections.append((f"{LOG_SECTION} ({report.when}, {broker.url})", text))
    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is not None and session.kept:
        terminalreporter.write_line("leveret: data directories kept (--leveret-keep-data):")
        for path in session.kept:
            terminalreporter.write_line(f"  {path}")
