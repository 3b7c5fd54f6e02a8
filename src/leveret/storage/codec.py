"""Lossless text encoding of AMQP ``arguments`` tables for the stores.

``arguments`` of queues, exchanges and bindings are AMQP field tables: string keys;
values that are ints (any size), floats, bools, strings, ``None``, byte strings,
decimals, timestamps, nested tables and arrays. JSON carries most of these; the
rest are tagged as a one-key object (``{"$bytes": "<base64>"}``). A genuine table
whose only key happens to be a tag is wrapped as ``{"$dict": {...}}`` so decoding is
never ambiguous. Keys are sorted, so equal tables encode to equal text: a binding's
identity includes its arguments and the SQLite store uses the text as part of a key.

Both stores run every record's arguments through this codec (the in-memory store
too), so both reject the same unsupported values, at the call site, and both return
the same values.

Depth. The text is nested at most :data:`MAX_DEPTH` levels (JSON objects and arrays,
tag objects and ``$dict`` wrappers included): a field table nested up to
:data:`MAX_TABLE_DEPTH` levels (the top table is level 1) always fits, whatever its
values. Tagging and untagging are iterative and the depth is checked before JSON sees
the value, so a deep value costs a :class:`ValueError`, never a :class:`RecursionError`
(Python's ``json`` recurses in C and gives up near 1,000 levels, less on a deep stack).
"""

from __future__ import annotations

import base64
import binascii
import decimal
import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

_BYTES = "$bytes"
_DECIMAL = "$decimal"
_DATETIME = "$datetime"
_DICT = "$dict"
_TAGS = frozenset((_BYTES, _DECIMAL, _DATETIME, _DICT))
_PLAIN = frozenset((str, int, float, bool))  # exact types JSON writes as they are

MAX_DEPTH = 512
"""Most levels of JSON nesting the codec writes or reads."""

MAX_TABLE_DEPTH = (MAX_DEPTH - 1) // 2
"""Field tables and arrays nested this deep always encode (each level may take two JSON
levels, a ``$dict`` wrapper and the table, and a tagged leaf one more)."""


class ArgumentsTooDeep(ValueError):
    """A value (or stored text) nested deeper than :data:`MAX_DEPTH` levels."""


def encode_arguments(arguments: Mapping[str, Any]) -> str:
    """Return canonical JSON text for ``arguments``.

    Raises :class:`TypeError` for a non-string key or a value of a type listed in
    neither JSON nor the tags above, and :class:`ArgumentsTooDeep` (a
    :class:`ValueError`) for a value nested deeper than :data:`MAX_DEPTH` levels.
    """
    if not isinstance(arguments, Mapping):
        raise TypeError(f"arguments must be a table, got {type(arguments).__name__}")
    tagged = _tag(arguments)
    try:
        return json.dumps(tagged, sort_keys=True, separators=(",", ":"))
    except RecursionError:  # only on a stack already ~500 frames deep; never kill the caller
        raise ArgumentsTooDeep("arguments nested too deep to encode on this stack") from None


