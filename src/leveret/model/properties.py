"""The few things the model reads from, or rewrites in, a message's raw basic properties.

A message keeps the property section its publisher sent (flags + values) as bytes and is
forwarded unchanged. Two cold paths need to look inside: the per-message ``expiration``
(read once at publish, only when its flag is set) and dead-lettering, which adds RabbitMQ's
``x-death`` headers and removes ``expiration``. The rewrite keeps every other property, and
every other header value, byte for byte: header values are split, not decoded and re-encoded
(pamqp's field-table round trip is lossy), and only the headers RabbitMQ adds are encoded here.
"""

from __future__ import annotations

import re
import struct

from leveret.errors import precondition_failed
from leveret.limits import VALUE_SIZES, TableError, scan_table

FLAG_HEADERS = 0x2000
FLAG_EXPIRATION = 0x0100
FLAG_PRIORITY = 0x0800
FLAG_USER_ID = 0x0010
FLAG_REPLY_TO = 0x0200

# (flag, kind) in wire order: s = shortstr, t = table, o = octet, q = 64-bit timestamp
_FIELDS = (
    (0x8000, "s"), (0x4000, "s"), (0x2000, "t"), (0x1000, "o"), (0x0800, "o"), (0x0400, "s"), (0x0200, "s"),
    (0x0100, "s"), (0x0080, "s"), (0x0040, "q"), (0x0020, "s"), (0x0010, "s"), (0x0008, "s"), (0x0004, "s"),
)  # fmt: skip

_u32 = struct.Struct(">I")
_i64 = struct.Struct(">q")
_u64 = struct.Struct(">Q")
_INTS = {b"b": ">b", b"B": ">B", b"s": ">h", b"u": ">H", b"I": ">i", b"i": ">I", b"l": ">q", b"L": ">q"}
_ERLANG_INT = re.compile(rb"[+-]?[0-9]+")

REJECTED, EXPIRED, MAXLEN, DELIVERY_LIMIT = "rejected", "expired", "maxlen", "delivery_limit"


def has_expiration(properties: bytes) -> bool:
    """True when the expiration flag is set (the hot path's only look at properties)."""
    return bool(properties) and properties[0] & (FLAG_EXPIRATION >> 8) != 0


def priority(properties: bytes) -> int:
    """The ``priority`` property (an octet), 0 when it is absent."""
    if len(properties) < 2 or not properties[0] & (FLAG_PRIORITY >> 8):
        return 0
    flags = properties[0]
    pos = 2
    try:
        if flags & 0x80:  # content-type
            pos += 1 + properties[pos]
        if flags & 0x40:  # content-encoding
            pos += 1 + properties[pos]
        if flags & 0x20:  # headers
            pos += 4 + _u32.unpack_from(properties, pos)[0]
        if flags & 0x10:  # delivery-mode
            pos += 1
        return properties[pos]
    except (IndexError, struct.error):  # a truncated property section: no priority
        return 0


def check_user_id(properties: bytes, user: str) -> None:
    """RabbitMQ refuses a publish whose ``user_id`` property is not the authenticated user (406)."""
    if len(properties) < 2 or not properties[1] & FLAG_USER_ID:
        return
    try:
        raw = _split(properties)[1][FLAG_USER_ID][1:]
    except ValueError:
        raise precondition_failed("user_id property cannot be read: the basic properties are malformed") from None
    claimed = raw.decode("utf-8", "replace")
    if claimed != user:
        raise precondition_failed(f"user_id property set to '{claimed}' but authenticated user was '{user}'")


_DIRECT_REPLY_TO = b"\x15amq.rabbitmq.reply-to"  # the pseudo-queue's name as a shortstr


def asks_direct_reply(properties: bytes) -> bool:
    """True if ``reply_to`` is exactly ``amq.rabbitmq.reply-to`` (direct reply-to). Cheap: the
    property section is only walked when the reply-to flag is set."""
    if len(properties) < 2 or not properties[0] & (FLAG_REPLY_TO >> 8):
        return False
    try:
        _, fields = _split(properties)
    except ValueError:
        return False
    return fields.get(FLAG_REPLY_TO) == _DIRECT_REPLY_TO


def with_reply_to(properties: bytes, reply_to: str) -> bytes:
    """The properties with ``reply_to`` replaced (it must be present: see asks_direct_reply)."""
    flags, fields = _split(properties)
    raw = reply_to.encode("utf-8")
    fields[FLAG_REPLY_TO] = bytes((len(raw),)) + raw
    return _join(flags, fields)


def with_delivery_count(properties: bytes, count: int) -> bytes:
    """The properties as a quorum queue delivers them: header ``x-delivery-count`` (a long) set to
    ``count``, replacing one already there or appended (rabbit_misc:set_table_value keeps order)."""
    if len(properties) < 2:
        properties = b"\x00\x00"
    try:
        flags, fields = _split(properties)
    except ValueError:
        return properties  # malformed as published: delivered as it is rather than not at all
    entries: list[tuple[bytes, bytes]] = []
    raw = fields.get(FLAG_HEADERS)
    if raw is not None:
        try:
            entries = _table_entries(raw[4:])
        except ValueError:
            entries = []
    value = _long(count)
    for i, (k, _) in enumerate(entries):
        if k == b"x-delivery-count":
            entries[i] = (k, value)
            break
    else:
        entries.append((b"x-delivery-count", value))
    fields[FLAG_HEADERS] = _table(entries)
    return _join(flags | FLAG_HEADERS, fields)


