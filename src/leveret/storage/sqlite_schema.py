"""The SQLite store's file: schema and migrations, what counts as damage or a full disk, reading it back.

Used by :mod:`leveret.storage.sqlite` when it opens a file (on the caller's thread, before the writer
starts) and when it sets records aside. Recovery rules (see that module's docstring): a file that is not a
database or is malformed is moved aside (:func:`move_aside`); a row that cannot be decoded is copied to a
``quarantine_*`` table with why, deleted, and recovery goes on without it (:func:`read_contents`).
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leveret.storage.base import (
    BindingRecord,
    ExchangeRecord,
    MessageRecord,
    QueueRecord,
    Recovered,
    SetAside,
    describe,
)
from leveret.storage.codec import decode_arguments, encode_arguments

log = logging.getLogger("leveret.storage")

SCHEMA_VERSION = 4

# MIGRATIONS[v] takes a database from user_version v to v + 1, in one transaction.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
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
        # WITHOUT ROWID (files created from session 9 on): the rows live in the (queue, msg_id) B-tree
        # itself, not in a rowid table beside an index on it, so an insert, a delivered mark and a
        # delete touch one B-tree instead of two. A lone confirmed publish with its consumer's ack
        # then commits 10.5 KB of WAL instead of 17.4 KB (0.27 against 0.33 ms here). Files created
        # before keep their rowid table: the same statements work on both, nothing is rewritten.
        """CREATE TABLE messages (
            queue INTEGER NOT NULL, msg_id INTEGER NOT NULL,
            exchange TEXT NOT NULL, routing_key TEXT NOT NULL,
            properties BLOB NOT NULL, body BLOB NOT NULL, delivered INTEGER NOT NULL,
            PRIMARY KEY (queue, msg_id)) WITHOUT ROWID""",
    ),
    # v2: a message's TTL deadline (wall-clock seconds), so it keeps running across a restart.
    ("ALTER TABLE messages ADD COLUMN expires_at REAL",),
    # v3: users, vhosts, permissions (JSON records the store does not interpret).
    (
        "CREATE TABLE definitions (kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, key))",
    ),
    # v4: a large body lives in a segment file (leveret.storage.segments); its row holds where, and an
    # empty ``body``. NULL ``seg``: the body is in the row (every row written before v4).
    (
        "ALTER TABLE messages ADD COLUMN seg INTEGER",
        "ALTER TABLE messages ADD COLUMN seg_off INTEGER",
        "ALTER TABLE messages ADD COLUMN seg_len INTEGER",
    ),
)

# SQLite primary result codes that mean "this file is damaged", as opposed to busy,
# locked, I/O or permission errors, which a restart may cure and which must never
# cause files to be moved.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
# ... and the ones that mean "no space": SQLITE_FULL, and SQLITE_IOERR_SHMSIZE (growing the
# -shm file failed, which on tmpfs is ENOSPC).
_SQLITE_FULL = 13
_SQLITE_IOERR_SHMSIZE = 10 | (19 << 8)


def binding_params(b: BindingRecord) -> tuple[str, str, str, str, str, str]:
    return (
        b.vhost,
        b.source,
        b.destination,
        b.destination_type,
        b.routing_key,
        encode_arguments(b.arguments),
    )


def is_space_error(exc: BaseException) -> bool:
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
QUARANTINE_TABLES = (
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
# A body in a segment file is read by the SQL function SEGMENT_BODY (registered on the store's
# connection; NULL if the segment does not hold it), so the quarantined copy keeps it.
SEGMENT_BODY = "segment_body"
COPY_MESSAGES = (
    "INSERT INTO quarantine_messages SELECT ?, ?, q.vhost, q.name, m.msg_id, m.exchange, m.routing_key,"
    f" m.properties, CASE WHEN m.seg IS NULL THEN m.body ELSE {SEGMENT_BODY}(m.seg, m.seg_off, m.seg_len) END,"
    " m.delivered, m.expires_at FROM messages m JOIN queue_ids q ON m.queue = q.id"
    " WHERE q.vhost = ? AND q.name = ?"
)
_COPY_BINDINGS_NUMBERED = _COPY_BINDINGS.replace("?, ?", "?3, ?4", 1)  # after ?1, ?2 of the WHERE
_BINDING_IDENTITY = "vhost = ? AND source = ? AND destination = ? AND destination_type = ? AND routing_key = ? AND arguments = ?"
_TO_QUEUE = "vhost = ? AND destination = ? AND destination_type = 'queue'"
_FROM_OR_TO_EXCHANGE = "vhost = ?1 AND (source = ?2 OR (destination = ?2 AND destination_type = 'exchange'))"
_QUEUE_ID = "(SELECT id FROM queue_ids WHERE vhost = ? AND name = ?)"

_Statements = tuple[tuple[str, tuple[Any, ...]], ...]


def set_aside_sql(record: SetAside, reason: str, rowid: int | None = None) -> _Statements:
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
            where, key = _BINDING_IDENTITY, binding_params(record)
        return (
            *((sql, ()) for sql in QUARANTINE_TABLES),
            (_COPY_BINDINGS + where, (*head, *key)),
            ("DELETE FROM bindings WHERE " + where, key),
        )
    n = record.name
    along = (time.time(), f"{describe(record)} was set aside: {reason}")
    if isinstance(record, QueueRecord):
        return (
            *((sql, ()) for sql in QUARANTINE_TABLES),
            (_COPY_QUEUE, (*head, v, n)),
            (COPY_MESSAGES, (*along, v, n)),
            (_COPY_BINDINGS + _TO_QUEUE, (*along, v, n)),
            ("DELETE FROM messages WHERE queue = " + _QUEUE_ID, (v, n)),
            ("DELETE FROM queue_ids WHERE vhost = ? AND name = ?", (v, n)),
            ("DELETE FROM queues WHERE vhost = ? AND name = ?", (v, n)),
            ("DELETE FROM bindings WHERE " + _TO_QUEUE, (v, n)),
        )
    return (
        *((sql, ()) for sql in QUARANTINE_TABLES),
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


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


# ------------------------------------------------------------------------------------- recovery


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the file to SCHEMA_VERSION, one transaction per step; RuntimeError if it is newer."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"{path} has schema version {version}; this leveret knows up to {SCHEMA_VERSION}"
        )
    for v in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[v]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {v + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if v:  # 0 -> 1 is a new store, not an upgrade
            log.info("storage %s: schema upgraded from version %d to %d", path, v, v + 1)
        log.info("storage %s: schema version %d -> %d", path, v, v + 1)


def read_contents(
    conn: sqlite3.Connection,
    path: Path,
    read_segment: Callable[[int, int, int], bytes | None],
    segments_on_disk: dict[int, int],
) -> tuple[Recovered, dict[tuple[str, str], int], dict[int, dict[int, int]]]:
    """Everything the file holds, the queue ids of its messages ((vhost, name) -> id), and where bodies
    in segment files are (queue id -> msg_id -> segment).

    Rows that do not decode are set aside (committed here) and left out; so are messages whose body is in
    a segment file that is missing or too short (``read_segment(seg, offset, length)`` returns None;
    ``segments_on_disk`` maps segment id -> file size).
    """
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
                bad.append((record, reason, set_aside_sql(record, reason, rowid)))
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
            log_set_aside(path, describe(record), reason)
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

    messages: dict[tuple[str, str], list[MessageRecord]] = {}
    next_id = 1
    # Exchange names and routing keys repeat across messages: share one str each.
    shared: dict[str, str] = {}
    share = shared.setdefault
    select = (
        "SELECT msg_id, exchange, routing_key, properties, body, delivered, expires_at, seg, seg_off, seg_len"
        " FROM messages WHERE queue = ? ORDER BY msg_id"
    )
    segrefs: dict[int, dict[int, int]] = {}
    lost: list[tuple[int, int, str]] = []  # (queue id, msg_id, reason): body not in its segment
    for qid, key in sorted(names.items(), key=lambda item: item[1]):
        records = []
        refs: dict[int, int] = {}
        for msg_id, ex, rk, props, body, delivered, expires_at, seg, off, length in conn.execute(select, (qid,)):
            next_id = max(next_id, msg_id + 1)  # a lost one's id is not given out again either
            if seg is not None:
                size = segments_on_disk.get(seg)
                data = read_segment(seg, off, length) if size is not None and off + length <= size else None
                if data is None:
                    where = f"segment {seg}, bytes {off}-{off + length}"
                    state = "missing" if size is None else f"{size} bytes long"
                    lost.append((qid, msg_id, f"its body ({where}) is not on disk: the segment file is {state}"))
                    continue
                body = data
                refs[msg_id] = seg
            records.append(
                MessageRecord(msg_id, share(ex, ex), share(rk, rk), props, body, delivered != 0, expires_at)
            )
        if records:
            messages[key] = records
        if refs:
            segrefs[qid] = refs
    if lost:
        _set_aside_lost(conn, path, names, lost)
    definitions: dict[str, dict[str, str]] = {}
    for kind, key, value in conn.execute("SELECT kind, key, value FROM definitions ORDER BY kind, key"):
        definitions.setdefault(str(kind), {})[str(key)] = str(value)
    recovered = Recovered(
        queues, exchanges, bindings, messages, next_id, set_aside=len(bad) + len(lost), definitions=definitions
    )
    return recovered, {key: qid for qid, key in names.items()}, segrefs


def _set_aside_lost(
    conn: sqlite3.Connection, path: Path, names: dict[int, tuple[str, str]], lost: list[tuple[int, int, str]]
) -> None:
    """Move messages whose body is not on disk to ``quarantine_messages`` (with an empty body), committed."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql in QUARANTINE_TABLES:
            conn.execute(sql)
        now = time.time()
        for qid, msg_id, reason in lost:
            vhost, name = names[qid]
            conn.execute(COPY_MESSAGES + " AND m.msg_id = ?", (now, reason, vhost, name, msg_id))
            conn.execute("DELETE FROM messages WHERE queue = ? AND msg_id = ?", (qid, msg_id))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    for qid, msg_id, reason in lost:
        vhost, name = names[qid]
        log_set_aside(path, f"message {msg_id} of queue '{name}' in vhost '{vhost}'", reason)


def log_set_aside(path: Path, what: str, reason: str) -> None:
    log.error(
        "storage %s: %s cannot be recovered (%s); it is set aside in the quarantine_* tables and the"
        " broker starts without it",
        path,
        what,
        reason,
    )


def move_aside(path: Path, exc: sqlite3.DatabaseError) -> None:
    """Rename a damaged file (and its -wal, -shm) to ``*.corrupt-<stamp>*``, so the store starts empty."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for suffix in ("", "-wal", "-shm", ".segments"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            dst = Path(f"{path}.corrupt-{stamp}{suffix}")
            src.rename(dst)
            moved.append(str(dst))
    log.error(
        "storage %s is damaged (%s); moved it aside to %s and starting EMPTY: durable queues "
        "and messages in it are not recovered. Inspect or restore the moved files by hand.",
        path,
        exc,
        ", ".join(moved) or "(nothing)",
    )
