"""Storage benchmarks: hot-path call cost, append+sync throughput, sync latency, recovery time.

    PYTHONPATH=src python bench/storage_bench.py [--dir DIR] [--messages N] [--recover N]

Runs against the SQLite store in a temporary directory (on the file system of
``--dir``: put it on the disk the broker would use, fsync cost is the point).
Bodies are 64 bytes; properties 3 bytes (delivery-mode 2), as a persistent publish.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from leveret.storage.base import MessageRecord
from leveret.storage.sqlite import SqliteStore

BODY = b"x" * 64
PROPS = b"\x10\x00\x02"


def open_store(path: Path) -> SqliteStore:
    store = SqliteStore(path)
    store.open()
    return store


def wait_synced(store: SqliteStore) -> None:
    done = threading.Event()
    store.sync(done.set)
    done.wait()


def call_cost(path: Path, n: int) -> float:
    """Microseconds per append() call on the caller's thread (the writer runs meanwhile)."""
    store = open_store(path)
    msgs = [MessageRecord(i, "ex", "rk", PROPS, BODY) for i in range(1, n + 1)]
    append = store.append
    start = time.perf_counter()
    for m in msgs:
        append("/", "q", m)
    elapsed = time.perf_counter() - start
    wait_synced(store)
    store.close()
    return elapsed / n * 1e6


def throughput(path: Path, n: int, per_sync: int, window: int, ack: bool) -> float:
    """Messages per second through append (+ remove if ``ack``) with a sync every ``per_sync``.

    ``window`` syncs may be outstanding, like a broker with that many unconfirmed
    publisher batches; with ``ack`` each confirmed batch is removed again, as if a
    consumer kept up.
    """
    store = open_store(path)
    slots = threading.Semaphore(window)
    acked: list[list[int]] = []

    def confirmed(batch: list[int]) -> Callable[[], None]:
        def callback() -> None:
            acked.append(batch)
            slots.release()

        return callback

    start = time.perf_counter()
    msg_id = 1
    while msg_id <= n:
        batch = list(range(msg_id, min(msg_id + per_sync, n + 1)))
        for i in batch:
            store.append("/", "q", MessageRecord(i, "ex", "rk", PROPS, BODY))
        if ack and acked:
            store.remove("/", "q", acked.pop())
        slots.acquire()
        store.sync(confirmed(batch))
        msg_id += per_sync
    wait_synced(store)
    elapsed = time.perf_counter() - start
    store.close()
    return n / elapsed


def sync_latency(path: Path, rounds: int) -> float:
    """Milliseconds for one lone append + sync (one commit with fsync)."""
    store = open_store(path)
    start = time.perf_counter()
    for i in range(1, rounds + 1):
        store.append("/", "q", MessageRecord(i, "ex", "rk", PROPS, BODY))
        wait_synced(store)
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed / rounds * 1e3


def recovery(path: Path, n: int, queues: int = 10) -> tuple[float, float, int]:
    """(seconds to write n messages, seconds to recover them, database bytes)."""
    store = open_store(path)
    start = time.perf_counter()
    for i in range(1, n + 1):
        store.append("/", f"q{i % queues}", MessageRecord(i, "amq.direct", f"q{i % queues}", PROPS, BODY))
        if i % 10_000 == 0:
            store.sync(lambda: None)
    store.close()
    write = time.perf_counter() - start
    size = path.stat().st_size
    store = SqliteStore(path)
    r = store.open()
    store.close()
    got = sum(len(v) for v in r.messages.values())
    assert got == n, (got, n)
    return write, r.seconds, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temporary store")
    parser.add_argument("--messages", type=int, default=200_000, help="messages per throughput run")
    parser.add_argument("--recover", type=int, default=500_000, help="messages for the recovery run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        print(f"append() call cost:               {call_cost(d / 'a.db', args.messages):6.2f} µs")
        print(f"lone append+sync latency:         {sync_latency(d / 'l.db', 300):6.2f} ms")
        for per_sync, window in ((1, 200), (100, 20)):
            for ack in (False, True):
                rate = throughput(d / f"t{per_sync}{ack}.db", args.messages, per_sync, window, ack)
                label = f"sync every {per_sync}, {window} in flight" + (", acked" if ack else "")
                print(f"{label:<34}{rate:10,.0f} msg/s")
        write, seconds, size = recovery(d / "r.db", args.recover)
        print(
            f"recovery of {args.recover:,} messages:    {seconds:6.2f} s"
            f"  (written in {write:.1f} s, database {size / 1e6:.0f} MB)"
        )


if __name__ == "__main__":
    main()
