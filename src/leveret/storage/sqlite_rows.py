"""How the SQLite store writes a batch's message rows: their two shapes and the statements for them.

A message row as inserted: (queue, msg_id, exchange, routing_key, properties, body, delivered), then, only
when one is set, expires_at, seg, seg_off, seg_len (7 or 11 values). The short form binds 4 fewer
parameters per row: insert and delete together cost ~25 % less for small messages (session 8).

Fewer statement steps per batch (session 9). sqlite3 releases the GIL around every step, and on a
2-core machine the writer then waits for the loop thread to give it back: in wq-stream a row took 16 us
to insert and 12 us to delete in the writer (measured), against 3.7 and 1.7 us alone. One multi-row
INSERT per ``CHUNK`` short rows, and one DELETE (or delivered mark) per queue with the ids as a JSON
array, brought that to 12.5 and 7 us (docs/benchmarks.md). An SQLite without its JSON functions
(:func:`has_json_each`) gets the same changes row by row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from itertools import chain
from typing import Any

__all__ = ["Row", "has_json_each", "insert_rows", "mark_delivered", "delete_rows"]

Row = tuple[Any, ...]

INSERT_SHORT = (
    "INSERT INTO messages (queue, msg_id, exchange, routing_key, properties, body, delivered)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
INSERT_FULL = (
    "INSERT INTO messages (queue, msg_id, exchange, routing_key, properties, body, delivered, expires_at,"
    " seg, seg_off, seg_len) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
CHUNK = 32  # 224 parameters: under SQLite's oldest default limit (999)
INSERT_CHUNK = INSERT_SHORT + ", (?, ?, ?, ?, ?, ?, ?)" * (CHUNK - 1)
MARK_DELIVERED = "UPDATE messages SET delivered = 1 WHERE queue = ? AND msg_id = ?"
DELETE = "DELETE FROM messages WHERE queue = ? AND msg_id = ?"
_IN_JSON = " WHERE queue = ? AND msg_id IN (SELECT value FROM json_each(?))"
MARK_DELIVERED_IN = "UPDATE messages SET delivered = 1" + _IN_JSON
DELETE_IN = "DELETE FROM messages" + _IN_JSON


def has_json_each(conn: sqlite3.Connection) -> bool:
    """SQLite's JSON functions are built in since 3.38 and in most builds before; check."""
    try:
        conn.execute("SELECT value FROM json_each('[1]')").fetchall()
    except sqlite3.OperationalError:
        return False
    return True


def insert_rows(conn: sqlite3.Connection, rows: Iterable[Row]) -> None:
    """Insert rows of either shape: short ones ``CHUNK`` per statement, the rest one by one."""
    short: list[Row] = []
    full: list[Row] = []
    for row in rows:
        (short if len(row) == 7 else full).append(row)
    whole = len(short) - len(short) % CHUNK
    for i in range(0, whole, CHUNK):
        conn.execute(INSERT_CHUNK, list(chain.from_iterable(short[i : i + CHUNK])))
    if whole < len(short):
        conn.executemany(INSERT_SHORT, short[whole:])
    if full:
        conn.executemany(INSERT_FULL, full)


def mark_delivered(conn: sqlite3.Connection, keys: Iterable[tuple[int, int]], json_each: bool) -> None:
    """Set ``delivered`` on the rows ``keys`` ((queue, msg_id) pairs) name."""
    _by_queue(conn, keys, json_each, MARK_DELIVERED_IN, MARK_DELIVERED)


def delete_rows(conn: sqlite3.Connection, keys: Iterable[tuple[int, int]], json_each: bool) -> None:
    """Delete the rows ``keys`` ((queue, msg_id) pairs) name."""
    _by_queue(conn, keys, json_each, DELETE_IN, DELETE)


def _by_queue(
    conn: sqlite3.Connection, keys: Iterable[tuple[int, int]], json_each: bool, per_queue: str, per_row: str
) -> None:
    """``per_queue`` once per queue with its ids as one JSON array, or ``per_row`` for every key."""
    if not json_each:
        conn.executemany(per_row, keys)
        return
    ids_of: dict[int, list[str]] = {}
    for queue, msg_id in keys:
        ids = ids_of.get(queue)
        if ids is None:
            ids_of[queue] = ids = []
        ids.append(str(msg_id))
    for queue, ids in ids_of.items():
        conn.execute(per_queue, (queue, f"[{','.join(ids)}]"))
