"""basic.* and confirm.* over TCP: publish/return/confirm, consume/cancel, get, ack/nack/reject, recover, qos."""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions
import pytest
from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

from tests.e2e.conftest import drain
from tests.e2e.raw import RawClient
from tests.helpers import ThreadBroker, wait_for

pytestmark = pytest.mark.timeout(30)


def queue_state(broker: ThreadBroker, name: str) -> tuple[int, int]:
    """(ready, unacked) for a queue, read on the broker's loop."""

    def read() -> tuple[int, int]:
        q = broker.app.broker.vhosts["/"].queues[name]  # type: ignore[union-attr]
        return len(q.ready), q.unacked

    return broker.call(read)  # type: ignore[no-any-return]


class Collector:
    """An on_message_callback that records (consumer_tag, delivery_tag, redelivered, body)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, int, bool, bytes]] = []

    def __call__(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        self.got.append((method.consumer_tag, method.delivery_tag, method.redelivered, body))

    @property
    def bodies(self) -> list[bytes]:
        return [g[3] for g in self.got]

    @property
    def tags(self) -> list[int]:
        return [g[1] for g in self.got]


def wait_got(conn: Any, col: Collector, n: int, timeout: float = 5.0) -> None:
    wait_for(lambda: (drain(conn, 0.02), len(col.got) >= n)[1], timeout=timeout)


def settle(conn: Any) -> None:
    """Give the broker a round trip to deliver anything it still would."""
    conn.channel().close()
    drain(conn, 0.05)


# ---- basic.publish: mandatory, basic.return, confirms -------------------------------------------


def test_mandatory_unroutable_is_returned_312_before_the_confirm_raw(broker: ThreadBroker) -> None:
    with RawClient(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send(1, C.Confirm.Select())
        c.expect(C.Confirm.SelectOk)
        props = C.Basic.Properties(content_type="text/plain", message_id="m1")
        c.publish(1, b"lost", routing_key="nowhere", mandatory=True, properties=props)
        method, rprops, body = c.recv_message()
        assert isinstance(method, C.Basic.Return), method
        assert (method.reply_code, method.reply_text, method.exchange, method.routing_key) == (
            312,
            "NO_ROUTE",
            "",
            "nowhere",
        )
        assert (rprops.content_type, rprops.message_id, body) == ("text/plain", "m1", b"lost")
        ack = c.expect(C.Basic.Ack)
        assert (ack.delivery_tag, ack.multiple) == (1, False)
        # routable + mandatory: no return, just the ack
        c.send(1, C.Queue.Declare(queue="here"))
        c.expect(C.Queue.DeclareOk)
        c.publish(1, b"kept", routing_key="here", mandatory=True)
        ack = c.expect(C.Basic.Ack)
        assert ack.delivery_tag == 2
        # unroutable, not mandatory: acked, not returned
        c.publish(1, b"dropped", routing_key="nowhere")
        assert c.expect(C.Basic.Ack).delivery_tag == 3


def test_mandatory_return_without_confirms_pika(conn: Any) -> None:
    ch = conn.channel()
    returned: list[tuple[int, str, bytes]] = []
    ch.add_on_return_callback(lambda _ch, m, p, body: returned.append((m.reply_code, m.reply_text, body)))
    ch.basic_publish("", "nowhere", b"back", mandatory=True)
    ch.basic_publish("", "nowhere", b"gone")  # not mandatory: no return
    wait_for(lambda: (drain(conn), returned)[1])
    settle(conn)
    assert returned == [(312, "NO_ROUTE", b"back")]


def test_pika_blocking_confirm_raises_unroutable(ch: Any) -> None:
    ch.confirm_delivery()
    ch.queue_declare("cq")
    for i in range(10):
        ch.basic_publish("", "cq", str(i).encode(), mandatory=True)  # each waits for its ack
    with pytest.raises(pika.exceptions.UnroutableError) as exc:
        ch.basic_publish("", "nowhere", b"x", mandatory=True)
    [msg] = exc.value.messages
    assert (msg.method.reply_code, msg.method.reply_text, msg.body) == (312, "NO_ROUTE", b"x")
    assert ch.queue_declare("cq", passive=True).method.message_count == 10


def test_confirm_acks_every_publish_with_multiple_raw(broker: ThreadBroker) -> None:
    n = 200
    with RawClient(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send(1, C.Queue.Declare(queue="confirms"))
        c.expect(C.Queue.DeclareOk)
        c.send(1, C.Confirm.Select())
        c.expect(C.Confirm.SelectOk)
        c.send_raw(b"".join(_publish_frames(1, "confirms", str(i).encode()) for i in range(n)))  # one write
        confirmed: list[int] = []
        acks: list[tuple[int, bool]] = []
        while len(confirmed) < n:
            ack = c.expect(C.Basic.Ack)
            acks.append((ack.delivery_tag, ack.multiple))
            if ack.multiple:
                new = list(range((confirmed[-1] if confirmed else 0) + 1, ack.delivery_tag + 1))
                assert len(new) >= 1
            else:
                new = [ack.delivery_tag]
            assert not set(new) & set(confirmed), acks
            confirmed += new
        assert confirmed == list(range(1, n + 1)), acks
        assert acks[-1][0] == n
        # A batch of publishes in one read is confirmed with multiple=true, not one ack each.
        assert any(m for _, m in acks), acks
        # Nothing more: every publish was acked exactly once.
        c.send(1, C.Queue.Declare(queue="confirms", passive=True))
        assert c.expect(C.Queue.DeclareOk).message_count == n


def _publish_frames(channel: int, routing_key: str, body: bytes) -> bytes:
    return (
        pframe.marshal(C.Basic.Publish(exchange="", routing_key=routing_key), channel)
        + pframe.marshal(pheader.ContentHeader(0, len(body), C.Basic.Properties()), channel)
        + pframe.marshal(pbody.ContentBody(body), channel)
    )


def test_confirm_select_is_per_channel(conn: Any) -> None:
    plain = conn.channel()
    confirmed = conn.channel()
    confirmed.confirm_delivery()
    plain.queue_declare("pc")
    plain.basic_publish("", "pc", b"a")
    confirmed.basic_publish("", "pc", b"b")
    assert plain.queue_declare("pc", passive=True).method.message_count == 2


# ---- basic.consume / cancel ---------------------------------------------------------------------


def test_each_consumer_receives_with_its_own_tag_pika(conn: Any) -> None:
    """pika picks its own tags (ctag…); server-generated amq.ctag-… tags are checked with the raw client."""
    ch = conn.channel()
    ch.queue_declare("ct")
    col = Collector()
    t1 = ch.basic_consume("ct", col)
    t2 = ch.basic_consume("ct", col, consumer_tag="")  # pika generates its own when none is given
    assert t1 != t2
    ch.basic_publish("", "ct", b"x")
    wait_got(conn, col, 1)
    assert col.got[0][0] in (t1, t2)


def test_consume_with_empty_tag_gets_amq_ctag_raw(broker: ThreadBroker) -> None:
    with RawClient(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send(1, C.Queue.Declare(queue="rt"))
        c.expect(C.Queue.DeclareOk)
        tags = []
        for _ in range(3):
            c.send(1, C.Basic.Consume(queue="rt", consumer_tag=""))
            tags.append(c.expect(C.Basic.ConsumeOk).consumer_tag)
        assert len(set(tags)) == 3
        assert all(t.startswith("amq.ctag-") and len(t) > 15 for t in tags), tags
        c.send(1, C.Basic.Consume(queue="rt", consumer_tag="mine"))
        assert c.expect(C.Basic.ConsumeOk).consumer_tag == "mine"
        c.publish(1, b"hello", routing_key="rt")
        deliver, _, body = c.recv_message()
        assert isinstance(deliver, C.Basic.Deliver) and deliver.consumer_tag in tags + ["mine"]
        assert (deliver.delivery_tag, deliver.redelivered, deliver.routing_key, body) == (
            1,
            False,
            "rt",
            b"hello",
        )
        # reusing a tag on the channel is a connection error
        c.send(1, C.Basic.Consume(queue="rt", consumer_tag="mine"))
        close = c.expect(C.Connection.Close)
        assert (close.reply_code, close.reply_text) == (
            530,
            "NOT_ALLOWED - attempt to reuse consumer tag 'mine'",
        )


def test_consume_ok_precedes_first_delivery_raw(broker: ThreadBroker) -> None:
    with RawClient(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send(1, C.Queue.Declare(queue="pre"))
        c.expect(C.Queue.DeclareOk)
        for i in range(3):
            c.publish(1, str(i).encode(), routing_key="pre")
        c.send(1, C.Basic.Consume(queue="pre", consumer_tag="t"))
        c.expect(C.Basic.ConsumeOk)
        bodies = [c.recv_message()[2] for _ in range(3)]
        assert bodies == [b"0", b"1", b"2"]


def test_exclusive_consumer_refuses_others(connect: Any) -> None:
    c1 = connect()
    ch1 = c1.channel()
    ch1.queue_declare("ex")
    ch1.basic_consume("ex", lambda *a: None, exclusive=True)
    other = connect()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        other.channel().basic_consume("ex", lambda *a: None)
    assert (exc.value.reply_code, exc.value.reply_text) == (
        403,
        "ACCESS_REFUSED - queue 'ex' in vhost '/' in exclusive use",
    )
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        c1.channel().basic_consume("ex", lambda *a: None)  # same connection, other channel: refused too
    assert exc.value.reply_code == 403
    # and an exclusive consumer cannot join a queue that already has consumers
    ch1.queue_declare("busy")
    ch1.basic_consume("busy", lambda *a: None)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        other.channel().basic_consume("busy", lambda *a: None, exclusive=True)
    assert (exc.value.reply_code, exc.value.reply_text) == (
        403,
        "ACCESS_REFUSED - queue 'busy' in vhost '/' in exclusive use",
    )
    assert ch1.is_open and c1.is_open and other.is_open


def test_exclusive_consumer_releases_queue_when_cancelled(connect: Any) -> None:
    c1 = connect()
    ch1 = c1.channel()
    ch1.queue_declare("ex2")
    tag = ch1.basic_consume("ex2", lambda *a: None, exclusive=True)
    ch1.basic_cancel(tag)
    c2 = connect()
    ch2 = c2.channel()
    col = Collector()
    ch2.basic_consume("ex2", col)
    ch1.basic_publish("", "ex2", b"now yours")
    wait_got(c2, col, 1)
    assert col.bodies == [b"now yours"]


def test_no_ack_consumer_settles_on_delivery(conn: Any, broker: ThreadBroker) -> None:
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1)  # prefetch does not limit no-ack consumers
    ch.queue_declare("na")
    for i in range(5):
        ch.basic_publish("", "na", str(i).encode())
    col = Collector()
    ch.basic_consume("na", col, auto_ack=True)
    wait_got(conn, col, 5)
    assert col.bodies == [b"0", b"1", b"2", b"3", b"4"]
    assert col.tags == [1, 2, 3, 4, 5]
    assert queue_state(broker, "na") == (0, 0)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:  # nothing to ack
        ch.basic_ack(1)
        ch.queue_declare("na", passive=True)
    assert (exc.value.reply_code, exc.value.reply_text) == (
        406,
        "PRECONDITION_FAILED - unknown delivery tag 1",
    )


def test_cancel_stops_deliveries_and_keeps_unacked_on_channel(conn: Any, broker: ThreadBroker) -> None:
    ch = conn.channel()
    ch.basic_qos(prefetch_count=2)
    ch.queue_declare("cancel")
    for i in range(4):
        ch.basic_publish("", "cancel", str(i).encode())
    col = Collector()
    tag = ch.basic_consume("cancel", col)
    wait_got(conn, col, 2)
    assert ch.basic_cancel(tag) == []  # cancel-ok; pika returns pending messages (none)
    ch.basic_publish("", "cancel", b"4")
    settle(conn)
    assert col.bodies == [b"0", b"1"]
    assert queue_state(broker, "cancel") == (3, 2)
    ch.basic_ack(2, multiple=True)  # acking after cancel is fine
    assert queue_state(broker, "cancel") == (3, 0)


def test_cancel_unknown_tag_is_ok_raw(broker: ThreadBroker) -> None:
    with RawClient(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send(1, C.Basic.Cancel(consumer_tag="never"))
        assert c.expect(C.Basic.CancelOk).consumer_tag == "never"


# ---- basic.get ----------------------------------------------------------------------------------


def test_get_ok_and_get_empty(ch: Any) -> None:
    ch.queue_declare("g")
    assert ch.basic_get("g") == (None, None, None)
    for i in range(3):
        ch.basic_publish("", "g", str(i).encode())
    for i in range(3):
        m, _, body = ch.basic_get("g")
        assert (m.delivery_tag, m.redelivered, m.exchange, m.routing_key, m.message_count, body) == (
            i + 1,
            False,
            "",
            "g",
            2 - i,
            str(i).encode(),
        )
    assert ch.basic_get("g") == (None, None, None)


def test_get_empty_raw(broker: ThreadBroker) -> None:
    with RawClient(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send(1, C.Queue.Declare(queue="ge"))
        c.expect(C.Queue.DeclareOk)
        c.send(1, C.Basic.Get(queue="ge"))
        c.expect(C.Basic.GetEmpty)
        c.publish(1, b"x", routing_key="ge")
        c.send(1, C.Basic.Get(queue="ge", no_ack=True))
        ok, _, body = c.recv_message()
        assert isinstance(ok, C.Basic.GetOk) and (ok.message_count, body) == (0, b"x")


def test_get_on_missing_queue_is_404(ch: Any) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        ch.basic_get("nope")
    assert (exc.value.reply_code, exc.value.reply_text) == (404, "NOT_FOUND - no queue 'nope' in vhost '/'")


# ---- ack / nack / reject ------------------------------------------------------------------------


def _fill(ch: Any, q: str, n: int) -> None:
    ch.queue_declare(q)
    for i in range(n):
        ch.basic_publish("", q, str(i).encode())


def test_ack_single_and_multiple(ch: Any, broker: ThreadBroker) -> None:
    _fill(ch, "a", 6)
    tags = [ch.basic_get("a")[0].delivery_tag for _ in range(6)]
    assert tags == [1, 2, 3, 4, 5, 6]
    ch.basic_ack(2)
    assert queue_state(broker, "a") == (0, 5)
    ch.basic_ack(4, multiple=True)  # settles 1, 3, 4
    assert queue_state(broker, "a") == (0, 2)
    ch.basic_ack(0, multiple=True)  # tag 0 + multiple: everything outstanding
    assert queue_state(broker, "a") == (0, 0)
    ch.basic_ack(0, multiple=True)  # nothing outstanding: still fine
    assert ch.is_open
    ch.queue_declare("a", passive=True)


def test_nack_multiple_requeue_keeps_order_and_marks_redelivered(ch: Any, broker: ThreadBroker) -> None:
    _fill(ch, "n", 5)
    for _ in range(3):
        ch.basic_get("n")
    ch.basic_nack(2, multiple=True, requeue=True)  # 0 and 1 go back, 2 stays unacked
    assert queue_state(broker, "n") == (4, 1)
    got = [ch.basic_get("n", auto_ack=True) for _ in range(4)]
    assert [(b, m.redelivered) for m, _, b in got] == [
        (b"0", True),
        (b"1", True),
        (b"3", False),
        (b"4", False),
    ]
    ch.basic_nack(3, requeue=False)  # dropped
    assert queue_state(broker, "n") == (0, 0)


def test_reject_requeue_and_discard(ch: Any, broker: ThreadBroker) -> None:
    _fill(ch, "r", 3)
    m0 = ch.basic_get("r")[0]
    m1 = ch.basic_get("r")[0]
    ch.basic_reject(m1.delivery_tag, requeue=False)
    ch.basic_reject(m0.delivery_tag, requeue=True)
    got = [ch.basic_get("r", auto_ack=True) for _ in range(2)]
    assert [(b, m.redelivered) for m, _, b in got] == [(b"0", True), (b"2", False)]
    assert queue_state(broker, "r") == (0, 0)


def test_nack_and_reject_unknown_tags_are_406(conn: Any) -> None:
    for op in (
        lambda c: c.basic_nack(7),
        lambda c: c.basic_reject(8),
        lambda c: c.basic_nack(9, multiple=True),
    ):
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            op(ch)
            ch.queue_declare("", exclusive=True)
        assert exc.value.reply_code == 406
        assert exc.value.reply_text.startswith("PRECONDITION_FAILED - unknown delivery tag ")
    assert conn.is_open


# ---- basic.recover ------------------------------------------------------------------------------


def test_recover_requeues_everything_unacked(conn: Any, broker: ThreadBroker) -> None:
    ch = conn.channel()
    _fill(ch, "rec", 3)
    ch.basic_get("rec")
    ch.basic_get("rec")
    ch.basic_recover(requeue=True)
    assert queue_state(broker, "rec") == (3, 0)
    got = [ch.basic_get("rec", auto_ack=True) for _ in range(3)]
    assert [(b, m.redelivered, m.delivery_tag) for m, _, b in got] == [
        (b"0", True, 3),
        (b"1", True, 4),
        (b"2", False, 5),
    ]


def test_recover_redelivers_to_consumer(conn: Any) -> None:
    ch = conn.channel()
    _fill(ch, "rc", 2)
    col = Collector()
    ch.basic_consume("rc", col)
    wait_got(conn, col, 2)
    ch.basic_recover(requeue=True)
    wait_got(conn, col, 4)
    assert [(b, r, t) for _, t, r, b in col.got] == [
        (b"0", False, 1),
        (b"1", False, 2),
        (b"0", True, 3),
        (b"1", True, 4),
    ]


# ---- basic.qos ----------------------------------------------------------------------------------


def _consumers(conn: Any, ch: Any, q: str, n: int) -> list[Collector]:
    cols = [Collector() for _ in range(n)]
    for col in cols:
        ch.basic_consume(q, col)
    return cols


def test_qos_per_consumer(conn: Any, broker: ThreadBroker) -> None:
    ch = conn.channel()
    _fill(ch, "pq", 10)
    ch.basic_qos(prefetch_count=2)
    a, b = _consumers(conn, ch, "pq", 2)
    wait_got(conn, a, 2)
    wait_got(conn, b, 2)
    settle(conn)
    assert (len(a.got), len(b.got)) == (2, 2)
    assert queue_state(broker, "pq") == (6, 4)
    ch.basic_ack(a.tags[0])  # room for a only
    wait_got(conn, a, 3)
    settle(conn)
    assert (len(a.got), len(b.got)) == (3, 2)


def test_qos_global_is_shared_by_the_channel(conn: Any, broker: ThreadBroker) -> None:
    ch = conn.channel()
    _fill(ch, "gq", 10)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    a, b = _consumers(conn, ch, "gq", 2)
    wait_for(lambda: (drain(conn, 0.02), len(a.got) + len(b.got) >= 3)[1])
    settle(conn)
    assert len(a.got) + len(b.got) == 3
    assert queue_state(broker, "gq") == (7, 3)
    ch.basic_ack(0, multiple=True)
    wait_for(lambda: (drain(conn, 0.02), len(a.got) + len(b.got) >= 6)[1])
    settle(conn)
    assert len(a.got) + len(b.got) == 6


def test_qos_global_and_per_consumer_both_apply(conn: Any, broker: ThreadBroker) -> None:
    ch = conn.channel()
    _fill(ch, "bq", 10)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    ch.basic_qos(prefetch_count=1)
    a, b = _consumers(conn, ch, "bq", 2)
    wait_got(conn, a, 1)
    wait_got(conn, b, 1)
    settle(conn)
    assert (len(a.got), len(b.got)) == (1, 1)  # the per-consumer limit bites first
    ch.basic_qos(prefetch_count=5)  # now the channel-wide 3 bites
    wait_for(lambda: (drain(conn, 0.02), len(a.got) + len(b.got) >= 3)[1])
    settle(conn)
    assert queue_state(broker, "bq") == (7, 3)


def test_qos_zero_is_unlimited(conn: Any, broker: ThreadBroker) -> None:
    ch = conn.channel()
    _fill(ch, "zq", 50)
    ch.basic_qos(prefetch_count=5)
    ch.basic_qos(prefetch_count=0)
    [a] = _consumers(conn, ch, "zq", 1)
    wait_got(conn, a, 50)
    assert queue_state(broker, "zq") == (0, 50)


def test_new_qos_applies_to_existing_consumers(conn: Any, broker: ThreadBroker) -> None:
    ch = conn.channel()
    _fill(ch, "dq", 10)
    ch.basic_qos(prefetch_count=1)
    [a] = _consumers(conn, ch, "dq", 1)
    wait_got(conn, a, 1)
    settle(conn)
    assert len(a.got) == 1
    ch.basic_qos(prefetch_count=4)  # raised: more flows without any ack
    wait_got(conn, a, 4)
    settle(conn)
    assert len(a.got) == 4
    ch.basic_qos(prefetch_count=2)  # lowered: nothing more until unacked < 2
    ch.basic_ack(a.tags[0])
    ch.basic_ack(a.tags[1])
    settle(conn)
    assert len(a.got) == 4
    ch.basic_ack(a.tags[2])
    wait_got(conn, a, 5)
    settle(conn)
    assert len(a.got) == 5
    assert queue_state(broker, "dq") == (5, 2)


def test_user_id_must_be_the_authenticated_user(conn: Any) -> None:
    # RabbitMQ validates user_id (3.10.8: same code and text); other properties are not checked.
    ch = conn.channel()
    ch.queue_declare("uid")
    ch.confirm_delivery()
    ch.basic_publish("", "uid", b"mine", pika.BasicProperties(user_id="guest", app_id="a", type="t"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_publish("", "uid", b"forged", pika.BasicProperties(user_id="bob", delivery_mode=2))
    assert (e.value.reply_code, e.value.reply_text) == (
        406,
        "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'guest'",
    )
    ch = conn.channel()  # the connection is fine
    method, props, body = ch.basic_get("uid", auto_ack=True)
    assert (body, props.user_id) == (b"mine", "guest")
    assert ch.basic_get("uid", auto_ack=True)[0] is None, "the forged message was not enqueued"
