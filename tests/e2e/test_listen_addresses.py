"""Where the broker listens: by default on the loopback of both families (Node 17+ resolves localhost
to ::1 first, and `amqp://localhost` was refused), and on every address `--host` lists, all on one port."""

from __future__ import annotations

import socket
from pathlib import Path

import pika
import pytest

from tests.helpers import ProcessBroker
from tests.http_client import http_request


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_the_default_listens_on_both_loopbacks(tmp_path: Path) -> None:
    b = ProcessBroker(tmp_path / "data").start()  # no --host: the default
    try:
        log = "".join(b.log)
        assert f"AMQP listening on 127.0.0.1:{b.port}" in log and f"AMQP listening on [::1]:{b.port}" in log
        for host in ("127.0.0.1", "::1", "localhost"):
            conn = pika.BlockingConnection(pika.ConnectionParameters(host, b.port))  # guest: loopback either way
            conn.channel().queue_declare(f"from-{host.replace(':', '')}")
            conn.close()
        status, body, _ = http_request(f"http://[::1]:{b.http_port}/api/whoami", "GET", None, ("guest", "guest"))
        assert status == 200 and body["name"] == "guest"
        status, overview, _ = http_request(f"http://127.0.0.1:{b.http_port}/api/overview", "GET", None, ("guest", "guest"))
        amqp = [li for li in overview["listeners"] if li["protocol"] == "amqp"]
        assert amqp and "[::1]" in amqp[0]["ip_address"] and "127.0.0.1" in amqp[0]["ip_address"]
    finally:
        b.terminate()


def test_host_takes_one_address_or_several(tmp_path: Path) -> None:
    b = ProcessBroker(tmp_path / "data", extra=["--host", "127.0.0.1"]).start()
    try:
        assert "[::1]" not in "".join(b.log)
        with pytest.raises(OSError):
            socket.create_connection(("::1", b.port), timeout=2).close()
    finally:
        b.terminate()
    b = ProcessBroker(tmp_path / "data2", extra=["--host", "127.0.0.1,127.0.0.2"]).start()
    try:
        for host in ("127.0.0.1", "127.0.0.2"):
            conn = pika.BlockingConnection(pika.ConnectionParameters(host, b.port))
            conn.close()
        assert f"AMQP listening on 127.0.0.2:{b.port}" in "".join(b.log)
    finally:
        b.terminate()
