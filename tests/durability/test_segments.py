"""Large bodies in segment files (leveret.storage.segments): kill -9 with a torn segment tail, a missing
or short segment, disk space given back after acks, a mix of small and large bodies, and a data dir
written by schema version 3."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pika
import pytest

from leveret.storage.base import MessageRecord, QueueRecord
from leveret.storage.sqlite import SqliteStore
from leveret.storage.sqlite_schema import MIGRATIONS
from tests.durability.conftest import close_quietly, connect
from tests.helpers import ProcessBroker

Start = Callable[..., ProcessBroker]
V = "/"
WAIT = 10.0
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def body_of(i: int) -> bytes:
    """Message ``i``'s body: small, just under, at and far above the 32 KiB threshold, never repeating."""
    size = (40, 32_000, 32_768, 300_000, 1_100_000)[i % 5] + i
    seed = hashlib.sha256(b"%d" % i).digest()
    return (b"%d:" % i + seed * (size // 32 + 1))[:size]


def segment_files(data_dir: Path) -> list[Path]:
    d = data_dir / "leveret.db.segments"
    return sorted(d.glob("*.seg")) if d.is_dir() else []


def synced(store: SqliteStore) -> None:
    done = threading.Event()
    store.sync(done.set)
    assert done.wait(WAIT)


def kill9(b: ProcessBroker) -> None:
    assert b.proc is not None
    os.kill(b.proc.pid, signal.SIGKILL)
    b.proc.wait(10)


def test_kill9_during_large_publishes_keeps_every_confirmed_body_byte_for_byte(
    start: Start, data_dir: Path
) -> None:
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("big", durable=True)
    ch.confirm_delivery()
    confirmed: list[int] = []
    failed: list[BaseException] = []

    def publish() -> None:
        try:
            i = 0
            while True:  # until the broker dies
                ch.basic_publish("", "big", body_of(i), PERSISTENT)
                confirmed.append(i)  # returned: the broker confirmed it
                i += 1
        except BaseException as exc:  # the connection dies with the broker
            failed.append(exc)

    t = threading.Thread(target=publish, daemon=True)
    t.start()
    while len(confirmed) < 40:
        assert t.is_alive(), failed
        threading.Event().wait(0.02)
    kill9(b)
    t.join(10)
    close_quietly(conn)
    segs = segment_files(data_dir)
    assert segs, "large bodies went to segment files"
    # A torn tail: bytes a write in progress left behind, referenced by no committed row.
    with open(segs[-1], "ab") as f:
        f.write(os.urandom(12_345))

    b = start()
    conn = connect(b)
    ch = conn.channel()
    got: dict[int, bytes] = {}
    for method, _props, body in ch.consume("big", inactivity_timeout=1.0):
        if method is None:
            break
        i = int(body.split(b":", 1)[0])
        assert body == body_of(i), f"message {i} came back different"
        assert i not in got
        got[i] = body
        ch.basic_ack(method.delivery_tag)
    close_quietly(conn)
    assert set(confirmed) <= set(got), f"confirmed but lost: {sorted(set(confirmed) - set(got))[:10]}"
    assert not any("set aside" in line for line in b.log), "".join(b.log)


def test_a_missing_or_short_segment_quarantines_its_messages_and_the_rest_is_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "leveret.db"
    store = SqliteStore(db, segment_max=1 << 20)  # a new segment after each 1 MiB
    store.open()
    for i in range(10):
        store.append(V, "q", MessageRecord(i, "", "q", b"\x80\x00", body_of(i)))
    synced(store)
    store.close()
    where = dict(
        sqlite3.connect(db).execute("SELECT msg_id, seg FROM messages WHERE seg IS NOT NULL").fetchall()
    )
    segs = sorted(set(where.values()))
    assert len(segs) >= 3
    missing, short = segs[0], segs[-1]
    (tmp_path / "leveret.db.segments" / f"{missing:08d}.seg").unlink()
    with open(tmp_path / "leveret.db.segments" / f"{short:08d}.seg", "r+b") as f:
        f.truncate(100)
    lost = {i for i, s in where.items() if s in (missing, short)}

    store = SqliteStore(db)
    with caplog.at_level(logging.ERROR, logger="leveret.storage"):
        r = store.open()
    try:
        assert [m.msg_id for m in r.messages[V, "q"]] == [i for i in range(10) if i not in lost]
        assert all(m.body == body_of(m.msg_id) for m in r.messages[V, "q"])
        assert r.set_aside == len(lost)
        assert "segment file is missing" in caplog.text and "segment file is 100 bytes long" in caplog.text
        assert r.next_msg_id == 10
        # Still working: a new large message goes to a new segment, and reads back.
        store.append(V, "q", MessageRecord(10, "", "q", b"", body_of(10)))
        kept = min(set(where) - lost)  # a large one in a segment still there
        assert store.read_bodies(V, "q", [10, kept]) == {10: body_of(10), kept: body_of(kept)}
    finally:
        store.close()
    rows = sqlite3.connect(db).execute("SELECT msg_id, reason FROM quarantine_messages").fetchall()
    assert {i for i, _ in rows} == lost
    assert all("is not on disk" in reason for _, reason in rows)


def test_a_segment_is_deleted_once_all_its_messages_are_acked(start: Start, data_dir: Path) -> None:
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("big", durable=True)
    ch.confirm_delivery()
    for i in range(60):
        ch.basic_publish("", "big", bytes([i]) * 2_000_000, PERSISTENT)  # 120 MB
    on_disk = sum(p.stat().st_size for p in segment_files(data_dir))
    assert on_disk >= 120_000_000
    ch.basic_qos(prefetch_count=4)
    n = 0
    for method, _props, body in ch.consume("big", inactivity_timeout=1.0):
        if method is None:
            break
        assert body == bytes([n]) * 2_000_000
        ch.basic_ack(method.delivery_tag)
        n += 1
    assert n == 60
    ch.queue_declare("big", durable=True, passive=True)  # a round trip: the last ack is in
    deadline = threading.Event()
    for _ in range(100):  # acks are written within a few ms (no sync waits for them)
        if not segment_files(data_dir):
            break
        deadline.wait(0.05)
    assert segment_files(data_dir) == []
    close_quietly(conn)


def test_small_and_large_bodies_recover_together_in_order(tmp_path: Path) -> None:
    db = tmp_path / "leveret.db"
    store = SqliteStore(db, segment_max=2 << 20)
    store.open()
    for i in range(25):
        store.append(V, f"q{i % 2}", MessageRecord(i, "x", "rk", b"\x80\x00", body_of(i), expires_at=None))
    store.mark_delivered(V, "q0", [0, 2, 4])
    store.remove(V, "q1", [3, 13])  # one large, one small
    synced(store)
    store.close()
    in_rows = sqlite3.connect(db).execute("SELECT count(*) FROM messages WHERE seg IS NULL").fetchone()[0]
    assert 0 < in_rows < 23

    store = SqliteStore(db)
    r = store.open()
    try:
        for q in ("q0", "q1"):
            want = [i for i in range(25) if f"q{i % 2}" == q and i not in (3, 13)]
            assert [m.msg_id for m in r.messages[V, q]] == want
            for m in r.messages[V, q]:
                assert m.body == body_of(m.msg_id)
                assert m.delivered == (m.msg_id in (0, 2, 4))
        # Paging reads the same bodies back.
        assert store.read_bodies(V, "q1", [1, 9, 11]) == {i: body_of(i) for i in (1, 9, 11)}
    finally:
        store.close()


def test_a_data_dir_of_schema_version_3_is_upgraded_and_keeps_its_large_bodies(tmp_path: Path) -> None:
    db = tmp_path / "leveret.db"
    conn = sqlite3.connect(db)
    for step in MIGRATIONS[:3]:  # the schema as version 3 wrote it: every body in its row
        for statement in step:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO queue_ids VALUES (1, '/', 'q')")
    for i in range(4):
        conn.execute(
            "INSERT INTO messages VALUES (1, ?, '', 'q', x'8000', ?, 0, NULL)", (i, body_of(i))
        )
    conn.commit()
    conn.close()

    store = SqliteStore(db)
    r = store.open()
    assert [m.body for m in r.messages[V, "q"]] == [body_of(i) for i in range(4)]
    store.append(V, "q", MessageRecord(4, "", "q", b"\x80\x00", body_of(4)))  # large: a segment
    store.remove(V, "q", [3])  # large, but in its row
    synced(store)
    store.close()
    assert len(segment_files(tmp_path)) == 1

    again = SqliteStore(db)
    r = again.open()
    try:
        assert [(m.msg_id, m.body) for m in r.messages[V, "q"]] == [(i, body_of(i)) for i in (0, 1, 2, 4)]
    finally:
        again.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    assert conn.execute("SELECT msg_id, seg IS NOT NULL FROM messages ORDER BY msg_id").fetchall() == [
        (0, 0), (1, 0), (2, 0), (4, 1)
    ]  # fmt: skip
    conn.close()


def test_a_backup_takes_the_segments_along(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = SqliteStore(data / "leveret.db", segment_max=1 << 20)
    store.open()
    for i in range(8):
        store.append(V, "q", MessageRecord(i, "", "q", b"\x80\x00", body_of(i)))
    store.remove(V, "q", [4])
    synced(store)
    store.close()
    copy = tmp_path / "copy"
    run = [sys.executable, "-m", "leveret", "backup", "--data-dir", str(data), str(copy)]
    out = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert segment_files(copy)
    restored = SqliteStore(copy / "leveret.db")
    r = restored.open()
    try:
        assert [(m.msg_id, m.body) for m in r.messages[V, "q"]] == [(i, body_of(i)) for i in range(8) if i != 4]
        assert r.set_aside == 0
    finally:
        restored.close()


def test_a_message_set_aside_keeps_its_segment_body_in_quarantine(tmp_path: Path) -> None:
    db = tmp_path / "leveret.db"
    store = SqliteStore(db, segment_max=1 << 20)
    store.open()
    for i in range(6):
        store.append(V, "q", MessageRecord(i, "", "q", b"\x80\x00", body_of(i)))
        store.append(V, "other", MessageRecord(i, "", "other", b"\x80\x00", body_of(i)))
    synced(store)
    store.set_aside_messages(V, "q", [3, 4], "the broker could not apply it")
    store.set_aside(QueueRecord(V, "other"), "its arguments are not valid")
    synced(store)
    store.close()
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT queue, msg_id, body FROM quarantine_messages ORDER BY queue, msg_id").fetchall()
    conn.close()
    assert rows == [("other", i, body_of(i)) for i in range(6)] + [("q", i, body_of(i)) for i in (3, 4)]
    again = SqliteStore(db)
    r = again.open()
    try:
        assert [(m.msg_id, m.body) for m in r.messages[V, "q"]] == [(i, body_of(i)) for i in (0, 1, 2, 5)]
        assert (V, "other") not in r.messages
    finally:
        again.close()


def test_a_broker_whose_segments_are_gone_starts_and_serves_the_rest(start: Start, data_dir: Path) -> None:
    b = start()
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("jobs", durable=True)
    ch.confirm_delivery()
    for i in range(6):
        ch.basic_publish("", "jobs", body_of(i), PERSISTENT)  # 0, 1 (32,001 B) and 5 in rows, 2-4 not
    close_quietly(conn)
    assert b.terminate() == 0
    for p in segment_files(data_dir):
        p.unlink()
    b = start()
    conn = connect(b)
    ch = conn.channel()
    got = []
    for method, _props, body in ch.consume("jobs", inactivity_timeout=0.5):
        if method is None:
            break
        got.append(body)
        ch.basic_ack(method.delivery_tag)
    close_quietly(conn)
    assert got == [body_of(0), body_of(1), body_of(5)]
    assert "3 records could not be recovered and are set aside" in "".join(b.log)
