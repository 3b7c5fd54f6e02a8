"""The shop's tasks on a real broker with a real worker (celery.contrib.testing), acks and all."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from celery import Celery, group
from celery.contrib.testing.worker import start_worker

from celery_app.shop import make_app


@pytest.fixture
def app(amqp_url: str) -> Iterator[Celery]:
    app = make_app(amqp_url)
    # The test worker notices its stop flag between two polls of its sockets; with AMQP heartbeats
    # on, a poll may wait for the heartbeat timer (up to 20 s) and the worker outlives its test.
    app.conf.broker_heartbeat = 0
    yield app
    if os.environ.get("EXAMPLE_AMQP_URL"):  # a shared broker: leave nothing for the next test
        app.control.purge()
    app.close()


@pytest.fixture
def worker(app: Celery) -> Iterator[None]:
    with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False, shutdown_timeout=10):
        yield


def test_a_task_runs_on_the_worker(app: Celery, worker: None) -> None:
    result = app.signature("shop.order_total").delay([{"price": 2.5, "qty": 4}, {"price": 1, "qty": 1}], 0.1)
    assert result.get(timeout=10) == 9.9


def test_a_flaky_task_is_retried_until_it_succeeds(app: Celery, worker: None) -> None:
    result = app.signature("shop.charge").delay("o-1", 2)
    assert result.get(timeout=20) == "o-1: charged after 3 attempt(s)"
    assert app.attempts["o-1"] == 3  # type: ignore[attr-defined]


def test_a_group_fans_out_and_gathers(app: Celery, worker: None) -> None:
    reserve = app.signature("shop.reserve")
    results = group(reserve.clone(("sku-1", 1)) for _ in range(20)).apply_async()
    assert sorted(results.get(timeout=20)) == list(range(1, 21))


def test_tasks_sent_before_the_worker_starts_wait_for_it(app: Celery) -> None:
    pending = [app.signature("shop.reserve").delay("sku-2", 5) for _ in range(3)]
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=10):
        assert sorted(r.get(timeout=10) for r in pending) == [5, 10, 15]
