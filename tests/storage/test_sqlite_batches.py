"""What one batch of the SQLite store's writer writes: delivered marks, and rows with and without their
optional columns."""

from __future__ import annotations

from pathlib import Path

import pytest

from leveret.storage.base import MessageRecord
from leveret.storage.sqlite import SqliteStore
from tests.storage.test_sqlite_writer import V, msg, synced


def test_a_delivered_mark_for_a_row_deleted_in_the_same_batch_is_not_written(tmp_path: Path) -> None:
    # A consumer that acks quickly: its message's delivered mark and its removal reach the writer in
    # one batch. The UPDATE would be undone by the DELETE right after it; it was 15 % of the writer's
    # time with 8 queues of confirmed persistent messages (docs/benchmarks.md, session 8).
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    for i in (1, 2):
        store.append(V, "q", msg(i))
    assert synced(store)
    statements: list[str] = []
    assert store._conn is not None
    store._conn.set_trace_callback(statements.append)
    with store._lock:  # both in one batch
        store.mark_delivered(V, "q", [1, 2])
        store.remove(V, "q", [1])
    assert synced(store)
    store._conn.set_trace_callback(None)
    updates = [s for s in statements if s.startswith("UPDATE messages SET delivered")]
    # only the row that stays (one UPDATE for the queue, its ids as a JSON array)
    assert len(updates) == 1 and updates[0].endswith("json_each('[2]'))"), statements
    store.close()
    reopened = SqliteStore(tmp_path / "s.db")
    recovered = reopened.open()
    assert [(m.msg_id, m.delivered) for m in recovered.messages[V, "q"]] == [(2, True)]
    reopened.close()


def test_rows_with_and_without_their_optional_columns_round_trip_in_one_batch(tmp_path: Path) -> None:
    # Most rows are inserted with 7 values (no TTL, body in the row), the rest with all 11: both kinds,
    # in one batch, with delivered marks on either, come back exactly.
    store = SqliteStore(tmp_path / "s.db", segment_threshold=1024)
    store.open()
    records = [
        MessageRecord(1, "ex", "rk", b"p1", b"small"),
        MessageRecord(2, "ex", "rk", b"p2", b"ttl", expires_at=4_000_000_000.5),
        MessageRecord(3, "ex", "rk", b"p3", b"L" * 5000),
        MessageRecord(4, "ex", "rk", b"p4", b"T" * 5000, expires_at=4_000_000_001.0),
        MessageRecord(5, "", "k", b"", b""),
    ]
    with store._lock:
        for r in records:
            store.append(V, "q", r)
        store.mark_delivered(V, "q", [2, 3])
    assert synced(store)
    store.close()
    reopened = SqliteStore(tmp_path / "s.db", segment_threshold=1024)
    got = reopened.open().messages[V, "q"]
    reopened.close()
    assert [(m.msg_id, m.properties, bytes(m.body), m.delivered, m.expires_at) for m in got] == [
        (1, b"p1", b"small", False, None),
        (2, b"p2", b"ttl", True, 4_000_000_000.5),
        (3, b"p3", b"L" * 5000, True, None),
        (4, b"p4", b"T" * 5000, False, 4_000_000_001.0),
        (5, b"", b"", False, None),
    ]


@pytest.mark.parametrize("json_each", [True, False], ids=["json_each", "without-json"])
def test_a_batch_writes_many_rows_in_few_statements(tmp_path: Path, json_each: bool) -> None:
    # The writer steps SQLite once per 32 inserted rows and once per queue for deletes and delivered
    # marks: each step gives the GIL away, and getting it back from the loop thread cost the writer
    # more than the rows themselves (docs/benchmarks.md, session 9). Without json_each (an SQLite built
    # without its JSON functions) deletes and marks go row by row, with the same result.
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    store._json = json_each
    with store._lock:
        for i in range(1, 71):  # 2 whole chunks of 32 and 6 more rows
            store.append(V, "a", msg(i))
        for i in range(1, 11):
            store.append(V, "b", msg(i))
    assert synced(store)
    statements: list[str] = []
    assert store._conn is not None
    store._conn.set_trace_callback(statements.append)
    with store._lock:  # one batch: deletes and marks in two queues, and new rows
        store.remove(V, "a", range(1, 41))
        store.remove(V, "b", [2, 4, 6])
        store.mark_delivered(V, "a", range(41, 51))
        store.mark_delivered(V, "b", [1, 3])
        for i in range(71, 141):
            store.append(V, "a", msg(i))
    assert synced(store)
    store._conn.set_trace_callback(None)
    inserts = [s for s in statements if s.startswith("INSERT INTO messages")]
    deletes = [s for s in statements if s.startswith("DELETE FROM messages")]
    updates = [s for s in statements if s.startswith("UPDATE messages")]
    assert len(inserts) == 2 + 6, statements  # 70 rows: 2 statements of 32, then 6 one by one
    if json_each:
        assert (len(deletes), len(updates)) == (2, 2), statements
    else:
        assert (len(deletes), len(updates)) == (43, 12), statements
    store.close()
    reopened = SqliteStore(tmp_path / "s.db")
    got = reopened.open().messages
    reopened.close()
    assert [(m.msg_id, m.delivered) for m in got[V, "a"]] == [(i, 41 <= i <= 50) for i in range(41, 141)]
    assert [(m.msg_id, m.delivered) for m in got[V, "b"]] == [
        (i, i in (1, 3)) for i in range(1, 11) if i not in (2, 4, 6)
    ]
