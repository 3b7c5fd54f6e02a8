"""AMQP reply codes and the two kinds of protocol error.

A :class:`ChannelError` (soft error) closes only the channel it happened on; a
:class:`ConnectionError_` (hard error) closes the whole connection. Client input is
translated into one of these once, at the edge; any other exception escaping the
protocol or model layers is a bug.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ReplyCode(IntEnum):
    REPLY_SUCCESS = 200
    CONTENT_TOO_LARGE = 311
    NO_ROUTE = 312
    NO_CONSUMERS = 313
    CONNECTION_FORCED = 320
    INVALID_PATH = 402
    ACCESS_REFUSED = 403
    NOT_FOUND = 404
    RESOURCE_LOCKED = 405
    PRECONDITION_FAILED = 406
    FRAME_ERROR = 501
    SYNTAX_ERROR = 502
    COMMAND_INVALID = 503
    CHANNEL_ERROR = 504
    UNEXPECTED_FRAME = 505
    RESOURCE_ERROR = 506
    NOT_ALLOWED = 530
    NOT_IMPLEMENTED = 540
    INTERNAL_ERROR = 541


class AMQPError(Exception):
    """A protocol error with its reply code and the text sent to the client.

    ``class_id``/``method_id`` name the method that failed (0, 0 when none did).
    The reply text follows RabbitMQ's form ``NAME - detail``.
    """

    hard = False

    def __init__(
        self, code: ReplyCode, detail: str, class_id: int = 0, method_id: int = 0, channel: int = 0
    ) -> None:
        self.code = ReplyCode(code)
        self.channel = channel  # the channel a soft error closes (set by whoever knows it)
        self.events: list[Any] = []  # protocol events parsed before the error (see protocol.connection)
        self.detail = detail
        self.class_id = class_id
        self.method_id = method_id
        super().__init__(self.text)

    @property
    def text(self) -> str:
        # RabbitMQ's reply-text is "CODE_NAME - detail" and short strings cap at 255 bytes.
        t = f"{self.code.name} - {self.detail}"
        raw = t.encode("utf-8")
        if len(raw) > 255:
            t = raw[:255].decode("utf-8", "ignore")
        return t


class ChannelError(AMQPError):
    """Soft error: the channel is closed with ``channel.close``; the connection lives on."""


class ConnectionError_(AMQPError):  # noqa: N801 - avoid shadowing the builtin
    """Hard error: the connection is closed with ``connection.close``."""

    hard = True


def precondition_failed(detail: str) -> ChannelError:
    return ChannelError(ReplyCode.PRECONDITION_FAILED, detail)


def not_found(detail: str) -> ChannelError:
    return ChannelError(ReplyCode.NOT_FOUND, detail)


def resource_locked(detail: str) -> ChannelError:
    return ChannelError(ReplyCode.RESOURCE_LOCKED, detail)
