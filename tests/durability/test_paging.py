"""A deep durable queue keeps bodies on disk past --queue-ram-limit and reads them back in order."""

from __future__ import annotations

import time
from pathlib import Path

import pika
from pamqp import commands as C
from pamqp import frame as pframe

from tests.e2e.raw import RawClient
from tests.helpers import ThreadBroker


def _bodies_in_ram(b: ThreadBroker, queue: str) -> tuple[int, int]:
    def count() -> tuple[int, int]:
        q = b.app.broker.vhosts["/"].queues[queue]  # type: ignore[union-attr]
        return sum(1 for m in q.ready if m.body is not None), len(q.ready)

    return b.call(count)  # type: ignore[no-any-return]


def test_deep_queue_pages_bodies_and_serves_them_back_identical(tmp_path: Path) -> None:
    limit = 20_000
    b = ThreadBroker(storage="sqlite", data_dir=tmp_path, queue_ram_limit=limit).start()
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        ch.queue_declare("deep", durable=True)
        ch.queue_declare("light", durable=False)
        ch.confirm_delivery()
        bodies = [bytes([i % 256]) * 1000 + b"%d" % i for i in range(3000)]
        persistent = pika.BasicProperties(delivery_mode=2, headers={"n": 1})
        for body in bodies:
            ch.basic_publish("", "deep", body, persistent)
            ch.basic_publish("", "light", body, persistent)  # non-durable queue: never paged
        in_ram, total = _bodies_in_ram(b, "deep")
        assert total == 3000
        assert in_ram <= limit // 1000 + 1, f"{in_ram} bodies in RAM, expected about {limit // 1000}"
        assert _bodies_in_ram(b, "light") == (3000, 3000)

        got: list[bytes] = []
        ch.basic_qos(prefetch_count=100)
        for method, props, body in ch.consume("deep", inactivity_timeout=5):
            if method is None:
                break
            assert props.headers == {"n": 1}
            got.append(body)
            ch.basic_ack(method.delivery_tag)
            if len(got) == 3000:
                break
        assert got == bodies
        conn.close()
    finally:
        b.stop()


def test_paged_queue_survives_restart(tmp_path: Path) -> None:
    b = ThreadBroker(storage="sqlite", data_dir=tmp_path, queue_ram_limit=5_000).start()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    ch = conn.channel()
    ch.queue_declare("deep", durable=True)
    ch.confirm_delivery()
    for i in range(500):
        ch.basic_publish("", "deep", b"x" * 500 + b"%d" % i, pika.BasicProperties(delivery_mode=2))
    conn.close()
    b.stop()
    b = ThreadBroker(storage="sqlite", data_dir=tmp_path, queue_ram_limit=5_000).start()
    try:
        in_ram, total = _bodies_in_ram(b, "deep")
        assert total == 500 and in_ram <= 12
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        got = []
        while True:
            method, _, body = ch.basic_get("deep", auto_ack=True)
            if method is None:
                break
            got.append(body)
        assert got == [b"x" * 500 + b"%d" % i for i in range(500)]
        conn.close()
    finally:
        b.stop()


def test_input_held_behind_a_durable_declare_can_page_in(tmp_path: Path) -> None:
    # A client that pipelines a durable queue.declare and a basic.get on a deep paged queue: the
    # get waits for the declare's fsync, then runs inside the store's in-place commit callback and
    # has to read bodies back from the store (this hung for 60 s when the callback held its lock).
    b = ThreadBroker(storage="sqlite", data_dir=tmp_path, queue_ram_limit=5_000).start()
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        ch.queue_declare("deep", durable=True)
        ch.confirm_delivery()
        for i in range(100):
            ch.basic_publish("", "deep", b"%04d" % i + b"x" * 1000, pika.BasicProperties(delivery_mode=2))
        conn.close()
        in_ram = _bodies_in_ram(b, "deep")[0]
        assert in_ram < 10, "most of the queue must be paged out"
        gets = in_ram + 5  # the last ones need bodies read back from the store
        with RawClient(b.port, timeout=10) as c:
            c.handshake()
            c.open_channel(1)
            c.send_raw(
                pframe.marshal(C.Queue.Declare(queue="another", durable=True), 1)
                + pframe.marshal(C.Basic.Get(queue="deep", no_ack=True), 1) * gets
            )
            started = time.monotonic()
            c.expect(C.Queue.DeclareOk)
            for i in range(gets):
                method, _, body = c.recv_message()
                assert isinstance(method, C.Basic.GetOk) and body.startswith(b"%04d" % i)
            assert time.monotonic() - started < 5
    finally:
        b.stop()


def test_a_page_in_reads_back_a_bounded_number_of_bytes(tmp_path: Path) -> None:
    # A page-in used to read up to 512 bodies at once: with 16 MiB bodies, 8 GiB into RAM in one go,
    # the loop blocked meanwhile. It stops at a quarter of the queue's RAM limit (at least one body).
    limit, size, n = 400_000, 100_000, 40
    b = ThreadBroker(storage="sqlite", data_dir=tmp_path, queue_ram_limit=limit).start()
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        ch.queue_declare("big", durable=True)
        ch.confirm_delivery()
        bodies = [bytes([i]) * size for i in range(n)]
        for body in bodies:
            ch.basic_publish("", "big", body, pika.BasicProperties(delivery_mode=2))
        in_ram, total = _bodies_in_ram(b, "big")
        assert total == n and in_ram <= limit // size + 1
        for i in range(n):
            method, _props, body = ch.basic_get("big", auto_ack=True)
            assert method is not None and body == bodies[i]
            in_ram, _ = _bodies_in_ram(b, "big")
            assert in_ram <= limit // size + 2, f"{in_ram} bodies of {size} B in RAM after get {i}"
        conn.close()
    finally:
        b.stop()
