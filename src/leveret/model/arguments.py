"""Validation and equivalence of queue and consumer arguments, with RabbitMQ's texts."""

from __future__ import annotations

from typing import Any

from leveret.errors import ChannelError, ReplyCode, precondition_failed
from leveret.model.validation import check_arguments

QUEUE_TYPES = ("classic", "quorum")
# Arguments RabbitMQ 3.10 refuses on a quorum queue (checked against a real node; x-foo and other
# unknown arguments are accepted).
CLASSIC_ONLY_ARGS = ("x-max-priority", "x-queue-mode", "x-queue-master-locator", "x-queue-version")

# Arguments RabbitMQ compares when a queue is declared again.
EQUIVALENCE_ARGS = (
    "x-queue-type", "x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
    "x-max-length", "x-max-length-bytes", "x-max-priority", "x-overflow", "x-queue-mode",
    "x-single-active-consumer", "x-consumer-timeout", "x-delivery-limit",
)  # fmt: skip


def amqp_type(v: Any) -> str:
    """The AMQP field-table type name RabbitMQ prints in inequivalence errors."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "long"
    if isinstance(v, float):
        return "double"
    if isinstance(v, (bytes, str)):
        return "longstr"
    if isinstance(v, dict):
        return "table"
    if isinstance(v, list):
        return "array"
    return "void"


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def check_flag(what: str, name: str, vhost: str, arg: str, received: bool, current: bool) -> None:
    if received != current:
        raise precondition_failed(
            f"inequivalent arg '{arg}' for {what} '{name}' in vhost '{vhost}': "
            f"received '{_show(received)}' but current is '{_show(current)}'"
        )


def _same(r: Any, c: Any) -> bool:
    # rabbit_misc:type_class: integer widths are compatible with each other, nothing else mixes.
    if amqp_type(r) != amqp_type(c):
        return False
    if isinstance(r, (bytes, str)):
        return _show(r) == _show(c)
    return bool(r == c)


def _declared_type(v: Any) -> str:
    """The type a Python client most likely sent ``v`` as: pika and py-amqp send 32-bit ints as
    'signedint' (the table keeps no wire types, so this is the best guess)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return "signedint" if -(1 << 31) <= v < 1 << 31 else "long"
    return amqp_type(v)


def check_equivalent_args(
    name: str,
    vhost: str,
    received: dict[str, Any],
    current: dict[str, Any],
    what: str = "queue",
    keys: tuple[str, ...] = EQUIVALENCE_ARGS,
) -> None:
    """rabbit_misc:assert_args_equivalence, with its texts (checked against RabbitMQ 3.10.8).

    Both present but different: ``received '20' but current is '10'`` (values only); one missing:
    ``received none but current is the value '10' of type 'signedint'``.
    """
    for arg in keys:
        r = received.get(arg)
        c = current.get(arg)
        if arg == "x-queue-type" and (r or "classic") == (c or "classic"):
            continue
        if r is None and c is None:
            continue
        if r is not None and c is not None:
            if _same(r, c):
                continue
            rs, cs = f"'{_show(r)}'", f"'{_show(c)}'"
        else:
            rs = "none" if r is None else f"the value '{_show(r)}' of type '{_declared_type(r)}'"
            cs = "none" if c is None else f"the value '{_show(c)}' of type '{_declared_type(c)}'"
        raise precondition_failed(f"inequivalent arg '{arg}' for {what} '{name}' in vhost '{vhost}': received {rs} but current is {cs}")


