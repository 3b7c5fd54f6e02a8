"""What a client can bind cannot make routing slow for everyone: a topic binding key of many '#' and
thousands of bindings on a shared exchange (amq.topic) keep publishes confirmed at once, for this
client and others. Before: '#.#.#.#.#.a' made one publish with a long key take forever (a
backtracking regex), and each bind rebuilt the exchange's whole index (1,000 binds took 10 s)."""

from __future__ import annotations

import time
from typing import Any

import pika


def test_many_hashes_and_many_bindings(broker: Any) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.queue_declare("evil", exclusive=True)
    ch.queue_bind("evil", "amq.topic", ".".join(["#"] * 40) + ".a")
    ch.queue_bind("evil", "amq.topic", ".".join(["#", "b"] * 20) + ".a")
    ch.queue_declare("mine", exclusive=True)
    for i in range(2000):
        ch.queue_bind("mine", "amq.topic", f"stock.{i}.*.nyse")
    ch.confirm_delivery()
    long_key = ".".join(["b"] * 127)  # 253 bytes: near the 255-byte limit, 127 words
    started = time.monotonic()
    ch.basic_publish("amq.topic", long_key, b"nowhere")
    ch.basic_publish("amq.topic", long_key[:-2] + ".a", b"to evil")
    ch.basic_publish("amq.topic", "stock.1999.usd.nyse", b"to mine")
    assert time.monotonic() - started < 10  # one publish did not finish in minutes before
    other = pika.BlockingConnection(pika.URLParameters(broker.url))
    och = other.channel()
    och.confirm_delivery()
    och.basic_publish("amq.topic", "stock.3.eur.nyse", b"also mine")
    assert ch.queue_declare("evil", passive=True).method.message_count == 1
    assert ch.queue_declare("mine", passive=True).method.message_count == 2
    other.close()
    conn.close()
