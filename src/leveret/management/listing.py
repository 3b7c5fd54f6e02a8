"""List endpoints as RabbitMQ serves them, without stalling the broker's event loop.

Query parameters (rabbit_mgmt_util.erl, 3.x), for queues, exchanges, connections and channels:

* ``page`` switches pagination on; ``page_size`` defaults to 100, at most 500. The reply is then
  ``{"total_count", "item_count", "filtered_count", "page", "page_size", "page_count", "items"}``.
  Errors are 400: a non-integer ``page`` or ``page_size`` gives ``bad_request`` "Pagination
  parameters are invalid"; zero, negative or too large gives ``invalid_pagination_parameters``;
  a page past the end gives ``page_out_of_range``.
* ``name`` keeps items whose name contains it, ignoring case; with ``use_regex=true`` it is a
  caseless, unanchored regular expression. The match work of one request is bounded by
  :data:`REGEX_BUDGET` seconds (RabbitMQ's PCRE has match limits): over it, 400 ``bad_request``.
  (RabbitMQ applies ``name`` only with ``page``; Leveret applies it either way.)
* ``sort`` (a dotted path into each item) and ``sort_reverse``; without ``sort`` items come in
  (vhost, name) order, as RabbitMQ's default sort; ``sort=`` (empty) leaves them unsorted.
* ``columns`` (comma list of dotted paths) keeps only those fields of each item.

Contract on cost: the listing is built from cheap entries (keys or snapshots), filtered and sorted,
then rendered and serialised in slices of :data:`SLICE` items, yielding to the event loop between
slices, and streamed. AMQP keeps flowing while 100,000 queues are listed; a page costs little more
than its own items (plus the sort's render, when sorting by a rendered field).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import re
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import regex  # type: ignore[import-untyped]
from aiohttp import web
from multidict import MultiMapping

JSON = dict[str, Any]
E = TypeVar("E", bound=Hashable)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
#: Items rendered and serialised per loop turn.
SLICE = 100
#: Seconds of regex matching one request may spend, over all names.
REGEX_BUDGET = 0.1
#: Names matched per loop turn while filtering.
FILTER_SLICE = 2000
_INTEGER = re.compile(r"[+-]?[0-9]+")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: for one slice of rendering, whose many short-lived
    dicts, freed by reference counting when the slice is done, would otherwise be promoted to the
    oldest generation and trigger full collections of the whole broker heap (100+ ms with 20,000
    queues) in the middle of a listing."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class ListingError(Exception):
    """A 400 with RabbitMQ's ``error`` and ``reason`` fields."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Query:
    page: int | None
    page_size: int
    name: str
    use_regex: bool
    sort: str | None  # None: default order; "": unsorted
    reverse: bool
    columns: list[str] | None


def _flag(value: str | None) -> bool:
    return (value or "false").lower() in ("true", "1", "yes")


def _integer(value: str | None) -> int | None:
    if value is None:
        return None
    if not _INTEGER.fullmatch(value):
        raise ListingError("bad_request", "Pagination parameters are invalid")
    return int(value)


def parse_query(query: MultiMapping[str]) -> Query:
    """Read the listing parameters; raises :class:`ListingError` as RabbitMQ answers them."""
    page = _integer(query.get("page"))
    size = _integer(query.get("page_size"))
    if page is not None and not (page > 0 and (size is None or 0 < size <= MAX_PAGE_SIZE)):
        shown = "undefined" if size is None else str(size)
        raise ListingError(
            "invalid_pagination_parameters", f"Invalid pagination parameters: page number {page}, page size {shown}"
        )
    columns = None
    if query.get("columns"):
        columns = [c for c in query["columns"].split(",") if c]
    return Query(
        page=page, page_size=size if size is not None else DEFAULT_PAGE_SIZE, name=query.get("name", ""),
        use_regex=_flag(query.get("use_regex")), sort=query.get("sort"), reverse=_flag(query.get("sort_reverse")),
        columns=columns,
    )  # fmt: skip


def pick(item: JSON, columns: list[str]) -> JSON:
    """Keep only ``columns`` (dotted paths) of ``item``."""
    out: JSON = {}
    for col in columns:
        src: Any = item
        dst = out
        parts = col.split(".")
        for part in parts[:-1]:
            src = src.get(part) if isinstance(src, dict) else None
            dst = dst.setdefault(part, {})
        if isinstance(src, dict) and parts[-1] in src:
            dst[parts[-1]] = src[parts[-1]]
    return out


def dotted(item: JSON, path: str) -> Any:
    value: Any = item
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def sort_key(value: Any) -> tuple[int, Any]:
    """Erlang term order, roughly: missing (as 0) and numbers, then everything else as text."""
    if value is None:
        return (1, 0)
    if isinstance(value, bool):
        return (2, str(value).lower())
    if isinstance(value, int | float):
        return (1, value)
    return (2, str(value))


