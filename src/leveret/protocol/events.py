"""Events the protocol layer produces from client bytes. Frozen, slotted values (built fast: leveret.values)."""

from __future__ import annotations

from dataclasses import dataclass

from pamqp.base import Frame

from ..values import fast_init


@fast_init
@dataclass(frozen=True, slots=True)
class HeaderReceived:
    """A valid ``AMQP 0-9-1`` protocol header arrived: send connection.start."""


@fast_init
@dataclass(frozen=True, slots=True)
class MethodReceived:
    """Any method other than the hot ones below, decoded by pamqp."""

    channel: int
    method: Frame


@fast_init
@dataclass(frozen=True, slots=True)
class Publish:
    """basic.publish with its complete content.

    ``properties`` is the raw property section of the content header (flags and
    values), kept as bytes so it can be forwarded to consumers unchanged.
    """

    channel: int
    exchange: str
    routing_key: str
    mandatory: bool
    immediate: bool
    properties: bytes
    body: bytes | bytearray  # a bytearray from DIRECT_BODY_MIN (64 KiB) up, assembled in place; never changed


@fast_init
@dataclass(frozen=True, slots=True)
class Ack:
    channel: int
    delivery_tag: int
    multiple: bool


@fast_init
@dataclass(frozen=True, slots=True)
class Nack:
    channel: int
    delivery_tag: int
    multiple: bool
    requeue: bool


@fast_init
@dataclass(frozen=True, slots=True)
class Reject:
    channel: int
    delivery_tag: int
    requeue: bool


@fast_init
@dataclass(frozen=True, slots=True)
class Heartbeat:
    pass


Event = HeaderReceived | MethodReceived | Publish | Ack | Nack | Reject | Heartbeat
