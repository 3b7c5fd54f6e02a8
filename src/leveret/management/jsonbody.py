"""Parse a big JSON request body without holding the event loop for the whole parse.

``json.loads`` of an 18 MB definitions file (200,000 queues) runs for about half a second in C,
and no other thread can help (it holds the GIL throughout). :func:`loads_sliced` parses a top-level
object key by key and the elements of each top-level array one at a time (each with the C scanner),
yielding to the loop every :data:`ELEMENTS_PER_TURN` elements. The result equals ``json.loads`` of
the same text; errors are the same exceptions (``ValueError`` for bad JSON, ``RecursionError`` for
nesting too deep). Anything but a top-level object is parsed in one go.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

ELEMENTS_PER_TURN = 500
_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")


def _skip(text: str, i: int) -> int:
    return _WS.match(text, i).end()  # type: ignore[union-attr]  # "*" always matches


def _expect(text: str, i: int, char: str) -> int:
    i = _skip(text, i)
    if i >= len(text) or text[i] != char:
        raise json.JSONDecodeError(f"Expecting '{char}'", text, i)
    return i + 1


async def loads_sliced(text: str) -> Any:
    """``json.loads(text)``, yielding to the event loop while it parses (see the module docstring)."""
    i = _skip(text, 0)
    if not text.startswith("{", i):
        return json.loads(text)
    out: dict[str, Any] = {}
    i = _skip(text, i + 1)
    if text.startswith("}", i):
        return _end(text, i + 1, out)
    count = 0
    while True:
        i = _skip(text, i)
        if not text.startswith('"', i):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
        key, i = _DECODER.raw_decode(text, i)
        i = _skip(text, _expect(text, i, ":"))
        if text.startswith("[", i):
            items: list[Any] = []
            i = _skip(text, i + 1)
            if text.startswith("]", i):
                i += 1
            else:
                while True:
                    value, i = _DECODER.raw_decode(text, _skip(text, i))
                    items.append(value)
                    count += 1
                    if count % ELEMENTS_PER_TURN == 0:
                        await asyncio.sleep(0)
                    i = _skip(text, i)
                    if text.startswith("]", i):
                        i += 1
                        break
                    i = _expect(text, i, ",")
            out[key] = items
        else:
            out[key], i = _DECODER.raw_decode(text, i)
        i = _skip(text, i)
        if text.startswith("}", i):
            return _end(text, i + 1, out)
        i = _expect(text, i, ",")


def _end(text: str, i: int, value: dict[str, Any]) -> dict[str, Any]:
    i = _skip(text, i)
    if i != len(text):
        raise json.JSONDecodeError("Extra data", text, i)
    return value
