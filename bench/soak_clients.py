"""Client processes for bench/soak_kill9.py, each run as its own process so that a kill -9 of the broker
cannot take the record of what it confirmed with it.

    python bench/soak_clients.py publish PORT QUEUE OUT FIRST [SIZE]
        Publishes persistent messages to QUEUE (default exchange) with ids FIRST, FIRST+1, ... (body = the
        id in decimal, or with SIZE "ID " repeated to SIZE bytes: see body()), with publisher confirms and up to WINDOW unconfirmed, until the connection drops.
        Appends each confirmed id to OUT as "ID" and each nacked one as "n ID", flushed after every
        confirm. Exits 0 when the broker goes away.

    python bench/soak_clients.py ack PORT QUEUE OUT
        Consumes QUEUE (prefetch 20, manual acks) and appends "a ID R" to OUT after each basic.ack
        (R = 1 if the delivery was flagged redelivered). After every 25 acks it publishes a persistent
        marker to the durable queue "barrier" on another channel of the same connection, waits for its
        confirm and appends "b": the broker handles one connection's frames in order and confirms a
        persistent message only once what was queued to the store before it is on disk, so every ack
        before a "b" is on disk. Acks after the last "b" are in the documented window (they may come
        back once, flagged redelivered). Exits 0 when the broker goes away or the queue stays empty 5 s.

Same protocol as tests/durability/clients.py, plus nacks and the redelivered flag; kept here so that the
bench does not depend on the test tree.
"""

from __future__ import annotations

import sys
from typing import Any

import pika

WINDOW = 256
MARK_EVERY = 25


def _params(port: int) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host="127.0.0.1", port=port, credentials=pika.PlainCredentials("guest", "guest"),
        socket_timeout=5, connection_attempts=1, heartbeat=0,
    )  # fmt: skip


def body(i: int, size: int) -> bytes:
    """Message ``i``'s body: its id, or with ``size`` "ID " repeated to ``size`` bytes."""
    if not size:
        return str(i).encode()
    unit = b"%d " % i
    return (unit * (size // len(unit) + 1))[: max(size, len(unit))]


def id_of(data: bytes) -> int:
    return int(data.split(b" ", 1)[0])


def publish(port: int, queue: str, out_path: str, first: int, size: int = 0) -> None:
    out = open(out_path, "a")  # noqa: SIM115 - lives as long as the process
    state = {"next": first, "tag": 0}
    outstanding: dict[int, int] = {}  # delivery tag -> id
    props = pika.BasicProperties(delivery_mode=2)
    channel: list[Any] = []

    def refill(ch: Any) -> None:
        while len(outstanding) < WINDOW:
            state["tag"] += 1
            outstanding[state["tag"]] = state["next"]
            ch.basic_publish("", queue, body(state["next"], size), props)
            state["next"] += 1

    def on_confirm(frame: Any) -> None:
        m = frame.method
        tags = sorted(t for t in outstanding if t <= m.delivery_tag) if m.multiple else [m.delivery_tag]
        ids = [outstanding.pop(t) for t in tags if t in outstanding]
        prefix = "" if isinstance(m, pika.spec.Basic.Ack) else "n "
        out.write("".join(f"{prefix}{i}\n" for i in ids))
        out.flush()
        refill(channel[0])

    def on_channel(ch: Any) -> None:
        channel.append(ch)
        ch.confirm_delivery(on_confirm, callback=lambda _frame: refill(ch))

    conn = pika.SelectConnection(
        _params(port),
        on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_open_error_callback=lambda c, e: c.ioloop.stop(),
        on_close_callback=lambda c, e: c.ioloop.stop(),
    )
    conn.ioloop.start()


def ack(port: int, queue: str, out_path: str) -> None:
    out = open(out_path, "a")  # noqa: SIM115 - lives as long as the process
    try:
        conn = pika.BlockingConnection(_params(port))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=20)
        marker = conn.channel()
        marker.confirm_delivery()
        n = 0
        for method, _props, data in ch.consume(queue, inactivity_timeout=5):
            if method is None:
                break
            ch.basic_ack(method.delivery_tag)
            out.write(f"a {id_of(data)} {int(bool(method.redelivered))}\n")
            n += 1
            if n % MARK_EVERY == 0:
                out.flush()
                marker.basic_publish("", "barrier", b"x", pika.BasicProperties(delivery_mode=2))
                out.write("b\n")
            out.flush()
    except (pika.exceptions.AMQPError, OSError):
        pass  # the broker was killed
    finally:
        out.flush()


if __name__ == "__main__":
    cmd, port, queue, path, *rest = sys.argv[1:]
    if cmd == "publish":
        publish(int(port), queue, path, int(rest[0]), int(rest[1]) if len(rest) > 1 else 0)
    elif cmd == "ack":
        ack(int(port), queue, path)
    else:
        raise SystemExit(f"unknown command {cmd!r}: publish or ack")
