"""A worker that takes messages and never acknowledges them: ``holder.py URL QUEUE PREFETCH [x-consumer-timeout]``.

Prints ``got <body>`` for each delivery, then waits to be killed (tests kill -9 it to
make its connection die the way a crashed worker's does)."""

from __future__ import annotations

import sys

import pika


def main() -> None:
    url, queue, prefetch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    args = {"x-consumer-timeout": int(sys.argv[4])} if len(sys.argv) > 4 else None
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)

    def on_message(ch: object, method: object, props: object, body: bytes) -> None:
        print("got", body.decode(), flush=True)

    ch.basic_consume(queue, on_message, arguments=args)
    print("consuming", flush=True)
    ch.start_consuming()


if __name__ == "__main__":
    main()
