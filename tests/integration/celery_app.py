"""A Celery app for tests/integration/test_celery.py (the worker imports it in a subprocess).

LEVERET_IT_URL is the broker URL; LEVERET_IT_DIR a directory where tasks leave traces.
"""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

app = Celery("leveret_it", broker=os.environ.get("LEVERET_IT_URL", "amqp://guest:guest@127.0.0.1:5672//"), backend="rpc://")
app.conf.update(
    task_acks_late=True,  # the reliable setting: a task is acked after it ran
    worker_prefetch_multiplier=1,
    broker_transport_options={"confirm_publish": True},
    task_queue_max_priority=10,
    task_default_priority=0,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

TRACE = Path(os.environ.get("LEVERET_IT_DIR", ".")) / "celery-trace.txt"


def trace(line: str) -> None:
    with TRACE.open("a") as f:
        f.write(line + "\n")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def record(tag: str) -> str:
    trace(tag)
    return tag


@app.task(bind=True, max_retries=3)
def flaky(self, key: str) -> str:  # type: ignore[no-untyped-def]
    marker = TRACE.parent / f"flaky-{key}"
    if not marker.exists():
        marker.touch()
        raise self.retry(countdown=0.3)  # an ETA: the worker holds the message unacked until then
    return f"{key} ok after {self.request.retries} retry"