def wire_type(v: Any) -> str:
    """The field-table type RabbitMQ names in argument errors, as pamqp-based clients encode ``v``."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        for bits, name in ((8, "byte"), (16, "short"), (32, "signedint")):
            if -(1 << (bits - 1)) <= v < 1 << (bits - 1):
                return name
        return "long"
    if isinstance(v, float):
        return "float"
    return amqp_type(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _invalid(key: str, where: str, error: str) -> ChannelError:
    return precondition_failed(f"invalid arg '{key}' for {where}: {error}")


MAX_EXPIRY = 4294967295  # RabbitMQ's ?MAX_EXPIRY_TIMER (ms)
# x-message-ttl and x-expires: RabbitMQ 3.10 takes up to ten years (measured: 315,360,000,000 ms
# accepted, one more refused), on classic and quorum queues. Celery's native delayed delivery needs
# it: its celery_delayed_27 queue has a TTL of 2^27 s.
MAX_TTL = 315_360_000_000


def check_int(key: str, v: Any, where: str, *, positive: bool = False, maximum: int | None = None) -> int:
    """An integer argument, checked as rabbit_amqqueue does, with its error terms as reply text."""
    if not _is_int(v):
        raise _invalid(key, where, f'"expected integer, got {wire_type(v)}"')
    if v < 0:
        raise _invalid(key, where, f"{{value_negative,{v}}}")
    if positive and v == 0:
        raise _invalid(key, where, f"{{value_zero,{v}}}")
    if maximum is not None and v > maximum:
        raise _invalid(key, where, f"{{value_too_large,{v}}}")
    return int(v)


def ms_argument(arguments: dict[str, Any], key: str, where: str) -> int | None:
    """A non-negative integer (milliseconds) argument, or None if absent. 0 means off."""
    if key not in arguments:
        return None
    return check_int(key, arguments[key], where, maximum=MAX_EXPIRY) or None


def _text(v: Any) -> str | None:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v if isinstance(v, str) else None


def validate_queue(name: str, vhost: str, durable: bool, exclusive: bool, auto_delete: bool, args: dict[str, Any]) -> None:
    """queue.declare arguments, with RabbitMQ 3.10's codes and texts (checked against a real broker)."""
    where = f"queue '{name}' in vhost '{vhost}'"
    qtype = args.get("x-queue-type", "classic")
    if _text(qtype) is None:
        raise _invalid("x-queue-type", where, f"{{unacceptable_type,{wire_type(qtype)}}}")
    qtype = _text(qtype)
    if qtype not in QUEUE_TYPES:
        raise _invalid("x-queue-type", where, f"\"unsupported queue type '{qtype}'\"")
    if qtype == "quorum":
        for prop, bad in (("non-durable", not durable), ("exclusive-declare", exclusive), ("auto-delete", auto_delete)):
            if bad:
                raise precondition_failed(f"invalid property '{prop}' for queue '{name}' in vhost '{vhost}'")
        for key in CLASSIC_ONLY_ARGS:
            if key in args:
                raise precondition_failed(
                    f"invalid arg '{key}' for queue '{name}' in vhost '{vhost}' of queue type rabbit_quorum_queue"
                )
    ms_argument(args, "x-consumer-timeout", where)
    if "x-expires" in args:
        check_int("x-expires", args["x-expires"], where, positive=True, maximum=MAX_TTL)
    if "x-message-ttl" in args:
        check_int("x-message-ttl", args["x-message-ttl"], where, maximum=MAX_TTL)
    for key in ("x-max-length", "x-max-length-bytes"):
        if key in args:
            check_int(key, args[key], where)
    if "x-max-priority" in args:
        v = check_int("x-max-priority", args["x-max-priority"], where)
        if v > 255:
            raise _invalid("x-max-priority", where, f"{{max_value_exceeded,{v}}}")
    if "x-overflow" in args:
        v = args["x-overflow"]
        if _text(v) is None:
            raise _invalid("x-overflow", where, f"{{unacceptable_type,{wire_type(v)}}}")
        if _text(v) not in ("drop-head", "reject-publish", "reject-publish-dlx"):
            raise _invalid("x-overflow", where, "invalid_overflow")
    if "x-queue-mode" in args:
        v = args["x-queue-mode"]
        if _text(v) is None:
            raise _invalid("x-queue-mode", where, f"{{unacceptable_type,{wire_type(v)}}}")
        if _text(v) not in ("default", "lazy"):
            raise _invalid("x-queue-mode", where, f"\"unsupported queue mode '{_text(v)}'\"")
    if "x-single-active-consumer" in args and not isinstance(args["x-single-active-consumer"], bool):
        v = args["x-single-active-consumer"]
        raise _invalid("x-single-active-consumer", where, f"{{unacceptable_type,{wire_type(v)}}}")
    if "x-dead-letter-exchange" in args and _text(args["x-dead-letter-exchange"]) is None:
        v = args["x-dead-letter-exchange"]
        raise precondition_failed(f"invalid type '{wire_type(v)}' for arg 'x-dead-letter-exchange' in {where}")
    if "x-dead-letter-routing-key" in args:
        v = args["x-dead-letter-routing-key"]
        if _text(v) is None:
            raise precondition_failed(f"invalid type '{wire_type(v)}' for arg 'x-dead-letter-routing-key' in {where}")
        if "x-dead-letter-exchange" not in args:
            raise _invalid("x-dead-letter-routing-key", where, "routing_key_but_no_dlx_defined")


def validate_consume(queue: str, vhost: str, args: dict[str, Any]) -> None:
    """basic.consume arguments (RabbitMQ checks x-priority is an integer)."""
    check_arguments(args, f"queue '{queue}' in vhost '{vhost}'")
    if "x-priority" in args and not _is_int(args["x-priority"]):
        raise _invalid("x-priority", f"queue '{queue}' in vhost '{vhost}'", f'"expected integer, got {wire_type(args["x-priority"])}"')


def check_name(kind: str, name: str) -> None:
    if name.startswith("amq."):
        raise ChannelError(ReplyCode.ACCESS_REFUSED, f"{kind} name '{name}' contains reserved prefix 'amq.*'")
