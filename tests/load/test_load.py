"""Load, bounded and on loopback only: 1,000 concurrent connections; a slow consumer with a fast publisher.

The slow-consumer run here lasts ~10 s; bench/slow_consumer_rss.py runs it for 60 s and prints the RSS curve.
"""

from __future__ import annotations

import asyncio
import resource
import struct
import time
from pathlib import Path

import pytest
from pamqp import commands as C
from pamqp import frame as pframe

from tests.e2e.raw import PLAIN_GUEST, PROTOCOL_HEADER, start_ok
from tests.helpers import ProcessBroker, ThreadBroker, wait_for

pytestmark = pytest.mark.timeout(120)

CONNECTIONS = 1000


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, object]:
    head = await reader.readexactly(7)
    size = struct.unpack_from(">I", head, 3)[0]
    rest = await reader.readexactly(size + 1)
    _, channel, f = pframe.unmarshal(head + rest)
    return channel, f


async def _expect(reader: asyncio.StreamReader, cls: type) -> object:
    while True:
        _, f = await _read_frame(reader)
        if isinstance(f, cls):
            return f


async def _client(port: int, i: int, opened: list[int], go: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(PROTOCOL_HEADER)
        await _expect(reader, C.Connection.Start)
        writer.write(pframe.marshal(start_ok("PLAIN", PLAIN_GUEST), 0))
        await _expect(reader, C.Connection.Tune)
        writer.write(pframe.marshal(C.Connection.TuneOk(2047, 131072, 0), 0) + pframe.marshal(C.Connection.Open("/"), 0))
        await _expect(reader, C.Connection.OpenOk)
        writer.write(pframe.marshal(C.Channel.Open(), 1))
        await _expect(reader, C.Channel.OpenOk)
        opened.append(i)
        await go.wait()
        # served while all are held: a round trip on every connection
        writer.write(pframe.marshal(C.Queue.Declare(queue="", exclusive=True), 1))
        ok = await _expect(reader, C.Queue.DeclareOk)
        writer.write(pframe.marshal(C.Connection.Close(200, "bye", 0, 0), 0))
        await _expect(reader, C.Connection.CloseOk)
        assert ok is not None
    finally:
        writer.close()


def test_a_thousand_connections_with_a_channel_each() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * CONNECTIONS + 200  # both ends live in this process
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    b = ThreadBroker().start()
    try:
        opened: list[int] = []

        async def main() -> float:
            go = asyncio.Event()
            tasks = [asyncio.create_task(_client(b.port, i, opened, go)) for i in range(CONNECTIONS)]
            t0 = time.monotonic()
            while len(opened) < CONNECTIONS:
                await asyncio.sleep(0.05)
                if time.monotonic() - t0 > 60:
                    raise AssertionError(f"only {len(opened)} connections opened in 60 s")
            held = len(b.app.broker.connections)  # type: ignore[union-attr]  # read-only peek
            assert held == CONNECTIONS, held
            go.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            return time.monotonic() - t0

        elapsed = asyncio.run(main())
        print(f"{CONNECTIONS} connections opened, held and served in {elapsed:.1f} s")
        wait_for(lambda: b.call(lambda: len(b.app.broker.connections)) == 0, timeout=10)  # type: ignore[union-attr]
    finally:
        b.stop()


def test_slow_consumer_fast_publisher_memory_stays_bounded() -> None:
    from bench.slow_consumer_rss import run

    watermark = 100_000_000
    samples = run(seconds=10, interval=1.0, verbose=False, watermark=watermark)
    rss = [r for _, r, _, _ in samples]
    consumed = [c for _, _, _, c in samples]
    # the memory alarm blocks the publisher at the watermark: RSS levels off there...
    assert max(rss) < watermark + 32 * 1024 * 1024, rss
    # ...while the slow consumer keeps being served
    assert consumed[-1] > consumed[-4] > 0, consumed


def test_memory_alarm_clears_once_the_queue_drains(tmp_path: Path) -> None:
    """Freed bodies are handed back to the OS while the alarm is set, so resident memory falls."""
    import pika

    b = ProcessBroker(tmp_path, extra=["--storage", "memory", "--memory-high-watermark", "150000000"]).start()
    try:
        events: dict[str, float] = {}
        pub = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        pub.add_on_connection_blocked_callback(lambda *_: events.setdefault("blocked", time.monotonic()))
        pub.add_on_connection_unblocked_callback(lambda *_: events.setdefault("unblocked", time.monotonic()))
        ch = pub.channel()
        ch.queue_declare("q")
        deadline = time.monotonic() + 30
        while "blocked" not in events and time.monotonic() < deadline:
            for _ in range(1000):
                ch.basic_publish("", "q", b"x" * 1024)
            pub.process_data_events(0)
        assert "blocked" in events, "the memory alarm never fired"
        drainer = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        dch = drainer.channel()
        dch.basic_qos(prefetch_count=500)
        for method, _, _ in dch.consume("q", auto_ack=True, inactivity_timeout=2):
            if method is None:
                break
        deadline = time.monotonic() + 10
        while "unblocked" not in events and time.monotonic() < deadline:
            pub.process_data_events(0.1)
        assert "unblocked" in events, "publishers stayed blocked after the queue drained"
        drainer.close()
        pub.close()
    finally:
        b.kill()
