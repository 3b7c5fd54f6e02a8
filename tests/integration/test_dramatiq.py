"""A real Dramatiq 2 worker and client against Leveret: RabbitmqBroker with priorities and confirms.

Dramatiq's RabbitmqBroker declares three durable queues per queue (Q with x-dead-letter-* and
x-max-priority, Q.DQ for delays, Q.XQ with a 7-day x-message-ttl for dead letters), publishes with
confirms and a priority, retries through the delay queue and nacks failures without requeue.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.helpers import wait_for
from tests.integration import conftest

pytest.importorskip("dramatiq")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env(broker_env: Callable[[str], dict[str, str]], tmp_path: Path) -> dict[str, Any]:
    e = broker_env("/%2F")
    return {"env": e, "port": int(e["LEVERET_IT_PORT"]), "dir": tmp_path}


def app() -> Any:
    sys.modules.pop("tests.integration.dramatiq_app", None)
    return importlib.import_module("tests.integration.dramatiq_app")


def start_worker(env: dict[str, Any]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "dramatiq", "tests.integration.dramatiq_app", "--processes", "1", "--threads", "1"]
    return conftest.start_worker(cmd, env["env"], env["dir"] / "worker.log")


def stop(proc: subprocess.Popen[bytes]) -> None:
    conftest.stop_worker(proc)


def traces(env: dict[str, Any]) -> list[str]:
    f = env["dir"] / "dramatiq-trace.txt"
    return f.read_text().split() if f.exists() else []


@pytest.fixture
def worker(env: dict[str, Any]) -> Iterator[subprocess.Popen[bytes]]:
    p = start_worker(env)
    yield p
    stop(p)


def test_messages_are_processed_and_a_retry_goes_through_the_delay_queue(
    env: dict[str, Any], worker: subprocess.Popen[bytes]
) -> None:
    m = app()
    for i in range(10):
        m.record.send(f"r{i}")
    m.flaky.send("k")
    wait_for(lambda: len(traces(env)) == 11, timeout=60)
    assert set(traces(env)) == {f"r{i}" for i in range(10)} | {"k-ok"}


def test_a_failed_message_is_dead_lettered_to_the_xq(env: dict[str, Any], worker: subprocess.Popen[bytes]) -> None:
    m = app()
    m.doomed.send("x")
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", env["port"]))
    ch = conn.channel()
    wait_for(lambda: ch.queue_declare("default.XQ", passive=True).method.message_count == 1, timeout=60)
    method, props, body = ch.basic_get("default.XQ", auto_ack=True)
    assert b'"actor_name":"doomed"' in body
    assert props.headers["x-death"][0]["queue"] == "default"
    assert props.headers["x-death"][0]["reason"] == "rejected"
    conn.close()


def test_higher_priority_messages_are_processed_first(env: dict[str, Any]) -> None:
    m = app()
    for i in range(5):
        m.record.send_with_options(args=(f"low{i}",), broker_priority=1)
    m.record.send_with_options(args=("urgent",), broker_priority=9)
    p = start_worker(env)  # started after everything is queued
    try:
        wait_for(lambda: len(traces(env)) == 6, timeout=60)
        assert traces(env) == ["urgent"] + [f"low{i}" for i in range(5)]
    finally:
        stop(p)
