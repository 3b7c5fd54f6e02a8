"""Test helpers: run a real Leveret broker in a thread or as a subprocess, on ephemeral ports."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leveret.app import App
from leveret.config import Settings


class ThreadBroker:
    """A broker running in its own event loop on a background thread (port 0)."""

    def __init__(self, **overrides: Any) -> None:
        overrides.setdefault("storage", "memory")
        overrides.setdefault("http_port", None)
        overrides.setdefault("prometheus_port", None)
        self.settings = Settings(host="127.0.0.1", amqp_port=0, **overrides)
        self.loop = asyncio.new_event_loop()
        self.app = App(self.settings)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="leveret-test-broker")

    def start(self) -> ThreadBroker:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.app.start(), self.loop).result(10)
        return self

    @property
    def port(self) -> int:
        assert self.app.server is not None
        return self.app.server.port

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def call(self, fn: Any, *args: Any) -> Any:
        """Run fn(*args) on the broker's loop thread and return its result (model inspection)."""
        fut: Any = asyncio.run_coroutine_threadsafe(_call(fn, *args), self.loop)
        return fut.result(10)

    def stop(self) -> None:
        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self.app.stop(), self.loop).result(15)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        self.loop.close()


async def _call(fn: Any, *args: Any) -> Any:
    return fn(*args)


@dataclass
class ProcessBroker:
    """``leveret server`` as a subprocess, for tests that kill or signal it."""

    data_dir: Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    http_port: int = 0
    log: list[str] = field(default_factory=list)
    amqps_port: int = 0  # with --tls-cert in ``extra``
    https_port: int = 0

    def start(self, timeout: float = 15) -> ProcessBroker:
        cmd = [
            sys.executable, "-m", "leveret", "server", "--amqp-port", "0", "--http-port", "0",
            "--prometheus-port", "off", "--data-dir", str(self.data_dir), *self.extra,
        ]  # fmt: skip
        self.log = []
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        self.port = self.http_port = 0
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line)
            if m := re.search(r"AMQP listening on [\d.]+:(\d+)", line):
                self.port = int(m.group(1))
            if m := re.search(r"HTTP management listening on [\d.]+:(\d+)", line):
                self.http_port = int(m.group(1))
            if m := re.search(r"(AMQPS|HTTPS management) listening on [\d.]+:(\d+)", line):
                setattr(self, "amqps_port" if m.group(1) == "AMQPS" else "https_port", int(m.group(2)))
            if "started (pid" in line:
                break
        if not (self.port or self.amqps_port):
            self.kill()
            raise RuntimeError("broker did not start:\n" + "".join(self.log))
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.proc.stdout:  # closed at EOF, so no ResourceWarning once the process exits
            for line in self.proc.stdout:
                self.log.append(line)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def terminate(self, timeout: float = 15) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def wait_for(pred: Any, timeout: float = 5.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def in_thread(fn: Any) -> tuple[threading.Thread, list[object]]:
    """Run ``fn`` in a thread; the list gets its result (or exception) when it returns."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as exc:
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out