def may_have_cc(properties: bytes) -> bool:
    """A cheap test before :func:`sender_selected`: headers are set and a CC or BCC key may be there."""
    return (
        len(properties) > 1
        and properties[0] & (FLAG_HEADERS >> 8) != 0
        and (b"\x02CCA" in properties or b"\x03BCCA" in properties)
    )


def sender_selected(properties: bytes) -> tuple[list[str], bytes]:
    """Sender-selected distribution: the routing keys the ``CC`` and ``BCC`` headers add (their
    longstr items), and the properties without ``BCC`` (RabbitMQ removes it from every copy)."""
    try:
        flags, fields = _split(properties)
        raw = fields[FLAG_HEADERS]
    except (KeyError, ValueError):
        return [], properties
    if not _well_formed(raw):
        return [], properties
    entries = _table_entries(raw[4:])
    keys: list[str] = []
    for k, v in entries:
        if k in (b"CC", b"BCC") and v[:1] == b"A":
            keys += [item[5:].decode("utf-8", "replace") for item in _array_items(v) if item[:1] == b"S"]
    if any(k == b"BCC" for k, _ in entries):
        fields[FLAG_HEADERS] = _table([(k, v) for k, v in entries if k != b"BCC"])
        properties = _join(flags, fields)
    return keys, properties


def _split(properties: bytes) -> tuple[int, dict[int, bytes]]:
    """(flags, {flag: raw value}) of a property section. ValueError if the values do not fit."""
    if len(properties) < 2:
        raise ValueError("property flags truncated")
    flags = (properties[0] << 8) | properties[1]
    fields: dict[int, bytes] = {}
    pos = 2
    size = len(properties)
    for flag, kind in _FIELDS:
        if flags & flag:
            if pos >= size:
                raise ValueError("property section truncated")
            if kind == "s":
                n = 1 + properties[pos]
            elif kind == "t":
                if pos + 4 > size:
                    raise ValueError("property section truncated")
                n = 4 + _u32.unpack_from(properties, pos)[0]
            elif kind == "o":
                n = 1
            else:
                n = 8
            if pos + n > size:
                raise ValueError("property section truncated")
            fields[flag] = properties[pos : pos + n]
            pos += n
    return flags, fields


def _join(flags: int, fields: dict[int, bytes]) -> bytes:
    return bytes(((flags >> 8) & 0xFF, flags & 0xFF)) + b"".join(fields[f] for f, _ in _FIELDS if f in fields)


def expiration_ms(properties: bytes) -> int | None:
    """The per-message TTL in ms, or None when there is none.

    Raises 406 with RabbitMQ's text (rabbit_basic:parse_expiration, Erlang's
    string:to_integer) for a value that is not a non-negative integer.
    """
    if not has_expiration(properties):
        return None
    try:
        raw = _split(properties)[1][FLAG_EXPIRATION][1:]
    except ValueError:
        raise precondition_failed("invalid expiration: the basic properties are malformed") from None
    m = _ERLANG_INT.match(raw)
    text = raw.decode("utf-8", "replace")
    if m is None:
        raise precondition_failed(f"invalid expiration '{text}': no_integer")
    if m.end() != len(raw):
        raise precondition_failed(f"invalid expiration '{text}': {{leftover_string,\"{text[m.end() :]}\"}}")
    n = int(m.group())
    if n < 0:
        raise precondition_failed(f"invalid expiration '{text}': {{value_negative,{n}}}")
    return n


# ---- field tables, split into raw values ---------------------------------------------------------


def _value_end(buf: bytes, pos: int) -> int:
    """Where the field value starting (at its type tag) at ``pos`` ends. ValueError if it does not fit."""
    if pos >= len(buf):
        raise ValueError("field value truncated")
    tag = buf[pos]
    if tag not in VALUE_SIZES:
        raise ValueError(f"unknown field type {tag}")
    size = VALUE_SIZES[tag]
    if size is not None:
        end = pos + 1 + size
    elif pos + 5 <= len(buf):
        end = pos + 5 + _u32.unpack_from(buf, pos + 1)[0]
    else:
        raise ValueError("field value truncated")
    if end > len(buf):
        raise ValueError("field value truncated")
    return end


def table_entries(table: bytes) -> list[tuple[bytes, bytes]]:
    """A field table's contents (no length prefix) as [(key, raw typed value)]; one level only, so
    nesting costs nothing. ValueError if the entries do not fit."""
    out = []
    pos = 0
    while pos < len(table):
        n = table[pos]
        key = table[pos + 1 : pos + 1 + n]
        start = pos + 1 + n
        pos = _value_end(table, start)
        out.append((key, table[start:pos]))
    return out


_table_entries = table_entries


