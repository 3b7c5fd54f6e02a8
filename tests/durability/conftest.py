"""Fixtures for durability tests: ``leveret server`` subprocesses on one data dir, pika clients."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest

from tests.helpers import ProcessBroker

RECOVERY_LINE = re.compile(r"recovered (\d+) durable queues and (\d+) messages in ([\d.]+) s")


def connect(b: ProcessBroker, **kw: object) -> pika.BlockingConnection:
    kw.setdefault("socket_timeout", 5)
    kw.setdefault("blocked_connection_timeout", 10)
    kw.setdefault("connection_attempts", 1)
    params = pika.ConnectionParameters(
        host="127.0.0.1",
        port=b.port,
        credentials=pika.PlainCredentials("guest", "guest"),
        **kw,  # type: ignore[arg-type]
    )
    return pika.BlockingConnection(params)


def recovery(b: ProcessBroker) -> tuple[int, int, float]:
    """(queues, messages, seconds) from the broker's recovery log line."""
    for line in b.log:
        if m := RECOVERY_LINE.search(line):
            return int(m.group(1)), int(m.group(2)), float(m.group(3))
    raise AssertionError("no recovery line in the log:\n" + "".join(b.log))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs, unmounted at teardown. Needs root (CI runs as root); skipped with the reason otherwise."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 64 MiB tmpfs needs root (CI runs these as root)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)  # still busy: detach it anyway


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def start(data_dir: Path) -> Iterator[Callable[..., ProcessBroker]]:
    """``start()`` runs a broker on the test's data dir; every one is killed at teardown."""
    made: list[ProcessBroker] = []

    def make(*extra: str) -> ProcessBroker:
        b = ProcessBroker(data_dir, extra=list(extra))
        made.append(b)
        return b.start()

    yield make
    for b in made:
        b.kill()


def close_quietly(conn: pika.BlockingConnection) -> None:
    try:
        if conn.is_open:
            conn.close()
    except Exception:
        pass