async def filter_names(entries: list[E], name_of: Callable[[E], str], name: str, use_regex: bool) -> list[E]:
    """``entries`` whose name matches ``name`` (see the module docstring); yields between slices."""
    out: list[E] = []
    if not use_regex:
        needle = name.casefold()
        for i in range(0, len(entries), FILTER_SLICE):
            out.extend(e for e in entries[i : i + FILTER_SLICE] if needle in name_of(e).casefold())
            await asyncio.sleep(0)
        return out
    try:
        rx = regex.compile(name, regex.IGNORECASE | regex.VERSION0)
    except (regex.error, RecursionError, OverflowError, ValueError) as err:
        raise ListingError("bad_request", f"invalid regular expression: {err}") from None
    spent = 0.0
    for i in range(0, len(entries), FILTER_SLICE):
        started = time.perf_counter()
        try:
            for e in entries[i : i + FILTER_SLICE]:
                left = REGEX_BUDGET - spent - (time.perf_counter() - started)
                if left <= 0:
                    raise TimeoutError
                if rx.search(name_of(e), timeout=left) is not None:
                    out.append(e)
        except TimeoutError:
            raise ListingError(
                "bad_request",
                f"regular expression took more than {int(REGEX_BUDGET * 1000)} ms to match against the names; "
                "use a simpler one",
            ) from None
        spent += time.perf_counter() - started
        await asyncio.sleep(0)
    return out


@dataclass(slots=True)
class Source(Generic[E]):
    """What a list endpoint lists: ``entries`` (cheap: keys or snapshots), their names, the
    default order, and ``render`` turning a slice of entries into (entry, JSON item) pairs,
    dropping entries that vanished since the entries were taken. ``sort_values``, when given,
    returns (entry, value) pairs for a sort path far more cheaply than rendering, with the value
    the rendered item would hold there, or None for a path it does not know."""

    entries: list[E]
    name_of: Callable[[E], str]
    default_key: Callable[[E], Any]
    render: Callable[[Sequence[E]], list[tuple[E, JSON]]]
    sort_values: Callable[[str, Sequence[E]], list[tuple[E, Any]] | None] | None = None


async def respond(request: web.Request, source: Source[E]) -> web.StreamResponse:
    """Answer a list request (see the module docstring); raises :class:`ListingError`."""
    q = parse_query(request.query)
    entries = source.entries
    total = len(entries)
    if q.name:
        entries = await filter_names(entries, source.name_of, q.name, q.use_regex)
    if q.sort:
        entries = await _sorted_by_rendered(entries, source, q.sort)
    elif q.sort is None:
        entries = sorted(entries, key=source.default_key)
    if q.reverse:
        entries.reverse()
    if q.page is None:
        return await _stream(request, entries, source, q.columns)
    filtered = len(entries)
    offset = (q.page - 1) * q.page_size
    if offset > filtered:
        raise ListingError(
            "page_out_of_range", f"Page out of range, page: {q.page} page size: {q.page_size}, len: {filtered}"
        )
    items = [j for _, j in source.render(entries[offset : offset + q.page_size])]
    if q.columns:
        items = [pick(i, q.columns) for i in items]
    body = {
        "total_count": total, "item_count": len(items), "filtered_count": filtered, "page": q.page,
        "page_size": q.page_size, "page_count": (filtered + q.page_size - 1) // q.page_size, "items": items,
    }  # fmt: skip
    return web.json_response(body)


async def _sorted_by_rendered(entries: list[E], source: Source[E], path: str) -> list[E]:
    keyed: list[tuple[tuple[int, Any], Any, E]] = []
    cheap = source.sort_values is not None and source.sort_values(path, entries[:0]) is not None
    step = FILTER_SLICE if cheap else SLICE
    for i in range(0, len(entries), step):
        chunk = entries[i : i + step]
        with gc_paused():
            if cheap and source.sort_values is not None:
                pairs = source.sort_values(path, chunk) or []
            else:
                pairs = [(e, dotted(item, path)) for e, item in source.render(chunk)]
            keyed.extend((sort_key(v), source.default_key(e), e) for e, v in pairs)
        await asyncio.sleep(0)
    # Sort on the keys only: entries themselves need not be comparable.
    order = sorted(range(len(keyed)), key=lambda n: keyed[n][:2])
    return [keyed[n][2] for n in order]


async def stream_all(request: web.Request, entries: list[E], render: Callable[[E], JSON]) -> web.StreamResponse:
    """Every entry in the given order, rendered and serialised a slice per loop turn: for the lists
    RabbitMQ does not paginate (bindings, consumers), which can be as long as the queue list."""
    source: Source[E] = Source(entries, str, lambda e: 0, lambda chunk: [(e, render(e)) for e in chunk])
    return await _stream(request, entries, source, None)


async def _stream(
    request: web.Request, entries: list[E], source: Source[E], columns: list[str] | None
) -> web.StreamResponse:
    """A JSON array of every entry, rendered and serialised a slice per loop turn."""
    resp = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    await resp.prepare(request)
    sep = b"["
    for i in range(0, len(entries), SLICE):
        with gc_paused():
            items = [j for _, j in source.render(entries[i : i + SLICE])]
            if columns:
                items = [pick(j, columns) for j in items]
            chunk = json.dumps(items)[1:-1].encode() if items else b""
            del items
        if chunk:
            await resp.write(sep + chunk)
            sep = b","
        await asyncio.sleep(0)
    await resp.write(b"[]" if sep == b"[" else b"]")
    await resp.write_eof()
    return resp
