"""A second client that keeps publishing and consuming while a test misbehaves on the same broker."""

from __future__ import annotations

import threading
import time
from types import TracebackType

import pika


class Witness:
    """On its own thread and pika connection: publish (with confirms), consume, ack, one message at a time.

    Use as a context manager around the bad input. On exit it checks that it never failed, that every
    message it published came back once, in order, and that it kept going during the test.
    """

    def __init__(self, port: int, min_rounds: int = 3) -> None:
        self.port = port
        self.min_rounds = min_rounds
        self.sent = 0
        self.received: list[int] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="witness")

    def _run(self) -> None:
        try:
            conn = pika.BlockingConnection(
                pika.ConnectionParameters(
                    "127.0.0.1", self.port, credentials=pika.PlainCredentials("guest", "guest"),
                    socket_timeout=5, blocked_connection_timeout=10, connection_attempts=1,
                )  # fmt: skip
            )
            try:
                ch = conn.channel()
                ch.confirm_delivery()
                q = ch.queue_declare("", exclusive=True).method.queue

                def on_message(c: object, method: object, props: object, body: bytes) -> None:
                    self.received.append(int(body))
                    ch.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]

                ch.basic_consume(q, on_message)
                while not self._stop.is_set():
                    ch.basic_publish("", q, str(self.sent).encode())
                    self.sent += 1
                    deadline = time.monotonic() + 5
                    while len(self.received) < self.sent:
                        if time.monotonic() > deadline:
                            raise AssertionError(f"witness: message {self.sent - 1} not delivered within 5 s")
                        conn.process_data_events(time_limit=0.01)
                    self._ready.set()
                    time.sleep(0.005)
            finally:
                if conn.is_open:
                    conn.close()
        except BaseException as exc:  # reported by __exit__
            self.error = exc
            self._ready.set()

    def __enter__(self) -> Witness:
        self._thread.start()
        assert self._ready.wait(10), "witness did not start"
        if self.error is not None:
            raise AssertionError("witness could not start") from self.error
        self._start_rounds = self.sent
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        # keep it going a little after the bad input, so a late failure would show too
        deadline = time.monotonic() + 5
        while self.sent - self._start_rounds < self.min_rounds and time.monotonic() < deadline and self.error is None:
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(10)
        if et is not None:
            return
        assert self.error is None, f"witness failed: {self.error!r}"
        assert self.received == list(range(self.sent)), "witness lost or reordered messages"
        assert self.sent - self._start_rounds >= self.min_rounds, "witness stalled"
