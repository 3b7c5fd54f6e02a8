"""The durable store: SQLite in WAL mode behind one writer thread, with group commit.

How operations are handed over, batched and confirmed, what a full disk or a failed write
does: :mod:`leveret.storage.handoff` (which knows nothing of SQL). Schema, migrations and
reading a file back: :mod:`leveret.storage.sqlite_schema`. The statements that write a batch's
message rows: :mod:`leveret.storage.sqlite_rows`. This module applies a batch in
one SQLite transaction and looks after the WAL.

Durability. A commit that backs at least one ``sync`` (or ``close``) runs with
``synchronous=FULL``: the WAL is fsynced before the callbacks run. Other commits
(typically acks only) run with ``synchronous=NORMAL`` and skip the fsync; they are
still atomic and survive a process crash, and the next FULL commit's fsync covers
their frames too, since the WAL is appended to sequentially.

Batching. An ``append`` and a ``remove`` of the same message in one batch cancel
out and never touch the disk (a consumer that keeps up acks before the flush).
Appends are written 32 rows per statement, delivered marks and removals one statement per queue
(:mod:`leveret.storage.sqlite_rows`).

WAL size. Automatic checkpoints are off; after a commit the writer reads how many
frames the WAL holds (``mxFrame`` in the wal-index header of the ``-shm`` file, a
4-byte pread) and runs a PASSIVE checkpoint past ``checkpoint_pages``, off the
confirm path (after the callbacks; an inline commit leaves the checkpoint to the
writer). After that checkpoint SQLite writes the WAL again from its start.

WAL preallocation. An fsync that also has to grow the file costs twice one that
overwrites blocks already allocated (the file system journals the new size and
extents: measured 200 vs 100 us per commit here). So ``open`` checkpoints what it
recovered, then fills the WAL with zeros up to a bit more than ``checkpoint_pages``
and keeps it that size (``journal_size_limit``); every commit then overwrites
allocated blocks. Zeros are not valid frames (checksums), so recovery stops at the
last real one. ``close`` runs a TRUNCATE checkpoint, leaving an empty WAL. Brokers for tests
(``wal_preallocate=False``, the embedded broker's default) skip the zeros: they live for seconds.

Recovery. SQLite drops a torn WAL tail itself (frames after the last valid commit
frame, checked by checksums). A main database file that is not a database or is
malformed (SQLITE_NOTADB, SQLITE_CORRUPT at open) is moved aside with an error
log and the store starts empty, unless ``quarantine_corrupt=False``; a broker that
crash-loops on a bad file helps nobody, and the bad file is kept for inspection.
For the same reason a single row that cannot be read (arguments that do not decode)
is set aside: logged by name, moved with what belongs to it (a queue's messages and
bindings) into the ``quarantine_*`` tables, and recovery goes on without it;
:meth:`SqliteStore.set_aside` does the same for records the broker cannot apply.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leveret.storage.base import (
    BindingRecord,
    ExchangeRecord,
    QueueRecord,
    Recovered,
    SetAside,
    describe,
)
from leveret.storage.bodies import SegmentBodies
from leveret.storage.codec import encode_arguments
from leveret.storage.handoff import (
    _APPEND,
    _CLOSE,
    _DELETE_QUEUE,
    _DELIVERED,
    _EXEC,
    _READ,
    _REMOVE,
    _SYNC,
    LAZY_DELAY,
    RETRY_INTERVAL,
    HandOff,
)
from leveret.storage.segments import SEGMENT_MAX, SEGMENT_THRESHOLD, Segments
from leveret.storage.sqlite_rows import Row, delete_rows, has_json_each, insert_rows, mark_delivered
from leveret.storage.sqlite_schema import (
    COPY_MESSAGES,
    QUARANTINE_TABLES,
    SCHEMA_VERSION,
    SEGMENT_BODY,
    binding_params,
    is_corruption,
    is_space_error,
    log_set_aside,
    migrate,
    move_aside,
    read_contents,
    set_aside_sql,
)

__all__ = ["LAZY_DELAY", "RETRY_INTERVAL", "SCHEMA_VERSION", "SqliteStore", "disk_free_bytes"]

log = logging.getLogger("leveret.storage")

# Most bytes the WAL is preallocated to (see "WAL preallocation" above).
WAL_ALLOC_MAX = 64 << 20
# ... and at most this fraction (1/n) of the free space found at open.
WAL_DISK_SHARE = 16

# Bytes a batch is counted for per operation, on top of message bodies (space probe).
_OP_BYTES = 128

_SELECT_BODIES = (
    "SELECT msg_id, body, seg, seg_off, seg_len FROM messages WHERE queue = ? AND msg_id BETWEEN ? AND ?"
)


def disk_free_bytes(path: Path) -> int:
    """Free bytes, for unprivileged users, on the file system holding ``path`` (a file or dir)."""
    target = path if path.is_dir() else path.parent
    return shutil.disk_usage(target).free


class SqliteStore(HandOff):
    """A :class:`~leveret.storage.base.Store` in one SQLite file (``path``), WAL mode.

    ``checkpoint_pages``: WAL size, in database pages, past which the writer
    checkpoints. ``batch_max``: most operations applied in one transaction.
    ``inline_max``: most pending operations a kick commits on the loop thread after
    :meth:`attach_loop` (0: never; see the module docstring).
    ``on_error(exc)`` is called if writing fails for another reason than space; the
    store is failed from then on. ``on_stall(exc)`` is called when a write fails for
    lack of space and ``on_stall(None)`` when a retry got through;
    ``on_low_space(free)`` when the writer finds less than ``disk_free_limit`` bytes
    free (see the module docstring). Each may be called on the writer thread or on
    the loop thread (in-place commits), with the store's lock held: hand over, do not
    call the store. Call :meth:`open` before any other method, from the thread that
    will call the others.
    """

    __slots__ = (
        "_checkpoint_bytes",
        "_checkpoint_pages",
        "_conn",
        "_frame_bytes",
        "_full_sync",
        "_json",
        "_next_checkpoint",
        "_qid_undo",
        "_qids",
        "_quarantine",
        "_bodies",
        "_wal_preallocate",
        "_shm_fd",
        "_wal_alloc",
        "_wal_path",
    )

    def __init__(
        self,
        path: Path,
        *,
        checkpoint_pages: int = 8192,
        batch_max: int = 10_000,
        inline_max: int = 64,
        on_error: Callable[[BaseException], None] | None = None,
        quarantine_corrupt: bool = True,
        disk_free_limit: int = 0,
        on_stall: Callable[[BaseException | None], None] | None = None,
        on_low_space: Callable[[int], None] | None = None,
        segment_threshold: int = SEGMENT_THRESHOLD,
        segment_max: int = SEGMENT_MAX,
        wal_preallocate: bool = True,
    ) -> None:
        if checkpoint_pages < 1 or batch_max < 1 or inline_max < 0:
            raise ValueError("checkpoint_pages and batch_max must be positive, inline_max not negative")
        super().__init__(
            path,
            batch_max=batch_max,
            inline_max=inline_max,
            on_error=on_error,
            disk_free_limit=disk_free_limit,
            on_stall=on_stall,
            on_low_space=on_low_space,
        )
        self._wal_path = Path(f"{self._path}-wal")
        self._checkpoint_pages = checkpoint_pages
        self._json = False  # json_each available: known once open() has a connection
        self._checkpoint_bytes = 0  # known once open() has read the page size
        self._next_checkpoint = 0
        self._frame_bytes = 0
        self._wal_alloc = 0
        self._shm_fd = -1
        self._quarantine = quarantine_corrupt
        self._conn: sqlite3.Connection | None = None
        self._qids: dict[tuple[str, str], int] = {}
        self._full_sync = True
        # (key, qid before) for each change a batch made to _qids, undone if it rolls back.
        self._qid_undo: list[tuple[tuple[str, str], int | None]] = []
        self._wal_preallocate = wal_preallocate  # False: the WAL grows as it is written (test brokers)
        # Bodies of at least segment_threshold bytes go to segment files, which rows reference
        # (leveret.storage.bodies, leveret.storage.segments).
        self._bodies = SegmentBodies(
            Segments(Path(f"{self._path}.segments"), segment_max=segment_max), segment_threshold
        )

    # -- life cycle ---------------------------------------------------------------

    def open(self) -> Recovered:
        """Open or create the database, recover, start the writer, return the contents.

        Blocks (it reads everything). Raises :class:`sqlite3.Error` or
        :class:`OSError` if the file cannot be used, and :class:`RuntimeError` if it
        was written by a newer schema version.
        """
        if self._thread is not None or self._closed:
            raise RuntimeError("SqliteStore.open() may be called once")
        start = time.perf_counter()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        try:
            recovered = self._open_and_read()
        except sqlite3.DatabaseError as exc:
            if not (self._quarantine and is_corruption(exc)):
                raise
            move_aside(self._path, exc)
            recovered = self._open_and_read()
        self._start_writer()
        recovered.seconds = time.perf_counter() - start
        return recovered

    def disk_free_bytes(self) -> int:
        """Bytes the store can still write: free on its file system plus the unused WAL reservation."""
        return disk_free_bytes(self._path.parent) + self._wal_unused()

    def _wal_unused(self) -> int:
        try:
            size = os.stat(self._wal_path).st_size
        except OSError:
            return 0
        return max(0, min(size, self._wal_alloc) - self._wal_size())

    def _read_stalled(self, vhost: str, queue: str, msg_ids: list[int]) -> dict[int, bytes]:
        """Bodies from the pending appends, else from the file (caller holds ``_lock``)."""
        wanted = set(msg_ids)
        result: dict[int, bytes] = {}
        for op in self._ops:
            if op[0] == _APPEND and op[3].msg_id in wanted and op[1] == vhost and op[2] == queue:
                result[op[3].msg_id] = op[3].body
        missing = wanted.difference(result)
        qid = self._qids.get((vhost, queue))
        if missing and qid is not None and self._conn is not None:
            self._select_bodies(self._conn, qid, missing, result)
        return result

    def _read_written(self, vhost: str, queue: str, msg_ids: list[int]) -> dict[int, bytes | bytearray]:
        """Bodies among ``msg_ids`` known to be in a segment file already, read on the calling thread
        without waiting for the writer (a deep queue's page-in must not wait for a batch's fsync)."""
        qid = self._qids.get((vhost, queue))
        return {} if qid is None else self._bodies.read_written(qid, msg_ids)

    def _select_bodies(self, conn: sqlite3.Connection, qid: int, wanted: set[int], result: dict[int, bytes]) -> None:
        """Bodies of ``wanted`` ids of queue ``qid`` into ``result``, from their rows or segments."""
        read = self._bodies.segments.read
        for i, body, seg, off, length in conn.execute(_SELECT_BODIES, (qid, min(wanted), max(wanted))):
            if i in wanted:
                if seg is None:
                    result[i] = bytes(body)
                else:
                    data = read(seg, off, length)
                    if data is not None:  # a segment lost under a running broker: left out
                        result[i] = data

    # -- metadata: encoded here so a bad argument raises TypeError at the caller ----

    def save_queue(self, q: QueueRecord) -> None:
        sql = "INSERT OR REPLACE INTO queues VALUES (?, ?, ?, ?, ?)"
        params = (q.vhost, q.name, q.durable, q.auto_delete, encode_arguments(q.arguments))
        self._put((_EXEC, ((sql, params),)))

    def delete_queue(self, vhost: str, name: str) -> None:
        self._put((_DELETE_QUEUE, vhost, name))

    def put_definition(self, kind: str, key: str, value: str | None) -> None:
        if value is None:
            self._put((_EXEC, (("DELETE FROM definitions WHERE kind = ? AND key = ?", (kind, key)),)))
        else:
            self._put((_EXEC, (("INSERT OR REPLACE INTO definitions VALUES (?, ?, ?)", (kind, key, value)),)))

    def save_exchange(self, x: ExchangeRecord) -> None:
        sql = "INSERT OR REPLACE INTO exchanges VALUES (?, ?, ?, ?, ?, ?, ?)"
        args = encode_arguments(x.arguments)
        params = (x.vhost, x.name, x.type, x.durable, x.auto_delete, x.internal, args)
        self._put((_EXEC, ((sql, params),)))

    def delete_exchange(self, vhost: str, name: str) -> None:
        self._put(
            (
                _EXEC,
                (
                    ("DELETE FROM exchanges WHERE vhost = ? AND name = ?", (vhost, name)),
                    (
                        "DELETE FROM bindings WHERE vhost = ?1 AND (source = ?2"
                        " OR (destination = ?2 AND destination_type = 'exchange'))",
                        (vhost, name),
                    ),
                ),
            )
        )

    def save_binding(self, b: BindingRecord) -> None:
        sql = "INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?, ?, ?)"
        self._put((_EXEC, ((sql, binding_params(b)),)))

    def delete_binding(self, b: BindingRecord) -> None:
        sql = (
            "DELETE FROM bindings WHERE vhost = ? AND source = ? AND destination = ?"
            " AND destination_type = ? AND routing_key = ? AND arguments = ?"
        )
        self._put((_EXEC, ((sql, binding_params(b)),)))

    def set_aside(self, record: SetAside, reason: str) -> None:
        """Quarantine ``record`` (see :meth:`Store.set_aside`): copied to ``quarantine_*``, then deleted."""
        self._put((_EXEC, set_aside_sql(record, reason)))
        if isinstance(record, QueueRecord):
            self._put((_DELETE_QUEUE, record.vhost, record.name))  # forgets its queue id too
        log_set_aside(self._path, describe(record), reason)

    def set_aside_messages(self, vhost: str, queue: str, msg_ids: list[int], reason: str) -> None:
        """Quarantine messages of ``queue`` (see :meth:`Store.set_aside_messages`)."""
        if not msg_ids:
            return
        head = (time.time(), reason)
        copies = tuple((COPY_MESSAGES + " AND m.msg_id = ?", (*head, vhost, queue, i)) for i in msg_ids)
        self._put((_EXEC, (*((sql, ()) for sql in QUARANTINE_TABLES), *copies)))
        self._put((_REMOVE, vhost, queue, tuple(msg_ids)))
        shown = ", ".join(map(str, msg_ids[:10])) + (", ..." if len(msg_ids) > 10 else "")
        what = f"{len(msg_ids)} message(s) ({shown}) of queue '{queue}' in vhost '{vhost}'"
        log_set_aside(self._path, what, reason)

    # -- opening and recovery (caller's thread, before the writer starts) ---------

    def _open_and_read(self) -> Recovered:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.create_function(SEGMENT_BODY, 3, self._segment_body)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"{self._path}: SQLite refused WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # we checkpoint, off the confirm path
            conn.execute("PRAGMA cache_size = -16384")  # 16 MiB: keeps the message index hot
            self._json = has_json_each(conn)
            migrate(conn, self._path)
            segments = self._bodies.segments
            on_disk = segments.on_disk()
            recovered, self._qids, refs = read_contents(conn, self._path, segments.read, on_disk)
            self._bodies.start(refs, max(on_disk, default=0))
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            self._frame_bytes = page_size + 24  # a WAL frame: 24-byte header + one page
            self._checkpoint_bytes = self._checkpoint_pages * self._frame_bytes
            self._next_checkpoint = self._checkpoint_bytes
            # Room for a checkpoint's worth plus a full batch of small messages (capped).
            self._wal_alloc = min(32 + self._checkpoint_bytes + (self._checkpoint_bytes >> 2), WAL_ALLOC_MAX)
            self._preallocate_wal(conn)
            self._probe_space()
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return recovered

    def _segment_body(self, seg: int, off: int, length: int) -> bytes | None:
        """SQL function: a body from a segment file (None if it is not there), for copies to quarantine."""
        try:
            return self._bodies.segments.read(seg, off, length)
        except OSError:
            return None

    def _preallocate_wal(self, conn: sqlite3.Connection) -> None:
        """Checkpoint what was recovered and fill the (then empty) WAL with zeros; see the docstring."""
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            if not is_space_error(exc):
                raise
            # A full disk must not stop the broker from starting: what the WAL holds is
            # committed and read from there; the writer checkpoints once there is room.
            log.warning(
                "storage %s: no disk space to checkpoint what was recovered (%s); starting with the WAL"
                " as it is",
                self._path,
                exc,
            )
            busy = 1
        share = disk_free_bytes(self._path.parent) // WAL_DISK_SHARE
        if share < self._wal_alloc:
            # A small disk: reserve less and checkpoint sooner (never below a few hundred frames).
            self._wal_alloc = share
            floor = 256 * self._frame_bytes
            self._checkpoint_bytes = max(min(self._checkpoint_bytes, share * 4 // 5), floor)
            self._next_checkpoint = self._checkpoint_bytes
            log.info("storage %s: small disk, WAL reservation %d bytes (1/%d of free space)",
                     self._path, share, WAL_DISK_SHARE)  # fmt: skip
        conn.execute(f"PRAGMA journal_size_limit = {max(self._wal_alloc, self._checkpoint_bytes)}")
        if not busy and self._wal_preallocate:
            fd = os.open(self._wal_path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                size = start = os.fstat(fd).st_size
                chunk = bytes(1 << 20)
                try:
                    while size < self._wal_alloc:
                        size += os.pwrite(fd, chunk[: self._wal_alloc - size], size)
                    os.fsync(fd)
                except OSError as exc:  # a full disk must not stop the broker from starting
                    os.ftruncate(fd, start)
                    log.warning(
                        "storage %s: could not preallocate the WAL (%s); starting without it, commits will"
                        " be slower until it has grown",
                        self._path,
                        exc,
                    )
            finally:
                os.close(fd)
        try:
            self._shm_fd = os.open(f"{self._path}-shm", os.O_RDONLY)
        except OSError:
            self._shm_fd = -1  # falls back to the WAL file's size

    def _apply(self, batch: list[tuple[Any, ...]], durable: bool) -> list[Callable[[], None]]:
        conn = self._conn
        assert conn is not None
        if durable != self._full_sync:
            # Cannot be changed inside a transaction, hence decided while draining.
            conn.execute("PRAGMA synchronous = FULL" if durable else "PRAGMA synchronous = NORMAL")
            self._full_sync = durable
        qids = self._qids
        self._qid_undo.clear()
        seg_counts = self._bodies.begin()
        threshold = self._bodies.threshold
        callbacks: list[Callable[[], None]] = []
        # Pending message changes, applied at the end (or before a delete_queue). Under
        # the append contract (an id is not re-appended while present), inserting
        # first, then updating, then deleting gives the same result as call order.
        inserts: dict[tuple[int, int], Row] = {}
        # Delivered marks, in order; one whose row is deleted in the same batch is never written.
        delivered: dict[tuple[int, int], None] = {}
        deletes: list[tuple[int, int]] = []
        deleted: set[tuple[int, int]] = set()  # ids with a pending delete or delivered mark
        nbytes = _OP_BYTES * len(batch)
        conn.execute("BEGIN")
        try:
            for op in batch:
                kind = op[0]
                if kind == _APPEND:
                    msg = op[3]
                    nbytes += len(msg.body)
                    qid = qids.get((op[1], op[2])) or self._new_qid(conn, op[1], op[2])
                    if (qid, msg.msg_id) in deleted:
                        # Appended after a remove/deliver of the same id in this batch: those
                        # changes are applied first so they cannot overtake the insert.
                        self._write_messages(conn, inserts, delivered, deletes)
                        inserts, delivered, deletes, deleted = {}, {}, [], set()
                    if msg.expires_at is None and len(msg.body) < threshold:
                        inserts[qid, msg.msg_id] = (
                            qid, msg.msg_id, msg.exchange, msg.routing_key, msg.properties, msg.body, msg.delivered,
                        )  # fmt: skip
                    else:
                        inserts[qid, msg.msg_id] = (
                            qid, msg.msg_id, msg.exchange, msg.routing_key, msg.properties, msg.body, msg.delivered,
                            msg.expires_at, None, None, None,
                        )  # fmt: skip
                elif kind == _REMOVE:
                    known = qids.get((op[1], op[2]))
                    if known is not None:
                        # An id appended in this batch is cancelled: never written at all.
                        pop = inserts.pop
                        gone = [(known, i) for i in op[3] if pop((known, i), None) is None]
                        deletes.extend(gone)
                        deleted.update(gone)
                        if delivered:
                            unmark = delivered.pop
                            for key in gone:
                                unmark(key, None)
                elif kind == _DELIVERED:
                    known = qids.get((op[1], op[2]))
                    if known is not None:
                        for msg_id in op[3]:
                            row = inserts.get((known, msg_id))
                            if row is None:
                                delivered[known, msg_id] = None
                                deleted.add((known, msg_id))
                            else:
                                inserts[known, msg_id] = (*row[:6], True, *row[7:])
                elif kind == _SYNC:
                    callbacks.append(op[1])
                elif kind == _READ:
                    self._write_messages(conn, inserts, delivered, deletes)  # the read must see them
                    inserts, delivered, deletes, deleted = {}, {}, [], set()
                    self._read_bodies(conn, op)
                elif kind == _EXEC:
                    for sql, params in op[1]:
                        conn.execute(sql, params)
                elif kind == _DELETE_QUEUE:
                    # A barrier: earlier message changes go first (they may add rows
                    # to this queue), then everything of the queue goes.
                    self._write_messages(conn, inserts, delivered, deletes)
                    inserts, delivered, deletes, deleted = {}, {}, [], set()
                    self._delete_queue(conn, op[1], op[2])
                elif kind == _CLOSE:
                    break  # anything after close() was called is not ours to write
            self._write_messages(conn, inserts, delivered, deletes)
            self._bodies.segments.sync()  # the bodies the rows reference are on disk before the rows are
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._bodies.rollback(seg_counts)
            raise
        self._bodies.committed()
        self._note_written(nbytes)
        return callbacks

    def _read_bodies(self, conn: sqlite3.Connection, op: tuple[Any, ...]) -> None:
        _, vhost, name, ids, result, done = op
        try:
            qid = self._qids.get((vhost, name))
            if qid is not None:
                self._select_bodies(conn, qid, set(ids), result)
        finally:
            done.set()

    def _write_messages(
        self,
        conn: sqlite3.Connection,
        inserts: dict[tuple[int, int], Row],
        delivered: dict[tuple[int, int], None],
        deletes: list[tuple[int, int]],
    ) -> None:
        """Write pending message changes; large bodies are appended to a segment, their rows point there."""
        if inserts:
            self._bodies.place(inserts)
            insert_rows(conn, inserts.values())
        if delivered:
            mark_delivered(conn, delivered, self._json)
        if deletes:
            delete_rows(conn, deletes, self._json)
            self._bodies.removed(deletes)

    def _new_qid(self, conn: sqlite3.Connection, vhost: str, name: str) -> int:
        qid = conn.execute("INSERT INTO queue_ids (vhost, name) VALUES (?, ?)", (vhost, name)).lastrowid
        assert qid is not None
        self._qid_undo.append(((vhost, name), self._qids.get((vhost, name))))
        self._qids[vhost, name] = qid
        return qid

    def _delete_queue(self, conn: sqlite3.Connection, vhost: str, name: str) -> None:
        qid = self._qids.pop((vhost, name), None)
        if qid is not None:
            self._qid_undo.append(((vhost, name), qid))
            conn.execute("DELETE FROM messages WHERE queue = ?", (qid,))
            self._bodies.forget_queue(qid)
            conn.execute("DELETE FROM queue_ids WHERE id = ?", (qid,))
        conn.execute("DELETE FROM queues WHERE vhost = ? AND name = ?", (vhost, name))
        conn.execute(
            "DELETE FROM bindings WHERE vhost = ? AND destination = ? AND destination_type = 'queue'",
            (vhost, name),
        )

    def _wal_size(self) -> int:
        """Bytes of frames in the WAL (not the file's size: it is preallocated)."""
        if self._shm_fd >= 0:
            try:
                # wal-index header (https://www.sqlite.org/walformat.html): mxFrame, a
                # native-endian u32 at offset 16, is the number of valid frames.
                frames = int.from_bytes(os.pread(self._shm_fd, 4, 16), sys.byteorder)
            except OSError:
                return 0
            return frames * self._frame_bytes
        try:
            return os.stat(self._wal_path).st_size
        except FileNotFoundError:
            return 0

    def _checkpoint_due(self) -> bool:
        return self._wal_size() >= self._next_checkpoint

    def _maybe_checkpoint(self) -> None:
        size = self._wal_size()
        if size < self._next_checkpoint:
            return
        assert self._conn is not None
        try:
            busy, wal_pages, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            if not is_space_error(exc):
                raise
            # What the WAL holds is committed; the checkpoint is tried again once the WAL has
            # grown by another checkpoint's worth, or at the next retry of a stalled batch.
            if self._stalled is None:  # while stalled it is retried with every batch: say it once
                log.warning("storage %s: checkpoint failed for lack of disk space (%s)", self._path, exc)
            self._next_checkpoint = size + self._checkpoint_bytes
            self._probe_space()
            return
        if busy or done < wal_pages:
            # Someone else is reading the file and pins the WAL; do not retry after
            # every commit, wait until it has grown by another checkpoint's worth.
            self._next_checkpoint = size + self._checkpoint_bytes
        else:
            self._next_checkpoint = self._checkpoint_bytes

    def _shutdown(self) -> None:
        conn = self._conn
        self._conn = None
        if conn is None:
            return
        if self._shm_fd >= 0:
            os.close(self._shm_fd)
            self._shm_fd = -1
        try:
            if self._error is None:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("storage %s: final checkpoint failed: %s", self._path, exc)
        finally:
            conn.close()
            self._bodies.segments.close()


    # -- hooks of HandOff -----------------------------------------------------------

    def _is_open(self) -> bool:
        return self._conn is not None

    def _out_of_space(self, exc: BaseException) -> bool:
        return is_space_error(exc)

    def _rolled_back(self) -> None:
        for key, qid in reversed(self._qid_undo):  # the queue ids of the rolled-back batch are not in the file
            if qid is None:
                self._qids.pop(key, None)
            else:
                self._qids[key] = qid

    def _before_retry(self) -> None:
        # A checkpoint lets the WAL start over in blocks it already has.
        self._next_checkpoint = min(self._next_checkpoint, self._checkpoint_bytes)
        self._maybe_checkpoint()
