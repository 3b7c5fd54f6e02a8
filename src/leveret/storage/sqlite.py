"""The durable store: SQLite in WAL mode behind one writer thread, with group commit.

Threads. The broker's loop thread calls the mutating methods; each only appends a
tuple to a :class:`collections.deque` (a C-level append, no I/O, no lock). Whoever
holds ``_lock`` applies what is pending: it pops up to ``batch_max`` operations,
applies them in one transaction, commits, and then calls the ``sync`` callbacks
that were part of that batch. There is no timer: a batch is flushed as soon as it
is handed over, so a lone publisher waits for one fsync and a thousand concurrent
ones share one.

Who writes. By default every operation wakes the writer thread, which owns the
work. After :meth:`attach_loop` (the broker does this), operations are handed over
once per event-loop turn instead: the first operation of a turn schedules a kick
with ``call_soon``. If the turn submitted a ``sync``, at most ``inline_max``
operations are pending and the writer is idle, the kick commits them right there
on the loop thread; otherwise it wakes the writer. A lone confirming publisher
(Celery's ``confirm_publish``) then pays for its fsync and nothing else, instead of
two thread wake-ups on top (one to the writer, one back to the loop). Under load
the writer is busy, the kick finds the lock taken, and the writer's group commit
does the work while the loop goes on. All popping happens under ``_lock``, so order
is kept whichever thread writes. A turn without a ``sync`` (acks, delivered marks,
publishes nobody confirms) is not urgent: its operations wait for the next
``sync`` to take them along, or ``LAZY_DELAY`` (5 ms), or ``_lazy_max`` of them,
whichever comes first; a consumer's ack then costs no commit of its own.

Durability. A commit that backs at least one ``sync`` (or ``close``) runs with
``synchronous=FULL``: the WAL is fsynced before the callbacks run. Other commits
(typically acks only) run with ``synchronous=NORMAL`` and skip the fsync; they are
still atomic and survive a process crash, and the next FULL commit's fsync covers
their frames too, since the WAL is appended to sequentially.

Batching. An ``append`` and a ``remove`` of the same message in one batch cancel
out and never touch the disk (a consumer that keeps up acks before the flush).
Appends, deliveries and removals are written with ``executemany``.

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
last real one. ``close`` runs a TRUNCATE checkpoint, leaving an empty WAL.

Disk full. A batch that fails for lack of space (SQLITE_FULL, ENOSPC, EDQUOT) is
rolled back and put back at the head of the queue: the store is *stalled*, not
failed. ``on_stall(exc)`` is called once, nothing is committed in place any more,
and the writer retries the batch every ``RETRY_INTERVAL`` (at once on ``close``).
Later operations queue up behind it and reads of paged-out bodies are served from
the queue and the file. When a retry commits, ``on_stall(None)`` is called and the
callbacks run as usual: every confirm is late, none is lost, none is given for
something not written. A ``close`` that still finds no space gives up, logs how many
operations were lost and leaves :meth:`failure` set (no clean stop).

Space probe. With ``disk_free_limit`` set, the writer counts the bytes each batch
could take and runs a ``statvfs`` once they may have used up the margin above the
limit (so every batch once it is near); below the limit it calls
``on_low_space(free)``, so the alarm is not left to a once-a-second probe that
writes can outrun. "Free" (:meth:`disk_free_bytes`) includes the unused part of the
WAL reservation, which only the store can use; and the reservation itself is at
most ``1/WAL_DISK_SHARE`` of the free space found at open, so a small disk is not
spent on it.

Failure. Any other exception in the writer (I/O error, corruption, a bug) rolls
the batch back, is logged on ``leveret.storage`` and passed to ``on_error`` (on
the thread that wrote). The store is then failed for good: later operations are
dropped and no further ``sync`` callback is ever called, because one would claim
durability for operations that were lost. The broker is expected to close its
clients and be restarted.

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

import errno
import logging
import os
import shutil
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from leveret.storage.base import (
    BindingRecord,
    ExchangeRecord,
    LoopLike,
    MessageRecord,
    QueueRecord,
    Recovered,
    SetAside,
    describe,
)
from leveret.storage.codec import decode_arguments, encode_arguments

log = logging.getLogger("leveret.storage")

SCHEMA_VERSION = 3

# _MIGRATIONS[v] takes a database from user_version v to v + 1, in one transaction.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE queues (
            vhost TEXT NOT NULL, name TEXT NOT NULL,
            durable INTEGER NOT NULL, auto_delete INTEGER NOT NULL, arguments TEXT NOT NULL,
            PRIMARY KEY (vhost, name))""",
        """CREATE TABLE exchanges (
            vhost TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL,
            durable INTEGER NOT NULL, auto_delete INTEGER NOT NULL, internal INTEGER NOT NULL,
            arguments TEXT NOT NULL,
            PRIMARY KEY (vhost, name))""",
        # A binding's identity is all of its fields, arguments (canonical JSON) included.
        """CREATE TABLE bindings (
            vhost TEXT NOT NULL, source TEXT NOT NULL, destination TEXT NOT NULL,
            destination_type TEXT NOT NULL, routing_key TEXT NOT NULL, arguments TEXT NOT NULL,
            PRIMARY KEY (vhost, source, destination, destination_type, routing_key, arguments))""",
        "CREATE INDEX bindings_by_destination ON bindings (vhost, destination, destination_type)",
        # Messages name their queue by a small integer: it keeps every message row and
        # the (queue, msg_id) index short. Independent of `queues`, so a message
        # appended to a queue that was never saved is still kept, as in MemoryStore.
        """CREATE TABLE queue_ids (
            id INTEGER PRIMARY KEY, vhost TEXT NOT NULL, name TEXT NOT NULL,
            UNIQUE (vhost, name))""",
        """CREATE TABLE messages (
            queue INTEGER NOT NULL, msg_id INTEGER NOT NULL,
            exchange TEXT NOT NULL, routing_key TEXT NOT NULL,
            properties BLOB NOT NULL, body BLOB NOT NULL, delivered INTEGER NOT NULL,
            PRIMARY KEY (queue, msg_id))""",
    ),
    # v2: a message's TTL deadline (wall-clock seconds), so it keeps running across a restart.
    ("ALTER TABLE messages ADD COLUMN expires_at REAL",),
    # v3: users, vhosts, permissions (JSON records the store does not interpret).
    (
        "CREATE TABLE definitions (kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, key))",
    ),
)

