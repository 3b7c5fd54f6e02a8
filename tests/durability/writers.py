"""Client processes that keep one kind of durable write going until the broker dies.

Run as ``python -m tests.durability.writers KIND PORT JOURNAL``. Each appends a line to
JOURNAL (flushed) after every operation the broker answered, so after a kill -9 the
journal says what the broker had acknowledged; :mod:`tests.durability.test_kill_writes`
checks the recovered state against it. Exits 0 when the connection drops.

- ``meta``: :func:`meta_ops` in order: durable exchange, queue and binding declared, and
  those of three rounds before unbound and deleted. Every -ok is sent once fsynced, so the
  state after a restart is the journal replayed, plus perhaps the one operation in flight.
- ``purge``: 20 confirmed publishes (``c ID``) to ``pq``, ``s`` before queue.purge, ``p``
  after purge-ok, then a confirmed marker to ``barrier`` (``b``): the broker handles a
  connection's frames in order, so its confirm means the purge is on disk.
- ``deadletter``: a confirmed publish (``c ID``) to ``dl.src``, which dead-letters to
  ``dl.dst``; basic.get and basic.reject(requeue=false) (``r ID``); a confirmed marker
  (``b``) every 5 rejects.
- ``bigpublish``: confirmed 30 KiB publishes (``c ID``) to ``big``: on a small disk the WAL
  is checkpointed every few dozen, so a kill often lands in a checkpoint.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import IO

import pika

PERSISTENT = pika.BasicProperties(delivery_mode=2)


def meta_ops() -> Iterator[tuple[str, int]]:
    """The endless sequence of metadata operations of the ``meta`` writer."""
    i = 0
    while True:
        yield ("x+", i)
        yield ("q+", i)
        yield ("b+", i)
        if i >= 3:
            yield ("b-", i - 3)
            yield ("x-", i - 3)
            yield ("q-", i - 3)
        i += 1


def _meta(ch: pika.adapters.blocking_connection.BlockingChannel, out: IO[str]) -> None:
    for op, i in meta_ops():
        if op == "x+":
            ch.exchange_declare(f"mx{i}", "direct", durable=True)
        elif op == "q+":
            ch.queue_declare(f"mq{i}", durable=True)
        elif op == "b+":
            ch.queue_bind(f"mq{i}", f"mx{i}", "rk")
        elif op == "b-":
            ch.queue_unbind(f"mq{i}", f"mx{i}", "rk")
        elif op == "x-":
            ch.exchange_delete(f"mx{i}")
        else:
            ch.queue_delete(f"mq{i}")
        _line(out, f"{op} {i}")


def _purge(ch: pika.adapters.blocking_connection.BlockingChannel, out: IO[str]) -> None:
    ch.confirm_delivery()
    ch.queue_declare("pq", durable=True)
    ch.queue_declare("barrier", durable=True)
    n = 0
    while True:
        for _ in range(20):
            ch.basic_publish("", "pq", str(n).encode(), PERSISTENT)
            _line(out, f"c {n}")
            n += 1
        _line(out, "s")
        ch.queue_purge("pq")
        _line(out, "p")
        ch.basic_publish("", "barrier", b"", PERSISTENT)
        _line(out, "b")


def _deadletter(ch: pika.adapters.blocking_connection.BlockingChannel, out: IO[str]) -> None:
    ch.confirm_delivery()
    args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dl.dst"}
    ch.queue_declare("dl.src", durable=True, arguments=args)
    ch.queue_declare("dl.dst", durable=True)
    ch.queue_declare("barrier", durable=True)
    n = 0
    while True:
        ch.basic_publish("", "dl.src", str(n).encode(), PERSISTENT)
        _line(out, f"c {n}")
        method, _props, body = ch.basic_get("dl.src")
        if method is not None:
            ch.basic_reject(method.delivery_tag, requeue=False)
            _line(out, f"r {int(body)}")
        n += 1
        if n % 5 == 0:
            ch.basic_publish("", "barrier", b"", PERSISTENT)
            _line(out, "b")


def _bigpublish(ch: pika.adapters.blocking_connection.BlockingChannel, out: IO[str]) -> None:
    ch.confirm_delivery()
    ch.queue_declare("big", durable=True)
    pad = bytes(30 * 1024)  # below the 32 KiB segment threshold: in the WAL, checkpointed
    n = 0
    while True:
        ch.basic_publish("", "big", b"%d " % n + pad, PERSISTENT)
        _line(out, f"c {n}")
        n += 1


def _line(out: IO[str], text: str) -> None:
    out.write(text + "\n")
    out.flush()


WRITERS = {"meta": _meta, "purge": _purge, "deadletter": _deadletter, "bigpublish": _bigpublish}


def main(kind: str, port: int, journal: str) -> None:
    params = pika.ConnectionParameters(
        host="127.0.0.1", port=port, credentials=pika.PlainCredentials("guest", "guest"),
        socket_timeout=5, connection_attempts=1, heartbeat=0,
    )  # fmt: skip
    with open(journal, "a") as out:
        try:
            conn = pika.BlockingConnection(params)
            WRITERS[kind](conn.channel(), out)
        except pika.exceptions.AMQPError:
            pass  # the broker was killed
        except OSError:
            pass


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