def decode_arguments(text: str) -> dict[str, Any]:
    """Inverse of :func:`encode_arguments`; byte strings come back as ``bytes``, arrays as lists.

    Raises :class:`ValueError` (never anything else) for text that is not what
    :func:`encode_arguments` writes: not JSON, not an object at the top, a malformed
    tag, or nesting deeper than :data:`MAX_DEPTH` (checked before ``json`` parses it).
    """
    if not isinstance(text, str):
        raise ValueError(f"stored arguments must be text, got {type(text).__name__}")
    # Counting brackets first keeps the exact (per-character) scan off ordinary text.
    if text.count("[") + text.count("{") > MAX_DEPTH and (depth := text_depth(text)) > MAX_DEPTH:
        raise ArgumentsTooDeep(f"stored arguments are nested {depth} levels deep, more than {MAX_DEPTH}")
    try:
        value = _untag(json.loads(text))
    except RecursionError:  # only on a stack already ~500 frames deep
        raise ArgumentsTooDeep("stored arguments nested too deep to decode on this stack") from None
    except (TypeError, AttributeError, ArithmeticError) as exc:  # a malformed tag payload
        raise ValueError(f"malformed stored arguments: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"arguments must decode to an object, got {type(value).__name__}")
    return value


def text_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in JSON ``text``, not counting brackets inside strings.

    Linear and iterative; malformed text gives some number and is left for ``json`` to refuse.
    """
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif ch in "]}":
            depth -= 1
    return deepest


def _scalar(value: Any) -> Any:
    """The JSON form of a non-container value (a tag object for the types JSON lacks)."""
    # bool, int, float, str and None are JSON as they are.
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {_BYTES: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Decimal):
        return {_DECIMAL: str(value)}
    if isinstance(value, datetime):
        return {_DATETIME: value.isoformat()}
    raise TypeError(f"cannot store argument value of type {type(value).__name__}: {value!r}")


def _tag(root: Mapping[str, Any]) -> Any:
    """``root`` with every value JSON lacks replaced by its tag object; iterative.

    Each work item is (value, the container its form goes into, the key or index there,
    the JSON depth its form will have).
    """
    holder: list[Any] = [None]
    work: list[tuple[Any, Any, Any, int]] = [(root, holder, 0, 1)]
    pop, push = work.pop, work.append
    while work:
        value, parent, slot, depth = pop()
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key in value:
                if not isinstance(key, str):
                    raise TypeError(f"argument table keys must be str, got {key!r}")
                out[key] = None
            if len(out) == 1 and next(iter(out)) in _TAGS:
                parent[slot] = {_DICT: out}
                depth += 1
            else:
                parent[slot] = out
            _check_depth(depth)
            for key, item in value.items():
                if item is None or type(item) in _PLAIN:  # the common case, without a round trip
                    out[key] = item
                else:
                    push((item, out, key, depth + 1))
        elif isinstance(value, list | tuple):
            _check_depth(depth)
            items: list[Any] = [None] * len(value)
            parent[slot] = items
            for i, item in enumerate(value):
                if item is None or type(item) in _PLAIN:
                    items[i] = item
                else:
                    push((item, items, i, depth + 1))
        else:
            form = _scalar(value)
            if isinstance(form, dict):
                _check_depth(depth)
            parent[slot] = form
    return holder[0]


def _check_depth(depth: int) -> None:
    # Also what ends a value that contains itself, which would otherwise loop forever.
    if depth > MAX_DEPTH:
        raise ArgumentsTooDeep(f"arguments nested more than {MAX_DEPTH} levels deep")


def _untag(root: Any) -> Any:
    """Inverse of :func:`_tag` on parsed JSON; iterative.

    Top-down, not json's object_hook: hooks run innermost first and would decode the
    payload of a "$dict" wrapper as a tag.
    """
    holder: list[Any] = [None]
    work: list[tuple[Any, Any, Any]] = [(root, holder, 0)]
    pop, push = work.pop, work.append
    while work:
        value, parent, slot = pop()
        if isinstance(value, list):
            items: list[Any] = [None] * len(value)
            parent[slot] = items
            for i, item in enumerate(value):
                push((item, items, i))
            continue
        if not isinstance(value, dict):
            parent[slot] = value
            continue
        if len(value) == 1:
            key, item = next(iter(value.items()))
            if key == _BYTES:
                parent[slot] = _b64(item)
                continue
            if key == _DECIMAL:
                parent[slot] = _decimal(item)
                continue
            if key == _DATETIME:
                parent[slot] = _datetime(item)
                continue
            if key == _DICT:
                if not isinstance(item, dict):
                    raise ValueError(f"malformed stored arguments: {_DICT} of {type(item).__name__}")
                value = item
        out: dict[str, Any] = dict.fromkeys(value)
        parent[slot] = out
        for k, v in value.items():
            if type(v) in _PLAIN or v is None:
                out[k] = v
            else:
                push((v, out, k))
    return holder[0]


def _b64(item: Any) -> bytes:
    if not isinstance(item, str):
        raise ValueError(f"malformed stored arguments: {_BYTES} of {type(item).__name__}")
    try:
        return base64.b64decode(item, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"malformed stored arguments: {_BYTES}: {exc}") from None


def _decimal(item: Any) -> Decimal:
    if not isinstance(item, str):
        raise ValueError(f"malformed stored arguments: {_DECIMAL} of {type(item).__name__}")
    try:
        return Decimal(item)
    except decimal.InvalidOperation:
        raise ValueError(f"malformed stored arguments: {_DECIMAL} {item[:40]!r}") from None


def _datetime(item: Any) -> datetime:
    if not isinstance(item, str):
        raise ValueError(f"malformed stored arguments: {_DATETIME} of {type(item).__name__}")
    return datetime.fromisoformat(item)  # ValueError for a bad one
