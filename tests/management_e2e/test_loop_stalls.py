"""Management requests must not stall AMQP (issue 11, items 4 and 5).

A real ``leveret server`` subprocess, so the broker's event loop has a core of its own and the test's
clients do not share its GIL. A pika publisher with confirms measures round trips, one message at a
time, while HTTP requests that used to run for seconds on the loop are served: a catastrophic regex,
a definitions import of thousands of queues, full and paged listings of them, and their export. The bounds are
loose (a busy 2-core CI box), far below the stalls the old code caused.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from types import TracebackType

import pika

from tests.helpers import ProcessBroker

QUEUES = 30_000
#: Worst single AMQP round trip allowed while the request runs. Before the fix the same requests
#: blocked the loop (and so AMQP) for 1-10 s each on this kind of machine.
WORST_RTT = 0.5


class RoundTrips:
    """On its own thread: publish with confirms, one at a time, recording each round trip."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.rtts: list[tuple[float, float]] = []  # (started, seconds)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="round-trips")

    def _run(self) -> None:
        try:
            params = pika.ConnectionParameters("127.0.0.1", self.port, socket_timeout=30,
                                               credentials=pika.PlainCredentials("guest", "guest"))  # fmt: skip
            conn = pika.BlockingConnection(params)
            ch = conn.channel()
            ch.confirm_delivery()
            q = ch.queue_declare("", exclusive=True).method.queue
            while not self._stop.is_set():
                started = time.monotonic()
                ch.basic_publish("", q, b"x")
                self.rtts.append((started, time.monotonic() - started))
                self._ready.set()
                if len(self.rtts) % 100 == 0:
                    ch.queue_purge(q)
                time.sleep(0.002)
            conn.close()
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def __enter__(self) -> RoundTrips:
        self._thread.start()
        assert self._ready.wait(15) and self.error is None, self.error
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(30)

    def worst_since(self, t: float) -> tuple[float, int]:
        """(worst round trip, count) of those started after ``t`` (monotonic)."""
        got = [d for s, d in self.rtts if s >= t]
        return max(got, default=0.0), len(got)


def _http(b: ProcessBroker, method: str, path: str, body: object = None) -> tuple[int, bytes, float]:
    """The raw answer: parsing 25 MB of JSON here would hold this process's GIL, and so stall
    the probe's own thread, which would then blame the broker."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{b.http_port}{path}", data=data, method=method)
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    req.add_header("Content-Type", "application/json")
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    return status, raw, time.monotonic() - started


def _served_without_stall(b: ProcessBroker, probe: RoundTrips, method: str, path: str, body: object = None) -> object:
    before = time.monotonic()
    status, raw, took = _http(b, method, path, body)
    time.sleep(0.05)  # the round trip in flight when the answer came
    worst, count = probe.worst_since(before)
    assert probe.error is None, probe.error
    assert status in (200, 204, 400), (path[:80], status, raw[:300])
    assert count >= 1 and worst < WORST_RTT, f"{method} {path[:60]} took {took:.2f} s; worst AMQP round trip {worst:.2f} s"
    return json.loads(raw) if raw else None


def test_catastrophic_regex_filter_does_not_stall_amqp(process_broker: ProcessBroker) -> None:
    b = process_broker
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    conn.channel().queue_declare("a" * 28 + "!")
    conn.channel().queue_declare("x" * 250)
    conn.close()
    with RoundTrips(b.port) as probe:
        # issue 11's repro: 10.4 s on the loop with Python's re
        got = _served_without_stall(b, probe, "GET", "/api/queues?name=^(a%2B)%2B$&use_regex=true")
        assert got == [] or (isinstance(got, dict) and got["error"] == "bad_request")
        got = _served_without_stall(b, probe, "GET", "/api/queues?name=(x%2Bx%2B)%2By&use_regex=true&page=1")
        assert isinstance(got, dict) and got["error"] == "bad_request" and "ms" in got["reason"]


def test_import_and_listings_of_many_queues_do_not_stall_amqp(process_broker: ProcessBroker) -> None:
    b = process_broker
    doc = {"queues": [{"name": f"bulk-{i:06d}", "vhost": "/", "durable": False, "auto_delete": False,
                       "arguments": {}} for i in range(QUEUES)]}  # fmt: skip
    with RoundTrips(b.port) as probe:
        _served_without_stall(b, probe, "POST", "/api/definitions", doc)
        for _ in range(2):
            full = _served_without_stall(b, probe, "GET", "/api/queues")
            assert isinstance(full, list) and len(full) >= QUEUES
        page = _served_without_stall(b, probe, "GET", "/api/queues?page=7&page_size=100&sort_reverse=true")
        assert isinstance(page, dict) and page["filtered_count"] >= QUEUES and len(page["items"]) == 100
        ov = _served_without_stall(b, probe, "GET", "/api/overview")
        assert isinstance(ov, dict) and ov["object_totals"]["queues"] >= QUEUES
        _served_without_stall(b, probe, "GET", "/api/queues?page=1&sort=messages&columns=name,messages")
        defs = _served_without_stall(b, probe, "GET", "/api/definitions")
        assert isinstance(defs, dict) and len(defs["queues"]) >= QUEUES
