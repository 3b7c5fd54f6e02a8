"""kill -9 during every kind of durable write; recovery must reproduce a consistent state.

Publishes and acks are killed mid-stream in test_kill.py; here: durable declares and
deletes of exchanges, queues and bindings, purges, dead-lettering, and big publishes on a
small disk, where the WAL is checkpointed every few dozen commits (so kills land in
checkpoints too). A writer process (:mod:`tests.durability.writers`) journals every
operation the broker answered; the broker is killed at a varying point, started again
on the same data dir, and what it recovered is compared with the journal. Two cycles per
kind in CI (killed at different points); ``LEVERET_KILL_WRITE_CYCLES=N`` runs N, each on a
fresh data dir.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.durability.conftest import close_quietly, connect
from tests.durability.test_kill import kill9, lines
from tests.durability.writers import meta_ops
from tests.helpers import ProcessBroker, wait_for
from tests.http_client import http_request

CYCLES = int(os.environ.get("LEVERET_KILL_WRITE_CYCLES", "2"))
Make = Callable[[Path], ProcessBroker]


@pytest.fixture
def brokers() -> Iterator[Make]:
    made: list[ProcessBroker] = []

    def make(data_dir: Path) -> ProcessBroker:
        b = ProcessBroker(data_dir)
        made.append(b)
        return b.start()

    yield make
    for b in made:
        b.kill()


def run_and_kill(
    make: Make, data_dir: Path, kind: str, journal: Path, after: int, then: Callable[[], object] | None = None
) -> ProcessBroker:
    """Start a broker, run the writer until ``after`` journal lines (and ``then()``), kill -9, start again."""
    b = make(data_dir)
    writer = subprocess.Popen([sys.executable, "-m", "tests.durability.writers", kind, str(b.port), str(journal)])
    try:
        wait_for(lambda: len(lines(journal)) >= after, timeout=20)
        if then is not None:
            wait_for(then, timeout=20, interval=0.0005)
    finally:
        kill9(b)
        assert writer.wait(10) == 0
    return make(data_dir)


def api(b: ProcessBroker, path: str) -> list[dict[str, object]]:
    status, body, _ = http_request(f"http://127.0.0.1:{b.http_port}{path}", "GET")
    assert status == 200, body
    assert isinstance(body, list)
    return body


def drain(b: ProcessBroker, queue: str) -> list[bytes]:
    conn = connect(b)
    ch = conn.channel()
    got = []
    for method, _props, body in ch.consume(queue, inactivity_timeout=0.5):
        if method is None:
            break
        got.append(body)
        ch.basic_ack(method.delivery_tag)
    close_quietly(conn)
    return got


@pytest.mark.parametrize("cycle", range(CYCLES))
def test_kill9_during_declares_and_deletes(brokers: Make, tmp_path: Path, cycle: int) -> None:
    journal = tmp_path / "journal"
    b = run_and_kill(brokers, tmp_path / "data", "meta", journal, after=40 + 17 * cycle)
    done = [(op, int(i)) for op, i in (line.split() for line in lines(journal))]
    ops = meta_ops()
    expected: list[tuple[set[int], set[int], set[int]]] = [(set(), set(), set())]
    for n in range(len(done) + 1):  # the state after the journal, and after the operation in flight
        op, i = next(ops)
        if n < len(done):
            assert (op, i) == done[n]
        xs, qs, bs = (set(s) for s in expected[-1])
        if op == "x+":
            xs.add(i)
        elif op == "q+":
            qs.add(i)
        elif op == "b+":
            bs.add(i)
        else:
            bs.discard(i)  # b-, and deleting either end deletes the binding
            (xs if op == "x-" else qs if op == "q-" else set()).discard(i)
        expected.append((xs, qs, bs))
    xs = {int(str(x["name"])[2:]) for x in api(b, "/api/exchanges/%2F") if str(x["name"]).startswith("mx")}
    qs = {int(str(q["name"])[2:]) for q in api(b, "/api/queues/%2F") if str(q["name"]).startswith("mq")}
    bs = {
        int(str(x["destination"])[2:])
        for x in api(b, "/api/bindings/%2F")
        if str(x["source"]).startswith("mx") and x["destination"] == "mq" + str(x["source"])[2:]
    }
    assert (xs, qs, bs) in expected[-2:], f"after {len(done)} acknowledged operations"


@pytest.mark.parametrize("cycle", range(CYCLES))
def test_kill9_during_purges(brokers: Make, tmp_path: Path, cycle: int) -> None:
    journal = tmp_path / "journal"
    b = run_and_kill(brokers, tmp_path / "data", "purge", journal, after=100 + 13 * cycle)
    entries = lines(journal)
    last_b = max((n for n, e in enumerate(entries) if e == "b"), default=-1)
    durable_purge = max((n for n, e in enumerate(entries[:last_b]) if e == "p"), default=-1)
    last_s = max((n for n, e in enumerate(entries) if e == "s"), default=-1)
    gone = {int(e[2:]) for e in entries[:durable_purge] if e.startswith("c ")}
    kept = {int(e[2:]) for e in entries[last_s + 1 :] if e.startswith("c ")}
    confirmed = {int(e[2:]) for e in entries if e.startswith("c ")}
    got = [int(x) for x in drain(b, "pq")]
    assert len(got) == len(set(got)), "duplicates"
    assert not set(got) & gone, "a message purged before a confirmed marker came back"
    assert kept <= set(got), "a confirmed message published after the last purge was lost"
    assert set(got) <= confirmed | {max(confirmed, default=-1) + 1}, "a message never published"


@pytest.mark.parametrize("cycle", range(CYCLES))
def test_kill9_during_dead_lettering(brokers: Make, tmp_path: Path, cycle: int) -> None:
    journal = tmp_path / "journal"
    b = run_and_kill(brokers, tmp_path / "data", "deadletter", journal, after=60 + 11 * cycle)
    entries = lines(journal)
    last_b = max((n for n, e in enumerate(entries) if e == "b"), default=-1)
    confirmed = {int(e[2:]) for e in entries if e.startswith("c ")}
    rejected = {int(e[2:]) for e in entries if e.startswith("r ")}
    settled = {int(e[2:]) for e in entries[:last_b] if e.startswith("r ")}  # rejects before a marker
    src = [int(x) for x in drain(b, "dl.src")]
    dst = [int(x) for x in drain(b, "dl.dst")]
    assert len(src) == len(set(src)) and len(dst) == len(set(dst)), "duplicates"
    assert confirmed <= set(src) | set(dst), "a confirmed message was lost"
    assert not set(src) & settled, "a message dead-lettered before a confirmed marker is back in its queue"
    assert settled <= set(dst), "a dead-lettered message (before a confirmed marker) is missing"
    assert set(dst) <= rejected | {max(confirmed, default=-1)}, "dead-lettered but never rejected"


@pytest.mark.parametrize("cycle", range(CYCLES))
def test_kill9_during_checkpoints(small_disk: Path, brokers: Make, cycle: int) -> None:
    journal = small_disk.parent / "journal"  # (small_disk before brokers: unmounted after they are killed)
    # On 64 MiB the WAL reservation is 4 MiB: a checkpoint about every 110 of these 30 KiB messages.
    # The kill comes as soon as the main file is seen to grow, that is while (or just after) a
    # checkpoint copies pages into it.
    db = small_disk / "data" / "leveret.db"
    sizes: list[int] = []

    def main_file_grew() -> bool:
        sizes.append(db.stat().st_size)
        return len(sizes) > 1 and sizes[-1] != sizes[0]

    b = run_and_kill(brokers, db.parent, "bigpublish", journal, after=60 + 23 * cycle, then=main_file_grew)
    confirmed = [int(e[2:]) for e in lines(journal)]
    got = [int(body.split(b" ", 1)[0]) for body in drain(b, "big")]
    assert got == sorted(set(got)), "duplicates or out of order"
    assert set(confirmed) <= set(got), "a confirmed message was lost"
    assert got[: len(confirmed)] == confirmed and len(got) <= len(confirmed) + 1
