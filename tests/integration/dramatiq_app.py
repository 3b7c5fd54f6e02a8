"""A Dramatiq app for tests/integration/test_dramatiq.py (the worker imports it in a subprocess).

LEVERET_IT_URL is the broker URL; LEVERET_IT_DIR a directory where actors leave traces.
"""

from __future__ import annotations

import os
from pathlib import Path

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

broker = RabbitmqBroker(
    url=os.environ.get("LEVERET_IT_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"), max_priority=10, confirm_delivery=True
)
dramatiq.set_broker(broker)
DIR = Path(os.environ.get("LEVERET_IT_DIR", "."))


def trace(line: str) -> None:
    with (DIR / "dramatiq-trace.txt").open("a") as f:
        f.write(line + "\n")


@dramatiq.actor
def record(tag: str) -> None:
    trace(tag)


@dramatiq.actor(max_retries=3, min_backoff=100, max_backoff=200)
def flaky(key: str) -> None:
    marker = DIR / f"flaky-{key}"
    if not marker.exists():
        marker.touch()
        raise RuntimeError("first attempt fails")  # retried through the delay queue
    trace(f"{key}-ok")


@dramatiq.actor(max_retries=0)
def doomed(key: str) -> None:
    raise RuntimeError("always fails")  # nacked without requeue: dead-lettered to default.XQ
