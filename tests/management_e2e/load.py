"""A background pika publisher + consumer, so rates and charts have something to show."""

from __future__ import annotations

import threading
import time

import pika


class Load:
    """Publishes ``rate`` messages/s to ``queue`` on one connection and consumes + acks them on another."""

    def __init__(self, url: str, queue: str, rate: float = 200.0, consume: bool = True) -> None:
        self.url, self.queue, self.rate, self.consume = url, queue, rate, consume
        self.stop_event = threading.Event()
        self.published = 0
        self.acked = 0
        self.errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._guard, args=(self._publish,), daemon=True)]
        if consume:
            self._threads.append(threading.Thread(target=self._guard, args=(self._consume,), daemon=True))
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            conn.channel().queue_declare(queue, durable=True)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self._threads:
            t.join(10)
        assert not self.errors, self.errors

    def _guard(self, fn: object) -> None:
        try:
            fn()  # type: ignore[operator]
        except BaseException as e:  # reported by stop()
            self.errors.append(e)

    def _publish(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        ch = conn.channel()
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            ch.basic_publish("", self.queue, b"tick %d" % self.published)
            self.published += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                conn.sleep(delay)
        conn.close()

    def _consume(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=20)

        def on_message(ch: pika.adapters.blocking_connection.BlockingChannel, method: object, props: object,
                       body: bytes) -> None:  # fmt: skip
            ch.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
            self.acked += 1

        ch.basic_consume(self.queue, on_message)
        while not self.stop_event.is_set():
            conn.process_data_events(time_limit=0.05)
        conn.close()
