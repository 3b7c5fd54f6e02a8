"""aio-pika (aiormq and pamqp underneath) over TCP, driven with asyncio.run inside each test."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions
import pytest

from tests.e2e.test_basic import queue_state
from tests.helpers import ThreadBroker

pytestmark = pytest.mark.timeout(30)


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), timeout=20))  # type: ignore[arg-type]


async def get_n(
    queue: aio_pika.abc.AbstractQueue, n: int, *, ack: bool = True
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Consume n messages from queue (acking them if ack) and cancel the consumer."""
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with queue.iterator() as it:
        async for msg in it:
            got.append(msg)
            if ack:
                await msg.ack()
            if len(got) == n:
                break
    return got


def test_round_trip_with_all_properties(broker: ThreadBroker) -> None:
    body = bytes(range(256)) * 3
    headers = {
        "s": "text",
        "i": 7,
        "neg": -1,
        "b": True,
        "nested": {"a": {"b": [1, "x", {"c": None}]}},
        "raw": bytearray(b"\xff\x00"),
    }

    async def main() -> None:
        async with await aio_pika.connect(broker.url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue("aio-props")
            confirm = await ch.default_exchange.publish(
                aio_pika.Message(
                    body,
                    headers=headers,
                    content_type="application/x-test",
                    content_encoding="binary",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    priority=3,
                    correlation_id="c-1",
                    reply_to="replies",
                    expiration=60,
                    message_id="m-1",
                    timestamp=datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
                    type="job",
                    user_id="guest",
                    app_id="aio",
                ),
                routing_key="aio-props",
            )
            assert isinstance(confirm, aiormq.spec.Basic.Ack)
            [m] = await get_n(q, 1)
            assert m.body == body
            assert m.headers == headers
            assert (m.content_type, m.content_encoding, m.delivery_mode, m.priority) == (
                "application/x-test",
                "binary",
                aio_pika.DeliveryMode.PERSISTENT,
                3,
            )
            assert (m.correlation_id, m.reply_to, m.message_id, m.type, m.user_id, m.app_id) == (
                "c-1",
                "replies",
                "m-1",
                "job",
                "guest",
                "aio",
            )
            assert m.expiration == 60
            assert m.timestamp == datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
            assert (m.delivery_tag, m.redelivered, m.routing_key, m.exchange) == (1, False, "aio-props", "")
            assert m.consumer_tag is not None and m.consumer_tag.startswith("ctag")  # aiormq picks its own

    run(main)


def test_confirms_and_mandatory_returns(broker: ThreadBroker) -> None:
    async def main() -> None:
        async with await aio_pika.connect(broker.url) as conn:
            ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
            q = await ch.declare_queue("aio-confirm")
            acks = await asyncio.gather(
                *(
                    ch.default_exchange.publish(aio_pika.Message(str(i).encode()), "aio-confirm")
                    for i in range(50)
                )
            )
            assert all(isinstance(a, aiormq.spec.Basic.Ack) for a in acks)
            with pytest.raises(aio_pika.exceptions.DeliveryError) as exc:
                await ch.default_exchange.publish(aio_pika.Message(b"lost"), "nowhere", mandatory=True)
            ret = exc.value.frame
            assert isinstance(ret, aiormq.spec.Basic.Return)
            assert (ret.reply_code, ret.reply_text, ret.routing_key) == (312, "NO_ROUTE", "nowhere")
            assert exc.value.message.body == b"lost"
            declared = await ch.declare_queue("aio-confirm", passive=True)
            assert declared.declaration_result.message_count == 50
            assert q.name == "aio-confirm"

    run(main)


def test_three_workers_prefetch_one_and_a_worker_dies(broker: ThreadBroker) -> None:
    async def main() -> None:
        pub_conn = await aio_pika.connect(broker.url)
        workers = [await aio_pika.connect(broker.url) for _ in range(3)]
        try:
            pub = await pub_conn.channel()
            await pub.declare_queue("aio-tasks", durable=True, arguments={"x-queue-type": "quorum"})
            got: list[list[tuple[bytes, bool]]] = [[], [], []]
            held: list[aio_pika.abc.AbstractIncomingMessage] = []
            first_round = asyncio.Event()

            for i, wc in enumerate(workers):
                wch = await wc.channel()
                await wch.set_qos(prefetch_count=1)
                wq = await wch.declare_queue("aio-tasks", durable=True, arguments={"x-queue-type": "quorum"})

                async def on_message(msg: aio_pika.abc.AbstractIncomingMessage, i: int = i) -> None:
                    got[i].append((msg.body, msg.redelivered))
                    if i == 0:
                        held.append(msg)  # worker 0 never acks: it will die holding its task
                    else:
                        await msg.ack()
                    if sum(map(len, got)) >= 3:
                        first_round.set()

                await wq.consume(on_message)
            for n in range(3):
                await pub.default_exchange.publish(
                    aio_pika.Message(f"task {n}".encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    "aio-tasks",
                )
            await asyncio.wait_for(first_round.wait(), 5)
            assert [g[0][0] for g in got] == [b"task 0", b"task 1", b"task 2"]
            await workers[0].close()  # dies with "task 0" unacked
            deadline = asyncio.get_running_loop().time() + 5
            while not any(b == b"task 0" and r for g in got[1:] for b, r in g):
                assert asyncio.get_running_loop().time() < deadline, got
                await asyncio.sleep(0.02)
            assert await _eventually_empty(broker, "aio-tasks")
        finally:
            for c in [pub_conn, *workers]:
                if not c.is_closed:
                    await c.close()

    run(main)


async def _eventually_empty(broker: ThreadBroker, name: str) -> bool:
    for _ in range(100):
        if queue_state(broker, name) == (0, 0):
            return True
        await asyncio.sleep(0.02)
    return False


def test_exclusive_queue_locked_and_passive_404(broker: ThreadBroker) -> None:
    async def main() -> None:
        async with await aio_pika.connect(broker.url) as owner, await aio_pika.connect(broker.url) as other:
            och = await owner.channel()
            q = await och.declare_queue("", exclusive=True)
            assert q.name.startswith("amq.gen-")
            ch = await other.channel()
            with pytest.raises(aiormq.exceptions.ChannelLockedResource) as exc:
                await ch.declare_queue(q.name, passive=True)
            assert exc.value.args[0] == (
                f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q.name}' in vhost '/'. "
                "It could be originally declared on another connection or the exclusive property value does "
                "not match that of the original declaration."
            )
            ch = await other.channel()
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity) as nf:
                await ch.declare_queue("aio-missing", passive=True)
            assert nf.value.args[0] == "NOT_FOUND - no queue 'aio-missing' in vhost '/'"
            # the owner's connection is unaffected
            await och.default_exchange.publish(aio_pika.Message(b"ok"), q.name)
            msg = await q.get(timeout=5)
            assert msg is not None and msg.body == b"ok"
            await msg.ack()

    run(main)


