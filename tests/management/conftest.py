"""Fixtures: a management app over a FakeBackend, served on 127.0.0.1:<ephemeral> in a
background thread so tests (and subprocesses, and Chromium) talk to it over real sockets."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
if str(SRC) not in sys.path:  # let the tests run from a plain checkout (no pip install -e)
    sys.path.insert(0, str(SRC))

from aiohttp import web  # noqa: E402

from leveret.management.http import build_app  # noqa: E402
from leveret.management.metrics import build_metrics_app  # noqa: E402
from tests.http_client import http_request  # noqa: E402

from .fake_backend import FakeBackend  # noqa: E402

USERS = {"guest": "guest", "admin": "s3cret"}


@dataclass
class Served:
    url: str
    backend: FakeBackend
    loop: asyncio.AbstractEventLoop

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        user: str = "guest",
        password: str = "guest",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        """A real HTTP request; returns (status, parsed JSON or text or None, headers)."""
        return http_request(self.url + path, method, body, (user, password) if user else None, headers)


def serve(app_factory: Callable[[], web.Application]) -> Iterator[tuple[str, asyncio.AbstractEventLoop]]:
    """Run ``app_factory()`` in a new thread's event loop; yield (base URL, loop)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(app_factory())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["runner"] = runner
        holder["port"] = runner.addresses[0][1]

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(holder["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "test server did not start"
    try:
        yield f"http://127.0.0.1:{holder['port']}", loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def populated_backend(load_rate: float = 0.0) -> FakeBackend:
    b = FakeBackend(load_rate=load_rate)
    b.add_queue("/", "task_queue", ready=3, unacked=2, arguments={"x-queue-type": "classic"})
    b.add_queue("/", "hello", ready=1)
    b.add_queue("other", "elsewhere", ready=7)
    b.add_connection("127.0.0.1:50000 -> 127.0.0.1:5672")
    b.add_consumer("/", "task_queue", "ctag-1", "127.0.0.1:50000 -> 127.0.0.1:5672")
    return b


@pytest.fixture
def backend() -> FakeBackend:
    return populated_backend()


@pytest.fixture
def api(backend: FakeBackend) -> Iterator[Served]:
    for url, loop in serve(lambda: build_app(backend, users=dict(USERS), rates_interval=0.1)):
        yield Served(url, backend, loop)


@pytest.fixture
def metrics(backend: FakeBackend) -> Iterator[Served]:
    for url, loop in serve(lambda: build_metrics_app(backend, users=dict(USERS))):
        yield Served(url, backend, loop)


@pytest.fixture
def ctl_env(api: Served) -> dict[str, str]:
    env = dict(os.environ)
    env["LEVERET_URL"] = api.url
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env
