"""The hand-off machinery of a store with one writer: operations queued, batched, committed, confirmed.

It knows nothing of SQL: a subclass (:class:`~leveret.storage.sqlite.SqliteStore`) applies a batch in one
transaction (:meth:`HandOff._apply`) and says what its file needs (checkpoints, shutting down).

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
operations (with at most ``INLINE_MAX_BYTES`` of bodies) are pending and the writer is idle, the kick commits them right there
on the loop thread; otherwise it wakes the writer. A lone confirming publisher
(Celery's ``confirm_publish``) then pays for its fsync and nothing else, instead of
two thread wake-ups on top (one to the writer, one back to the loop). Under load
the writer is busy, the kick finds the lock taken, and the writer's group commit
does the work while the loop goes on. All popping happens under ``_lock``, so order
is kept whichever thread writes. A turn without a ``sync`` (acks, delivered marks,
publishes nobody confirms) is not urgent: its operations wait for the next
``sync`` to take them along, or ``LAZY_DELAY`` (5 ms), or ``_lazy_max`` of them,
whichever comes first; a consumer's ack then costs no commit of its own.

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
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from leveret.storage.base import LoopLike, MessageRecord

log = logging.getLogger("leveret.storage")

# Operation codes: the first element of every tuple on the writer's queue.
_APPEND = 0  # (_APPEND, vhost, queue, MessageRecord)
_REMOVE = 1  # (_REMOVE, vhost, queue, tuple[int, ...])
_DELIVERED = 2  # (_DELIVERED, vhost, queue, tuple[int, ...])
_EXEC = 3  # (_EXEC, ((sql, params), ...)): metadata changes, encoded by the caller
_DELETE_QUEUE = 4  # (_DELETE_QUEUE, vhost, name)
_SYNC = 5  # (_SYNC, callback)
_CLOSE = 6  # (_CLOSE,)
_READ = -1  # (_READ, vhost, queue, ids, result dict, threading.Event); below _SYNC: needs no fsync

# Seconds between two attempts at a batch that failed for lack of space.
RETRY_INTERVAL = 0.25

# Bytes a batch is counted for per operation, on top of message bodies (space probe).
_OP_BYTES = 128

# After attach_loop: how long operations nobody waits for (no sync) may wait to be handed
# to the writer, unless a sync takes them along sooner. They are atomic when written;
# only how much of the last moments a kill -9 can forget depends on it.
LAZY_DELAY = 0.005

# Most message body bytes a kick commits in place on the loop thread. Writing more would stall the
# loop (no reads, no deliveries) for as long as the disk takes; the writer thread does it meanwhile.
INLINE_MAX_BYTES = 128 * 1024


class HandOff:
    """Queue operations from the loop thread, apply them in batches on one writer, run ``sync`` callbacks.

    See the module docstring. Subclasses implement the hooks at the end (``_apply`` and the file's
    needs) and call :meth:`_start_writer` once their file is open.
    """

    __slots__ = (
        "_batch_max",
        "_budget",
        "_closed",
        "_disk_limit",
        "_error",
        "_inline_max",
        "_kick_deferred",
        "_kick_pending",
        "_lazy_max",
        "_lock",
        "_loop",
        "_low",
        "_on_error",
        "_on_low_space",
        "_on_stall",
        "_ops",
        "_path",
        "_retry_at",
        "_stalled",
        "_stalled_since",
        "_thread",
        "_timer_pending",
        "_unwritten",
        "_urgent",
        "_wake",
    )

    def __init__(
        self,
        path: Path,
        *,
        batch_max: int,
        inline_max: int,
        on_error: Callable[[BaseException], None] | None,
        disk_free_limit: int,
        on_stall: Callable[[BaseException | None], None] | None,
        on_low_space: Callable[[int], None] | None,
    ) -> None:
        self._path = Path(path)
        self._batch_max = batch_max
        self._inline_max = inline_max
        self._on_error = on_error
        self._ops: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()  # held by whichever thread is applying a batch
        self._wake = threading.Event()  # set: the writer has work (or a checkpoint to consider)
        self._loop: LoopLike | None = None
        self._kick_pending = False
        self._kick_deferred = False
        self._urgent = False  # a sync (someone waits) was submitted since the last kick
        self._timer_pending = False
        self._lazy_max = 1024
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._stalled: BaseException | None = None  # the space error a held batch waits on
        self._stalled_since = 0.0
        self._retry_at = 0.0
        self._unwritten = 0  # operations a close() that found no space had to drop
        self._on_stall = on_stall
        self._on_low_space = on_low_space
        self._disk_limit = disk_free_limit
        self._budget = 0  # bytes that may be written before the next statvfs
        self._low = False  # the last statvfs found less than disk_free_limit

    def _start_writer(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leveret-storage-writer", daemon=True)
        self._thread.start()

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

    def pending(self) -> int:
        return len(self._ops)

    def discard_pending(self) -> int:
        """Drop what is queued and not yet written (a simulated ``kill -9``); return how many operations.

        Waits for a batch being written to finish (it is then on disk, as it would be after a kill
        during its commit); the dropped operations' ``sync`` callbacks are never called.
        """
        with self._lock:  # the writer pops under it: never clear the queue in the middle of a batch
            dropped = [op for op in self._ops if op[0] != _CLOSE]
            closing = len(self._ops) - len(dropped)
            self._ops.clear()
            self._ops.extend([(_CLOSE,)] * closing)
        for op in dropped:
            if op[0] == _READ:
                op[5].set()  # a reader waiting on it sees an empty result and raises
        return len(dropped)

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
        if len(ops) <= self._inline_max and _small(ops) and self._lock.acquire(blocking=False):
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

    def _read_written(self, vhost: str, queue: str, msg_ids: list[int]) -> dict[int, bytes | bytearray]:
        """Bodies the subclass can read without the writer's lock (already written, immutable); {} here."""
        return {}

    def read_bodies(self, vhost: str, queue: str, msg_ids: list[int]) -> dict[int, bytes | bytearray]:
        """Read bodies back (paging in a deep queue). Blocks until served.

        The read is queued behind every earlier operation and applied, with them, on
        the calling thread (after the writer's current batch, if it is busy), so it sees
        every earlier append even if that was not committed yet.
        """
        if self._error is not None:
            raise RuntimeError("the store has failed") from self._error
        if not msg_ids:
            return {}
        found = self._read_written(vhost, queue, msg_ids)
        if found:
            if len(found) == len(msg_ids):
                return found
            msg_ids = [i for i in msg_ids if i not in found]
        result: dict[int, bytes | bytearray] = found
        done = threading.Event()
        # Apply everything up to the read right here (the caller blocks either way);
        # if the writer is busy, wait for it to finish its batch, then take over.
        if not self._lock.acquire(timeout=60):
            raise RuntimeError("the store did not answer a read within 60 s")
        later: list[Callable[[], None]] = []
        try:
            if self._stalled is None:
                self._ops.append((_READ, vhost, queue, tuple(msg_ids), result, done))
                while not done.is_set() and self._is_open() and self._stalled is None:
                    self._apply_here(later)
            if not done.is_set() and self._stalled is not None and self._is_open():
                # No space to write what is pending: read past it (consumers must go on).
                result.update(self._read_stalled(vhost, queue, msg_ids))
                done.set()
        finally:
            self._lock.release()
        _run_callbacks(later)
        if self._stalled is None and (self._ops or self._checkpoint_due()):
            self._wake.set()
        if not done.is_set():
            raise RuntimeError("the store is closed")
        return result

    def sync(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once everything submitted before is fsynced.

        It runs on the writer thread, or on the loop thread when a kick commits in place.
        """
        if self._closed:
            raise RuntimeError("sync() on a closed SqliteStore")
        self._urgent = True
        self._put((_SYNC, callback))

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
                    if not self._is_open():
                        return
                    if self._stalled is not None:
                        if not self._closed and time.monotonic() < self._retry_at:
                            continue
                        self._before_retry()
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
        if not self._is_open():  # the writer has shut down
            return
        if not self._drain_and_apply(checkpoint=False, later=later):
            self._shutdown()  # a close() raced in; the writer sees it closed and exits

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
        try:
            callbacks = self._apply(batch, durable)
        except Exception as exc:
            self._rolled_back()
            if self._out_of_space(exc):
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

    # -- what a subclass provides -------------------------------------------------

    def _apply(self, batch: list[tuple[Any, ...]], durable: bool) -> list[Callable[[], None]]:
        """Apply ``batch`` in one transaction (fsynced if ``durable``); return its ``sync`` callbacks.

        Serves ``_READ`` operations (fills the dict, sets the event). Raises on failure, with
        nothing of the batch applied.
        """
        raise NotImplementedError

    def _rolled_back(self) -> None:
        """The last :meth:`_apply` raised: forget what it changed in memory."""

    def _is_open(self) -> bool:
        raise NotImplementedError

    def _out_of_space(self, exc: BaseException) -> bool:
        """True for a failure a retry may cure once disk space returns (nothing is damaged)."""
        raise NotImplementedError

    def _read_stalled(self, vhost: str, queue: str, msg_ids: list[int]) -> dict[int, bytes]:
        """Bodies while stalled: from the pending appends, else from the file (caller holds ``_lock``)."""
        raise NotImplementedError

    def _checkpoint_due(self) -> bool:
        return False

    def _maybe_checkpoint(self) -> None:
        """After a commit on the writer thread, off the confirm path."""

    def _before_retry(self) -> None:
        """The writer is about to retry a stalled batch."""

    def _shutdown(self) -> None:
        """Close the file (caller holds ``_lock``); the writer exits."""
        raise NotImplementedError

    def disk_free_bytes(self) -> int:
        raise NotImplementedError


def _small(ops: deque[tuple[Any, ...]]) -> bool:
    """True if the message bodies ``ops`` append come to at most ``INLINE_MAX_BYTES``."""
    total = 0
    for op in ops:
        if op[0] == _APPEND:
            total += len(op[3].body)
            if total > INLINE_MAX_BYTES:
                return False
    return True


def _run_callbacks(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("storage sync callback failed")
