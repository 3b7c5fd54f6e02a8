"""Client processes for the kill -9 tests; run as ``python -m tests.durability.clients ...``.

``publish PORT QUEUE OUT FIRST COUNT``: publishes persistent messages with ids
FIRST.. (body = id) with up to 256 unconfirmed, and appends each confirmed id to OUT
(flushed after every confirm), until COUNT are confirmed or the connection drops.

``ack PORT QUEUE OUT``: consumes QUEUE with manual acks and appends ``a ID`` to OUT
after each basic.ack; after every 25 acks it publishes a persistent marker to the
durable queue ``barrier`` on another channel of the same connection, waits for its
confirm, and appends ``b``. The broker handles one connection's frames in order, so
the marker's confirm means every ack sent before it is on disk.
"""

from __future__ import annotations

import sys

import pika

WINDOW = 256


def _params(port: int) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host="127.0.0.1", port=port, credentials=pika.PlainCredentials("guest", "guest"),
        socket_timeout=5, connection_attempts=1, heartbeat=0,
    )  # fmt: skip


def publish(port: int, queue: str, out_path: str, first: int, count: int) -> None:
    out = open(out_path, "a")  # noqa: SIM115 - lives as long as the process
    end = first + count
    state = {"next": first, "tag": 0, "confirmed": 0}
    outstanding: dict[int, int] = {}  # delivery tag -> id
    props = pika.BasicProperties(delivery_mode=2)

    def refill(ch: pika.channel.Channel) -> None:
        while len(outstanding) < WINDOW and state["next"] < end:
            state["tag"] += 1
            outstanding[state["tag"]] = state["next"]
            ch.basic_publish("", queue, str(state["next"]).encode(), props)
            state["next"] += 1
        if not outstanding and state["next"] >= end:
            conn.close()

    def on_confirm(frame: pika.frame.Method) -> None:
        m = frame.method
        tags = sorted(t for t in outstanding if t <= m.delivery_tag) if m.multiple else [m.delivery_tag]
        ids = [outstanding.pop(t) for t in tags if t in outstanding]
        if isinstance(m, pika.spec.Basic.Ack):
            out.write("".join(f"{i}\n" for i in ids))
            out.flush()
        refill(channel[0])

    channel: list[pika.channel.Channel] = []

    def on_channel(ch: pika.channel.Channel) -> None:
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
        for method, _props, body in ch.consume(queue, inactivity_timeout=5):
            if method is None:
                break
            ch.basic_ack(method.delivery_tag)
            out.write(f"a {int(body)}\n")
            n += 1
            if n % 25 == 0:
                out.flush()
                marker.basic_publish("", "barrier", b"x", pika.BasicProperties(delivery_mode=2))
                out.write("b\n")
            out.flush()
    except pika.exceptions.AMQPError:
        pass  # the broker was killed
    finally:
        out.flush()


if __name__ == "__main__":
    cmd, port, queue, path, *rest = sys.argv[1:]
    if cmd == "publish":
        publish(int(port), queue, path, int(rest[0]), int(rest[1]))
    else:
        ack(int(port), queue, path)
