"""systemd's Type=notify protocol (packaging/leveret.service): READY=1 once the listeners are bound,
WATCHDOG=1 while the loop runs when WatchdogSec asks for it, STOPPING=1 on SIGTERM. A unix datagram
socket stands in for systemd's $NOTIFY_SOCKET."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from leveret import sdnotify
from tests.helpers import ProcessBroker


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(15)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def messages(sock: socket.socket, until: str) -> list[str]:
    got: list[str] = []
    while not any(until in m for m in got):
        got.append(sock.recv(4096).decode())
    return got


def test_ready_after_listeners_watchdog_and_stopping(
    tmp_path: Path, notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # 0.4 s: a keep-alive every 0.2 s
    b = ProcessBroker(tmp_path / "data").start()
    try:
        ready = messages(notify_socket, "READY=1")[-1]
        assert f"MAINPID={b.proc.pid}" in ready and f"AMQP on port {b.port}" in ready  # type: ignore[union-attr]
        conn = pika.BlockingConnection(pika.URLParameters(b.url))  # listening when it said so
        conn.close()
        assert messages(notify_socket, "WATCHDOG=1")[-1] == "WATCHDOG=1"
        assert messages(notify_socket, "WATCHDOG=1")[-1] == "WATCHDOG=1"  # and again
        b.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert "STOPPING=1" in messages(notify_socket, "STOPPING=1")[-1]
        assert b.proc.wait(15) == 0  # type: ignore[union-attr]
    finally:
        b.kill()


def test_outside_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # another process's watchdog
    assert sdnotify.watchdog_interval() is None


UNIT = Path(__file__).resolve().parents[2] / "packaging" / "leveret.service"


def unit_settings() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_the_systemd_unit_starts_and_notifies(
    tmp_path: Path, notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """packaging/leveret.service's own ExecStart with the configuration file it installs
    (packaging/leveret.toml; ports and paths made local on the command line, which overrides the file),
    and the environment file it documents: READY=1 arrives, and the default user it configures logs in."""
    unit = unit_settings()
    assert unit["Type"] == "notify" and unit["KillSignal"] == "SIGTERM" and "WatchdogSec" in unit
    argv = unit["ExecStart"].split()
    assert argv[:2] == ["/opt/leveret/bin/leveret", "server"]
    args = argv[2:]
    assert args[args.index("--config") + 1] == "/etc/leveret/leveret.toml"
    args[args.index("--config") + 1] = str(UNIT.with_name("leveret.toml"))
    args += ["--host", "127.0.0.1"]  # tests listen on loopback only; ProcessBroker gives its own --data-dir
    monkeypatch.setenv("LEVERET_DEFAULT_USER", "admin")
    monkeypatch.setenv("LEVERET_DEFAULT_PASS", "a-long-random-password")
    b = ProcessBroker(tmp_path / "data", extra=args).start()
    try:
        assert "READY=1" in messages(notify_socket, "READY=1")[-1]
        url = f"amqp://admin:a-long-random-password@127.0.0.1:{b.port}/%2F"
        pika.BlockingConnection(pika.URLParameters(url)).close()
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika.URLParameters(b.url))  # no guest on this node
        assert b.terminate() == 0
    finally:
        b.kill()
