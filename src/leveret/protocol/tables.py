"""The pre-scan of method frames that carry field tables, before pamqp decodes them.

pamqp decodes tables recursively: an array nested 20,000 deep in a 100 KB frame raised
RecursionError and cost 20-25 MB of RSS each time (the traceback's frames). Every cold method
goes through :func:`check_method` first (``AMQPConnection._decode``): its arguments are walked
by their AMQP types up to each table, and each table is walked by
:func:`leveret.limits.scan_table`, iteratively, checking its structure and that it nests at most
:data:`~leveret.limits.MAX_TABLE_DEPTH` levels. A frame that fails costs one linear walk of its
bytes and nothing more.

The methods with tables are found from pamqp's own field lists, so a method pamqp decodes is
never missed: connection.start / start-ok, exchange.declare / bind / unbind, queue.declare / bind /
unbind, basic.consume.
"""

from __future__ import annotations

import struct
from typing import Any

from pamqp import commands

from leveret.limits import TableError, scan_table

_u32 = struct.Struct(">I")
_FIXED = {"octet": 1, "short": 2, "long": 4, "longlong": 8, "timestamp": 8}


def _fields(cls: Any) -> tuple[str, ...]:
    """The argument types in wire order, up to the last table (what follows it is pamqp's to check)."""
    types = tuple(cls.amqp_type(attr) for attr in cls.__slots__)
    last = max((i for i, t in enumerate(types) if t == "table"), default=-1)
    return types[: last + 1]


# method index -> its argument types up to its last table, for the methods that carry one
TABLE_METHODS: dict[int, tuple[str, ...]] = {
    index: types for index, cls in commands.INDEX_MAPPING.items() if (types := _fields(cls))
}


def check_method(index: int, args: bytes | memoryview, pos: int = 0) -> None:
    """Check the tables among a method's arguments, which start at ``args[pos]`` (after the class and
    method ids).

    Raises :class:`TableError` for a malformed table, for arguments that end before a table, or
    (``too_deep``) for a table nested deeper than the limit. Does nothing for a method without
    tables.
    """
    types = TABLE_METHODS.get(index)
    if types is None:
        return
    bits = 0  # bits used in the current octet: consecutive bit fields share one
    n = len(args)
    for t in types:
        if t == "bit":
            if bits == 0 or bits == 8:
                pos += 1
                bits = 0
            bits += 1
            continue
        bits = 0
        if t == "table":
            pos, _ = scan_table(args, pos)
            continue
        if t == "shortstr":
            if pos >= n:
                raise TableError("arguments end before a field table")
            pos += 1 + args[pos]
        elif t == "longstr":
            if pos + 4 > n:
                raise TableError("arguments end before a field table")
            pos += 4 + _u32.unpack_from(args, pos)[0]
        else:
            pos += _FIXED[t]
        if pos > n:
            raise TableError("arguments end before a field table")
