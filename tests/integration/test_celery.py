"""A real Celery 5 worker and client against Leveret: tasks, results, retries with ETA, priorities.

The worker runs as a subprocess (`celery worker --pool=solo`), the broker as `leveret server`
(SQLite store), both on free ports; the client runs here. Celery's own settings for reliable queues
are on: acks late, prefetch 1, publisher confirms (`confirm_publish`), queues with x-max-priority.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.http_client import http_request
from tests.integration.conftest import start_worker, stop_worker

pytest.importorskip("celery")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env(broker_env: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return broker_env("//")


def app(env: dict[str, str]) -> Any:
    """The client side, configured for this test's broker (a fresh app: Celery caches connections)."""
    sys.modules.pop("tests.integration.celery_app", None)
    return importlib.import_module("tests.integration.celery_app")


class Worker:
    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.proc = start_worker(
            [sys.executable, "-m", "celery", "-A", "tests.integration.celery_app", "worker", "--pool=solo",
             "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "info"],
            env, tmp / "worker.log",
        )  # fmt: skip

    def stop(self) -> None:
        # Killed, not shut down: Celery's own warm and cold shutdowns take ~10 s (the same against
        # RabbitMQ 3.10.8), and with acks late nothing it held is lost.
        stop_worker(self.proc)


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[Worker]:
    w = Worker(env, tmp_path)
    yield w
    w.stop()


def test_tasks_run_and_results_come_back(env: dict[str, str], worker: Worker) -> None:
    # Through Celery's rpc:// result backend (a reply queue per client). One result of the first
    # batch usually takes ~10 s to arrive: Celery's, it does the same against RabbitMQ 3.10.8.
    m = app(env)
    results = [m.add.delay(i, i) for i in range(20)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(20)]


def test_a_retry_with_a_countdown_runs_again(env: dict[str, str], worker: Worker) -> None:
    m = app(env)
    assert m.flaky.delay("k").get(timeout=30) == "k ok after 1 retry"


def test_higher_priority_tasks_run_first(env: dict[str, str], tmp_path: Path) -> None:
    m = app(env)
    for i in range(5):
        m.record.apply_async((f"low-{i}",), priority=1)
    m.record.apply_async(("urgent",), priority=9)
    w = Worker(env, tmp_path)  # started after everything is queued: it sees the priorities
    try:
        trace = tmp_path / "celery-trace.txt"
        wait_for(lambda: trace.exists() and len(trace.read_text().split()) == 6, timeout=60)
        assert trace.read_text().split() == ["urgent"] + [f"low-{i}" for i in range(5)]
    finally:
        w.stop()


def test_countdown_tasks_use_native_delayed_delivery_with_quorum_queues(env: dict[str, str], tmp_path: Path) -> None:
    """Celery 5.5+ with quorum queues declares celery_delayed_0..27 (TTLs up to 2^27 s, which needs
    RabbitMQ's ten-year x-message-ttl limit) and routes countdown tasks through them instead of holding
    them unacked in the worker. The worker must not log "Native delayed delivery will not be
    available", and a countdown task waits in those queues and then runs on time."""
    log = tmp_path / "quorum-worker.log"
    proc = start_worker(
        [sys.executable, "-m", "celery", "-A", "tests.integration.celery_quorum_app", "worker", "--pool=solo",
         "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "info"],
        env, log,
    )  # fmt: skip
    try:
        wait_for(lambda: "ready." in log.read_text(), timeout=60)
        text = log.read_text()
        assert "Native delayed delivery will not be available" not in text, text[-3000:]
        sys.modules.pop("tests.integration.celery_quorum_app", None)
        m = importlib.import_module("tests.integration.celery_quorum_app")
        sent = time.time()
        m.stamp.apply_async(("later",), countdown=3)
        api = f"http://127.0.0.1:{env['LEVERET_IT_HTTP_PORT']}/api/queues/%2F"

        def delayed() -> bool:
            _, queues, _ = http_request(api, "GET", None, ("guest", "guest"))
            return any(q["name"].startswith("celery_delayed_") and q["messages"] for q in queues)

        wait_for(delayed, timeout=5)  # the task waits in the delay queues, not unacked in the worker
        trace = m.TRACE
        wait_for(lambda: trace.exists() and "later" in trace.read_text(), timeout=30)
        ran = float(trace.read_text().split()[1])
        assert 2.5 <= ran - sent <= 10, ran - sent
    finally:
        stop_worker(proc)
