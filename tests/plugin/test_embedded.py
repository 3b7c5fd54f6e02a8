"""leveret.Broker (in the running loop) and leveret.run_in_thread, with real clients."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import aio_pika
import kombu
import pika
import pytest

import leveret
from leveret.app import CannotStart
from leveret.cli.main import server
from leveret.embedded import OPTIONS, BrokerTimeout


def test_every_server_option_is_a_keyword() -> None:
    cli = {p.name for p in server.params} - {"config", "print_config"}
    assert cli - OPTIONS == set()


def test_an_unknown_option_fails_at_once() -> None:
    with pytest.raises(TypeError, match="amqp_prot"):
        leveret.run_in_thread(amqp_prot=0)


def test_the_async_broker_shares_the_running_loop() -> None:
    async def main() -> tuple[str, list[tuple[bool, bytes]], Path | None]:
        async with leveret.Broker() as broker:
            assert broker.url == f"amqp://guest:guest@127.0.0.1:{broker.port}/"
            conn = await aio_pika.connect(broker.url)
            ch = await conn.channel()
            await ch.declare_queue("jobs", durable=True)
            for body in (b"1", b"2"):
                msg = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await ch.default_exchange.publish(msg, routing_key="jobs")
            first = await (await ch.get_queue("jobs")).get(no_ack=False)
            q = await broker.wait_for_queue("jobs", ready=1, unacked=1)
            assert q.durable and q.messages == 2
            await broker.kill()
            await asyncio.sleep(0.1)
            with pytest.raises(aio_pika.exceptions.ChannelInvalidStateError):
                await first.ack()  # the socket was dropped under the channel
            conn = await aio_pika.connect(broker.url)
            async with conn:
                jobs = await (await conn.channel()).get_queue("jobs")
                got = [await jobs.get(no_ack=True) for _ in range(2)]
            return broker.url, [(m.redelivered, m.body) for m in got], broker.data_dir

    url, got, data_dir = asyncio.run(main())
    # Only the delivered one was marked delivered in the store; after an unclean stop all are flagged.
    assert got == [(True, b"1"), (True, b"2")]
    assert data_dir is not None and not data_dir.exists()


def test_restart_keeps_the_port_and_durable_messages_and_closes_clients_with_320() -> None:
    with leveret.run_in_thread() as broker:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("keep", durable=True)
        ch.queue_declare("lose", durable=False)
        ch.basic_publish("", "keep", b"k", pika.BasicProperties(delivery_mode=2))
        port = broker.port
        broker.restart()
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            conn.process_data_events(time_limit=1)
        assert e.value.reply_code == 320
        assert broker.port == port
        assert [(q.name, q.messages) for q in broker.queues()] == [("keep", 1)]


def test_kombu_and_pika_reach_the_default_vhost_through_the_plain_url() -> None:
    with leveret.run_in_thread(storage="memory", http_port=None) as broker:
        assert broker.http_url is None and broker.data_dir is None
        with kombu.Connection(broker.url) as conn:
            conn.SimpleQueue("k").put("x")
        params = pika.URLParameters(broker.url)
        assert params.virtual_host == "/"
        assert broker.wait_for_queue("k", ready=1).vhost == "/"


def test_a_given_data_dir_is_kept_and_recovered(tmp_path: Path) -> None:
    with leveret.run_in_thread(data_dir=tmp_path / "d") as broker:
        ch = pika.BlockingConnection(pika.URLParameters(broker.url)).channel()
        ch.queue_declare("stays", durable=True)
    assert (tmp_path / "d" / "leveret.db").exists()
    with leveret.run_in_thread(data_dir=tmp_path / "d") as broker:
        assert [q.name for q in broker.queues()] == ["stays"]


def test_a_test_broker_does_not_preallocate_the_wal_unless_asked(tmp_path: Path) -> None:
    """`leveret server` fills its WAL with zeros at start (64 MiB here, for faster fsyncs); a broker
    for tests does not (it is started per test), and persistent messages survive its restart all the
    same."""
    wal = tmp_path / "d" / "leveret.db-wal"
    with leveret.run_in_thread(data_dir=tmp_path / "d") as broker:
        assert wal.stat().st_size < 1 << 20
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("kept", durable=True)
        for i in range(50):
            ch.basic_publish("", "kept", b"%d" % i + b"x" * 40_000 * (i % 2), pika.BasicProperties(delivery_mode=2))
        conn.close()
        broker.kill(restart=True)
        assert broker.wait_for_queue("kept", messages=50)
    with leveret.run_in_thread(data_dir=tmp_path / "e", wal_preallocate=True):
        assert (tmp_path / "e" / "leveret.db-wal").stat().st_size >= 1 << 20


def test_the_http_api_and_options_are_those_given(tmp_path: Path) -> None:
    log_file = tmp_path / "broker.log"
    with leveret.run_in_thread(max_queues=3, vhosts="a b", users={"app": "pw"}, log_file=log_file) as broker:
        assert broker.http_url is not None
        req = urllib.request.Request(broker.http_url + "/api/vhosts", headers={"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert sorted(v["name"] for v in json.load(resp)) == ["/", "a", "b"]
        assert broker.settings is not None and broker.settings.max_queues == 3
        pika.BlockingConnection(pika.URLParameters(broker.url_for("a", "app", "pw"))).close()
    assert "AMQP listening on 127.0.0.1" in log_file.read_text()


def test_wait_until_says_what_it_waited_for_and_what_it_found() -> None:
    with leveret.run_in_thread(storage="memory", http_port=None) as broker:
        pika.BlockingConnection(pika.URLParameters(broker.url)).channel().queue_declare("q")
        with pytest.raises(BrokerTimeout) as e:
            broker.wait_for_queue("q", messages=1, timeout=0.2)
        assert "queue 'q' with messages=1: not true within 0.2 s" in str(e.value)
        assert "/ q: 0 ready, 0 unacked, 0 consumers" in str(e.value)
        assert broker.wait_until(lambda: broker.connections() == 0 or "busy", timeout=1) in (True, "busy")


def test_a_broker_that_cannot_start_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    with leveret.run_in_thread(data_dir=tmp_path) as first:
        with pytest.raises(CannotStart, match="port"):
            leveret.run_in_thread(amqp_port=first.port).start()
        with pytest.raises(CannotStart, match="is in use by process"):
            leveret.run_in_thread(data_dir=tmp_path).start()
