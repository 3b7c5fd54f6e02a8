"""A minimal AMQP 0-9-1 client over a plain socket, for what client libraries can't express.

Frames are encoded with ``pamqp.frame.marshal`` and decoded with ``pamqp.frame.unmarshal``,
so a test sees every frame the broker sends, in order, with nothing hidden by a client library.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader
from pamqp import heartbeat as pheartbeat

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
PLAIN_GUEST = b"\x00guest\x00guest"


def start_ok(
    mechanism: str = "PLAIN", response: bytes = PLAIN_GUEST, props: dict[str, Any] | None = None
) -> Any:
    # pamqp wants a str for the longstr response; latin-1 keeps the bytes as they are (ASCII here)
    return C.Connection.StartOk(
        client_properties=props or {}, mechanism=mechanism, response=response.decode("latin-1")
    )


class RawClient:
    """One TCP connection; ``send`` methods, ``recv`` the next (channel, frame)."""

    def __init__(self, port: int, timeout: float = 5.0, host: str = "127.0.0.1", rcvbuf: int | None = None) -> None:
        """``rcvbuf``: SO_RCVBUF, set before connecting. Shrinking it on a connected loopback socket
        leaves the sender facing a zero window that only zero-window probes reopen, with exponential
        backoff (measured: a 0.35 s gap per stall, growing): the "slow consumer" test stalled that way."""
        if rcvbuf is None:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect((host, port))
        self.buf = b""
        self.frame_max = 131072

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- output --------------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, channel: int, frame: Any) -> None:
        self.sock.sendall(pframe.marshal(frame, channel))

    def heartbeat(self) -> None:
        self.sock.sendall(pframe.marshal(pheartbeat.Heartbeat(), 0))

    def publish(
        self,
        channel: int,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str = "",
        mandatory: bool = False,
        properties: C.Basic.Properties | None = None,
    ) -> None:
        """basic.publish + content header + body frames, in one write."""
        out = [
            pframe.marshal(
                C.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory), channel
            )
        ]
        out.append(
            pframe.marshal(pheader.ContentHeader(0, len(body), properties or C.Basic.Properties()), channel)
        )
        chunk = self.frame_max - 8
        out += (
            pframe.marshal(pbody.ContentBody(body[i : i + chunk]), channel)
            for i in range(0, len(body), chunk)
        )
        self.sock.sendall(b"".join(out))

    # ---- input ---------------------------------------------------------------------------------

    def recv(self, timeout: float = 5.0, skip_heartbeats: bool = True) -> tuple[int, Any]:
        """The next frame as (channel, pamqp frame). Raises EOFError when the peer closed."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 7:
                size = struct.unpack_from(">I", self.buf, 3)[0]
                if len(self.buf) >= size + 8:
                    n, channel, frame = pframe.unmarshal(self.buf[: size + 8])
                    self.buf = self.buf[n:]
                    if skip_heartbeats and isinstance(frame, pheartbeat.Heartbeat):
                        continue
                    return channel, frame
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the broker")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("broker closed the connection")
            self.buf += data

    def recv_frame_bytes(self, timeout: float = 5.0) -> bytes:
        """The next whole frame exactly as it arrived, heartbeats included."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 7:
                size = struct.unpack_from(">I", self.buf, 3)[0]
                if len(self.buf) >= size + 8:
                    frame, self.buf = self.buf[: size + 8], self.buf[size + 8 :]
                    return frame
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the broker")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("broker closed the connection")
            self.buf += data

    def expect(self, cls: type, timeout: float = 5.0) -> Any:
        """The next non-heartbeat frame, which must be a ``cls``."""
        _, frame = self.recv(timeout)
        assert isinstance(frame, cls), f"expected {cls.__name__}, got {frame!r}"
        return frame

    def recv_message(self, timeout: float = 5.0) -> tuple[Any, C.Basic.Properties, bytes]:
        """A content-carrying method (deliver, get-ok, return) with its properties and body."""
        _, method = self.recv(timeout)
        _, head = self.recv(timeout)
        assert isinstance(head, pheader.ContentHeader), head
        parts = []
        got = 0
        while got < head.body_size:
            _, b = self.recv(timeout)
            assert isinstance(b, pbody.ContentBody), b
            parts.append(b.value)
            got += len(b.value)
        return method, head.properties, b"".join(parts)

    def read_until_closed(self, timeout: float = 5.0) -> bytes:
        """Everything the broker still sends until it closes the socket (raw bytes)."""
        self.sock.settimeout(timeout)
        data = self.buf
        self.buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        else:
            raise TimeoutError("broker did not close the connection")
        return data

    # ---- handshake -----------------------------------------------------------------------------

    def handshake(
        self,
        *,
        heartbeat: int = 0,
        mechanism: str = "PLAIN",
        response: bytes = PLAIN_GUEST,
        frame_max: int = 131072,
        channel_max: int = 2047,
        vhost: str = "/",
        capabilities: dict[str, Any] | None = None,
    ) -> tuple[C.Connection.Start, C.Connection.Tune]:
        """Header, start-ok, tune-ok, open; returns the broker's start and tune."""
        self.send_raw(PROTOCOL_HEADER)
        start = self.expect(C.Connection.Start)
        props = {"product": "leveret-e2e-raw", "capabilities": capabilities or {}}
        self.send(0, start_ok(mechanism, response, props))
        tune = self.expect(C.Connection.Tune)
        self.frame_max = frame_max
        self.send(0, C.Connection.TuneOk(channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat))
        self.send(0, C.Connection.Open(virtual_host=vhost))
        self.expect(C.Connection.OpenOk)
        return start, tune

    def open_channel(self, channel: int) -> None:
        self.send(channel, C.Channel.Open())
        self.expect(C.Channel.OpenOk)

    def kill(self) -> None:
        """Drop the TCP connection with an RST, sending nothing (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
