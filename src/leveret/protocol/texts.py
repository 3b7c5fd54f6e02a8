"""RabbitMQ's reply texts for protocol errors, so that a client sees the words RabbitMQ would send."""

from __future__ import annotations

from typing import Any

from pamqp import commands

# Content frames out of sequence (rabbit_command_assembler).
NO_METHOD = "expected method frame, got non method frame instead"
NO_HEADER = "expected content header for class 60, got non content header frame instead"


def erl_binary(data: bytes, printable: bool = True) -> str:
    """``data`` as Erlang prints a binary (``<<"abc">>`` or ``<<0,60>>``), for RabbitMQ's reply texts."""
    if printable and data and all(32 <= b < 127 for b in data):
        return '<<"' + data.decode("ascii").replace("\\", "\\\\").replace('"', '\\"') + '">>'
    return "<<" + ",".join(map(str, data)) + ">>"


def snippet(ftype: int, payload: bytes) -> str:
    """RabbitMQ's ``payload_snippet``: the frame type and at most its first 16 octets."""
    if len(payload) <= 16:
        return f"type {ftype}, all octets = {erl_binary(payload)}"
    return f"type {ftype}, first 16 octets = {erl_binary(payload[:16])}"


def method_name(index: int) -> str:
    """A method's name (``basic.publish``) from its class and method ids, or the ids."""
    cls: Any = commands.INDEX_MAPPING.get(index)
    return str(cls.name) if cls is not None else f"{index >> 16}.{index & 0xFFFF}"