def test_get_nack_reject_and_get_empty(broker: ThreadBroker) -> None:
    async def main() -> None:
        async with await aio_pika.connect(broker.url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue("aio-get")
            assert await q.get(fail=False) is None
            for i in range(3):
                await ch.default_exchange.publish(aio_pika.Message(str(i).encode()), "aio-get")
            m0 = await q.get()
            m1 = await q.get()
            assert (m0.delivery_tag, m1.delivery_tag, m0.body, m1.body) == (1, 2, b"0", b"1")
            await m1.reject(requeue=True)
            await m0.nack(requeue=True)
            bodies = []
            for _ in range(3):
                m = await q.get()
                bodies.append((m.body, m.redelivered))
                await m.ack()
            assert bodies == [(b"0", True), (b"1", True), (b"2", False)]
            with pytest.raises(aio_pika.exceptions.QueueEmpty):
                await q.get()

    run(main)


def test_ack_unknown_tag_closes_channel_not_connection(broker: ThreadBroker) -> None:
    async def main() -> None:
        async with await aio_pika.connect(broker.url) as conn:
            bad = await conn.channel()
            good = await conn.channel()
            await bad.channel.basic_ack(42)  # type: ignore[union-attr]
            with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as exc:
                await bad.declare_queue("", exclusive=True)
            assert exc.value.args[0] == "PRECONDITION_FAILED - unknown delivery tag 42"
            q = await good.declare_queue("", exclusive=True)
            await good.default_exchange.publish(aio_pika.Message(b"fine"), q.name)
            m = await q.get(timeout=5)
            assert m is not None and m.body == b"fine"
            assert not conn.is_closed

    run(main)


def test_qos_global_shared_across_consumers(broker: ThreadBroker) -> None:
    async def main() -> None:
        async with await aio_pika.connect(broker.url) as conn:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=3, global_=True)
            q1 = await ch.declare_queue("aio-g1")
            q2 = await ch.declare_queue("aio-g2")
            for _ in range(5):
                await ch.default_exchange.publish(aio_pika.Message(b"a"), "aio-g1")
                await ch.default_exchange.publish(aio_pika.Message(b"b"), "aio-g2")
            got: list[Any] = []
            await q1.consume(lambda m: got.append(m))  # type: ignore[arg-type,func-returns-value]
            await q2.consume(lambda m: got.append(m))  # type: ignore[arg-type,func-returns-value]
            for _ in range(100):
                if len(got) >= 3:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert len(got) == 3  # shared by both consumers on the channel
            ready1, unacked1 = queue_state(broker, "aio-g1")
            ready2, unacked2 = queue_state(broker, "aio-g2")
            assert (unacked1 + unacked2, ready1 + ready2) == (3, 7)
            await got[0].ack()
            for _ in range(100):
                if len(got) >= 4:
                    break
                await asyncio.sleep(0.01)
            assert len(got) == 4

    run(main)
