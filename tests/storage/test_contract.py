"""The storage contract (leveret.storage.base), run against every backend.

A backend passes if what it returns from ``open`` after a "restart" equals what a
plain reference model says it should hold. The in-memory store restarts by reuse
of the same object; the SQLite store by closing and opening a new one on the file.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leveret.storage.base import (
    BindingRecord,
    ExchangeRecord,
    MessageRecord,
    QueueRecord,
    Recovered,
    Store,
)
from leveret.storage.memory import MemoryStore
from leveret.storage.sqlite import SqliteStore

V = "/"
WAIT = 10.0


class Backend:
    """A store plus what the tests need around it: restart, and an independent look."""

    store: Store

    def reopen(self) -> Recovered:
        raise NotImplementedError

    def visible_ids(self, vhost: str, queue: str) -> list[int]:
        """Message ids of ``queue`` as seen from outside the store's own in-flight state."""
        raise NotImplementedError

    def one_batch(self) -> AbstractContextManager[None]:
        """Operations submitted inside the block reach the writer as one batch."""
        return nullcontext()

    def close(self) -> None:
        self.store.close()


class MemoryBackend(Backend):
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.store.open()

    def reopen(self) -> Recovered:
        self.store.close()
        return self.store.open()

    def visible_ids(self, vhost: str, queue: str) -> list[int]:
        return [m.msg_id for m in self.store.open().messages.get((vhost, queue), [])]


class SqliteBackend(Backend):
    def __init__(self, path: Path, **options: int) -> None:
        self.path = path
        self.options = options
        self.store = self.sqlite = SqliteStore(path, **options)
        self.sqlite.open()

    def reopen(self) -> Recovered:
        self.sqlite.close()
        self.store = self.sqlite = SqliteStore(self.path, **self.options)
        return self.sqlite.open()

    def visible_ids(self, vhost: str, queue: str) -> list[int]:
        # A brand-new connection: it sees only what was committed to the file.
        conn = sqlite3.connect(self.path)
        try:
            rows = conn.execute(
                "SELECT m.msg_id FROM messages m JOIN queue_ids q ON q.id = m.queue"
                " WHERE q.vhost = ? AND q.name = ? ORDER BY m.msg_id",
                (vhost, queue),
            ).fetchall()
        finally:
            conn.close()
        return [r[0] for r in rows]

    @contextmanager
    def one_batch(self) -> Iterator[None]:
        # Park the writer inside a sync callback; whatever is submitted meanwhile is
        # drained together when it resumes.
        parked, release = threading.Event(), threading.Event()

        def park() -> None:
            parked.set()
            release.wait(WAIT)

        self.sqlite.sync(park)
        assert parked.wait(WAIT)
        try:
            yield
        finally:
            release.set()


