"""SQLite-only behaviour of the writer thread: failures, checkpoints, life cycle."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from leveret.storage import sqlite as sqlite_mod
from leveret.storage.base import MessageRecord
from leveret.storage.handoff import INLINE_MAX_BYTES
from leveret.storage.sqlite import SCHEMA_VERSION, SqliteStore, disk_free_bytes
from leveret.storage.sqlite_schema import MIGRATIONS as _MIGRATIONS

V = "/"
WAIT = 10.0


def synced(store: SqliteStore) -> bool:
    done = threading.Event()
    store.sync(done.set)
    return done.wait(WAIT)


def msg(i: int, body: bytes = b"body") -> MessageRecord:
    return MessageRecord(i, "ex", "rk", b"p", body)


def cap_file(store: SqliteStore) -> None:
    """Simulate a full disk: the file may not grow past its current size (SQLITE_FULL).

    Run on the writer thread, which owns the connection, between two transactions.
    """
    capped = threading.Event()

    def cap() -> None:
        conn = store._conn
        assert conn is not None
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        capped.set()

    store.sync(cap)
    assert capped.wait(WAIT)


def uncap_file(store: SqliteStore) -> None:
    """Space is back. The store is stalled (no callback runs), so take its lock from here."""
    with store._lock:
        assert store._conn is not None
        store._conn.execute("PRAGMA max_page_count = 1073741823")


def test_a_write_that_fails_for_space_is_held_and_confirmed_once_space_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stalls: list[BaseException | None] = []
    changed = threading.Event()
    errors: list[BaseException] = []

    def on_stall(exc: BaseException | None) -> None:
        stalls.append(exc)
        changed.set()

    # Bodies stay in the rows (the cap is on the database file's pages).
    store = SqliteStore(tmp_path / "s.db", on_stall=on_stall, on_error=errors.append, segment_threshold=1 << 30)
    store.open()
    store.append(V, "q", msg(1))
    assert synced(store)
    cap_file(store)

    confirmed: list[int] = []
    # New queues: their ids are allocated in the batch that fails and must be given back.
    store.append(V, "q2", msg(2, b"x" * 100_000))
    store.sync(lambda: confirmed.append(2))
    assert changed.wait(WAIT)
    changed.clear()
    assert len(stalls) == 1 and isinstance(stalls[0], sqlite3.OperationalError)
    assert "full" in str(stalls[0])
    assert store.stalled is stalls[0] and store.error is None
    assert "cannot write" in (store.failure() or "")
    assert "lack of disk space" in caplog.text
    store.append(V, "q3", msg(3))
    store.remove(V, "q", [1])
    store.sync(lambda: confirmed.append(3))
    # While stalled: reads (paging) are served from what is held, nothing is confirmed.
    assert store.read_bodies(V, "q2", [2]) == {2: b"x" * 100_000}
    assert store.read_bodies(V, "q", [1]) == {1: b"body"}
    time.sleep(3 * sqlite_mod.RETRY_INTERVAL)  # a few retries fail
    assert confirmed == [] and len(stalls) == 1

    uncap_file(store)
    assert changed.wait(WAIT)
    deadline = time.monotonic() + WAIT
    while confirmed != [2, 3] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert confirmed == [2, 3]
    assert stalls[1:] == [None] and store.stalled is None and store.failure() is None
    assert "writes resumed" in caplog.text
    assert errors == []
    store.close()

    r = SqliteStore(tmp_path / "s.db")
    try:
        got = r.open().messages
        assert {k: [m.msg_id for m in v] for k, v in got.items()} == {(V, "q2"): [2], (V, "q3"): [3]}
    finally:
        r.close()


def test_close_without_space_gives_up_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SqliteStore(tmp_path / "s.db", segment_threshold=1 << 30)
    store.open()
    store.append(V, "q", msg(1))
    assert synced(store)
    cap_file(store)
    confirmed: list[int] = []
    store.append(V, "q", msg(2, b"x" * 100_000))
    store.sync(lambda: confirmed.append(2))
    deadline = time.monotonic() + WAIT
    while store.stalled is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.stalled is not None
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < WAIT
    assert confirmed == []
    assert "not written" in (store.failure() or "")
    assert "were NOT written" in caplog.text
    r = SqliteStore(tmp_path / "s.db")
    try:
        assert [m.msg_id for m in r.open().messages[V, "q"]] == [1]
    finally:
        r.close()


def test_a_failure_that_is_not_about_space_fails_the_store_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[BaseException] = []
    failed = threading.Event()

    def on_error(exc: BaseException) -> None:
        errors.append(exc)
        failed.set()

    store = SqliteStore(tmp_path / "s.db", on_error=on_error)
    store.open()
    store.append(V, "q", msg(1))
    assert synced(store)
    confirmed: list[int] = []

    def broken(self: SqliteStore, batch: list[tuple[object, ...]], durable: bool) -> list[Callable[[], None]]:
        raise sqlite3.OperationalError("disk I/O error")  # not SQLITE_FULL

    with monkeypatch.context() as m:
        m.setattr(SqliteStore, "_apply", broken)
        store.append(V, "q", msg(2))
        store.sync(lambda: confirmed.append(2))
        assert failed.wait(WAIT)
    store.append(V, "q", msg(3))
    store.sync(lambda: confirmed.append(3))
    time.sleep(0.2)
    store.close()
    assert confirmed == []
    assert store.error is errors[0] and store.stalled is None
    assert "storage failed" in (store.failure() or "")


def test_on_error_is_optional_and_a_bad_record_fails_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    store.append(V, "q", MessageRecord(1, "ex", "rk", b"p", object()))  # type: ignore[arg-type]
    done = threading.Event()
    store.sync(done.set)
    assert not done.wait(0.5)
    store.close()
    assert store.error is not None
    assert "write failed" in caplog.text


def test_wal_is_kept_small_by_checkpoints_and_truncated_on_close(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = SqliteStore(db, checkpoint_pages=64)  # 256 KiB with 4 KiB pages
    store.open()
    wal = Path(f"{db}-wal")
    largest = 0
    for k in range(40):
        for i in range(100 * k + 1, 100 * k + 101):
            store.append(V, "q", msg(i, b"x" * 1000))
        assert synced(store)
        largest = max(largest, wal.stat().st_size)
    # 4 MB went through; without checkpoints the WAL would hold all of it.
    assert largest < 1_500_000
    store.close()
    assert not wal.exists() or wal.stat().st_size == 0
    r = SqliteStore(db)
    try:
        assert len(r.open().messages[V, "q"]) == 4000
    finally:
        r.close()


def test_group_commit_calls_every_waiting_callback_in_order(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    parked, release = threading.Event(), threading.Event()

    def park() -> None:
        parked.set()
        release.wait(WAIT)

    store.sync(park)
    assert parked.wait(WAIT)
    order: list[int] = []
    for i in range(1, 1001):
        store.append(V, "q", msg(i))
        store.sync(lambda i=i: order.append(i))  # type: ignore[misc]
    assert store.pending() == 2000
    release.set()
    assert synced(store)
    assert order == list(range(1, 1001))
    assert store.pending() == 0
    store.close()


class FakeLoop:
    """Collects what the store schedules; the test decides when a turn ends or a timer fires."""

    def __init__(self) -> None:
        self.soon: list[Callable[[], object]] = []
        self.later: list[tuple[float, Callable[[], object]]] = []

    def call_soon(self, fn: Callable[[], object], /) -> None:
        self.soon.append(fn)

    def call_later(self, delay: float, fn: Callable[[], object], /) -> None:
        self.later.append((delay, fn))

    def run_once(self) -> None:
        """One loop iteration: what was scheduled before it runs, in order."""
        soon, self.soon = self.soon, []
        for fn in soon:
            fn()

    def end_turn(self) -> None:
        """Iterate until nothing more is scheduled (timers are left to the test)."""
        while self.soon:
            self.run_once()


def committed_ids(path: Path) -> list[int]:
    """Message ids a fresh connection sees: what is in the file, not in the writer's hands."""
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT msg_id FROM messages ORDER BY msg_id")]
    finally:
        conn.close()


