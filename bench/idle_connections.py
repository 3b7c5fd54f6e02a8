"""Many idle connections: how long a broker takes to accept N AMQP connections, and its RSS per connection.

Opens N connections (each: protocol header, start-ok PLAIN guest/guest, tune-ok, connection.open, one
channel open, no heartbeat) from one asyncio client, at most ``parallel`` handshakes at a time, then
holds them idle for ``hold_s`` and reads the broker's RSS. Figures: seconds to open all N, connections
opened per second, (RSS with N open - RSS before) / N. Used by run.py (scenario ``idle-conns``);
runs alone too: ``python bench/idle_connections.py PORT PID [N]``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from pamqp import commands, frame
from pamqp import heartbeat as _hb  # noqa: F401  (pamqp registers frame types on import)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _read_frame(reader: asyncio.StreamReader, buf: bytearray) -> Any:
    while True:
        if len(buf) >= 7:
            try:
                used, _channel, value = frame.unmarshal(bytes(buf))
            except Exception:  # noqa: BLE001 - pamqp raises UnmarshalingException on a short buffer
                used = 0
            if used:
                del buf[:used]
                return value
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("broker closed the connection during the handshake")
        buf += data


async def _open_one(host: str, port: int) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"AMQP\x00\x00\x09\x01")
    buf = bytearray()
    await _read_frame(reader, buf)  # connection.start
    writer.write(frame.marshal(commands.Connection.StartOk(
        client_properties={"product": "leveret-bench"}, mechanism="PLAIN", response="\0guest\0guest",
        locale="en_US"), 0))
    tune = await _read_frame(reader, buf)
    writer.write(frame.marshal(commands.Connection.TuneOk(
        channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0), 0))
    writer.write(frame.marshal(commands.Connection.Open(virtual_host="/"), 0))
    await _read_frame(reader, buf)  # open-ok
    writer.write(frame.marshal(commands.Channel.Open(), 1))
    await _read_frame(reader, buf)  # channel.open-ok
    return writer


async def measure(host: str, port: int, pid: int, n: int = 1000, parallel: int = 50,
                  hold_s: float = 3.0) -> dict[str, Any]:
    before = rss_kb(pid)
    sem = asyncio.Semaphore(parallel)
    writers: list[asyncio.StreamWriter] = []
    errors: list[str] = []

    async def one() -> None:
        async with sem:
            try:
                writers.append(await _open_one(host, port))
            except (OSError, ConnectionError) as e:
                errors.append(f"{type(e).__name__}: {e}")

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    open_s = time.monotonic() - t0
    await asyncio.sleep(hold_s)
    after = rss_kb(pid)
    for w in writers:
        w.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
    opened = len(writers)
    return {
        "ok": opened == n and not errors,
        "connections": opened,
        "open_s": open_s,
        "consume_rate": opened / open_s if open_s > 0 else 0.0,  # connections opened per second
        "rss_before_kb": before,
        "rss_kb": after,
        "rss_per_conn_kb": (after - before) / opened if opened else None,
        "rss_mb": after / 1024,
        "errors": errors[:5],
    }


if __name__ == "__main__":
    print(asyncio.run(measure("127.0.0.1", int(sys.argv[1]), int(sys.argv[2]),
                              int(sys.argv[3]) if len(sys.argv) > 3 else 1000)))