class InlineSqliteBackend(SqliteBackend):
    """The SQLite store as the broker runs it: attached to a "loop", so small synced turns
    commit on the caller's thread. Kicks run at once, except inside ``one_batch``, where
    they wait for the end of the block (one loop turn)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.held: list[Callable[[], object]] | None = None
        self.sqlite.attach_loop(self)

    def call_soon(self, fn: Callable[[], object], /) -> None:
        if self.held is None:
            fn()
        else:
            self.held.append(fn)

    def call_later(self, delay: float, fn: Callable[[], object], /) -> None:
        self.call_soon(fn)  # no clock here: "later" is the end of the turn

    def reopen(self) -> Recovered:
        r = super().reopen()
        self.sqlite.attach_loop(self)
        return r

    @contextmanager
    def one_batch(self) -> Iterator[None]:
        self.held = []
        try:
            yield
        finally:
            held, self.held = self.held, None
            for fn in held:
                fn()


def make_backend(kind: str, directory: Path) -> Backend:
    if kind == "memory":
        return MemoryBackend()
    if kind == "sqlite-inline":
        return InlineSqliteBackend(directory / "leveret.db")
    if kind == "sqlite-segments":
        # Every body of 4 bytes or more in a segment file, a new segment every 64 bytes: the whole
        # contract with bodies out of the rows, and many rotations and deletions.
        return SqliteBackend(directory / "leveret.db", segment_threshold=4, segment_max=64)
    return SqliteBackend(directory / "leveret.db")


@pytest.fixture(params=["memory", "sqlite", "sqlite-inline", "sqlite-segments"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = make_backend(request.param, tmp_path)
    yield b
    b.close()


def wait_synced(store: Store) -> None:
    done = threading.Event()
    store.sync(done.set)
    assert done.wait(WAIT), "sync callback not called"


def msg(msg_id: int, body: bytes = b"", *, props: bytes = b"\x80\x00\x02", rk: str = "rk") -> MessageRecord:
    return MessageRecord(msg_id, "amq.direct", rk, props, body)


def ids(r: Recovered, queue: str, vhost: str = V) -> list[int]:
    return [m.msg_id for m in r.messages.get((vhost, queue), [])]


RICH_ARGS: dict[str, Any] = {
    "x-max-length": 10,
    "x-big": 2**70,
    "x-neg": -5,
    "x-float": 0.25,
    "x-bool": True,
    "x-false": False,
    "x-none": None,
    "x-str": "héllo ✓",
    "x-bytes": bytes(range(256)),
    "x-empty-bytes": b"",
    "x-list": [1, "two", b"\x03", [4.5, {"five": 5}]],
    "x-nested": {"a": {"b": {"c": b"\xff"}}},
    "x-tag-lookalike": {"$bytes": "not base64 at all"},
    "x-dict-lookalike": {"$dict": {"$bytes": 1}},
    "x-decimal": Decimal("3.14159"),
    "x-time": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
}


# -- empty, metadata ------------------------------------------------------------


def test_new_store_is_empty(backend: Backend) -> None:
    r = backend.reopen()
    assert (r.queues, r.exchanges, r.bindings, r.messages, r.next_msg_id) == ([], [], [], {}, 1)
    assert r.seconds >= 0


def test_queues_saved_replaced_and_deleted_survive_reopen(backend: Backend) -> None:
    s = backend.store
    s.save_queue(QueueRecord(V, "a", arguments={"x-max-length": 1}))
    s.save_queue(QueueRecord(V, "b", auto_delete=True, arguments=RICH_ARGS))
    s.save_queue(QueueRecord("other", "a"))
    s.save_queue(QueueRecord(V, "a", arguments={"x-max-length": 2}))  # replaces
    s.save_queue(QueueRecord(V, "gone"))
    s.delete_queue(V, "gone")
    s.delete_queue(V, "never-existed")
    r = backend.reopen()
    assert r.queues == [
        QueueRecord(V, "a", arguments={"x-max-length": 2}),
        QueueRecord(V, "b", auto_delete=True, arguments=RICH_ARGS),
        QueueRecord("other", "a"),
    ]
    got = r.queues[1].arguments
    assert type(got["x-bytes"]) is bytes and type(got["x-bool"]) is bool and type(got["x-big"]) is int
    assert r.queues[1].auto_delete is True


def test_exchanges_saved_replaced_and_deleted_survive_reopen(backend: Backend) -> None:
    s = backend.store
    s.save_exchange(ExchangeRecord(V, "logs", "fanout"))
    s.save_exchange(ExchangeRecord(V, "logs", "topic", internal=True, arguments=RICH_ARGS))
    s.save_exchange(ExchangeRecord(V, "tmp", "direct", auto_delete=True))
    s.save_exchange(ExchangeRecord(V, "gone", "headers"))
    s.delete_exchange(V, "gone")
    r = backend.reopen()
    assert r.exchanges == [
        ExchangeRecord(V, "logs", "topic", internal=True, arguments=RICH_ARGS),
        ExchangeRecord(V, "tmp", "direct", auto_delete=True),
    ]


def test_binding_identity_includes_arguments(backend: Backend) -> None:
    s = backend.store
    b1 = BindingRecord(V, "x", "q", "queue", "k", {"x-match": "all", "a": 1})
    b2 = BindingRecord(V, "x", "q", "queue", "k", {"x-match": "any", "a": 1})
    b3 = BindingRecord(V, "x", "q", "queue", "k2")
    for b in (b1, b2, b3, b1):
        s.save_binding(b)
    # Same table, other key order: the same binding.
    s.delete_binding(BindingRecord(V, "x", "q", "queue", "k", {"a": 1, "x-match": "any"}))
    s.delete_binding(BindingRecord(V, "x", "q", "queue", "no-such-key"))
    r = backend.reopen()
    assert sorted(r.bindings, key=repr) == sorted([b1, b3], key=repr)


def test_delete_queue_drops_its_messages_and_bindings_only(backend: Backend) -> None:
    s = backend.store
    s.save_queue(QueueRecord(V, "q"))
    s.save_queue(QueueRecord(V, "keep"))
    to_q = BindingRecord(V, "x", "q", "queue", "k")
    to_exchange_named_q = BindingRecord(V, "x", "q", "exchange", "k")
    from_q_named_source = BindingRecord(V, "q", "keep", "queue", "k")
    other_vhost = BindingRecord("v2", "x", "q", "queue", "k")
    for b in (to_q, to_exchange_named_q, from_q_named_source, other_vhost):
        s.save_binding(b)
    for i in range(1, 6):
        s.append(V, "q", msg(i))
        s.append(V, "keep", msg(i))
    wait_synced(s)
    s.delete_queue(V, "q")
    r = backend.reopen()
    assert [q.name for q in r.queues] == ["keep"]
    assert (V, "q") not in r.messages
    assert ids(r, "keep") == [1, 2, 3, 4, 5]
    assert sorted(r.bindings, key=repr) == sorted(
        [to_exchange_named_q, from_q_named_source, other_vhost], key=repr
    )


def test_queue_deleted_and_redeclared_starts_empty(backend: Backend) -> None:
    s = backend.store
    with backend.one_batch():
        s.save_queue(QueueRecord(V, "q"))
        s.append(V, "q", msg(1))
        s.delete_queue(V, "q")
        s.save_queue(QueueRecord(V, "q"))
        s.append(V, "q", msg(2))
    r = backend.reopen()
    assert [q.name for q in r.queues] == ["q"]
    assert ids(r, "q") == [2]
    s = backend.store
    s.delete_queue(V, "q")
    s.append(V, "q", msg(3))
    assert ids(backend.reopen(), "q") == [3]


def test_delete_exchange_drops_bindings_from_and_to_it(backend: Backend) -> None:
    s = backend.store
    s.save_exchange(ExchangeRecord(V, "x", "direct"))
    s.save_exchange(ExchangeRecord(V, "y", "direct"))
    from_x = BindingRecord(V, "x", "q", "queue", "k")
    x_to_y = BindingRecord(V, "x", "y", "exchange", "k")
    y_to_x = BindingRecord(V, "y", "x", "exchange", "k")
    y_to_queue_named_x = BindingRecord(V, "y", "x", "queue", "k")
    for b in (from_x, x_to_y, y_to_x, y_to_queue_named_x):
        s.save_binding(b)
    s.delete_exchange(V, "x")
    r = backend.reopen()
    assert [x.name for x in r.exchanges] == ["y"]
    assert r.bindings == [y_to_queue_named_x]


def test_unstorable_argument_raises_at_the_call_site(backend: Backend) -> None:
    with pytest.raises(TypeError):
        backend.store.save_queue(QueueRecord(V, "q", arguments={"x": object()}))
    with pytest.raises(TypeError):
        backend.store.save_binding(BindingRecord(V, "x", "q", "queue", "k", {"x": {1: 2}}))
    wait_synced(backend.store)  # the store still works
    assert backend.reopen().queues == []


# -- messages ---------------------------------------------------------------------


def test_messages_come_back_in_order_byte_identical(backend: Backend) -> None:
    s = backend.store
    every_byte = bytes(range(256))
    big = os.urandom(1 << 20)
    sent = [
        MessageRecord(1, "", "q", every_byte, every_byte),
        MessageRecord(2, "amq.topic", "a.b.c", b"", b""),
        MessageRecord(3, "ex", "ünïcode ✓", b"\x00" * 3, big),
        MessageRecord(4, "ex", "", every_byte[::-1], b"\x00"),
        MessageRecord(5, "ex", "ttl", b"", b"t", expires_at=1_799_999_999.125),  # a TTL deadline comes back
    ]
    other = [MessageRecord(i, "", "other", b"p", str(i).encode()) for i in (6, 7)]
    s.append(V, "q", sent[0])
    s.append(V, "other", other[0])
    for m in sent[1:]:
        s.append(V, "q", m)
    s.append(V, "other", other[1])
    wait_synced(s)
    r = backend.reopen()
    assert r.messages == {(V, "q"): sent, (V, "other"): other}
    assert r.messages[V, "q"][2].body == big
    assert all(type(m.properties) is bytes and type(m.body) is bytes for m in r.messages[V, "q"])
    assert r.next_msg_id == 8


def test_one_message_routed_to_two_queues_keeps_its_id_in_both(backend: Backend) -> None:
    s = backend.store
    s.append(V, "a", msg(7, b"x"))
    s.append(V, "b", msg(7, b"x"))
    s.remove(V, "a", [7])
    r = backend.reopen()
    assert ids(r, "b") == [7] and ids(r, "a") == []


def test_removed_messages_do_not_come_back(backend: Backend) -> None:
    s = backend.store
    for i in range(1, 11):
        s.append(V, "q", msg(i))
    wait_synced(s)
    reused = [2, 4]
    s.remove(V, "q", reused)
    reused[:] = [1, 3, 5, 7, 9]  # the store must have taken its own copy
    s.remove(V, "q", (i for i in (6, 99)))  # any iterable; unknown ids are ignored
    s.remove(V, "nope", [1])
    r = backend.reopen()
    assert ids(r, "q") == [1, 3, 5, 7, 8, 9, 10]


def test_append_then_remove_in_one_batch_leaves_nothing(backend: Backend) -> None:
    s = backend.store
    s.append(V, "q", msg(1))
    wait_synced(s)
    with backend.one_batch():
        for i in range(2, 6):
            s.append(V, "q", msg(i))
        s.remove(V, "q", [1, 2, 3])
        s.mark_delivered(V, "q", [4])
        s.remove(V, "q", [4])
    r = backend.reopen()
    assert ids(r, "q") == [5]
    assert r.next_msg_id == 6


def test_mark_delivered_comes_back_as_delivered(backend: Backend) -> None:
    s = backend.store
    for i in range(1, 5):
        s.append(V, "q", msg(i))
    wait_synced(s)
    s.mark_delivered(V, "q", [2, 3, 42])
    with backend.one_batch():
        s.append(V, "q", msg(5))
        s.mark_delivered(V, "q", [5])
        s.mark_delivered(V, "nope", [5])
    s.mark_delivered(V, "q", [3])  # twice is the same as once
    r = backend.reopen()
    assert [(m.msg_id, m.delivered) for m in r.messages[V, "q"]] == [
        (1, False),
        (2, True),
        (3, True),
        (4, False),
        (5, True),
    ]
    assert all(type(m.delivered) is bool for m in r.messages[V, "q"])


def test_next_msg_id_is_one_past_the_highest_held(backend: Backend) -> None:
    s = backend.store
    s.append(V, "a", msg(10))
    s.append(V, "b", msg(41))
    s.append(V, "b", msg(42))
    s.remove(V, "b", [42])
    assert backend.reopen().next_msg_id == 42


def test_close_flushes_without_sync(backend: Backend) -> None:
    backend.store.save_queue(QueueRecord(V, "q"))
    backend.store.append(V, "q", msg(1))
    r = backend.reopen()
    assert [q.name for q in r.queues] == ["q"] and ids(r, "q") == [1]


# -- sync ---------------------------------------------------------------------------


def test_sync_callback_runs_only_after_the_write_is_visible(backend: Backend) -> None:
    s = backend.store
    seen: list[list[int]] = []
    done = threading.Event()
    for i in range(1, 21):
        s.append(V, "q", msg(i))
        s.sync(lambda: seen.append(backend.visible_ids(V, "q")))
        if i % 5 == 0:
            s.remove(V, "q", [i - 1])
            s.sync(lambda: seen.append(backend.visible_ids(V, "q")))
    s.sync(done.set)
    assert done.wait(WAIT)
    assert len(seen) == 24
    # Later operations may share the callback's batch, so the check is one-sided:
    # whatever was submitted before the sync is in effect when the callback runs.
    removed = {i - 1 for i in range(5, 21, 5)}
    k = 0
    for i in range(1, 21):
        kept = {j for j in range(1, i + 1) if j not in removed}
        assert kept <= set(seen[k]), f"callback {k} ran before message {i} was durable"
        k += 1
        if i % 5 == 0:
            assert i - 1 not in seen[k], f"callback {k} ran before the removal of {i - 1} was durable"
            k += 1


def test_sync_callbacks_from_many_threads(backend: Backend) -> None:
    s = backend.store
    threads, per_thread = 8, 150
    calls: dict[int, list[int]] = {t: [] for t in range(threads)}
    all_done = [threading.Event() for _ in range(threads)]

    def publisher(t: int) -> None:
        for i in range(per_thread):
            s.append(V, f"q{t}", msg(t * 10_000 + i + 1))
            s.sync(lambda i=i: calls[t].append(i))  # type: ignore[misc]
        s.sync(all_done[t].set)

    workers = [threading.Thread(target=publisher, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT)
    assert all(e.wait(WAIT) for e in all_done)
    for t in range(threads):
        assert calls[t] == list(range(per_thread)), "each callback exactly once, in submission order"
    r = backend.reopen()
    for t in range(threads):
        assert ids(r, f"q{t}") == [t * 10_000 + i + 1 for i in range(per_thread)]


def test_a_failing_callback_does_not_break_the_store(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    s = backend.store

    def boom() -> None:
        raise ValueError("callback bug")

    s.append(V, "q", msg(1))
    s.sync(boom)
    s.append(V, "q", msg(2))
    wait_synced(s)
    assert ids(backend.reopen(), "q") == [1, 2]
    assert "callback bug" in caplog.text


# -- random operations against a reference model ------------------------------------

_queue_names = st.sampled_from(["q1", "q2", "q3"])
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), _queue_names, st.binary(max_size=8)),
        st.tuples(st.just("remove"), _queue_names, st.lists(st.integers(1, 10), max_size=4)),
        st.tuples(st.just("deliver"), _queue_names, st.lists(st.integers(1, 10), max_size=4)),
        st.tuples(st.just("delete_queue"), _queue_names, st.none()),
        st.tuples(st.just("sync"), st.none(), st.none()),
        st.tuples(st.just("restart"), st.none(), st.none()),
    ),
    max_size=40,
)


@pytest.mark.parametrize("kind", ["memory", "sqlite", "sqlite-inline"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops, batched=st.booleans())
def test_random_operations_match_a_reference_model(
    kind: str, ops: list[tuple[str, Any, Any]], batched: bool
) -> None:
    model: dict[str, dict[int, tuple[bytes, bool]]] = {}
    next_id = 1
    with tempfile.TemporaryDirectory() as tmp:
        b = make_backend(kind, Path(tmp))
        try:
            batch: Callable[[], AbstractContextManager[None]] = b.one_batch if batched else nullcontext
            ctx = batch()
            ctx.__enter__()
            for op, q, arg in ops:
                if op == "append":
                    b.store.append(V, q, MessageRecord(next_id, "x", q, b"p", arg))
                    model.setdefault(q, {})[next_id] = (arg, False)
                    next_id += 1
                elif op == "remove":
                    b.store.remove(V, q, arg)
                    for i in arg:
                        model.get(q, {}).pop(i, None)
                elif op == "deliver":
                    b.store.mark_delivered(V, q, arg)
                    held = model.get(q, {})
                    for i in arg:
                        if i in held:
                            held[i] = (held[i][0], True)
                elif op == "delete_queue":
                    b.store.delete_queue(V, q)
                    model.pop(q, None)
                elif op == "sync":
                    ctx.__exit__(None, None, None)
                    wait_synced(b.store)
                    ctx = batch()
                    ctx.__enter__()
                else:
                    ctx.__exit__(None, None, None)
                    check(b.reopen(), model)
                    ctx = batch()
                    ctx.__enter__()
            ctx.__exit__(None, None, None)
            check(b.reopen(), model)
        finally:
            b.close()


def check(r: Recovered, model: dict[str, dict[int, tuple[bytes, bool]]]) -> None:
    want = {
        (V, q): [(i, body, d) for i, (body, d) in sorted(held.items())] for q, held in model.items() if held
    }
    got = {key: [(m.msg_id, m.body, m.delivered) for m in ms] for key, ms in r.messages.items()}
    assert got == want
    highest = max((i for held in model.values() for i in held), default=0)
    assert r.next_msg_id == highest + 1


def test_read_bodies_sees_unsynced_appends_and_skips_removed(backend: Backend) -> None:
    s = backend.store
    for i in range(1, 6):
        s.append(V, "q", msg(i, bytes([i]) * i))
    s.remove(V, "q", [2])
    # no sync: a read must still see what was submitted before it
    assert s.read_bodies(V, "q", [1, 2, 3, 5, 99]) == {1: b"\x01", 3: b"\x03" * 3, 5: b"\x05" * 5}
    assert s.read_bodies(V, "other", [1]) == {}
    assert s.read_bodies(V, "q", []) == {}


def test_discard_pending_drops_what_is_not_written_as_a_kill_would(backend: Backend) -> None:
    if type(backend) is SqliteBackend:
        pytest.skip("its writer takes operations as they come: which ones a discard finds is a race")
    s = backend.store
    # The inline store still has a writer thread, which a lazy hand-off may have woken before the
    # batch below: it then writes the batch before the discard sees it. That outcome is checked
    # for consistency and the attempt made again (on a new queue) until the discard found the batch.
    for attempt in range(20):
        q = f"q{attempt}"
        s.save_queue(QueueRecord(V, q))
        s.append(V, q, msg(1))
        wait_synced(s)
        time.sleep(0.02 * attempt)  # let a stale wake of the writer pass
        confirmed: list[int] = []
        with backend.one_batch():
            s.append(V, q, msg(2))
            s.remove(V, q, [1])
            s.sync(lambda c=confirmed: c.append(2))
            dropped = s.discard_pending()
        assert s.pending() == 0
        r = backend.reopen()
        s = backend.store
        if isinstance(backend, MemoryBackend):  # it writes as it goes: nothing was pending
            assert (dropped, ids(r, q), confirmed) == (0, [2], [2])
            return
        if dropped == 0:  # the writer took the batch first: written whole, confirmed
            assert (ids(r, q), confirmed) == ([2], [2])
            continue
        assert (dropped, ids(r, q), confirmed) == (3, [1], [])
        return
    pytest.fail("the writer took every batch before discard_pending could find it")
