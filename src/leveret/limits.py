"""The limits on client input every layer applies, and the one walk of an AMQP field table's bytes.

A leaf module, like :mod:`leveret.errors`: the protocol layer (method arguments, before pamqp
decodes them) and the model (message headers it reads: the headers exchange, dead-lettering,
``CC``/``BCC``) both import it, and it imports nothing of Leveret.

``MAX_TABLE_DEPTH``: how deeply field tables and arrays may nest. The outermost table counts as
level 1, every table or array inside it adds one, so ``{"a": [{"b": 1}]}`` is 3 levels deep. RabbitMQ's
own ``x-death`` header is 4 deep (headers table, ``x-death`` array, a death table, its
``routing-keys`` array); 32 leaves room for any real client. pamqp decodes tables recursively
(a RecursionError at about 490 levels, costing megabytes of frames on the way), so a deeper table
is refused by :func:`scan_table`, which walks the bytes without recursion in linear time, before
anything decodes it.

``MAX_SHORTSTR``: queue and exchange names, routing and binding keys, consumer tags and every
argument value that ends up in a short string on the wire are at most 255 bytes of UTF-8.
"""

from __future__ import annotations

import struct

MAX_TABLE_DEPTH = 32
MAX_SHORTSTR = 255

_u32 = struct.Struct(">I")

# Field-value sizes after the type tag (the tags pamqp and RabbitMQ read); None: a u32 length follows.
VALUE_SIZES: dict[int, int | None] = {
    ord("t"): 1, ord("b"): 1, ord("B"): 1, ord("s"): 2, ord("u"): 2, ord("I"): 4, ord("i"): 4, ord("f"): 4,
    ord("l"): 8, ord("L"): 8, ord("d"): 8, ord("T"): 8, ord("D"): 5, ord("V"): 0, 0: 0,
    ord("S"): None, ord("x"): None, ord("F"): None, ord("A"): None,
}  # fmt: skip
_TABLE = ord("F")
_ARRAY = ord("A")


class TableError(ValueError):
    """A field table that is malformed (``too_deep`` False) or nested deeper than allowed (True)."""

    def __init__(self, reason: str, too_deep: bool = False) -> None:
        super().__init__(reason)
        self.too_deep = too_deep


def scan_table(
    buf: bytes | bytearray | memoryview, pos: int = 0, max_depth: int | None = MAX_TABLE_DEPTH
) -> tuple[int, int]:
    """Walk the field table whose u32 length prefix is at ``buf[pos]``; return (end, depth).

    ``end`` is the position after the table, ``depth`` how deeply it nests (1 for a flat table).
    Raises :class:`TableError` for a table that runs past ``buf``, a key or value that runs past
    its container, an unknown type tag, or (``too_deep``) nesting beyond ``max_depth`` (None: no
    limit). Iterative, with one stack entry per open container: cost is linear in the bytes,
    whatever the nesting.
    """
    n = len(buf)
    if pos + 4 > n:
        raise TableError("field table length runs past the end")
    end = pos + 4 + _u32.unpack_from(buf, pos)[0]
    if end > n:
        raise TableError("field table runs past the end")
    # (end of the container, is it a table) for every open container, innermost last
    stack: list[tuple[int, bool]] = [(end, True)]
    deepest = 1
    p = pos + 4
    sizes = VALUE_SIZES
    while stack:
        limit, is_table = stack[-1]
        if p == limit:
            stack.pop()
            continue
        if is_table:
            klen = buf[p]
            p += 1 + klen
            if p >= limit:  # the key, and at least the value's tag, must fit
                raise TableError("field table key runs past its table")
        tag = buf[p]
        if tag not in sizes:
            raise TableError(f"unknown field type {tag}")
        size = sizes[tag]
        p += 1
        if size is not None:
            p += size
            if p > limit:
                raise TableError("field value runs past its container")
            continue
        if p + 4 > limit:
            raise TableError("field value length runs past its container")
        vend = p + 4 + _u32.unpack_from(buf, p)[0]
        if vend > limit:
            raise TableError("field value runs past its container")
        if tag == _TABLE or tag == _ARRAY:
            if max_depth is not None and len(stack) >= max_depth:
                raise TableError(f"field table nested deeper than {max_depth} levels", too_deep=True)
            stack.append((vend, tag == _TABLE))
            deepest = max(deepest, len(stack))
            p += 4
        else:
            p = vend
    return end, deepest
