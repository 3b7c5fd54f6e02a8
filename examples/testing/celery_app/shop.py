"""A small Celery app: order totals, a flaky payment call that is retried, stock updates in a group.

Tasks ack late (after they ran), so a worker that dies mid-task leaves its message to be redelivered;
results come back over AMQP (the ``rpc://`` backend). ``make_app(url)`` builds the app for a broker,
as a project would from its settings.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from celery import Celery


def make_app(broker_url: str) -> Celery:
    app = Celery("shop", broker=broker_url, backend="rpc://")
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="shop",
        broker_connection_retry_on_startup=True,
        broker_transport_options={"confirm_publish": True},
    )
    attempts: Counter[str] = Counter()
    stock: dict[str, int] = {}
    lock = threading.Lock()
    app.attempts = attempts  # type: ignore[attr-defined]  # for the tests to look at
    app.stock = stock  # type: ignore[attr-defined]

    @app.task(shared=False, name="shop.order_total")
    def order_total(lines: list[dict[str, Any]], discount: float = 0.0) -> float:
        total = sum(line["price"] * line["qty"] for line in lines)
        return round(total * (1 - discount), 2)

    @app.task(shared=False, name="shop.charge", bind=True, max_retries=5, default_retry_delay=0)
    def charge(self: Any, order_id: str, fail_times: int) -> str:
        with lock:
            attempts[order_id] += 1
            n = attempts[order_id]
        if n <= fail_times:
            raise self.retry(exc=ConnectionError("payment gateway timed out"), countdown=0)
        return f"{order_id}: charged after {n} attempt(s)"

    @app.task(shared=False, name="shop.reserve")
    def reserve(sku: str, qty: int) -> int:
        with lock:
            stock[sku] = stock.get(sku, 0) + qty
            return stock[sku]

    return app
