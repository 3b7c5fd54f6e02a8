"""kombu (Celery's transport, on py-amqp) against Leveret: publish, consume, ack, and a fanout broadcast."""

from __future__ import annotations

import kombu
import pytest

from tests.helpers import ThreadBroker


@pytest.fixture
def url(broker: ThreadBroker) -> str:
    return f"amqp://guest:guest@127.0.0.1:{broker.port}//"


def test_simple_queue_round_trip_with_confirms(url: str) -> None:
    with kombu.Connection(url, transport_options={"confirm_publish": True}) as conn:
        q = conn.SimpleQueue("kombu_tasks", queue_opts={"durable": True}, serializer="json")
        for i in range(5):
            q.put({"task": "add", "args": [i, i]})
        got = []
        for _ in range(5):
            m = q.get(block=True, timeout=5)
            got.append(m.payload)
            m.ack()
        assert got == [{"task": "add", "args": [i, i]} for i in range(5)]
        assert q.qsize() == 0
        q.close()


def test_celery_style_queue_arguments_and_consumer(url: str) -> None:
    """Celery's control queues: fanout exchange, x-message-ttl and x-expires, exclusive queue."""
    exchange = kombu.Exchange("celery.pidbox", type="fanout", durable=False, delivery_mode="transient")
    with kombu.Connection(url) as conn:
        queue = kombu.Queue(
            "worker1@host.celery.pidbox", exchange, durable=False, exclusive=True,
            queue_arguments={"x-message-ttl": 300000, "x-expires": 10000},
        )  # fmt: skip
        received: list[dict[str, object]] = []
        with conn.Consumer(queue, callbacks=[lambda body, msg: (received.append(body), msg.ack())]) as consumer:
            consumer.qos(prefetch_count=4)
            conn.Producer().publish({"method": "ping"}, exchange=exchange, declare=[exchange], serializer="json")
            conn.drain_events(timeout=5)
        assert received == [{"method": "ping"}]


def test_kombu_reject_and_requeue(url: str) -> None:
    with kombu.Connection(url) as conn:
        q = conn.SimpleQueue("retry")
        q.put("job")
        m = q.get(timeout=5)
        m.requeue()
        again = q.get(timeout=5)
        assert again.payload == "job" and again.delivery_info["redelivered"]
        again.ack()
        q.close()
