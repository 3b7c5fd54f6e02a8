"""A slow consumer and a fast publisher on one queue for N seconds, sampling the broker's RSS.

    python bench/slow_consumer_rss.py            # 60 s, prints the RSS curve
    python bench/slow_consumer_rss.py --seconds 10

The broker runs as a subprocess (``leveret server --storage memory --memory-high-watermark W``); the
publisher sends 1 KiB messages with confirms as fast as the broker accepts them; the consumer acks
50 msg/s with prefetch 10. The queue grows until the broker's RSS passes the watermark; then the
memory alarm blocks the publisher (connection.blocked, reading paused) while the consumer is still
served, so RSS levels off near the watermark. Printed per sample: time, broker RSS, queue depth,
consumed, published.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import pika

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.brokers import proc_status_kb  # noqa: E402
from tests.helpers import ProcessBroker  # noqa: E402

QUEUE = "slow-rss"


def _params(port: int) -> pika.ConnectionParameters:
    return pika.ConnectionParameters("127.0.0.1", port, credentials=pika.PlainCredentials("guest", "guest"))


def run(
    seconds: float = 60, interval: float = 2.0, verbose: bool = True, watermark: int = 150_000_000
) -> list[tuple[float, int, int, int]]:
    """Returns samples (t, rss bytes, queue depth, consumed)."""
    with tempfile.TemporaryDirectory() as d:
        b = ProcessBroker(Path(d), extra=["--storage", "memory", "--memory-high-watermark", str(watermark)]).start()
        stop = threading.Event()
        consumed = [0]
        published = [0]
        errors: list[BaseException] = []
        try:
            setup = pika.BlockingConnection(_params(b.port))
            sch = setup.channel()
            sch.queue_declare(QUEUE)

            def publisher() -> None:
                try:
                    conn = pika.BlockingConnection(_params(b.port))
                    ch = conn.channel()
                    ch.confirm_delivery()
                    body = b"x" * 1024
                    while not stop.is_set():
                        ch.basic_publish("", QUEUE, body)
                        published[0] += 1
                    conn.close()
                except BaseException as exc:
                    if not stop.is_set():  # blocked at the end: the broker is stopped under it
                        errors.append(exc)

            def consumer() -> None:
                try:
                    conn = pika.BlockingConnection(_params(b.port))
                    ch = conn.channel()
                    ch.basic_qos(prefetch_count=10)
                    for m, _, _ in ch.consume(QUEUE, inactivity_timeout=0.1):
                        if stop.is_set():
                            break
                        if m is None:
                            continue
                        time.sleep(0.02)  # slow: 50 msg/s
                        ch.basic_ack(m.delivery_tag)
                        consumed[0] += 1
                    ch.cancel()
                    conn.close()
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=publisher, daemon=True), threading.Thread(target=consumer, daemon=True)]
            for t in threads:
                t.start()
            assert b.proc is not None
            samples = []
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                time.sleep(interval)
                rss = proc_status_kb(b.proc.pid, "VmRSS") * 1024
                depth = sch.queue_declare(QUEUE, passive=True).method.message_count
                s = (round(time.monotonic() - t0, 1), rss, depth, consumed[0])
                samples.append(s)
                if verbose:
                    print(f"t={s[0]:5.1f}s rss={rss / 2**20:7.1f} MiB queue={depth:6d} consumed={s[3]:5d} "
                          f"published={published[0]}", flush=True)
            stop.set()
            threads[1].join(10)  # the publisher may sit blocked: it ends with the broker
            setup.close()
            if errors:
                raise errors[0]
            return samples
        finally:
            b.terminate()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--watermark", type=int, default=150_000_000, help="memory high watermark, bytes")
    a = ap.parse_args()
    samples = run(a.seconds, a.interval, watermark=a.watermark)
    rss = [r for _, r, _, _ in samples]
    print(f"RSS min {min(rss) / 2**20:.1f} MiB, max {max(rss) / 2**20:.1f} MiB, last {rss[-1] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