def _well_formed(raw_table: bytes) -> bool:
    """True if a table (with its length prefix, exactly) is well formed at every depth, so the
    one-level splitters below cannot fail on any part of it. Iterative, linear in its bytes."""
    try:
        end, _ = scan_table(raw_table, 0, None)
    except TableError:
        return False
    return end == len(raw_table)


def _array_items(value: bytes) -> list[bytes]:
    """The raw typed items of an 'A' value."""
    body = value[5:]
    out = []
    pos = 0
    while pos < len(body):
        end = _value_end(body, pos)
        out.append(body[pos:end])
        pos = end
    return out


def _text(value: bytes | None) -> str | None:
    if value is None or value[:1] != b"S":
        return None
    return value[5:].decode("utf-8", "replace")


def _int(value: bytes | None) -> int | None:
    fmt = _INTS.get(value[:1]) if value else None
    return None if fmt is None or value is None else int(struct.unpack(fmt, value[1:])[0])


def _longstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return b"S" + _u32.pack(len(b)) + b


def _long(n: int) -> bytes:
    return b"l" + _i64.pack(n)


def _table(entries: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(bytes((len(k),)) + k + v for k, v in entries)
    return _u32.pack(len(body)) + body


def _array(items: list[bytes]) -> bytes:
    body = b"".join(items)
    return b"A" + _u32.pack(len(body)) + body


# ---- dead-lettering --------------------------------------------------------------------------------


def dead_letter(
    properties: bytes,
    *,
    reason: str,
    queue: str,
    exchange: str,
    routing_key: str,
    new_routing_key: bool,
    now: int,
) -> tuple[bytes, list[tuple[str, str]]]:
    """The properties of a dead-lettered copy, and its deaths as [(queue, reason)], newest first.

    As rabbit_dead_letter:make_msg (RabbitMQ 3.10): an ``x-death`` entry for (queue, reason) is
    added at the front with count 1, or the existing one moves to the front with its count
    incremented; the first death also sets ``x-first-death-exchange/-queue/-reason``; ``CC`` is
    removed when the queue names an ``x-dead-letter-routing-key``; ``expiration`` is removed and
    kept as ``original-expiration``. Headers come out sorted by key, as RabbitMQ sends them.
    ``now`` is the wall-clock time in seconds.
    """
    try:
        flags, fields = _split(properties)
    except ValueError:
        flags, fields = 0, {}  # malformed as published (never validated on the hot path): start afresh
    headers: dict[bytes, bytes] = {}
    raw_headers = fields.get(FLAG_HEADERS)
    if raw_headers is not None and _well_formed(raw_headers):
        headers = dict(_table_entries(raw_headers[4:]))  # cannot fail: checked at every depth
    # else: a malformed table (never validated at publish): start afresh
    cc = headers.get(b"CC")
    rks = [_longstr(routing_key)]
    if cc is not None and cc[:1] == b"A":
        rks += [item for item in _array_items(cc) if item[:1] == b"S"]
    info = [
        (b"reason", _longstr(reason)), (b"queue", _longstr(queue)), (b"time", b"T" + _u64.pack(now)),
        (b"exchange", _longstr(exchange)), (b"routing-keys", _array(rks)),
    ]  # fmt: skip
    expiration = fields.pop(FLAG_EXPIRATION, None)
    if expiration is not None:
        flags &= ~FLAG_EXPIRATION
        info.append((b"original-expiration", _longstr(expiration[1:])))
    old = headers.get(b"x-death")
    entries: list[list[tuple[bytes, bytes]]] = []
    if old is None or old[:1] != b"A":
        entries.append([(b"count", _long(1)), *info])
        headers[b"x-first-death-reason"] = _longstr(reason)
        headers[b"x-first-death-queue"] = _longstr(queue)
        headers[b"x-first-death-exchange"] = _longstr(exchange)
    else:
        others = []
        match = None
        for item in _array_items(old):
            if item[:1] != b"F":
                continue
            e = _table_entries(item[5:])
            d = dict(e)
            if match is None and _text(d.get(b"queue")) == queue and _text(d.get(b"reason")) == reason:
                count = _int(d.get(b"count"))
                d[b"count"] = _long(1 if count is None else count + 1)
                match = sorted(d.items())
            else:
                others.append(e)
        entries = [match or sorted([(b"count", _long(1)), *info]), *others]
    headers[b"x-death"] = _array([b"F" + _table(e) for e in entries])
    if new_routing_key:
        headers.pop(b"CC", None)
    fields[FLAG_HEADERS] = _table(sorted(headers.items()))
    flags |= FLAG_HEADERS
    deaths = []
    for e in entries:
        d = dict(e)
        deaths.append((_text(d.get(b"queue")) or "", _text(d.get(b"reason")) or ""))
    return _join(flags, fields), deaths


def is_cycle(queue: str, deaths: list[tuple[str, str]]) -> bool:
    """rabbit_dead_letter:is_cycle: ``queue`` was died in before with no rejection since (inclusive)."""
    for i, (q, _) in enumerate(deaths):
        if q == queue:
            return all(r != REJECTED for _, r in deaths[: i + 1])
    return False
