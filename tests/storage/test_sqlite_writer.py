"""SQLite-only behaviour of the writer thread: failures, checkpoints, life cycle."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from leveret.storage.base import MessageRecord
from leveret.storage.sqlite import SCHEMA_VERSION, SqliteStore, disk_free_bytes

V = "/"
WAIT = 10.0


def synced(store: SqliteStore) -> bool:
    done = threading.Event()
    store.sync(done.set)
    return done.wait(WAIT)


def msg(i: int, body: bytes = b"body") -> MessageRecord:
    return MessageRecord(i, "ex", "rk", b"p", body)


def test_write_failure_is_reported_and_withholds_every_later_confirm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
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

    # Simulate a full disk: cap the file at its current size (from the writer
    # thread, which owns the connection, between two transactions).
    capped = threading.Event()

    def cap() -> None:
        conn = store._conn
        assert conn is not None
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        capped.set()

    store.sync(cap)
    assert capped.wait(WAIT)
    confirmed: list[int] = []
    store.append(V, "q", msg(2, b"x" * 100_000))
    store.sync(lambda: confirmed.append(2))
    assert failed.wait(WAIT)
    store.append(V, "q", msg(3))
    store.sync(lambda: confirmed.append(3))
    store.close()  # does not hang on a failed store

    assert confirmed == []
    assert len(errors) == 1 and isinstance(errors[0], sqlite3.OperationalError)
    assert "full" in str(errors[0])
    assert store.error is errors[0]
    assert "write failed" in caplog.text

    r = SqliteStore(tmp_path / "s.db")
    try:
        assert [m.msg_id for m in r.open().messages[V, "q"]] == [1]
    finally:
        r.close()


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
