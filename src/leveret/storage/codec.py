"""Lossless text encoding of AMQP ``arguments`` tables for the stores.

``arguments`` of queues, exchanges and bindings are AMQP field tables: string keys;
values that are ints (any size), floats, bools, strings, ``None``, byte strings,
decimals, timestamps, nested tables and arrays. JSON carries most of these; the
rest are tagged as a one-key object (``{"$bytes": "<base64>"}``). A genuine table
whose only key happens to be a tag is wrapped as ``{"$dict": {...}}`` so decoding is
never ambiguous. Keys are sorted, so equal tables encode to equal text: a binding's
identity includes its arguments and the SQLite store uses the text as part of a key.

Both stores run every record's arguments through this codec (the in-memory store
too), so both reject the same unsupported values, at the call site, with
:class:`TypeError`, and both return the same values.
"""

from __future__ import annotations

import base64
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


def encode_arguments(arguments: Mapping[str, Any]) -> str:
    """Return canonical JSON text for ``arguments``.

    Raises :class:`TypeError` for a non-string key or a value of a type listed in
    neither JSON nor the tags above.
    """
    return json.dumps(_tag(arguments), sort_keys=True, separators=(",", ":"))


def decode_arguments(text: str) -> dict[str, Any]:
    """Inverse of :func:`encode_arguments`; byte strings come back as ``bytes``, arrays as lists."""
    value = _untag(json.loads(text))
    if not isinstance(value, dict):
        raise ValueError(f"arguments must decode to an object, got {type(value).__name__}")
    return value


def _tag(value: Any) -> Any:
    # bool, int, float, str and None are JSON as they are (bool before int is not
    # needed: json writes True as true either way).
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"argument table keys must be str, got {key!r}")
            out[key] = _tag(item)
        if len(out) == 1 and next(iter(out)) in _TAGS:
            return {_DICT: out}
        return out
    if isinstance(value, list | tuple):
        return [_tag(item) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return {_BYTES: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Decimal):
        return {_DECIMAL: str(value)}
    if isinstance(value, datetime):
        return {_DATETIME: value.isoformat()}
    raise TypeError(f"cannot store argument value of type {type(value).__name__}: {value!r}")


def _untag(value: Any) -> Any:
    # Top-down, not json's object_hook: hooks run innermost first and would decode
    # the payload of a "$dict" wrapper as a tag.
    if isinstance(value, list):
        return [_untag(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        key, item = next(iter(value.items()))
        if key == _BYTES:
            return base64.b64decode(item)
        if key == _DECIMAL:
            return Decimal(item)
        if key == _DATETIME:
            return datetime.fromisoformat(item)
        if key == _DICT:
            return {k: _untag(v) for k, v in item.items()}
    return {k: _untag(v) for k, v in value.items()}
