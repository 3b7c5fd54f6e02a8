"""The model side of a client connection: who it is, its channels, its exclusive queues."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from leveret.model.channel import Channel
    from leveret.model.queue import Queue


class ConnectionSink(Protocol):
    def force_close(self, code: int, text: str) -> None:
        """Close the connection from the broker's side (management, shutdown)."""


class ClientConnection:
    def __init__(
        self,
        name: str,
        *,
        user: str,
        vhost: str,
        peer: tuple[str, int],
        local: tuple[str, int],
        client_properties: dict[str, Any],
        sink: ConnectionSink,
        connected_at: float,
    ) -> None:
        self.name = name
        self.user = user
        self.vhost = vhost
        self.peer = peer
        self.local = local
        self.client_properties = client_properties
        caps = client_properties.get("capabilities") or {}
        self.cancel_notify = bool(isinstance(caps, dict) and caps.get("consumer_cancel_notify"))
        self.sink = sink
        self.connected_at = connected_at
        self.channels: dict[int, Channel] = {}
        self.exclusive_queues: list[Queue] = []
        # wire statistics the server keeps up to date
        self.recv_oct = 0
        self.send_oct = 0
        self.heartbeat = 0
        self.frame_max = 0
        self.channel_max = 0

    def __repr__(self) -> str:
        return f"<ClientConnection {self.name}>"
