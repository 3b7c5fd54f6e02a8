"""The one check of names, keys and argument tables, for every way in (AMQP, HTTP API, definitions).

Every declare, bind and unbind in :mod:`leveret.model.vhost` (and consume in the broker) calls
these before it changes anything, so a value the wire cannot carry is refused wherever it comes
from, with a 406 PRECONDITION_FAILED:

- names of queues and exchanges, routing and binding keys: at most 255 bytes of UTF-8 (an AMQP
  short string; over AMQP a longer one cannot even be sent, but the HTTP API could create a queue
  no AMQP client can reach);
- argument tables: at most :data:`~leveret.limits.MAX_TABLE_DEPTH` levels of tables and arrays
  (the top-level table is level 1), the same limit the protocol layer applies to the bytes of a
  method frame;
- argument values the broker puts back on the wire as short strings (the dead-letter exchange and
  routing key of every dead-lettered message, the alternate exchange): at most 255 bytes, so a
  message can always be delivered.

Depth is measured without recursion (:func:`value_depth`): a JSON body nested 100,000 deep costs
a linear walk, not a RecursionError.
"""

from __future__ import annotations

from typing import Any

from leveret.errors import precondition_failed
from leveret.limits import MAX_SHORTSTR, MAX_TABLE_DEPTH

# Arguments whose (string) value the broker later writes into a short string.
SHORTSTR_ARGS = ("x-dead-letter-exchange", "x-dead-letter-routing-key", "alternate-exchange")


def value_depth(value: object, stop: int = MAX_TABLE_DEPTH) -> int:
    """How deeply a decoded value nests (a dict is a table, a list or tuple an array; 0 for a scalar).

    ``{"a": [1]}`` is 2. Iterative; returns as soon as the depth exceeds ``stop``, so a huge value
    costs at most one walk.
    """
    deepest = 0
    work: list[tuple[object, int]] = [(value, 1)]
    while work:
        v, d = work.pop()
        if isinstance(v, dict):
            items: Any = v.values()
        elif isinstance(v, (list, tuple)):
            items = v
        else:
            continue
        if d > deepest:
            deepest = d
            if deepest > stop:
                return deepest
        work.extend((x, d + 1) for x in items)
    return deepest


def _size(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def check_shortstr(what: str, value: str) -> None:
    """406 for a name or key over 255 bytes of UTF-8, or one that is not UTF-8 at all (a lone
    surrogate from a JSON ``\\ud800``: no AMQP client could name it)."""
    try:
        n = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise precondition_failed(f"{what} is not valid UTF-8") from None
    if n > MAX_SHORTSTR:
        raise precondition_failed(f"{what} is too long: {n} bytes, at most {MAX_SHORTSTR} allowed")


def check_arguments(arguments: dict[str, Any], where: str) -> None:
    """406 for an argument table nested too deeply or a short-string argument over 255 bytes.

    ``where`` names the object in RabbitMQ's form (``queue 'q' in vhost '/'``).
    """
    if not arguments:
        return
    for key, v in arguments.items():
        if isinstance(v, (dict, list, tuple)) and value_depth(v, MAX_TABLE_DEPTH - 1) > MAX_TABLE_DEPTH - 1:
            raise precondition_failed(
                f"invalid arg '{key}' for {where}: tables and arrays nested deeper than {MAX_TABLE_DEPTH} levels"
            )
    for key in SHORTSTR_ARGS:
        v = arguments.get(key)
        if isinstance(v, (str, bytes)):
            n = len(v) if isinstance(v, bytes) else _size(v)
            if n > MAX_SHORTSTR:
                raise precondition_failed(
                    f"invalid arg '{key}' for {where}: {{value_too_long,{n}}} (at most {MAX_SHORTSTR} bytes)"
                )


def check_vhost_name(name: str) -> None:
    """406 for a vhost name no ``connection.open`` could carry: empty, over 255 bytes, not UTF-8."""
    if not isinstance(name, str) or not name:
        raise precondition_failed("vhost name must be a non-empty string")
    check_shortstr("vhost name", name)
