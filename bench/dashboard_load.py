"""AMQP confirm latency while the dashboard polls a broker holding 30,000 queues (issue 11, item 5).

    python bench/dashboard_load.py                  # 30,000 queues, 10 s per phase
    python bench/dashboard_load.py --queues 5000 --seconds 5

``leveret server`` runs as a subprocess (ephemeral ports, a temporary data directory, SQLite). The
queues are created with one ``POST /api/definitions``. A pika publisher with confirms sends one
transient message at a time to its own queue and records each publish-to-confirm latency. Phases:

* ``idle``: nothing else talks to the broker;
* ``dashboard``: a poller does what the dashboard (static/app.js) does every second: ``GET
  /api/overview`` and its page of ``/api/queues`` at the same time, then waits a second;
* ``sorted``: the same with the table sorted by its Ready column, largest first;
* ``full``: the same, but the second request is the whole unpaged ``GET /api/queues`` (what the
  dashboard used to poll, and what RabbitMQ's API still allows).

Prints a table (confirms, p50, p99, max, seconds spent in confirms slower than 50 ms, the poller's
requests and their mean time) and writes it as
JSON to ``bench/results/dashboard_load-<UTC time>.json``. The target: p99 under ``dashboard`` within
2x of ``idle``.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pika

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import ProcessBroker  # noqa: E402
from tests.http_client import http_request  # noqa: E402

DASHBOARD_PAGE = (
    "/api/queues?page=1&page_size=100&columns=vhost%2Cname%2Cdurable%2Cauto_delete%2Cexclusive%2Ctype%2C"
    "messages_ready%2Cmessages_unacknowledged%2Cmessages%2Cconsumers%2Cmessage_stats.publish_details%2C"
    "message_stats.deliver_get_details%2Cmessage_stats.ack_details"
)  # what app.js asks for (sorted by name, the default)
STALL = 0.05  # a confirm slower than this counts toward "stalled_s"
AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()
PHASES = {
    "idle": None,
    "dashboard": DASHBOARD_PAGE,
    "sorted": DASHBOARD_PAGE + "&sort=messages_ready&sort_reverse=true",  # the table sorted by Ready
    "full": "/api/queues",
}


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


def _get(url: str) -> int:
    req = urllib.request.Request(url, headers={"Authorization": AUTH, "X-Requested-With": "XMLHttpRequest"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            resp.read()  # read, not parsed: a browser parses in its own process
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _poll(base: str, path: str, stop: Any, out: Any) -> None:
    """In its own process (so its reading cannot hold the publisher's GIL): overview plus
    ``path`` at the same time, then a one-second pause, until ``stop`` is set."""
    took: list[float] = []
    statuses: set[int] = set()
    with ThreadPoolExecutor(2) as pool:
        while not stop.is_set():
            started = time.monotonic()
            futs = [pool.submit(_get, base + "/api/overview"), pool.submit(_get, base + path)]
            statuses.update(f.result() for f in futs)
            took.append(time.monotonic() - started)
            stop.wait(1.0)
    out.put((took, sorted(statuses)))


class Poller:
    """Runs :func:`_poll` in a subprocess for the duration of a ``with`` block."""

    def __init__(self, base: str, path: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._out: Any = ctx.Queue()
        self._proc = ctx.Process(target=_poll, args=(base, path, self._stop, self._out), daemon=True)
        self.took: list[float] = []
        self.statuses: list[int] = []

    def __enter__(self) -> Poller:
        self._proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.took, self.statuses = self._out.get(timeout=180)
        self._proc.join(30)


def _publish_for(ch: Any, queue: str, seconds: float) -> list[float]:
    lat: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        ch.basic_publish("", queue, b"x" * 16)
        lat.append(time.perf_counter() - t)
    return lat


def run(queues: int = 30_000, seconds: float = 10.0, verbose: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        b = ProcessBroker(Path(d) / "data").start()
        try:
            base = f"http://127.0.0.1:{b.http_port}"
            doc = {"queues": [{"name": f"q-{i:06d}", "vhost": "/", "durable": True, "auto_delete": False,
                               "arguments": {}} for i in range(queues)]}  # fmt: skip
            t = time.monotonic()
            status, _, _ = http_request(base + "/api/definitions", "POST", doc)
            assert status == 204, status
            if verbose:
                print(f"created {queues} queues in {time.monotonic() - t:.2f} s")
            conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
            ch = conn.channel()
            ch.confirm_delivery()
            ch.queue_declare("bench-confirms", arguments={"x-max-length": 1000})
            _publish_for(ch, "bench-confirms", 1.0)  # warm up
            rows: dict[str, Any] = {}
            for phase, path in PHASES.items():
                poller = Poller(base, path) if path else None
                if poller:
                    poller.__enter__()
                    time.sleep(0.5)
                try:
                    lat = _publish_for(ch, "bench-confirms", seconds)
                finally:
                    if poller:
                        poller.__exit__()
                rows[phase] = {
                    "confirms": len(lat),
                    "p50_ms": round(_pct(lat, 50) * 1000, 3),
                    "p99_ms": round(_pct(lat, 99) * 1000, 3),
                    "max_ms": round(max(lat) * 1000, 3),
                    # p99 of per-message latency hides a stall (one message waits through it);
                    # the time spent in slow confirms shows it.
                    "stalled_s": round(sum(x for x in lat if x >= STALL), 3),
                    "polls": len(poller.took) if poller else 0,
                    "poll_mean_s": round(statistics.mean(poller.took), 3) if poller and poller.took else None,
                    "http_statuses": poller.statuses if poller else [],
                }
            conn.close()
        finally:
            b.kill()
    idle_p99 = rows["idle"]["p99_ms"]
    result = {
        "queues": queues, "seconds_per_phase": seconds, "phases": rows,
        "dashboard_p99_over_idle": round(rows["dashboard"]["p99_ms"] / idle_p99, 2),
        "full_p99_over_idle": round(rows["full"]["p99_ms"] / idle_p99, 2),
    }  # fmt: skip
    if verbose:
        print(f"{'phase':<10} {'confirms':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'stalled s':>9} "
              f"{'polls':>6} {'poll s':>7}")  # fmt: skip
        for phase, r in rows.items():
            print(f"{phase:<10} {r['confirms']:>9} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['max_ms']:>8.1f} "
                  f"{r['stalled_s']:>9.3f} "
                  f"{r['polls']:>6} {r['poll_mean_s'] if r['poll_mean_s'] is not None else '-':>7}")  # fmt: skip
        print(f"p99 dashboard/idle = {result['dashboard_p99_over_idle']}x (target <= 2x), "
              f"full/idle = {result['full_p99_over_idle']}x")  # fmt: skip
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queues", type=int, default=30_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/dashboard_load-*.json)")
    args = ap.parse_args()
    result = run(args.queues, args.seconds)
    out = args.out or ROOT / "bench" / "results" / f"dashboard_load-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
