"""The headers exchange's matching: binding arguments against a message's ``headers`` table.

RabbitMQ 3.10 (``rabbit_exchange_type_headers``): ``x-match`` is ``all`` (the default),
``any``, ``all-with-x`` or ``any-with-x``. Binding keys starting with ``x-`` are
ignored by ``all``/``any`` and compared by the ``-with-x`` kinds (``x-match`` itself
never is). A binding value of void (``None``) matches the mere presence of the key.
``all`` with nothing to compare matches every message; ``any`` with nothing matches none.

Values compare as RabbitMQ compares them: numbers by value whatever their width,
long strings and byte arrays by their bytes, booleans only with booleans, decimals only
with decimals of the same scale.

The headers table is decoded from the raw property section only when a headers
exchange routes (:func:`headers_table`), so other exchanges never pay for it.
"""

from __future__ import annotations

import struct
from decimal import Decimal
from typing import Any

from pamqp.decode import embedded_value, field_table

from leveret.errors import precondition_failed
from leveret.limits import MAX_TABLE_DEPTH, TableError, scan_table
from leveret.model.arguments import wire_type
from leveret.model.properties import table_entries

X_MATCH = ("all", "any", "all-with-x", "any-with-x")

_FLAG_CONTENT_TYPE = 0x8000
_FLAG_CONTENT_ENCODING = 0x4000
_FLAG_HEADERS = 0x2000


def headers_table(properties: bytes) -> dict[str, Any]:
    """The ``headers`` property of a raw basic property section ({} if unset or malformed).

    Never raises, and never recurses deeper than :data:`~leveret.limits.MAX_TABLE_DEPTH`: the
    table's bytes are walked first (:func:`leveret.limits.scan_table`, iterative). A header whose
    value nests deeper than that is kept as present with the value :data:`TOO_DEEP`, which equals
    nothing: binding arguments are limited to the same depth, so no binding value could equal it
    and the match comes out as RabbitMQ's (which has no limit) would. Presence-only bindings (a
    void value) still match it.
    """
    if len(properties) < 2:
        return {}
    (flags,) = struct.unpack_from(">H", properties)
    if not flags & _FLAG_HEADERS:
        return {}
    pos = 2
    try:
        for flag in (_FLAG_CONTENT_TYPE, _FLAG_CONTENT_ENCODING):  # the shortstrs before it
            if flags & flag:
                pos += 1 + properties[pos]
        end, depth = scan_table(properties, pos, None)
        if depth <= MAX_TABLE_DEPTH:
            return field_table(properties[pos:end])[1]
        table: dict[str, Any] = {}
        for key, value in table_entries(properties[pos + 4 : end]):
            # the value alone in a table: as deep as it would be in the headers table
            alone = struct.pack(">I", 1 + len(value)) + b"\x00" + value
            try:
                scan_table(alone)
            except TableError:
                table[key.decode("utf-8")] = TOO_DEEP
            else:
                table[key.decode("utf-8")] = embedded_value(value)[1]
        return table
    except Exception:  # untrusted bytes: pamqp raises ValueError, UnicodeDecodeError, struct.error...
        return {}


class _TooDeep:
    """A header value nested too deeply to decode; equal to nothing but itself."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<header nested too deep>"


TOO_DEEP = _TooDeep()


def _show_value(v: Any) -> str:
    """A value as RabbitMQ's ``~p`` prints it in the x-match error."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'<<"{v}">>'
    if isinstance(v, bytes):
        return f'<<"{v.decode("utf-8", "replace")}">>'
    return str(v)


def validate(arguments: dict[str, Any]) -> None:
    """Binding arguments of a headers exchange; 406 with RabbitMQ's text for a bad ``x-match``."""
    if "x-match" not in arguments:
        return
    v = arguments["x-match"]
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, str):
        if v not in X_MATCH:
            raise precondition_failed(
                f"Invalid x-match field value {_show_value(v)}; expected all, any, all-with-x, or any-with-x"
            )
        return
    raise precondition_failed(
        f"Invalid x-match field type {wire_type(v)} (value {_show_value(v)}); expected longstr"
    )


def _norm(v: Any) -> Any:
    """A value in a form where Python's == is RabbitMQ's: bytes for strings, bools kept apart from ints."""
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, bool):
        return (bool, v)
    if isinstance(v, Decimal):  # RabbitMQ keeps {decimal, Scale, Value}: never equal to a number
        return (Decimal, v.as_tuple())
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_norm(x) for x in v]
    return v


class Matcher:
    """One binding's arguments, compiled: ``matches(headers)``."""

    __slots__ = ("any", "pattern")

    def __init__(self, arguments: dict[str, Any]) -> None:
        kind = arguments.get("x-match", "all")
        if isinstance(kind, bytes):
            kind = kind.decode("utf-8", "replace")
        kind = kind if kind in X_MATCH else "all"  # legacy: an unvalidated value means all
        with_x = kind.endswith("-with-x")
        self.any = kind.startswith("any")
        # (key, normalised value, presence only)
        self.pattern = [
            (k, _norm(v), v is None)
            for k, v in arguments.items()
            if k != "x-match" and (with_x or not k.startswith("x-"))
        ]

    def matches(self, headers: dict[str, Any]) -> bool:
        if self.any:
            for k, v, presence in self.pattern:
                if k in headers and (presence or _norm(headers[k]) == v):
                    return True
            return False
        for k, v, presence in self.pattern:
            if k not in headers or not (presence or _norm(headers[k]) == v):
                return False
        return True