# Operation codes: the first element of every tuple on the writer's queue.
_APPEND = 0  # (_APPEND, vhost, queue, MessageRecord)
_REMOVE = 1  # (_REMOVE, vhost, queue, tuple[int, ...])
_DELIVERED = 2  # (_DELIVERED, vhost, queue, tuple[int, ...])
_EXEC = 3  # (_EXEC, ((sql, params), ...)): metadata changes, encoded by the caller
_DELETE_QUEUE = 4  # (_DELETE_QUEUE, vhost, name)
_SYNC = 5  # (_SYNC, callback)
_CLOSE = 6  # (_CLOSE,)
_READ = -1  # (_READ, vhost, queue, ids, result dict, threading.Event); below _SYNC: needs no fsync

# Most bytes the WAL is preallocated to (see "WAL preallocation" above).
WAL_ALLOC_MAX = 64 << 20
# ... and at most this fraction (1/n) of the free space found at open.
WAL_DISK_SHARE = 16

# Seconds between two attempts at a batch that failed for lack of space.
RETRY_INTERVAL = 0.25

# Bytes a batch is counted for per operation, on top of message bodies (space probe).
_OP_BYTES = 128

# After attach_loop: how long operations nobody waits for (no sync) may wait to be handed
# to the writer, unless a sync takes them along sooner. They are atomic when written;
# only how much of the last moments a kill -9 can forget depends on it.
LAZY_DELAY = 0.005

