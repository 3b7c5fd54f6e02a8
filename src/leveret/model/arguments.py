"""Validation and equivalence of queue and consumer arguments, with RabbitMQ's texts."""

from __future__ import annotations

from typing import Any

from leveret.errors import ChannelError, ReplyCode, precondition_failed

QUEUE_TYPES = ("classic", "quorum")

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


def check_equivalent_args(name: str, vhost: str, received: dict[str, Any], current: dict[str, Any]) -> None:
    for arg in EQUIVALENCE_ARGS:
        r = received.get(arg)
        c = current.get(arg)
        if r == c and type(r) is type(c):
            continue
        if arg == "x-queue-type" and (r or "classic") == (c or "classic"):
            continue
        rs = "none" if r is None else f"the value '{_show(r)}' of type '{amqp_type(r)}'"
        cs = "none" if c is None else f"the value '{_show(c)}' of type '{amqp_type(c)}'"
        raise precondition_failed(f"inequivalent arg '{arg}' for queue '{name}' in vhost '{vhost}': received {rs} but current is {cs}")


def ms_argument(arguments: dict[str, Any], key: str, where: str) -> int | None:
    """A non-negative integer (milliseconds) argument, or None if absent. 0 means off."""
    if key not in arguments:
        return None
    v = arguments[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise precondition_failed(
            f"invalid arg '{key}' for {where}: {_show(v)!r} of type '{amqp_type(v)}' is not a non-negative integer"
        )
    return v or None


def validate_queue(name: str, vhost: str, durable: bool, exclusive: bool, auto_delete: bool, args: dict[str, Any]) -> None:
    qtype = args.get("x-queue-type", "classic")
    if isinstance(qtype, bytes):
        qtype = qtype.decode("utf-8", "replace")
    if qtype not in QUEUE_TYPES:
        raise precondition_failed(
            f"invalid arg 'x-queue-type' for queue '{name}' in vhost '{vhost}': "
            f"\"{_show(qtype)}\" is not a supported queue type (supported: classic, quorum)"
        )
    if qtype == "quorum":
        for prop, bad in (("non-durable", not durable), ("exclusive-declare", exclusive), ("auto-delete", auto_delete)):
            if bad:
                raise precondition_failed(f"invalid property '{prop}' for queue '{name}' in vhost '{vhost}'")
    ms_argument(args, "x-consumer-timeout", f"queue '{name}' in vhost '{vhost}'")
    for key in ("x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-max-priority"):
        if key in args:
            v = args[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise precondition_failed(
                    f"invalid arg '{key}' for queue '{name}' in vhost '{vhost}': {_show(v)!r} is not a non-negative integer"
                )


def check_name(kind: str, name: str) -> None:
    if name.startswith("amq."):
        raise ChannelError(ReplyCode.ACCESS_REFUSED, f"{kind} name '{name}' contains reserved prefix 'amq.*'")
