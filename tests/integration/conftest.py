"""A broker for the framework tests, and the environment their worker subprocesses and apps read."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import ProcessBroker

ROOT = Path(__file__).resolve().parents[2]


def start_worker(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A framework worker in its own process group, so :func:`stop_worker` ends its children too
    (Dramatiq forks worker processes that outlive a killed parent)."""
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """Kill the worker's whole process group (not under test; with acks late nothing is lost)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.fixture
def broker_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], dict[str, str]]]:
    """``broker_env(vhost_path)``: start ``leveret server`` (SQLite) and return the environment for
    workers: LEVERET_IT_URL (amqp://guest:guest@127.0.0.1:PORT + ``vhost_path``) and LEVERET_IT_DIR
    (this test's tmp dir, for traces). The test process gets the same variables for its client app."""
    brokers: list[ProcessBroker] = []

    def make(vhost_path: str) -> dict[str, str]:
        b = ProcessBroker(tmp_path / "data").start()
        brokers.append(b)
        monkeypatch.setenv("LEVERET_IT_URL", f"amqp://guest:guest@127.0.0.1:{b.port}{vhost_path}")
        monkeypatch.setenv("LEVERET_IT_DIR", str(tmp_path))
        monkeypatch.setenv("LEVERET_IT_PORT", str(b.port))
        monkeypatch.setenv("LEVERET_IT_HTTP_PORT", str(b.http_port))
        return dict(os.environ)

    yield make
    for b in brokers:
        b.kill()
