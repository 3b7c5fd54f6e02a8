"""Crash recovery of the SQLite store: ``kill -9`` mid-write, torn and damaged files.

The writing happens in a child process so that it can really die: no ``close``, no
final checkpoint, whatever the kernel had of the WAL is what the next open sees.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import leveret
from leveret.storage.base import MessageRecord, Recovered
from leveret.storage.sqlite import SqliteStore
from tests.wal import wal_end

V = "/"
SRC = str(Path(leveret.__file__).resolve().parents[1])

# Appends ids in batches of 20, removes the multiples of 5 of each batch, syncs, and
# prints the highest id once that sync's callback has run. Runs until killed.
CRASH_WRITER = """
import sys, threading
from pathlib import Path
from leveret.storage.base import MessageRecord
from leveret.storage.sqlite import SqliteStore
from tests.wal import wal_end

store = SqliteStore(Path(sys.argv[1]))
next_id = store.open().next_msg_id
window = threading.Semaphore(8)  # syncs in flight: keeps the writer busy, memory bounded

def synced(hi):
    sys.stdout.write(f"{hi}\\n")
    sys.stdout.flush()
    window.release()

while True:
    batch = range(next_id, next_id + 20)
    for i in batch:
        store.append("/", "q", MessageRecord(i, "ex", "rk", b"props", b"body %d" % i * 20))
    store.remove("/", "q", [i for i in batch if i % 5 == 0])
    next_id += 20
    window.acquire()
    store.sync(lambda hi=next_id - 1: synced(hi))
"""

# Ten synced commits of ten messages each, then waits to be killed.
TEN_COMMITS = """
import sys, threading, time
from pathlib import Path
from leveret.storage.base import MessageRecord
from leveret.storage.sqlite import SqliteStore
from tests.wal import wal_end

store = SqliteStore(Path(sys.argv[1]), checkpoint_pages=1_000_000)
store.open()
for k in range(10):
    for i in range(10 * k + 1, 10 * k + 11):
        store.append("/", "q", MessageRecord(i, "ex", "rk", b"p", bytes([i]) * 300))
    done = threading.Event()
    store.sync(done.set)
    done.wait()
print("ready", flush=True)
time.sleep(60)
"""


def spawn(script: str, db: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-c", script, str(db)], stdout=subprocess.PIPE, text=True, env=env
    )


def kill9(proc: subprocess.Popen[str]) -> str:
    os.kill(proc.pid, signal.SIGKILL)
    rest, _ = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return rest


def recover(db: Path) -> tuple[Recovered, list[int]]:
    store = SqliteStore(db)
    try:
        r = store.open()
    finally:
        store.close()
    return r, [m.msg_id for m in r.messages.get((V, "q"), [])]


def test_kill_9_mid_write_loses_nothing_that_was_synced(tmp_path: Path) -> None:
    db = tmp_path / "leveret.db"
    for _cycle in range(3):  # later cycles write on top of a recovered store
        proc = spawn(CRASH_WRITER, db)
        assert proc.stdout is not None
        printed = [proc.stdout.readline() for _ in range(100)]
        printed += kill9(proc).splitlines()
        synced = [int(line) for line in printed if line.strip()]
        assert len(synced) >= 100, "child died before syncing"
        hi = max(synced)

        r, got = recover(db)
        assert got == sorted(got)
        assert [i for i in got if i <= hi] == [i for i in range(1, hi + 1) if i % 5], (
            "a synced message is missing, or a synced removal came back"
        )
        # Past the last confirm, what survived is a prefix of the operations: every
        # id up to the highest one, less multiples of 5 whose removal also made it.
        missing = set(range(hi + 1, max(got) + 1)) - set(got)
        assert all(i % 5 == 0 for i in missing), f"not a prefix of the operations: lost {missing}"
        assert r.next_msg_id == max(got) + 1


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir left by a process killed after ten synced commits (ids 1..100), never checkpointed."""
    d = tmp_path_factory.mktemp("crashed")
    proc = spawn(TEN_COMMITS, d / "leveret.db")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    kill9(proc)
    assert (d / "leveret.db-wal").stat().st_size > 100 * 300, "expected the data to be in the WAL"
    return d


