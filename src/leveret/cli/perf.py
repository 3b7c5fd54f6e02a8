"""`leveret perf`: a load generator for any AMQP 0-9-1 broker (like RabbitMQ's PerfTest).

Producers publish to one queue through the default exchange; consumers consume it.
Every body starts with 16 bytes: the send time (ns since the epoch), a run nonce,
the producer's index and a sequence number. Consumers use them for end-to-end
latency and to count every message exactly once (duplicates and messages of other
runs are counted apart). The run stops by itself: after ``--count`` messages or
``--time`` seconds (then the consumers drain what was sent), and it gives up when
nothing moves for ``--timeout`` seconds.

Pure Python on asyncio (``perf_client.PerfClient``), no extra dependency; uvloop is
used when installed. One process, one event loop: on a small machine the generator
competes with the broker for CPU, so for comparing brokers use ``bench/`` (amqpperf, Go).
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import click

from leveret.cli.perf_client import URL, AMQPError, PerfClient, describe

STAMP = struct.Struct(">QHHI")  # send time ns, run nonce, producer index, sequence number
STAMP_SIZE = STAMP.size  # 16
BATCH = 256  # publishes per write when nothing limits them


@dataclass
class Options:
    url: str
    queue: str
    producers: int
    consumers: int
    size: int
    count: int | None
    time: float | None
    rate: float
    confirm: int
    prefetch: int
    autoack: bool
    persistent: bool
    durable: bool
    delete_first: bool
    timeout: float


@dataclass
class Stats:
    sent: int = 0
    confirmed: int = 0
    nacked: int = 0
    received: int = 0  # unique messages of this run (all messages when there are no producers)
    duplicates: int = 0
    foreign: int = 0  # from another run (left in the queue)
    latency_us: array[int] = field(default_factory=lambda: array("Q"))
    confirm_us: array[int] = field(default_factory=lambda: array("Q"))
    tick_latency_us: list[int] = field(default_factory=list)
    last_send: float = 0.0
    last_receive: float = 0.0


def percentiles(values: Any, points: tuple[float, ...] = (50, 75, 95, 99, 99.9)) -> dict[str, float]:
    """Nearest-rank percentiles of microsecond values, in ms; empty dict for no values."""
    if not len(values):
        return {}
    s = sorted(values)
    n = len(s)
    out = {"min": s[0] / 1000, "mean": sum(s) / n / 1000}
    for p in points:
        out[f"p{p:g}"] = s[min(n - 1, max(0, int(n * p / 100 + 0.5) - 1))] / 1000
    out["max"] = s[-1] / 1000
    return out


class Run:
    """One perf run: set-up, producers, consumers, progress ticker, summary."""

    def __init__(self, opts: Options, progress: Any) -> None:
        self.o = opts
        self.url = URL.parse(opts.url)
        self.stats = Stats()
        self.nonce = int.from_bytes(os.urandom(2), "big")
        self.progress = progress  # callable(str) or None
        self.clients: list[PerfClient] = []
        self.seen: list[bytearray] = [bytearray() for _ in range(opts.producers)]
        self.expected: int | None = opts.count
        self.producing = opts.producers > 0
        self.consumed = asyncio.Event()
        self.failure: asyncio.Future[AMQPError] = asyncio.get_running_loop().create_future()
        self.t0 = 0.0
        self.error: str | None = None

    # ---- set-up ---------------------------------------------------------------------------------

    async def _connect(self, name: str) -> PerfClient:
        c = await PerfClient.connect(self.url, name)
        c.on_error = self._fail
        self.clients.append(c)
        return c

    def _fail(self, err: AMQPError) -> None:
        if not self.failure.done():
            self.failure.set_result(err)

    async def setup(self) -> None:
        c = await PerfClient.connect(self.url, "leveret perf (setup)")
        try:
            if self.o.delete_first:
                await c.queue_delete(self.o.queue)
            await c.queue_declare(self.o.queue, durable=self.o.durable)
        finally:
            await c.close()

    # ---- consumers ------------------------------------------------------------------------------

    async def start_consumer(self, i: int) -> None:
        c = await self._connect(f"leveret perf consumer {i}")
        st = self.stats
        seen = self.seen
        nonce = self.nonce
        check = self.o.producers > 0
        autoack = self.o.autoack
        unpack = STAMP.unpack_from
        time_ns = time.time_ns
        lat = st.latency_us
        tick = st.tick_latency_us
        ack = c.ack
        consumed = self.consumed

        def on_deliver(tag: int, body: bytes) -> None:
            if not autoack:
                ack(tag)
            if len(body) < STAMP_SIZE:
                st.foreign += 1
                return
            ts, n, p, seq = unpack(body)
            if check:
                if n != nonce or p >= len(seen):
                    st.foreign += 1
                    return
                bits = seen[p]
                byte = seq >> 3
                if byte >= len(bits):
                    bits.extend(bytes(byte - len(bits) + 4096))
                mask = 1 << (seq & 7)
                if bits[byte] & mask:
                    st.duplicates += 1
                    return
                bits[byte] |= mask
            us = (time_ns() - ts) // 1000
            if us < 0:
                us = 0
            lat.append(us)
            tick.append(us)
            st.received += 1

        def on_batch_end() -> None:
            st.last_receive = time.monotonic()
            if self.expected is not None and st.received >= self.expected and not self.producing:
                consumed.set()

        c.on_deliver = on_deliver
        c.on_batch_end = on_batch_end
        if self.o.prefetch:
            await c.qos(self.o.prefetch)
        await c.consume(self.o.queue, no_ack=autoack, tag=f"perf-{i}")

    # ---- producers ------------------------------------------------------------------------------

    async def start_producer(self, i: int) -> PerfClient:
        c = await self._connect(f"leveret perf producer {i}")
        if self.o.confirm:
            await c.confirm_select()
        return c

    async def produce(self, i: int, c: PerfClient, quota: int | None, stop_at: float | None) -> None:
        o, st = self.o, self.stats
        head, body_head, chunk = c.publish_frames(o.queue, o.persistent, o.size)
        pad = bytes(o.size - STAMP_SIZE)
        pack = STAMP.pack
        nonce = self.nonce
        confirm = o.confirm
        outstanding: deque[tuple[int, int]] = deque()  # (publish seq, send ns) awaiting a confirm
        wake: list[asyncio.Future[None]] = []
        loop = asyncio.get_running_loop()
        time_ns = time.time_ns
        cus = st.confirm_us

        def on_confirm(tag: int, multiple: bool, ok: bool) -> None:
            now = time_ns()
            done = 0
            if multiple:
                while outstanding and outstanding[0][0] <= tag:
                    cus.append((now - outstanding.popleft()[1]) // 1000)
                    done += 1
            elif outstanding and outstanding[0][0] == tag:
                cus.append((now - outstanding.popleft()[1]) // 1000)
                done = 1
            else:
                for k, (seq, ts) in enumerate(outstanding):
                    if seq == tag:
                        del outstanding[k]
                        cus.append((now - ts) // 1000)
                        done = 1
                        break
            if ok:
                st.confirmed += done
            else:
                st.nacked += done
            if wake and len(outstanding) < confirm:
                f = wake.pop()
                if not f.done():
                    f.set_result(None)

        async def room() -> None:
            f = loop.create_future()
            wake.append(f)
            await f

        c.on_confirm = on_confirm
        seq = 0
        start = time.monotonic()
        monotonic = time.monotonic
        while True:
            if quota is not None and seq >= quota:
                break
            if stop_at is not None and monotonic() >= stop_at:
                break
            if c.error is not None:
                raise c.error
            n = BATCH
            if quota is not None:
                n = min(n, quota - seq)
            if confirm:
                free = confirm - len(outstanding)
                if free <= 0:
                    await room()
                    continue
                n = min(n, free)
            if o.rate:
                due = int((monotonic() - start) * o.rate) + 1 - seq
                if due <= 0:
                    await asyncio.sleep(max(0.0005, (seq + 1) / o.rate - (monotonic() - start)))
                    continue
                n = min(n, due)
            ts = time_ns()
            parts = []
            for _ in range(n):
                seq += 1
                body = pack(ts, nonce, i, seq) + pad
                parts.append(head)
                if body_head:
                    parts += (body_head, body, b"\xce")
                else:
                    parts.append(c.body_frames(body, chunk))
                if confirm:
                    outstanding.append((seq, ts))
            c.write(b"".join(parts))
            st.sent += n
            st.last_send = monotonic()
            if c.paused:
                await c.drained()
            else:
                await asyncio.sleep(0)
        while outstanding and c.error is None:
            await room()

    # ---- the run --------------------------------------------------------------------------------

    async def main(self) -> dict[str, Any]:
        o = self.o
        await self.setup()
        for i in range(o.consumers):
            await self.start_consumer(i)
        producers = [await self.start_producer(i) for i in range(o.producers)]
        self.t0 = time.monotonic()
        stop_at = self.t0 + o.time if o.time is not None else None
        quotas: list[int | None] = [None] * o.producers
        if o.count is not None and o.producers:
            per, extra = divmod(o.count, o.producers)
            quotas = [per + (1 if i < extra else 0) for i in range(o.producers)]
        ticker = asyncio.create_task(self._ticker())
        work = asyncio.create_task(self._work(producers, quotas, stop_at))
        try:
            waiting: list[asyncio.Future[Any]] = [work, self.failure]
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if self.failure.done():
                self.error = describe(self.failure.result())
            elif work.exception() is not None:
                exc = work.exception()
                assert exc is not None
                self.error = describe(exc)
        finally:
            for t in (work, ticker):
                t.cancel()
            await asyncio.gather(work, ticker, return_exceptions=True)
            elapsed = time.monotonic() - self.t0
            await asyncio.gather(*(c.close(2.0) for c in self.clients), return_exceptions=True)
        return self.summary(elapsed)

    async def _work(
        self, producers: list[PerfClient], quotas: list[int | None], stop_at: float | None
    ) -> None:
        o, st = self.o, self.stats
        if producers:
            await asyncio.gather(*(self.produce(i, c, quotas[i], stop_at) for i, c in enumerate(producers)))
        self.producing = False
        if not o.consumers:
            return
        if producers:
            self.expected = st.sent - st.nacked
        elif stop_at is not None:  # consumers only, for a time
            await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
            return
        if self.expected is not None and st.received < self.expected:
            await self.consumed.wait()

    async def _ticker(self) -> None:
        st = self.stats
        last = (0, 0, 0)
        last_t = self.t0
        idle_since = self.t0
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            dt = now - last_t
            cur = (st.sent, st.received, st.confirmed + st.nacked)
            if cur != last:
                idle_since = now
            elif now - idle_since >= self.o.timeout:
                self._fail(AMQPError(0, f"no progress for {self.o.timeout:g} s"))
                return
            # Copied and emptied in place: each consumer holds a reference to this very list.
            tick = st.tick_latency_us[:]
            st.tick_latency_us.clear()
            if self.progress is not None:
                pct = percentiles(tick, (50, 99))
                parts = [
                    f"{now - self.t0:6.1f}s",
                    f"sent {(cur[0] - last[0]) / dt:9,.0f}/s",
                    f"received {(cur[1] - last[1]) / dt:9,.0f}/s",
                ]
                if pct:
                    parts.append(f"latency p50 {pct['p50']:7.2f} ms p99 {pct['p99']:7.2f} ms")
                if self.o.confirm:
                    parts.append(f"unconfirmed {st.sent - st.confirmed - st.nacked:,}")
                if self.o.producers and self.o.consumers:
                    parts.append(f"in flight {st.sent - st.nacked - st.received:,}")
                self.progress("  ".join(parts))
            last, last_t = cur, now

    def summary(self, elapsed: float) -> dict[str, Any]:
        o, st = self.o, self.stats
        send_s = (st.last_send - self.t0) if st.sent else 0.0
        recv_s = (st.last_receive - self.t0) if st.received else 0.0
        missing = 0
        if o.producers and o.consumers:
            missing = max(0, st.sent - st.nacked - st.received)
        ok = self.error is None and missing == 0 and st.duplicates == 0 and st.nacked == 0
        if o.confirm and st.confirmed + st.nacked != st.sent:
            ok = False
        return {
            "ok": ok,
            "error": self.error,
            "url": _redact(o.url),
            "queue": o.queue,
            "producers": o.producers,
            "consumers": o.consumers,
            "size": o.size,
            "persistent": o.persistent,
            "confirm": o.confirm,
            "prefetch": o.prefetch,
            "autoack": o.autoack,
            "rate": o.rate,
            "elapsed_s": round(elapsed, 3),
            "sent": st.sent,
            "confirmed": st.confirmed,
            "nacked": st.nacked,
            "received": st.received,
            "missing": missing,
            "duplicates": st.duplicates,
            "foreign": st.foreign,
            "send_rate": round(st.sent / send_s, 1) if send_s > 0 else None,
            "receive_rate": round(st.received / recv_s, 1) if recv_s > 0 else None,
            "latency_ms": _round(percentiles(st.latency_us)),
            "confirm_latency_ms": _round(percentiles(st.confirm_us)),
        }


def _round(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in d.items()}


def _redact(url: str) -> str:
    u = URL.parse(url)
    return f"{'amqps' if u.tls else 'amqp'}://{u.user}@{u.host}:{u.port}/{u.vhost.replace('/', '%2F')}"


def _rate(v: float | None) -> str:
    return f"{v:,.0f} msg/s" if v else "-"


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"leveret perf: {s['producers']} producer(s), {s['consumers']} consumer(s), {s['size']} B bodies, "
        f"{'persistent' if s['persistent'] else 'transient'}, "
        f"{'confirms ' + str(s['confirm']) + ' in flight' if s['confirm'] else 'no confirms'}, "
        f"{'auto-ack' if s['autoack'] else 'manual ack'}, prefetch {s['prefetch'] or 'unlimited'}",
        f"  elapsed     {s['elapsed_s']:.2f} s",
        f"  sent        {s['sent']:,}  ({_rate(s['send_rate'])})",
    ]
    if s["confirm"]:
        lines.append(f"  confirmed   {s['confirmed']:,}  nacked {s['nacked']:,}")
    if s["consumers"]:
        lines.append(f"  received    {s['received']:,}  ({_rate(s['receive_rate'])})")
        lines.append(
            f"  missing     {s['missing']:,}  duplicates {s['duplicates']:,}  foreign {s['foreign']:,}"
        )
    for key, label in (("latency_ms", "latency   "), ("confirm_latency_ms", "confirm   ")):
        p = s[key]
        if p:
            lines.append(
                f"  {label}  p50 {p['p50']:.2f}  p75 {p['p75']:.2f}  p95 {p['p95']:.2f}  p99 {p['p99']:.2f}  "
                f"p99.9 {p['p99.9']:.2f}  max {p['max']:.2f} ms"
            )
    lines.append("  result      " + ("OK" if s["ok"] else f"FAILED{': ' + s['error'] if s['error'] else ''}"))
    return "\n".join(lines)


def _progress_printer(live: bool) -> Any:
    def show(line: str) -> None:
        if live:
            sys.stderr.write("\r\x1b[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return show


@click.command()
@click.option(
    "--url",
    default="amqp://guest:guest@127.0.0.1:5672/%2F",
    show_default=True,
    help="Broker URL (amqp:// or amqps://).",
)
@click.option(
    "--queue",
    "-q",
    default="leveret-perf",
    show_default=True,
    help="Queue to publish to (default exchange) and consume from.",
)
@click.option(
    "--producers",
    "-x",
    default=1,
    show_default=True,
    type=click.IntRange(0, 1000),
    help="Producer connections.",
)
@click.option(
    "--consumers",
    "-y",
    default=1,
    show_default=True,
    type=click.IntRange(0, 1000),
    help="Consumer connections.",
)
@click.option(
    "--size",
    "-s",
    default=16,
    show_default=True,
    type=click.IntRange(STAMP_SIZE, 64 * 1024 * 1024),
    help="Body size in bytes (the first 16 carry the timestamp and ids).",
)
@click.option(
    "--count",
    "-C",
    type=click.IntRange(1),
    default=None,
    help="Messages to publish in all (or to consume, with no producers). [default: 100000 unless --time]",
)
@click.option(
    "--time",
    "-z",
    "duration",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Publish for this many seconds, then drain.",
)
@click.option(
    "--rate",
    "-r",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Messages per second per producer; 0 = unlimited.",
)
@click.option(
    "--confirm",
    "-c",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Publisher confirms with at most N unconfirmed per producer; 0 = no confirms.",
)
@click.option(
    "--prefetch",
    "-Q",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="basic.qos prefetch per consumer; 0 = unlimited.",
)
@click.option("--autoack", "-a", is_flag=True, help="Consume with no_ack (auto-ack).")
@click.option(
    "--persistent", "-f", is_flag=True, help="delivery_mode 2 (needs a durable queue to be stored)."
)
@click.option(
    "--durable/--no-durable", default=None, help="Declare the queue durable. [default: same as --persistent]"
)
@click.option(
    "--delete-first", is_flag=True, help="Delete the queue before declaring it (drops what is left in it)."
)
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Give up after this many seconds without progress.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object on stdout.")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
def perf(
    url: str, queue: str, producers: int, consumers: int, size: int, count: int | None, duration: float | None,
    rate: float, confirm: int, prefetch: int, autoack: bool, persistent: bool, durable: bool | None,
    delete_first: bool, timeout: float, as_json: bool, quiet: bool,
) -> None:  # fmt: skip
    """Measure a broker: throughput and end-to-end latency (like RabbitMQ's PerfTest).

    Producers publish to QUEUE through the default exchange, consumers consume it; a progress
    line every second (sent/s, received/s, p50/p99 latency, in flight) goes to stderr, the
    summary to stdout. Exit status 1 when a message is lost, duplicated or nacked, or on an error.

    \b
    Examples:
      leveret perf                                        # 100,000 x 16 B, 1 producer, 1 consumer
      leveret perf -x 1 -y 4 -Q 1 -c 100 -f -s 64 --time 10   # work queue: confirms, persistent, fair dispatch
      leveret perf -c 1 -f -C 2000                        # publish one, wait for its confirm, repeat
      leveret perf --rate 1000 --time 30 --json           # latency at a fixed rate, JSON summary
    """
    if count is not None and duration is not None:
        raise click.UsageError("give --count or --time, not both")
    if producers == 0 and consumers == 0:
        raise click.UsageError("nothing to do: --producers 0 and --consumers 0")
    if count is None and duration is None:
        count = 100_000
    try:
        URL.parse(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None
    opts = Options(
        url=url, queue=queue, producers=producers, consumers=consumers, size=size, count=count, time=duration,
        rate=rate, confirm=confirm, prefetch=prefetch, autoack=autoack, persistent=persistent,
        durable=persistent if durable is None else durable, delete_first=delete_first, timeout=timeout,
    )  # fmt: skip
    live = sys.stderr.isatty()
    show = None if quiet else _progress_printer(live)

    async def go() -> dict[str, Any]:
        return await Run(opts, show).main()

    try:
        summary = _run(go)
    except (OSError, TimeoutError, AMQPError) as exc:
        if live and show is not None:
            sys.stderr.write("\n")
        hint = (
            " (another run left the queue with other settings: add --delete-first)"
            if getattr(exc, "code", 0) == 406
            else ""
        )
        click.echo(f"leveret perf: cannot run against {_redact(url)}: {describe(exc)}{hint}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    if live and show is not None:
        sys.stderr.write("\n")
    click.echo(json.dumps(summary) if as_json else format_summary(summary))
    sys.exit(0 if summary["ok"] else 1)


def _run(coro_fn: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro_fn())
    return uvloop.run(coro_fn())
