"""A Celery app with quorum task queues, so that its worker sets up Celery 5.5+'s native delayed
delivery (celery_delayed_0..27 queues with TTLs up to 2^27 s) for tests/integration/test_celery.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import Celery

app = Celery("leveret_it_quorum", broker=os.environ.get("LEVERET_IT_URL", "amqp://guest:guest@127.0.0.1:5672//"))
app.conf.update(
    task_default_queue_type="quorum",
    task_default_exchange_type="topic",  # native delayed delivery binds topic exchanges only
    worker_detect_quorum_queues=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={"confirm_publish": True},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

TRACE = Path(os.environ.get("LEVERET_IT_DIR", ".")) / "celery-quorum-trace.txt"


@app.task
def stamp(tag: str) -> None:
    with TRACE.open("a") as f:
        f.write(f"{tag} {time.time():.3f}\n")
