"""A small asyncio TCP proxy for fault tests: it can drop, stall and cut connections, also mid-frame.

It runs its own event loop on a thread. Every accepted client gets a :class:`Link` to the upstream
broker; the test reaches the links through ``proxy.links`` and breaks them:

- ``cut()``: abort both sockets at once (an RST each way, as when a host dies);
- ``cut_after(n, "down"|"up")``: forward ``n`` more bytes in that direction, then cut, so the cut lands
  wherever byte ``n`` falls, usually inside a frame;
- ``stall()`` / ``resume()``: stop forwarding (both sockets stay open, bytes are held), then go on;
- ``drop()``: forward nothing ever again and discard what comes (a black hole) while sockets stay open.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class Link:
    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.stalled = False
        self.dropped = False
        self.held: dict[str, list[bytes]] = {"up": [], "down": []}
        self.budget: dict[str, int | None] = {"up": None, "down": None}
        self.bytes = {"up": 0, "down": 0}
        self.closed = False

    # called on the proxy's loop
    def forward(self, direction: str, data: bytes) -> None:
        if self.dropped or self.closed:
            return
        if self.stalled:
            self.held[direction].append(data)
            return
        budget = self.budget[direction]
        if budget is not None and len(data) >= budget:
            self._send(direction, data[:budget])
            self._cut()
            return
        if budget is not None:
            self.budget[direction] = budget - len(data)
        self._send(direction, data)

    def _send(self, direction: str, data: bytes) -> None:
        t = self.upstream if direction == "up" else self.client
        if t is not None and data and not t.is_closing():
            t.write(data)
            self.bytes[direction] += len(data)

    def _cut(self) -> None:
        self.closed = True
        for t in (self.client, self.upstream):
            if t is not None and not t.is_closing():
                t.abort()

    def _close_peer(self, of: str) -> None:
        t = self.upstream if of == "client" else self.client
        if t is not None and not t.is_closing() and not self.dropped:
            t.close()

    # called from the test thread
    def cut(self) -> None:
        self.proxy.call(self._cut)

    def cut_after(self, nbytes: int, direction: str = "down") -> None:
        def arm() -> None:
            self.budget[direction] = nbytes

        self.proxy.call(arm)

    def stall(self) -> None:
        self.proxy.call(lambda: setattr(self, "stalled", True))

    def resume(self) -> None:
        def go() -> None:
            self.stalled = False
            for d in ("up", "down"):
                held, self.held[d] = self.held[d], []
                for chunk in held:
                    self.forward(d, chunk)

        self.proxy.call(go)

    def drop(self) -> None:
        self.proxy.call(lambda: setattr(self, "dropped", True))


class _Side(asyncio.Protocol):
    def __init__(self, link: Link, direction: str, name: str) -> None:
        self.link, self.direction, self.name = link, direction, name

    def data_received(self, data: bytes) -> None:
        self.link.forward(self.direction, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._close_peer(self.name)


class FaultProxy:
    """``FaultProxy(upstream_port).start()``; clients connect to ``proxy.port``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.links: list[Link] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="fault-proxy")
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)
        return self

    async def _start(self) -> None:
        self._server = await self.loop.create_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def _accept(self) -> asyncio.Protocol:
        link = Link(self)
        self.links.append(link)
        side = _Side(link, "up", "client")
        orig_made = side.connection_made

        def made(transport: Any) -> None:
            link.client = transport
            transport.pause_reading()  # until upstream is connected
            self.loop.create_task(self._connect_upstream(link))
            orig_made(transport)

        side.connection_made = made  # type: ignore[method-assign]
        return side

    async def _connect_upstream(self, link: Link) -> None:
        try:
            transport, _ = await self.loop.create_connection(lambda: _Side(link, "down", "upstream"), *self.upstream)
        except OSError:
            if link.client is not None:
                link.client.abort()
            return
        link.upstream = transport  # type: ignore[assignment]
        if link.client is not None and not link.client.is_closing():
            link.client.resume_reading()

    def call(self, fn: Any) -> None:
        fut: Any = asyncio.run_coroutine_threadsafe(_run(fn), self.loop)
        fut.result(5)

    def cut_all(self) -> None:
        for link in list(self.links):
            link.cut()

    def stop(self) -> None:
        async def close() -> None:
            for link in self.links:
                link._cut()
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


async def _run(fn: Any) -> None:
    fn()
