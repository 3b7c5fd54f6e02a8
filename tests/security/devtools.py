"""A page in headless Chromium driven over the DevTools protocol (its WebSocket, with aiohttp's
client): navigate, reload, run a script and await its promise, read the console."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp


class DevTools:
    """One page: :meth:`call` sends a command and awaits its answer; events are kept in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.loaded = asyncio.Event()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            doc = json.loads(msg.data)
            if "id" in doc:
                self.waiting.pop(doc["id"]).set_result(doc)
            else:
                self.events.append(doc)
                if doc["method"] == "Page.loadEventFired":
                    self.loaded.set()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = fut
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        doc = await fut
        assert "error" not in doc, doc
        result: dict[str, Any] = doc["result"]
        return result

    async def js(self, expression: str) -> Any:
        r = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    async def load(self, method: str, **params: Any) -> None:
        self.loaded.clear()
        await self.call(method, **params)
        await self.loaded.wait()

    async def status(self, prefix: str) -> str:
        """The dashboard's status line once it starts with ``prefix`` (watched, not polled)."""
        watch = """new Promise((resolve) => {
            const el = document.getElementById("status");
            const check = () => el.textContent.startsWith(PREFIX) && (resolve(el.textContent), true);
            if (!check()) new MutationObserver(check).observe(el, {childList: true, characterData: true, subtree: true});
        })"""
        text: str = await self.js(watch.replace("PREFIX", json.dumps(prefix)))
        return text

    def console(self) -> list[str]:
        out = []
        for e in self.events:
            if e["method"] == "Log.entryAdded":
                out.append(e["params"]["entry"]["text"])
            elif e["method"] == "Runtime.exceptionThrown":
                out.append(json.dumps(e["params"]["exceptionDetails"]))
        return out


@contextlib.asynccontextmanager
async def devtools_page(chromium: str, profile: Path) -> AsyncIterator[DevTools]:
    """Start ``chromium`` headless with a DevTools port of its own choosing and drive its first
    page; on exit close the connection and kill the browser (the process this started)."""
    proc = await asyncio.create_subprocess_exec(
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        "--remote-debugging-port=0", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    drain: asyncio.Task[bytes] | None = None
    try:
        port = None
        async with asyncio.timeout(30):
            while port is None:
                line = (await proc.stderr.readline()).decode()
                assert line, "chromium exited before its DevTools endpoint was up"
                if line.startswith("DevTools listening on ws://"):
                    port = int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        # Chromium goes on logging to stderr: read it, or a full pipe would stop the browser.
        drain = asyncio.get_running_loop().create_task(proc.stderr.read())
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            target = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = DevTools(ws)
                try:
                    for domain in ("Page", "Runtime", "Log"):
                        await page.call(f"{domain}.enable")
                    yield page
                finally:
                    page.reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await page.reader
    finally:
        proc.kill()
        await proc.wait()
        if drain is not None:
            await drain
