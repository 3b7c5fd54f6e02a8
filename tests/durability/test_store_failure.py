"""The store cannot write: a broker in a thread, with failures injected into its SQLite store.

No tmpfs needed (tests/durability/test_disk_full.py fills a real one): "no space" is the
file capped with ``max_page_count`` (SQLite answers SQLITE_FULL), "I/O error" a patched
``_apply``. Checked: publishers are blocked by the failure itself, not by the next tick;
the health check fails while it lasts; held confirms come once space returns; a store that
failed for good closes its clients with 541 and leaves no clean-stop marker.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from pika.exceptions import AMQPConnectionError, ConnectionClosedByBroker

from leveret.app import CLEAN_STOP_MARKER
from leveret.storage.sqlite import SqliteStore
from tests.durability.conftest import close_quietly
from tests.helpers import ThreadBroker, in_thread, wait_for
from tests.http_client import http_request

PERSISTENT = pika.BasicProperties(delivery_mode=2)


@pytest.fixture
def sbroker(tmp_path: Path) -> Iterator[ThreadBroker]:
    b = ThreadBroker(storage="sqlite", data_dir=tmp_path / "data", http_port=0).start()
    yield b
    b.stop()


def params(port: int) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host="127.0.0.1", port=port, credentials=pika.PlainCredentials("guest", "guest"), socket_timeout=5,
        blocked_connection_timeout=20, connection_attempts=1,
    )  # fmt: skip


def health(b: ThreadBroker) -> tuple[int, Any]:
    status, body, _ = http_request(f"http://127.0.0.1:{b.app.http_port}/api/healthchecks/node", "GET")
    return status, body


def store_of(b: ThreadBroker) -> SqliteStore:
    store = b.app.store
    assert isinstance(store, SqliteStore)
    return store


def set_max_pages(store: SqliteStore, pages: int | None) -> None:
    """Cap the file at its current size (None) or lift the cap, between two of the writer's batches."""
    with store._lock:
        conn = store._conn
        assert conn is not None
        n = conn.execute("PRAGMA page_count").fetchone()[0] if pages is None else pages
        conn.execute(f"PRAGMA max_page_count = {n}")


def test_no_space_blocks_publishers_at_once_fails_health_and_confirms_when_space_returns(
    sbroker: ThreadBroker,
) -> None:
    server = sbroker.app.server
    assert server is not None
    store = store_of(sbroker)
    pub = pika.BlockingConnection(params(sbroker.port))
    events: list[str] = []
    pub.add_on_connection_blocked_callback(lambda _c, f: events.append(f"blocked: {f.method.reason}"))
    pub.add_on_connection_unblocked_callback(lambda _c, _f: events.append("unblocked"))
    ch = pub.channel()
    ch.confirm_delivery()
    ch.queue_declare("q", durable=True)
    ch.basic_publish("", "q", b"m1", PERSISTENT)
    assert health(sbroker) == (200, {"status": "ok"})

    # Only the store's own report may block: the periodic tick (alarm probe) is stopped.
    assert server._tick is not None
    sbroker.call(server._tick.cancel)
    set_max_pages(store, None)
    # 30 KB: below the segment threshold, so in the database file, which max_page_count caps.
    t, published = in_thread(lambda: ch.basic_publish("", "q", b"x" * 30_000, PERSISTENT))
    # (pika runs the blocked callback only once basic_publish returns: ask the broker.)
    wait_for(lambda: sbroker.call(lambda: [c.blocked for c in server.connections]) == [True], timeout=5)
    status, body = health(sbroker)
    assert status == 503 and body["status"] == "failed", body
    assert "cannot write" in body["reason"] and "full" in body["reason"]
    t.join(0.5)
    assert published == [], "not written, not confirmed"

    set_max_pages(store, 1 << 30)  # space is back
    t.join(5)
    assert published == [None], "confirmed once written"
    wait_for(lambda: health(sbroker) == (200, {"status": "ok"}), timeout=5)
    sbroker.call(server._schedule_tick, sbroker.loop)  # the probe lifts the alarm
    wait_for(lambda: (pub.process_data_events(0.05), "unblocked" in events)[1], timeout=5)
    assert events == ["blocked: low on disk", "unblocked"]
    ch.basic_publish("", "q", b"after", PERSISTENT)  # confirmed again
    close_quietly(pub)
    sbroker.stop()
    assert (sbroker.settings.data_dir / CLEAN_STOP_MARKER).exists()


def test_a_store_that_fails_for_good_closes_clients_with_541_and_is_no_clean_stop(
    sbroker: ThreadBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = pika.BlockingConnection(params(sbroker.port))
    ch = conn.channel()
    ch.queue_declare("q", durable=True)

    def broken(self: SqliteStore, batch: list[tuple[object, ...]], durable: bool) -> list[Callable[[], None]]:
        raise sqlite3.OperationalError("disk I/O error")  # not a lack of space: no retry helps

    monkeypatch.setattr(SqliteStore, "_apply", broken)
    # Its -ok can never come: an error must, rather than a wait forever.
    t, out = in_thread(lambda: ch.queue_declare("waits-for-the-store", durable=True))
    t.join(10)
    assert len(out) == 1 and isinstance(out[0], ConnectionClosedByBroker), out
    err = out[0]
    assert err.reply_code == 541
    assert "storage failed" in err.reply_text and "disk I/O error" in err.reply_text
    status, body = health(sbroker)
    assert status == 503 and body["status"] == "failed" and "storage failed" in body["reason"]
    with pytest.raises(AMQPConnectionError):  # no new client is left waiting on a dead store
        pika.BlockingConnection(params(sbroker.port))
    sbroker.stop()
    assert not (sbroker.settings.data_dir / CLEAN_STOP_MARKER).exists()