def wait_until(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_attached_store_commits_a_small_synced_turn_on_the_loop_thread(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    loop = FakeLoop()
    store.attach_loop(loop)
    seen: list[tuple[int, list[int]]] = []
    for i in (1, 2, 3):
        store.append(V, "q", msg(i))
    store.remove(V, "q", [2])
    store.sync(lambda: seen.append((threading.get_ident(), committed_ids(tmp_path / "s.db"))))
    assert len(loop.soon) == 1, "one kick per turn, however many operations"
    assert seen == [] and store.pending() == 5, "nothing is written before the turn ends"
    loop.soon.append(lambda: seen.append((0, [])))  # stands for a delivery written this turn
    loop.run_once()
    assert seen == [(0, [])] and len(loop.soon) == 1, "the kick goes round once more first"
    seen.clear()
    loop.end_turn()
    # The callback ran in place, after the commit: what it confirms is in the file.
    assert seen == [(threading.get_ident(), [1, 3])]
    assert store.pending() == 0 and loop.later == []
    store.append(V, "q", msg(4))
    assert len(loop.soon) == 1, "the next turn schedules a new kick"
    store.close()
    assert committed_ids(tmp_path / "s.db") == [1, 3, 4], "close() writes what no kick handed over"


def test_a_turn_without_sync_waits_for_the_next_sync_or_the_timer(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    loop = FakeLoop()
    store.attach_loop(loop)
    store.append(V, "q", msg(1))
    store.append(V, "q", msg(2))
    store.sync(lambda: None)
    loop.end_turn()
    assert committed_ids(tmp_path / "s.db") == [1, 2]
    # A consumer's ack: nobody waits for it, so no commit of its own...
    store.remove(V, "q", [1])
    loop.end_turn()
    assert store.pending() == 1 and len(loop.later) == 1 and loop.later[0][0] <= 0.01
    # ... it rides along with the next confirmed publish, in the same commit.
    store.append(V, "q", msg(3))
    store.sync(lambda: None)
    loop.end_turn()
    assert committed_ids(tmp_path / "s.db") == [2, 3] and store.pending() == 0
    loop.later.pop()[1]()  # the timer finds nothing to do
    # Without a sync to come, the timer hands it to the writer.
    store.remove(V, "q", [2])
    loop.end_turn()
    assert len(loop.later) == 1
    assert committed_ids(tmp_path / "s.db") == [2, 3]
    loop.later.pop()[1]()
    assert wait_until(lambda: committed_ids(tmp_path / "s.db") == [3])
    store.close()


def test_attached_store_leaves_big_turns_to_the_writer(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", inline_max=4)
    store.open()
    loop = FakeLoop()
    store.attach_loop(loop)
    threads: list[int] = []
    done = threading.Event()
    for i in range(1, 5):
        store.append(V, "q", msg(i))
    store.sync(lambda: (threads.append(threading.get_ident()), done.set()))  # 5 ops > inline_max
    loop.end_turn()
    assert done.wait(WAIT)
    assert threads[0] != threading.get_ident(), "a big turn is committed by the writer thread"
    assert committed_ids(tmp_path / "s.db") == [1, 2, 3, 4]
    store.close()


def test_attached_store_leaves_turns_with_large_bodies_to_the_writer(tmp_path: Path) -> None:
    # Writing a large body in place would stall the loop (no reads, no deliveries) for as long as
    # the disk takes; the writer thread writes it while the loop goes on.
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    loop = FakeLoop()
    store.attach_loop(loop)
    threads: list[int] = []
    done = threading.Event()
    store.append(V, "q", msg(1, b"x" * (INLINE_MAX_BYTES + 1)))  # 2 ops, far below inline_max
    store.sync(lambda: (threads.append(threading.get_ident()), done.set()))
    loop.end_turn()
    assert done.wait(WAIT)
    assert threads[0] != threading.get_ident(), "a turn with a large body is committed by the writer thread"
    assert wait_until(lambda: not store._lock.locked())  # the writer is done with its batch
    store.append(V, "q", msg(2, b"x" * 1000))
    store.sync(lambda: threads.append(threading.get_ident()))
    loop.end_turn()
    assert threads[1] == threading.get_ident(), "small bodies are still committed in place"
    assert committed_ids(tmp_path / "s.db") == [1, 2]
    store.close()


def test_a_turn_that_finds_the_writer_busy_waits_for_it_and_keeps_order(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", inline_max=2)
    store.open()
    loop = FakeLoop()
    store.attach_loop(loop)
    parked, release = threading.Event(), threading.Event()

    def park() -> None:  # holds the writer (and its lock) inside a batch
        parked.set()
        release.wait(WAIT)

    store.append(V, "q", msg(1))
    store.append(V, "q", msg(2))
    store.sync(park)  # 3 ops > inline_max: the writer takes it
    loop.end_turn()
    assert parked.wait(WAIT)
    order: list[str] = []
    finished = threading.Event()
    store.remove(V, "q", [1])
    store.sync(lambda: (order.append("second"), finished.set()))  # small, but the writer is busy
    loop.end_turn()
    assert order == [] and store.pending() == 2, "the loop must not commit behind a busy writer"
    release.set()
    assert finished.wait(WAIT)
    assert committed_ids(tmp_path / "s.db") == [2]
    store.close()


def test_reading_bodies_applies_what_is_pending_in_place(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    loop = FakeLoop()
    store.attach_loop(loop)
    store.append(V, "q", msg(1, b"one"))
    store.append(V, "q", msg(2, b"two"))
    assert store.read_bodies(V, "q", [1, 2, 3]) == {1: b"one", 2: b"two"}  # before any kick
    assert store.pending() == 0
    loop.end_turn()  # the kick finds nothing left to do
    store.close()


@pytest.mark.timeout(30)
def test_a_callback_run_in_place_may_use_the_store(tmp_path: Path) -> None:
    # The broker's callback for a durable declare goes on to handle the input held behind it,
    # which can page in a deep queue (read_bodies) or submit more: it must not find the store locked.
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    loop = FakeLoop()
    store.attach_loop(loop)
    got: list[dict[int, bytes]] = []

    def then_read() -> None:
        store.append(V, "q", msg(2, b"two"))
        got.append(store.read_bodies(V, "q", [1, 2]))

    store.append(V, "q", msg(1, b"one"))
    store.sync(then_read)
    started = time.monotonic()
    loop.end_turn()
    assert got == [{1: b"one", 2: b"two"}]
    assert time.monotonic() - started < 5
    store.close()


def test_life_cycle_errors(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    with pytest.raises(RuntimeError):
        store.open()
    store.close()
    store.close()  # idempotent
    with pytest.raises(RuntimeError):
        store.sync(lambda: None)
    with pytest.raises(ValueError):
        SqliteStore(tmp_path / "t.db", checkpoint_pages=0)
    SqliteStore(tmp_path / "never-opened.db").close()


def test_schema_version_is_recorded_and_a_newer_one_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = SqliteStore(db)
    store.open()
    store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="schema version"):
        SqliteStore(db).open()
    assert db.exists(), "a newer schema is not corruption: the file stays where it is"


@pytest.mark.parametrize("rowid", [True, False], ids=["rowid-messages", "without-rowid-messages"])
def test_a_version_1_database_is_migrated_and_keeps_its_messages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, rowid: bool
) -> None:
    # Files created before session 9 have a rowid ``messages`` table, later ones WITHOUT ROWID; both
    # are migrated, read and written by the same statements.
    db = tmp_path / "s.db"
    conn = sqlite3.connect(db)
    for statement in _MIGRATIONS[0]:  # the schema as version 1 wrote it
        if rowid:
            statement = statement.replace(" WITHOUT ROWID", "")
        conn.execute(statement)
    without = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'").fetchone()[0]
    assert without.endswith("WITHOUT ROWID") is not rowid
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO queue_ids VALUES (1, '/', 'q')")
    conn.execute("INSERT INTO messages VALUES (1, 7, 'ex', 'rk', x'8000', x'626f6479', 1)")
    conn.commit()
    conn.close()
    store = SqliteStore(db)
    with caplog.at_level(logging.INFO, logger="leveret.storage"):
        got = store.open().messages
    assert got == {(V, "q"): [MessageRecord(7, "ex", "rk", b"\x80\x00", b"body", True, None)]}
    upgrades = [r.getMessage().split(": ", 1)[1] for r in caplog.records if "schema upgraded" in r.getMessage()]
    assert upgrades == [
        "schema upgraded from version 1 to 2",
        "schema upgraded from version 2 to 3",
        "schema upgraded from version 3 to 4",
    ]
    store.append(V, "q", MessageRecord(8, "ex", "rk", b"", b"new", expires_at=1234.5))
    store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    conn.close()
    again = SqliteStore(db)
    assert [m.expires_at for m in again.open().messages[V, "q"]] == [None, 1234.5]
    again.close()


def test_unusable_path_raises_and_moves_nothing(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    with pytest.raises(sqlite3.OperationalError):
        SqliteStore(tmp_path / "adir").open()
    assert (tmp_path / "adir").is_dir()
    assert list(tmp_path.iterdir()) == [tmp_path / "adir"]


def test_disk_free_bytes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    free = shutil.disk_usage(tmp_path).free
    assert abs(store.disk_free_bytes() - free) < 100_000_000
    assert abs(disk_free_bytes(tmp_path) - free) < 100_000_000


def test_a_full_disk_does_not_stop_the_store_from_opening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno
    import os

    real_pwrite = os.pwrite
    calls = {"n": 0}

    def full(fd: int, data: bytes, offset: int) -> int:
        calls["n"] += 1
        if calls["n"] > 2:  # a few MB in, the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    db = tmp_path / "s.db"
    monkeypatch.setattr(os, "pwrite", full)
    store = SqliteStore(db)
    with caplog.at_level("WARNING", logger="leveret.storage"):
        store.open()
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    assert "could not preallocate the WAL" in caplog.text
    assert Path(f"{db}-wal").stat().st_size == 0, "the partial fill is given back"
    store.append(V, "q", msg(1))
    assert synced(store)
    store.close()
    again = SqliteStore(db)
    assert [m.msg_id for m in again.open().messages[V, "q"]] == [1]
    again.close()


def test_an_in_place_commit_that_finds_no_space_hands_the_batch_to_the_writer(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", segment_threshold=1 << 30)
    store.open()
    cap_file(store)
    with store._lock:  # the writer has finished the batch that capped the file
        pass
    loop = FakeLoop()
    store.attach_loop(loop)
    confirmed: list[int] = []
    store.append(V, "q", msg(1, b"x" * 100_000))
    store.sync(lambda: confirmed.append(1))
    loop.run_once()
    loop.end_turn()  # the kick commits in place, on this thread, and fails
    assert store.stalled is not None and confirmed == []
    store.append(V, "q", msg(2))
    store.sync(lambda: confirmed.append(2))
    loop.run_once()
    loop.end_turn()  # stalled: no second attempt on the loop thread
    assert confirmed == [] and store.pending() == 4
    uncap_file(store)
    deadline = time.monotonic() + WAIT
    while confirmed != [1, 2] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert confirmed == [1, 2], "the writer retried on its own"
    store.close()
    assert committed_ids(tmp_path / "s.db") == [1, 2]


def test_the_writer_probes_free_space_once_its_writes_may_have_used_the_margin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 10_000_000
    free = {"bytes": limit + 1_000_000}
    probes: list[int] = []

    def fake_free(path: Path) -> int:
        probes.append(free["bytes"])
        return free["bytes"]

    monkeypatch.setattr(sqlite_mod, "disk_free_bytes", fake_free)
    low: list[int] = []
    # checkpoint_pages=1: a tiny WAL reservation, so "free" is what fake_free says.
    store = SqliteStore(tmp_path / "s.db", checkpoint_pages=1, disk_free_limit=limit, on_low_space=low.append)
    store.open()
    opened = len(probes)
    store.append(V, "q", msg(1))
    assert synced(store)
    assert len(probes) == opened, "a small batch well inside the margin costs no statvfs"
    # someone else's writes, or ours: the next probe sees it (below the limit by more than the few KB
    # of unused WAL reservation that count as free too)
    free["bytes"] = limit - 100_000
    store.append(V, "q", msg(2, b"x" * 1_200_000))  # more than the 1 MB margin
    assert synced(store)
    assert len(probes) == opened + 1 and len(low) == 1 and low[0] < limit
    store.append(V, "q", msg(3))
    assert synced(store)
    assert len(low) == 1, "reported once per crossing"
    store.close()


def test_free_space_counts_the_unused_wal_reservation_and_a_small_disk_reserves_less(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    wal = Path(f"{tmp_path / 's.db'}-wal").stat().st_size
    assert wal > 30_000_000, "the default reservation"
    counted = store.disk_free_bytes() - shutil.disk_usage(tmp_path).free
    assert abs(counted - wal) < 2_000_000, "the unused reservation is free space for the store"
    store.close()

    monkeypatch.setattr(sqlite_mod, "disk_free_bytes", lambda path: 64 << 20)  # a 64 MiB disk
    small = SqliteStore(tmp_path / "small.db")
    small.open()
    assert Path(f"{tmp_path / 'small.db'}-wal").stat().st_size <= (64 << 20) // sqlite_mod.WAL_DISK_SHARE
    small.append(V, "q", msg(1))
    assert synced(small)
    small.close()


def test_a_page_in_of_written_large_bodies_does_not_wait_for_the_writer(tmp_path: Path) -> None:
    # A deep queue of large messages pages bodies back in on the loop thread; waiting for the writer's
    # batch (a 16 MiB fdatasync) there stalled every connection. Bodies already in a segment file are
    # read without the writer's lock.
    store = SqliteStore(tmp_path / "s.db", segment_threshold=1024)
    store.open()
    bodies = {i: bytes([i]) * (5000 + i) for i in range(1, 6)}
    for i, body in bodies.items():
        store.append(V, "q", msg(i, body))
    store.append(V, "q", msg(9, b"small"))  # below the threshold: in its row, read through the writer
    assert synced(store)
    result: dict[int, bytes | bytearray] = {}
    with store._lock:  # the writer is in the middle of a batch
        reader = threading.Thread(target=lambda: result.update(store.read_bodies(V, "q", [1, 3, 5])))
        reader.start()
        reader.join(WAIT)
        assert not reader.is_alive(), "the page-in waited for the writer"
    assert result == {1: bodies[1], 3: bodies[3], 5: bodies[5]}
    assert store.read_bodies(V, "q", [2, 9]) == {2: bodies[2], 9: b"small"}  # mixed: the rest as before
    store.remove(V, "q", [1])
    assert synced(store)
    assert (store._qids[(V, "q")], 1) not in store._bodies._written  # removed: no longer read this way
    store.close()


def test_a_rolled_back_batch_is_not_read_without_the_writer(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", segment_threshold=1024)
    store.open()
    store.append(V, "q", msg(1, b"a" * 5000))
    assert synced(store)
    gen = store._bodies._gen
    with store._lock:
        store._bodies.rollback(store._bodies.begin())  # what a failed batch does
    assert store._bodies._written == {} and store._bodies._gen == gen + 1
    assert store._read_written(V, "q", [1]) == {}
    store.close()