_INSERT_MESSAGE = (
    "INSERT INTO messages (queue, msg_id, exchange, routing_key, properties, body, delivered, expires_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_MARK_DELIVERED = "UPDATE messages SET delivered = 1 WHERE queue = ? AND msg_id = ?"
_DELETE_MESSAGE = "DELETE FROM messages WHERE queue = ? AND msg_id = ?"

# SQLite primary result codes that mean "this file is damaged", as opposed to busy,
# locked, I/O or permission errors, which a restart may cure and which must never
# cause files to be moved.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
# ... and the ones that mean "no space": SQLITE_FULL, and SQLITE_IOERR_SHMSIZE (growing the
# -shm file failed, which on tmpfs is ENOSPC).
_SQLITE_FULL = 13
_SQLITE_IOERR_SHMSIZE = 10 | (19 << 8)

_Row = tuple[int, int, str, str, bytes, bytes, bool, float | None]


def disk_free_bytes(path: Path) -> int:
    """Free bytes, for unprivileged users, on the file system holding ``path`` (a file or dir)."""
    target = path if path.is_dir() else path.parent
    return shutil.disk_usage(target).free


class SqliteStore:
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
        "_batch_max",
        "_budget",
        "_disk_limit",
        "_low",
        "_on_low_space",
        "_on_stall",
        "_qid_undo",
        "_retry_at",
        "_stalled",
        "_stalled_since",
        "_unwritten",
        "_checkpoint_bytes",
        "_frame_bytes",
        "_checkpoint_pages",
        "_closed",
        "_conn",
        "_error",
        "_full_sync",
        "_inline_max",
        "_kick_deferred",
        "_kick_pending",
        "_lazy_max",
        "_lock",
        "_loop",
        "_timer_pending",
        "_urgent",
        "_next_checkpoint",
        "_on_error",
        "_ops",
        "_path",
        "_qids",
        "_quarantine",
        "_shm_fd",
        "_wal_alloc",
        "_thread",
        "_wake",
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
    ) -> None:
        if checkpoint_pages < 1 or batch_max < 1 or inline_max < 0:
            raise ValueError("checkpoint_pages and batch_max must be positive, inline_max not negative")
        self._path = Path(path)
        self._wal_path = Path(f"{self._path}-wal")
        self._batch_max = batch_max
        self._inline_max = inline_max
        self._checkpoint_pages = checkpoint_pages
        self._checkpoint_bytes = 0  # known once open() has read the page size
        self._next_checkpoint = 0
        self._frame_bytes = 0
        self._wal_alloc = 0
        self._shm_fd = -1
        self._on_error = on_error
        self._quarantine = quarantine_corrupt
        self._ops: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()  # held by whichever thread is applying a batch
        self._wake = threading.Event()  # set: the writer has work (or a checkpoint to consider)
        self._loop: LoopLike | None = None
        self._kick_pending = False
        self._kick_deferred = False
        self._urgent = False  # a sync (someone waits) was submitted since the last kick
        self._timer_pending = False
        self._lazy_max = 1024
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self._qids: dict[tuple[str, str], int] = {}
        self._full_sync = True
        self._error: BaseException | None = None
        self._closed = False
        self._stalled: BaseException | None = None  # the space error a held batch waits on
        self._stalled_since = 0.0
        self._retry_at = 0.0
        self._unwritten = 0  # operations a close() that found no space had to drop
        # (key, qid before) for each change a batch made to _qids, undone if it rolls back.
        self._qid_undo: list[tuple[tuple[str, str], int | None]] = []
        self._on_stall = on_stall
        self._on_low_space = on_low_space
        self._disk_limit = disk_free_limit
        self._budget = 0  # bytes that may be written before the next statvfs
        self._low = False  # the last statvfs found less than disk_free_limit

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
            if not (self._quarantine and _is_corruption(exc)):
                raise
            self._move_aside(exc)
            recovered = self._open_and_read()
        self._thread = threading.Thread(target=self._run, name="leveret-storage-writer", daemon=True)
        self._thread.start()
        recovered.seconds = time.perf_counter() - start
        return recovered

    def close(self) -> None:
        """Write everything submitted so far (fsynced), checkpoint, stop the writer, close the file.

        Idempotent. After ``close``, :meth:`sync` raises :class:`RuntimeError`.
        """
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is None:
            return
        self._ops.append((_CLOSE,))
        self._wake.set()  # directly: close() may run off the loop, or after it stopped
        thread.join()

    @property
    def error(self) -> BaseException | None:
        """The exception that failed the store for good, or ``None``."""
        return self._error

    @property
    def stalled(self) -> BaseException | None:
        """The space error that writes are waiting on, or ``None`` while writes get through."""
        return self._stalled

    def failure(self) -> str | None:
        """Why the store cannot write right now (for health checks), or ``None`` while it can."""
        if self._error is not None:
            return f"storage failed: {self._error}; nothing more is written, restart the broker"
        if self._unwritten:
            return f"storage stopped with {self._unwritten} operations not written (no disk space)"
        if self._stalled is not None:
            waited = time.monotonic() - self._stalled_since
            return f"storage cannot write: {self._stalled} (waiting for disk space for {waited:.0f} s)"
        return None

    def disk_free_bytes(self) -> int:
        """Bytes the store can still write: free on its file system plus the unused WAL reservation."""
        return disk_free_bytes(self._path.parent) + self._wal_unused()

    def _wal_unused(self) -> int:
        try:
            size = os.stat(self._wal_path).st_size
        except OSError:
            return 0
        return max(0, min(size, self._wal_alloc) - self._wal_size())

    def pending(self) -> int:
        return len(self._ops)

    def attach_loop(self, loop: LoopLike) -> None:
        """Hand operations over once per event-loop turn, committing small synced turns in place.

        From then on the mutating methods must be called on ``loop``'s thread. See "Who
        writes" in the module docstring.
        """
        self._loop = loop

    # -- the hot path: enqueue a tuple, nothing else -----------------------------

    def _put(self, op: tuple[Any, ...]) -> None:
        self._ops.append(op)
        if self._kick_pending:
            return
        loop = self._loop
        if loop is None:
            if not self._wake.is_set() and self._stalled is None:  # stalled: the writer retries on its own
                self._wake.set()
        else:
            self._kick_pending = True
            loop.call_soon(self._kick)

    def _kick(self) -> None:
        """End of a loop turn: commit here if someone waits and it is cheap, else hand over."""
        if self._urgent and not self._kick_deferred and self._loop is not None:
            # Once more round the loop: the writes this turn scheduled (deliveries to
            # consumers) go out before the loop blocks in fsync, as RabbitMQ delivers
            # before it confirms.
            self._kick_deferred = True
            self._loop.call_soon(self._kick)
            return
        self._kick_deferred = False
        self._kick_pending = False
        ops = self._ops
        if not ops or self._closed:
            return
        if self._stalled is not None:  # no space: the writer retries on its own, nothing is urgent
            self._urgent = False
            return
        if not self._urgent:
            # Nobody waits (acks, delivered marks, unconfirmed publishes): let them gather
            # and ride along with the next sync, or go to the writer after LAZY_DELAY.
            if len(ops) >= self._lazy_max:
                self._wake.set()
            elif not self._timer_pending and self._loop is not None:
                self._timer_pending = True
                self._loop.call_later(LAZY_DELAY, self._lazy_timer)
            return
        self._urgent = False
        if len(ops) <= self._inline_max and self._lock.acquire(blocking=False):
            later: list[Callable[[], None]] = []
            try:
                self._apply_here(later)
            finally:
                self._lock.release()
            _run_callbacks(later)
            if not ops and not self._checkpoint_due():
                return
        self._wake.set()

    def _lazy_timer(self) -> None:
        self._timer_pending = False
        if self._ops and self._stalled is None:
            self._wake.set()

    def append(self, vhost: str, queue: str, msg: MessageRecord) -> None:
        self._put((_APPEND, vhost, queue, msg))

    def remove(self, vhost: str, queue: str, msg_ids: Iterable[int]) -> None:
        # tuple(): the caller may reuse its list; tuple(a_tuple) is the same object.
        self._put((_REMOVE, vhost, queue, tuple(msg_ids)))

    def mark_delivered(self, vhost: str, queue: str, msg_ids: Iterable[int]) -> None:
        self._put((_DELIVERED, vhost, queue, tuple(msg_ids)))

    def read_bodies(self, vhost: str, queue: str, msg_ids: list[int]) -> dict[int, bytes]:
        """Read bodies back (paging in a deep queue). Blocks until served.

        The read is queued behind every earlier operation and applied, with them, on
        the calling thread (after the writer's current batch, if it is busy), so it sees
        every earlier append even if that was not committed yet.
        """
        if self._error is not None:
            raise RuntimeError("the store has failed") from self._error
        if not msg_ids:
            return {}
        result: dict[int, bytes] = {}
        done = threading.Event()
        # Apply everything up to the read right here (the caller blocks either way);
        # if the writer is busy, wait for it to finish its batch, then take over.
        if not self._lock.acquire(timeout=60):
            raise RuntimeError("the store did not answer a read within 60 s")
        later: list[Callable[[], None]] = []
        try:
            if self._stalled is None:
                self._ops.append((_READ, vhost, queue, tuple(msg_ids), result, done))
                while not done.is_set() and self._conn is not None and self._stalled is None:
                    self._apply_here(later)
            if not done.is_set() and self._stalled is not None and self._conn is not None:
                # No space to write what is pending: read past it (consumers must go on).
                result = self._read_stalled(vhost, queue, msg_ids)
                done.set()
        finally:
            self._lock.release()
        _run_callbacks(later)
        if self._stalled is None and (self._ops or self._checkpoint_due()):
            self._wake.set()
        if not done.is_set():
            raise RuntimeError("the store is closed")
        return result

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
            rows = self._conn.execute(
                "SELECT msg_id, body FROM messages WHERE queue = ? AND msg_id BETWEEN ? AND ?",
                (qid, min(missing), max(missing)),
            )
            result.update((i, bytes(b)) for i, b in rows if i in missing)
        return result

    def sync(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once everything submitted before is fsynced.

        It runs on the writer thread, or on the loop thread when a kick commits in place.
        """
        if self._closed:
            raise RuntimeError("sync() on a closed SqliteStore")
        self._urgent = True
        self._put((_SYNC, callback))

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
        self._put((_EXEC, ((sql, _binding_params(b)),)))

    def delete_binding(self, b: BindingRecord) -> None:
        sql = (
            "DELETE FROM bindings WHERE vhost = ? AND source = ? AND destination = ?"
            " AND destination_type = ? AND routing_key = ? AND arguments = ?"
        )
        self._put((_EXEC, ((sql, _binding_params(b)),)))

    def set_aside(self, record: SetAside, reason: str) -> None:
        """Quarantine ``record`` (see :meth:`Store.set_aside`): copied to ``quarantine_*``, then deleted."""
        self._put((_EXEC, _set_aside_sql(record, reason)))
        if isinstance(record, QueueRecord):
            self._put((_DELETE_QUEUE, record.vhost, record.name))  # forgets its queue id too
        self._log_set_aside(describe(record), reason)

    def set_aside_messages(self, vhost: str, queue: str, msg_ids: list[int], reason: str) -> None:
        """Quarantine messages of ``queue`` (see :meth:`Store.set_aside_messages`)."""
        if not msg_ids:
            return
        head = (time.time(), reason)
        copies = tuple((_COPY_MESSAGES + " AND m.msg_id = ?", (*head, vhost, queue, i)) for i in msg_ids)
        self._put((_EXEC, (*((sql, ()) for sql in _QUARANTINE_TABLES), *copies)))
        self._put((_REMOVE, vhost, queue, tuple(msg_ids)))
        shown = ", ".join(map(str, msg_ids[:10])) + (", ..." if len(msg_ids) > 10 else "")
        self._log_set_aside(
            f"{len(msg_ids)} message(s) ({shown}) of queue '{queue}' in vhost '{vhost}'", reason
        )

    # -- opening and recovery (caller's thread, before the writer starts) ---------

    def _open_and_read(self) -> Recovered:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"{self._path}: SQLite refused WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # we checkpoint, off the confirm path
            conn.execute("PRAGMA cache_size = -16384")  # 16 MiB: keeps the message index hot
            self._migrate(conn)
            recovered = self._read(conn)
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

    def _preallocate_wal(self, conn: sqlite3.Connection) -> None:
        """Checkpoint what was recovered and fill the (then empty) WAL with zeros; see the docstring."""
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            if not _is_space_error(exc):
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
        if not busy:
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

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self._path} has schema version {version}; this leveret knows up to {SCHEMA_VERSION}"
            )
        for v in range(version, SCHEMA_VERSION):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[v]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {v + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if v:  # 0 -> 1 is a new store, not an upgrade
                log.info("storage %s: schema upgraded from version %d to %d", self._path, v, v + 1)
            log.info("storage %s: schema version %d -> %d", self._path, v, v + 1)

    def _read(self, conn: sqlite3.Connection) -> Recovered:
        # A row that cannot be decoded is set aside (logged, moved to a quarantine_* table),
        # never fatal: a broker that crash-loops on one bad record helps nobody.
        bad: list[tuple[SetAside, str, tuple[tuple[str, tuple[Any, ...]], ...]]] = []

        def rows(sql: str, make: Callable[..., Any]) -> list[Any]:
            out = []
            for rowid, *row in conn.execute(sql):
                try:
                    out.append(make(*row, decode_arguments(row[-1])))
                except Exception as exc:
                    record, reason = make(*row, {}), _reason(exc)
                    bad.append((record, reason, _set_aside_sql(record, reason, rowid)))
            return out

        queues: list[QueueRecord] = rows(
            "SELECT rowid, vhost, name, durable, auto_delete, arguments FROM queues ORDER BY vhost, name",
            lambda v, n, d, ad, _a, args: QueueRecord(v, n, bool(d), bool(ad), args),
        )
        exchanges: list[ExchangeRecord] = rows(
            "SELECT rowid, vhost, name, type, durable, auto_delete, internal, arguments FROM exchanges"
            " ORDER BY vhost, name",
            lambda v, n, t, d, ad, i, _a, args: ExchangeRecord(v, n, t, bool(d), bool(ad), bool(i), args),
        )
        bindings: list[BindingRecord] = rows(
            "SELECT rowid, vhost, source, destination, destination_type, routing_key, arguments FROM bindings"
            " ORDER BY vhost, source, destination, destination_type, routing_key, arguments",
            lambda v, s, d, dt, rk, _a, args: BindingRecord(v, s, d, dt, rk, args),
        )
        if bad:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for _, _, statements in bad:
                    for sql, params in statements:
                        conn.execute(sql, params)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            for record, reason, _ in bad:
                self._log_set_aside(describe(record), reason)
            # What went with them: bindings from or to a quarantined exchange, or to a quarantined queue.
            gone = {(_kind(r), r.vhost, r.name) for r, _, _ in bad if not isinstance(r, BindingRecord)}
            bindings = [
                b
                for b in bindings
                if ("exchange", b.vhost, b.source) not in gone
                and (b.destination_type, b.vhost, b.destination) not in gone
            ]
        names = {
            qid: (vhost, name) for qid, vhost, name in conn.execute("SELECT id, vhost, name FROM queue_ids")
        }
        self._qids = {key: qid for qid, key in names.items()}

        messages: dict[tuple[str, str], list[MessageRecord]] = {}
        next_id = 1
        # Exchange names and routing keys repeat across messages: share one str each.
        shared: dict[str, str] = {}
        share = shared.setdefault
        select = (
            "SELECT msg_id, exchange, routing_key, properties, body, delivered, expires_at"
            " FROM messages WHERE queue = ? ORDER BY msg_id"
        )
        for qid, key in sorted(names.items(), key=lambda item: item[1]):
            records = [
                MessageRecord(msg_id, share(ex, ex), share(rk, rk), props, body, delivered != 0, expires_at)
                for msg_id, ex, rk, props, body, delivered, expires_at in conn.execute(select, (qid,))
            ]
            if records:
                messages[key] = records
                next_id = max(next_id, records[-1].msg_id + 1)
        definitions: dict[str, dict[str, str]] = {}
        for kind, key, value in conn.execute("SELECT kind, key, value FROM definitions ORDER BY kind, key"):
            definitions.setdefault(str(kind), {})[str(key)] = str(value)
        return Recovered(
            queues, exchanges, bindings, messages, next_id, set_aside=len(bad), definitions=definitions
        )

    def _log_set_aside(self, what: str, reason: str) -> None:
        log.error(
            "storage %s: %s cannot be recovered (%s); it is set aside in the quarantine_* tables and the"
            " broker starts without it",
            self._path,
            what,
            reason,
        )

    def _move_aside(self, exc: sqlite3.DatabaseError) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        moved = []
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self._path}{suffix}")
            if src.exists():
                dst = Path(f"{self._path}.corrupt-{stamp}{suffix}")
                src.rename(dst)
                moved.append(str(dst))
        log.error(
            "storage %s is damaged (%s); moved it aside to %s and starting EMPTY: durable queues "
            "and messages in it are not recovered. Inspect or restore the moved files by hand.",
            self._path,
            exc,
            ", ".join(moved) or "(nothing)",
        )

    # -- the writer thread ------------------------------------------------------

    def _run(self) -> None:
        wait, clear, lock, ops = self._wake.wait, self._wake.clear, self._lock, self._ops
        running = True
        try:
            while running:
                if self._stalled is None:
                    wait()
                else:  # retry on a timer, or at once for close()
                    wait(max(0.0, self._retry_at - time.monotonic()))
                clear()  # before popping: an operation appended after this sets it again
                with lock:
                    if self._conn is None:
                        return
                    if self._stalled is not None:
                        if not self._closed and time.monotonic() < self._retry_at:
                            continue
                        # A checkpoint lets the WAL start over in blocks it already has.
                        self._next_checkpoint = min(self._next_checkpoint, self._checkpoint_bytes)
                        self._maybe_checkpoint()
                    while running and ops:
                        running = self._drain_and_apply(checkpoint=True)
                        if self._stalled is not None:
                            if self._closed:
                                running = self._give_up()
                            break
                    if running and self._stalled is None:
                        self._maybe_checkpoint()  # an inline commit may have left one due
        except BaseException as exc:  # a bug in the writer itself: never die silently
            self._fail(exc)
        finally:
            with lock:
                self._shutdown()

    def _apply_here(self, later: list[Callable[[], None]]) -> None:
        """Apply one batch on the calling (loop) thread; caller holds ``_lock``.

        The batch's callbacks are added to ``later``, for the caller to run once it has
        released the lock: a callback may use the store again (the broker's does).
        """
        if self._conn is None:  # the writer has shut down
            return
        if not self._drain_and_apply(checkpoint=False, later=later):
            self._shutdown()  # a close() raced in; the writer sees _conn None and exits

    def _drain_and_apply(self, *, checkpoint: bool, later: list[Callable[[], None]] | None = None) -> bool:
        """Pop and apply one batch (caller holds ``_lock``); return False after a close op."""
        ops = self._ops
        popleft = ops.popleft
        batch = [popleft() for _ in range(min(len(ops), self._batch_max))]
        durable = False
        for op in batch:
            if op[0] >= _SYNC:
                durable = True
                break
        return self._process(batch, durable, checkpoint, later)

    def _process(
        self,
        batch: list[tuple[Any, ...]],
        durable: bool,
        checkpoint: bool,
        later: list[Callable[[], None]] | None = None,
    ) -> bool:
        """Apply one batch, run its callbacks (or add them to ``later``), maybe checkpoint.

        Returns False after a close op.
        """
        closing = any(op[0] == _CLOSE for op in batch) if durable else False
        if self._error is not None:
            for op in batch:
                if op[0] == _READ:
                    op[5].set()  # the reader sees an empty result and raises
            return not closing  # failed: drop everything, call nothing
        undo = self._qid_undo
        undo.clear()
        try:
            callbacks = self._apply(batch, durable)
        except Exception as exc:
            for key, qid in reversed(undo):  # the queue ids of the rolled-back batch are not in the file
                if qid is None:
                    self._qids.pop(key, None)
                else:
                    self._qids[key] = qid
            if _is_space_error(exc):
                self._stall(batch, exc)
                return True  # a close op in the batch is back in the queue; the writer decides
            self._fail(exc)
            return not closing
        if self._stalled is not None:
            self._resume()
        if later is None:
            _run_callbacks(callbacks)
        else:
            later.extend(callbacks)
        if checkpoint and not closing:
            self._maybe_checkpoint()
        return not closing

    def _stall(self, batch: list[tuple[Any, ...]], exc: BaseException) -> None:
        """Put a batch that failed for lack of space back at the head, to be retried."""
        # A read that was served before the failure has its answer (what it read is what
        # the batch had appended); it is not served again.
        self._ops.extendleft(reversed([op for op in batch if op[0] != _READ or not op[5].is_set()]))
        now = time.monotonic()
        self._retry_at = now + RETRY_INTERVAL
        if self._stalled is not None:
            return
        self._stalled = exc
        self._stalled_since = now
        log.error(
            "storage %s: a write failed for lack of disk space (%s); %d operations are held and retried"
            " every %g s until space returns. Confirms and durable declares wait until then; nothing"
            " confirmed is lost. Free disk space to resume.",
            self._path,
            exc,
            len(self._ops),
            RETRY_INTERVAL,
        )
        self._wake.set()  # the writer may be waiting without a timeout
        self._notify(self._on_stall, exc)
        self._probe_space()

    def _resume(self) -> None:
        waited = time.monotonic() - self._stalled_since
        self._stalled = None
        log.warning(
            "storage %s: writes resumed after %.1f s without disk space; %d operations still pending",
            self._path,
            waited,
            len(self._ops),
        )
        self._notify(self._on_stall, None)

    def _give_up(self) -> bool:
        """close() and still no space: drop what is pending (never confirmed), say so. Returns False."""
        lost = [op for op in self._ops if op[0] != _CLOSE]
        self._ops.clear()
        for op in lost:
            if op[0] == _READ:
                op[5].set()
        self._unwritten = len(lost)
        log.error(
            "storage %s: closing without disk space: %d operations were NOT written (none of them was"
            " confirmed); messages taken since are flagged redelivered at the next start",
            self._path,
            len(lost),
        )
        return False

    def _note_written(self, nbytes: int) -> None:
        """A batch of about ``nbytes`` was written: statvfs if the margin above the limit may be gone."""
        if self._disk_limit > 0:
            self._budget -= nbytes
            if self._budget <= 0:
                self._probe_space()

    def _probe_space(self) -> None:
        if self._disk_limit <= 0:
            return
        try:
            free = self.disk_free_bytes()
        except OSError:
            return
        self._budget = free - self._disk_limit
        low = free < self._disk_limit
        if low and not self._low:
            log.warning(
                "storage %s: %d bytes free, below the limit of %d", self._path, free, self._disk_limit
            )
            self._notify(self._on_low_space, free)
        self._low = low

    def _notify(self, hook: Callable[[Any], None] | None, arg: Any) -> None:
        if hook is not None:
            try:
                hook(arg)
            except Exception:
                log.exception("storage event handler failed")

    def _apply(self, batch: list[tuple[Any, ...]], durable: bool) -> list[Callable[[], None]]:
        conn = self._conn
        assert conn is not None
        if durable != self._full_sync:
            # Cannot be changed inside a transaction, hence decided while draining.
            conn.execute("PRAGMA synchronous = FULL" if durable else "PRAGMA synchronous = NORMAL")
            self._full_sync = durable
        qids = self._qids
        callbacks: list[Callable[[], None]] = []
        # Pending message changes, applied at the end (or before a delete_queue). Under
        # the append contract (an id is not re-appended while present), inserting
        # first, then updating, then deleting gives the same result as call order.
        inserts: dict[tuple[int, int], _Row] = {}
        delivered: list[tuple[int, int]] = []
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
                        _write_messages(conn, inserts, delivered, deletes)
                        inserts, delivered, deletes, deleted = {}, [], [], set()
                    inserts[qid, msg.msg_id] = (
                        qid,
                        msg.msg_id,
                        msg.exchange,
                        msg.routing_key,
                        msg.properties,
                        msg.body,
                        msg.delivered,
                        msg.expires_at,
                    )
                elif kind == _REMOVE:
                    known = qids.get((op[1], op[2]))
                    if known is not None:
                        # An id appended in this batch is cancelled: never written at all.
                        pop = inserts.pop
                        gone = [(known, i) for i in op[3] if pop((known, i), None) is None]
                        deletes.extend(gone)
                        deleted.update(gone)
                elif kind == _DELIVERED:
                    known = qids.get((op[1], op[2]))
                    if known is not None:
                        for msg_id in op[3]:
                            row = inserts.get((known, msg_id))
                            if row is None:
                                delivered.append((known, msg_id))
                                deleted.add((known, msg_id))
                            else:
                                inserts[known, msg_id] = (*row[:6], True, row[7])
                elif kind == _SYNC:
                    callbacks.append(op[1])
                elif kind == _READ:
                    _write_messages(conn, inserts, delivered, deletes)  # the read must see them
                    inserts, delivered, deletes, deleted = {}, [], [], set()
                    self._read_bodies(conn, op)
                elif kind == _EXEC:
                    for sql, params in op[1]:
                        conn.execute(sql, params)
                elif kind == _DELETE_QUEUE:
                    # A barrier: earlier message changes go first (they may add rows
                    # to this queue), then everything of the queue goes.
                    _write_messages(conn, inserts, delivered, deletes)
                    inserts, delivered, deletes, deleted = {}, [], [], set()
                    self._delete_queue(conn, op[1], op[2])
                elif kind == _CLOSE:
                    break  # anything after close() was called is not ours to write
            _write_messages(conn, inserts, delivered, deletes)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._note_written(nbytes)
        return callbacks

    def _read_bodies(self, conn: sqlite3.Connection, op: tuple[Any, ...]) -> None:
        _, vhost, name, ids, result, done = op
        try:
            qid = self._qids.get((vhost, name))
            if qid is not None:
                wanted = set(ids)
                rows = conn.execute(
                    "SELECT msg_id, body FROM messages WHERE queue = ? AND msg_id BETWEEN ? AND ?",
                    (qid, min(ids), max(ids)),
                )
                result.update((i, bytes(b)) for i, b in rows if i in wanted)
        finally:
            done.set()

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
            if not _is_space_error(exc):
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

    def _fail(self, exc: BaseException) -> None:
        if self._error is not None:
            return
        self._error = exc
        log.error(
            "storage %s: write failed (%s); the store is now FAILED: nothing more will be written and"
            " pending confirms and durable replies are withheld. Restart the broker once the cause is fixed.",
            self._path,
            exc,
            exc_info=exc,
        )
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:
                log.exception("storage on_error handler failed")

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


def _run_callbacks(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("storage sync callback failed")


def _write_messages(
    conn: sqlite3.Connection,
    inserts: dict[tuple[int, int], _Row],
    delivered: list[tuple[int, int]],
    deletes: list[tuple[int, int]],
) -> None:
    if inserts:
        conn.executemany(_INSERT_MESSAGE, inserts.values())
    if delivered:
        conn.executemany(_MARK_DELIVERED, delivered)
    if deletes:
        conn.executemany(_DELETE_MESSAGE, deletes)


def _binding_params(b: BindingRecord) -> tuple[str, str, str, str, str, str]:
    return (
        b.vhost,
        b.source,
        b.destination,
        b.destination_type,
        b.routing_key,
        encode_arguments(b.arguments),
    )


def _is_space_error(exc: BaseException) -> bool:
    """True for a failure a retry may cure once disk space returns (nothing is damaged)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            return (code & 0xFF) == _SQLITE_FULL or code == _SQLITE_IOERR_SHMSIZE
        return "database or disk is full" in str(exc)
    return False


# Where set-aside records go (created when first needed; no schema version: an older
# leveret opens the file and ignores them). Each row says when and why.
_QUARANTINE_TABLES = (
    """CREATE TABLE IF NOT EXISTS quarantine_queues (set_aside_at REAL, reason TEXT,
        vhost TEXT, name TEXT, durable INTEGER, auto_delete INTEGER, arguments TEXT)""",
    """CREATE TABLE IF NOT EXISTS quarantine_exchanges (set_aside_at REAL, reason TEXT,
        vhost TEXT, name TEXT, type TEXT, durable INTEGER, auto_delete INTEGER, internal INTEGER, arguments TEXT)""",
    """CREATE TABLE IF NOT EXISTS quarantine_bindings (set_aside_at REAL, reason TEXT,
        vhost TEXT, source TEXT, destination TEXT, destination_type TEXT, routing_key TEXT, arguments TEXT)""",
    """CREATE TABLE IF NOT EXISTS quarantine_messages (set_aside_at REAL, reason TEXT,
        vhost TEXT, queue TEXT, msg_id INTEGER, exchange TEXT, routing_key TEXT,
        properties BLOB, body BLOB, delivered INTEGER, expires_at REAL)""",
)
_COPY_QUEUE = (
    "INSERT INTO quarantine_queues SELECT ?, ?, vhost, name, durable, auto_delete, arguments"
    " FROM queues WHERE vhost = ? AND name = ?"
)
_COPY_EXCHANGE = (
    "INSERT INTO quarantine_exchanges SELECT ?, ?, vhost, name, type, durable, auto_delete, internal, arguments"
    " FROM exchanges WHERE vhost = ? AND name = ?"
)
_COPY_BINDINGS = (
    "INSERT INTO quarantine_bindings SELECT ?, ?, vhost, source, destination, destination_type, routing_key,"
    " arguments FROM bindings WHERE "
)
_COPY_MESSAGES = (
    "INSERT INTO quarantine_messages SELECT ?, ?, q.vhost, q.name, m.msg_id, m.exchange, m.routing_key,"
    " m.properties, m.body, m.delivered, m.expires_at FROM messages m JOIN queue_ids q ON m.queue = q.id"
    " WHERE q.vhost = ? AND q.name = ?"
)
_COPY_BINDINGS_NUMBERED = _COPY_BINDINGS.replace("?, ?", "?3, ?4", 1)  # after ?1, ?2 of the WHERE
_BINDING_IDENTITY = "vhost = ? AND source = ? AND destination = ? AND destination_type = ? AND routing_key = ? AND arguments = ?"
_TO_QUEUE = "vhost = ? AND destination = ? AND destination_type = 'queue'"
_FROM_OR_TO_EXCHANGE = "vhost = ?1 AND (source = ?2 OR (destination = ?2 AND destination_type = 'exchange'))"
_QUEUE_ID = "(SELECT id FROM queue_ids WHERE vhost = ? AND name = ?)"

_Statements = tuple[tuple[str, tuple[Any, ...]], ...]


def _set_aside_sql(record: SetAside, reason: str, rowid: int | None = None) -> _Statements:
    """Statements that copy ``record`` (and what goes with it) to the quarantine tables, then delete it.

    A binding is found by ``rowid`` if given (its arguments may not decode), else by its identity.
    """
    head = (time.time(), reason)
    v = record.vhost
    if isinstance(record, BindingRecord):
        key: tuple[Any, ...]
        if rowid is not None:
            where, key = "rowid = ?", (rowid,)
        else:
            where, key = _BINDING_IDENTITY, _binding_params(record)
        return (
            *((sql, ()) for sql in _QUARANTINE_TABLES),
            (_COPY_BINDINGS + where, (*head, *key)),
            ("DELETE FROM bindings WHERE " + where, key),
        )
    n = record.name
    along = (time.time(), f"{describe(record)} was set aside: {reason}")
    if isinstance(record, QueueRecord):
        return (
            *((sql, ()) for sql in _QUARANTINE_TABLES),
            (_COPY_QUEUE, (*head, v, n)),
            (_COPY_MESSAGES, (*along, v, n)),
            (_COPY_BINDINGS + _TO_QUEUE, (*along, v, n)),
            ("DELETE FROM messages WHERE queue = " + _QUEUE_ID, (v, n)),
            ("DELETE FROM queue_ids WHERE vhost = ? AND name = ?", (v, n)),
            ("DELETE FROM queues WHERE vhost = ? AND name = ?", (v, n)),
            ("DELETE FROM bindings WHERE " + _TO_QUEUE, (v, n)),
        )
    return (
        *((sql, ()) for sql in _QUARANTINE_TABLES),
        (_COPY_EXCHANGE, (*head, v, n)),
        (_COPY_BINDINGS_NUMBERED + _FROM_OR_TO_EXCHANGE, (v, n, *along)),
        ("DELETE FROM exchanges WHERE vhost = ? AND name = ?", (v, n)),
        ("DELETE FROM bindings WHERE " + _FROM_OR_TO_EXCHANGE, (v, n)),
    )


def _kind(record: SetAside) -> str:
    return "queue" if isinstance(record, QueueRecord) else "exchange"


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:300] + "..."


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