@pytest.fixture
def copy(crashed: Path, tmp_path: Path) -> Iterator[Path]:
    for f in crashed.iterdir():
        shutil.copy2(f, tmp_path / f.name)
    yield tmp_path / "leveret.db"


def test_the_wal_is_preallocated_past_its_frames(copy: Path) -> None:
    wal = Path(f"{copy}-wal")
    assert 100 * 300 < wal_end(wal) < wal.stat().st_size
    assert not any(wal.read_bytes()[wal_end(wal) :]), "past the frames: zeros only"


def still_writable(db: Path) -> None:
    store = SqliteStore(db)
    before = store.open().messages.get((V, "q"), [])
    store.append(V, "q", MessageRecord(1000, "", "q", b"", b"after"))
    store.close()
    _, got = recover(db)
    assert got == [m.msg_id for m in before] + [1000]


def test_untouched_crash_recovers_every_commit(copy: Path) -> None:
    r, got = recover(copy)
    assert got == list(range(1, 101))
    assert r.messages[V, "q"][99].body == bytes([100]) * 300


@pytest.mark.parametrize("cut", [1, 100, 4000])
def test_truncated_wal_tail_drops_only_the_torn_commit(copy: Path, cut: int) -> None:
    wal = Path(f"{copy}-wal")
    os.truncate(wal, wal_end(wal) - cut)
    _, got = recover(copy)
    assert got == list(range(1, 91))
    still_writable(copy)


def test_garbage_after_the_wal_tail_is_ignored(copy: Path) -> None:
    wal = Path(f"{copy}-wal")
    end = wal_end(wal)
    with open(wal, "r+b") as f:
        f.seek(end)
        f.write(os.urandom(10_000))
    _, got = recover(copy)
    assert got == list(range(1, 101))
    still_writable(copy)


def test_garbage_over_the_last_wal_frame_drops_that_commit(copy: Path) -> None:
    wal = Path(f"{copy}-wal")
    end = wal_end(wal)
    with open(wal, "r+b") as f:
        f.seek(end - 3000)
        f.write(os.urandom(3000))
    _, got = recover(copy)
    assert got == list(range(1, 91))
    still_writable(copy)


def test_garbage_wal_header_loses_the_wal_but_opens(copy: Path) -> None:
    # Nothing was ever checkpointed, so without a valid WAL header there is nothing.
    with open(f"{copy}-wal", "r+b") as f:
        f.write(os.urandom(32))
    _, got = recover(copy)
    assert got == []
    still_writable(copy)


def test_stale_shared_memory_index_is_rebuilt(copy: Path) -> None:
    shm = Path(f"{copy}-shm")
    shm.write_bytes(os.urandom(shm.stat().st_size))
    _, got = recover(copy)
    assert got == list(range(1, 101))


def test_damaged_database_is_moved_aside_not_crash_looped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "leveret.db"
    garbage = b"this is not an sqlite database" * 200
    db.write_bytes(garbage)
    with caplog.at_level(logging.ERROR, logger="leveret.storage"):
        r, got = recover(db)
    assert got == [] and r.queues == []
    moved = list(tmp_path.glob("leveret.db.corrupt-*"))
    assert [p.read_bytes() for p in moved] == [garbage]
    assert "moved it aside" in caplog.text and str(moved[0]) in caplog.text
    still_writable(db)


def test_damaged_database_raises_when_quarantine_is_off(tmp_path: Path) -> None:
    db = tmp_path / "leveret.db"
    db.write_bytes(b"x" * 4096)
    with pytest.raises(Exception, match="not a database"):
        SqliteStore(db, quarantine_corrupt=False).open()
    assert db.read_bytes() == b"x" * 4096


def test_recovery_of_many_messages_is_quick(tmp_path: Path) -> None:
    db = tmp_path / "leveret.db"
    store = SqliteStore(db)
    store.open()
    n = 50_000
    for i in range(1, n + 1):
        store.append(V, f"q{i % 4}", MessageRecord(i, "ex", "rk", b"\x80\x00\x02", b"x" * 64))
    store.close()
    start = time.perf_counter()
    r, _ = recover(db)
    elapsed = time.perf_counter() - start
    assert sum(len(m) for m in r.messages.values()) == n
    assert elapsed < 2.0, f"recovering {n} messages took {elapsed:.2f}s"
