"""Fixtures for management end-to-end tests: a LIVE broker (real AMQP server, real model,
management HTTP and Prometheus on ephemeral ports) with real clients: pika over AMQP,
urllib/aiohttp over HTTP, ``leveretctl`` as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.helpers import ThreadBroker
from tests.http_client import http_request

ROOT = Path(__file__).resolve().parents[2]
HOLDER = Path(__file__).with_name("holder.py")


@dataclass
class Live:
    """A running broker plus the clients the tests use against it."""

    broker: ThreadBroker

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.broker.app.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.broker.app.prometheus_port}"

    @property
    def amqp(self) -> str:
        return self.broker.url

    # ---- HTTP -----------------------------------------------------------------------
    def request(
        self, method: str, path: str, body: Any = None, auth: tuple[str, str] | None = ("guest", "guest"),
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:  # fmt: skip
        """A real HTTP request; returns (status, JSON or text or None, headers)."""
        return http_request(self.http + path, method, body, auth, headers)

    def get(self, path: str) -> Any:
        status, body, _ = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def queue(self, name: str, vhost: str = "%2F") -> dict[str, Any]:
        q: dict[str, Any] = self.get(f"/api/queues/{vhost}/{name}")
        return q

    # ---- leveretctl -----------------------------------------------------------------
    def ctl(self, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_ctl("--url", url or self.http, *args)

    # ---- AMQP -----------------------------------------------------------------------
    def connect(self, name: str | None = None) -> pika.BlockingConnection:
        params = pika.URLParameters(self.amqp)
        if name:
            params.client_properties = {"connection_name": name}
        return pika.BlockingConnection(params)


def run_ctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``leveretctl`` as a real subprocess."""
    return subprocess.run([sys.executable, "-m", "leveret.cli.ctl", *args], capture_output=True, text=True,
                          timeout=30, env=env or os.environ.copy(), cwd=ROOT)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Holder:
    """A consumer in its own process that takes ``prefetch`` messages and never acks them
    (the tutorial's worker that forgot ``basic_ack``); kill it to make its connection die."""

    def __init__(self, url: str, queue: str, prefetch: int, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HOLDER), url, queue, str(prefetch), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.got: list[str] = []

    def wait_for(self, n: int, timeout: float = 10.0) -> list[str]:
        """Block until the process reports ``n`` deliveries (it prints one line per message)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while len(self.got) < n:
            assert time.monotonic() < deadline, f"holder got only {self.got}"
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(
                    "holder exited: " + (self.proc.stderr.read() if self.proc.stderr else "")
                )
            if line.startswith("got "):
                self.got.append(line[4:].strip())
        return self.got

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


@pytest.fixture
def live() -> Iterator[Live]:
    b = ThreadBroker(http_port=0, prometheus_port=0).start()
    try:
        yield Live(b)
    finally:
        b.stop()


@pytest.fixture
def live_factory() -> Iterator[Callable[..., Live]]:
    made: list[ThreadBroker] = []

    def make(**overrides: Any) -> Live:
        overrides.setdefault("http_port", 0)
        overrides.setdefault("prometheus_port", 0)
        b = ThreadBroker(**overrides).start()
        made.append(b)
        return Live(b)

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def holders() -> Iterator[Callable[..., Holder]]:
    made: list[Holder] = []

    def make(url: str, queue: str, prefetch: int, *args: str) -> Holder:
        h = Holder(url, queue, prefetch, *args)
        made.append(h)
        return h

    yield make
    for h in made:
        h.kill()
