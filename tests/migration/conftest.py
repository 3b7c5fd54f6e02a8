"""A private RabbitMQ 3.10 node for the migration tests (bench/brokers.py: its own epmd, ports and data
dir, stopped by PID), started once for the directory; ``rabbitmqctl`` against it; and ``leveretctl``
as a real subprocess. Skips (with the reason) where rabbitmq-server is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.brokers import Epmd, RabbitMQBroker, find_rabbitmq_server

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = find_rabbitmq_server()
NEEDS_RABBITMQ = pytest.mark.skipif(
    SCRIPT is None, reason="rabbitmq-server is not installed (Debian's rabbitmq-server package, 3.10)"
)


@dataclass
class Rabbit:
    """The running node: its AMQP port and rabbitmqctl."""

    node: RabbitMQBroker
    ctl_path: str

    @property
    def port(self) -> int:
        return self.node.port

    @property
    def http(self) -> str:
        """The management plugin's API (the reverse move lists RabbitMQ's queues there)."""
        return f"http://127.0.0.1:{self.node.http_port}"

    def url(self, vhost: str = "/", user: str = "guest", password: str = "guest", port: int | None = None) -> str:
        from urllib.parse import quote

        return f"amqp://{user}:{password}@127.0.0.1:{port or self.port}/{quote(vhost, safe='')}"

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([self.ctl_path, "-q", "-n", self.node.nodename, *args], env=self.node.env(),
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        if check:
            assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r

    def reset(self) -> None:
        """Back to a fresh node (only guest, only /)."""
        for cmd in ("stop_app", "reset", "start_app"):
            self.ctl(cmd)

    def export(self, path: Path) -> dict[str, Any]:
        self.ctl("export_definitions", str(path))
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc


@pytest.fixture(scope="session")
def rabbit() -> Iterator[Rabbit]:
    if SCRIPT is None:
        pytest.skip("rabbitmq-server is not installed (Debian's rabbitmq-server package, 3.10)")
    with tempfile.TemporaryDirectory(prefix="leveret-migration-") as tmp:
        work = Path(tmp)
        (work / "epmd").mkdir()
        epmd = Epmd(work / "epmd")
        epmd.start()
        node = RabbitMQBroker(work / "rabbitmq", SCRIPT, epmd, nodename="rabbit-migration@localhost",
                              management=True)  # fmt: skip
        try:
            node.start(timeout=90)
            deadline = time.monotonic() + 60
            while True:  # the plugin's listener comes up after AMQP's
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/api/overview", timeout=2)
                except urllib.error.HTTPError:
                    break  # 401: it answers
                except OSError:
                    assert time.monotonic() < deadline, "RabbitMQ's management listener did not come up"
                    time.sleep(0.2)
            yield Rabbit(node, str(SCRIPT.parent / "rabbitmqctl"))
        finally:
            node.stop()
            epmd.stop()


def leveretctl(*args: str, http_port: int, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``leveretctl --url http://127.0.0.1:PORT ARGS`` as a real subprocess."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "leveret.cli.ctl", "--url", f"http://127.0.0.1:{http_port}", *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT, input=stdin)  # fmt: skip
