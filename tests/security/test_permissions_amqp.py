"""AMQP permissions over real sockets, with pika and aio-pika: for each operation, which permission
it needs, checked in RabbitMQ's order relative to the existence checks, and refused with RabbitMQ's
reply code and text (reference section 6.2, rabbit_channel.erl).

User ``u`` (password ``upw``) works in vhost ``v``; each case sets u's configure / write / read
regexes there (and topic permissions), then runs one operation on a fresh connection: granted,
or a channel close 403 with the exact text, after which the same connection still opens channels
and works. The objects each case needs are made by the broker itself (the model, no permission).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq.channel
import aiormq.exceptions
import pika
import pika.exceptions
import pytest
from pamqp import commands as C

from tests.e2e.raw import RawClient
from tests.helpers import ThreadBroker

V, U, PW = "v", "u", "upw"
ALL = (".*", ".*", ".*")
NONE = ("^$", "^$", "^$")


def q_refused(name: str) -> str:
    return f"ACCESS_REFUSED - access to queue '{name}' in vhost '{V}' refused for user '{U}'"


def x_refused(name: str) -> str:
    return f"ACCESS_REFUSED - access to exchange '{name}' in vhost '{V}' refused for user '{U}'"


def topic_refused(key: str, exchange: str = "amq.topic") -> str:
    return f"ACCESS_REFUSED - access to topic '{key}' in exchange '{exchange}' in vhost '{V}' refused for user '{U}'"


# ---- the broker ------------------------------------------------------------------------------------


def on_loop(b: ThreadBroker, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on the broker's loop thread (the model is not thread-safe)."""
    return b.call(fn)


def set_perms(b: ThreadBroker, conf: str, write: str, read: str, user: str = U) -> None:
    on_loop(b, lambda: b.app.broker.access.set_permissions(user, V, conf, write, read))  # type: ignore[union-attr]


def set_topic(b: ThreadBroker, exchange: str, write: str, read: str) -> None:
    on_loop(b, lambda: b.app.broker.access.set_topic_permissions(U, V, exchange, write, read))  # type: ignore[union-attr]


@pytest.fixture
def b() -> Iterator[ThreadBroker]:
    """A broker with vhost v, user u (no permissions yet), and in v: queue q, direct exchanges x and
    x2, topic exchange t, fanout dlx; made by the broker itself (user None: no check)."""
    broker = ThreadBroker(vhosts=(V,)).start()

    def setup() -> None:
        m = broker.app.broker
        assert m is not None
        m.access.add_user(U, PW, ())
        vh = m.vhosts[V]
        vh.declare_queue(None, "q")
        for name, kind in (("x", "direct"), ("x2", "direct"), ("t", "topic"), ("dlx", "fanout")):
            vh.declare_exchange(name, kind)

    on_loop(broker, setup)
    yield broker
    broker.stop()


# ---- one operation, two clients ------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """An AMQP operation as data, so both clients run the same table."""

    kind: str
    args: tuple[Any, ...] = ()
    kw: dict[str, Any] = field(default_factory=dict)


Outcome = tuple[int, str] | None  # None: granted; else the channel close (code, text)


def run_pika(port: int, op: Op, user: str = U, password: str = PW) -> Outcome:
    params = pika.ConnectionParameters(
        "127.0.0.1", port, V, pika.PlainCredentials(user, password), connection_attempts=1, socket_timeout=5
    )
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        try:
            _pika_op(ch, op)
        except pika.exceptions.ChannelClosedByBroker as e:
            # The connection and its other channels keep working after a channel's 403.
            assert conn.is_open
            probe = conn.channel()
            probe.basic_qos(prefetch_count=1)
            probe.close()
            return e.reply_code, e.reply_text
        return None
    finally:
        conn.close()


def _pika_op(ch: Any, op: Op) -> None:
    a, kw = op.args, op.kw
    k = op.kind
    if k == "queue.declare":
        r = ch.queue_declare(a[0], arguments=kw.get("arguments"), passive=kw.get("passive", False))
        assert r.method.queue == a[0] or not a[0]
    elif k == "exchange.declare":
        ch.exchange_declare(a[0], a[1], arguments=kw.get("arguments"), passive=kw.get("passive", False))
    elif k == "queue.delete":
        ch.queue_delete(a[0])
    elif k == "exchange.delete":
        ch.exchange_delete(a[0])
    elif k == "queue.bind":
        ch.queue_bind(a[0], a[1], a[2])
    elif k == "queue.unbind":
        ch.queue_unbind(a[0], a[1], a[2])
    elif k == "exchange.bind":
        ch.exchange_bind(a[0], a[1], a[2])
    elif k == "exchange.unbind":
        ch.exchange_unbind(a[0], a[1], a[2])
    elif k == "basic.publish":
        ch.confirm_delivery()  # a refusal closes the channel before the confirm: pika raises
        ch.basic_publish(a[0], a[1], b"body", pika.BasicProperties(user_id=kw.get("user_id")))
    elif k == "basic.consume":
        ch.basic_consume(a[0], lambda *_: None)
    elif k == "basic.get":
        ch.basic_get(a[0])
    elif k == "queue.purge":
        ch.queue_purge(a[0])
    else:
        raise AssertionError(k)


CODES = {cls: code for code, cls in aiormq.channel.EXCEPTION_MAPPING.items()}


def run_aio(port: int, op: Op, user: str = U, password: str = PW) -> Outcome:
    async def main() -> Outcome:
        conn = await aio_pika.connect(
            host="127.0.0.1", port=port, login=user, password=password, virtualhost=V
        )
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            try:
                await _aio_op(ch, op)
            except aiormq.exceptions.ChannelClosed as e:
                assert not conn.is_closed
                probe = await conn.channel()
                await probe.set_qos(prefetch_count=1)
                await probe.close()
                return CODES[type(e)], e.args[0]
            return None

    return asyncio.run(main())


async def _aio_op(ch: aio_pika.abc.AbstractChannel, op: Op) -> None:
    a, kw = op.args, op.kw
    k = op.kind
    if k == "queue.declare":
        q = await ch.declare_queue(
            a[0] or None, arguments=kw.get("arguments"), passive=kw.get("passive", False)
        )
        assert q.name == a[0] or not a[0]
    elif k == "exchange.declare":
        await ch.declare_exchange(a[0], a[1], arguments=kw.get("arguments"), passive=kw.get("passive", False))
    elif k == "queue.delete":
        await ch.queue_delete(a[0])
    elif k == "exchange.delete":
        await ch.exchange_delete(a[0])
    elif k in ("queue.bind", "queue.unbind"):
        q = await ch.get_queue(a[0], ensure=False)
        await (q.bind(a[1], a[2]) if k == "queue.bind" else q.unbind(a[1], a[2]))
    elif k in ("exchange.bind", "exchange.unbind"):
        x = await ch.get_exchange(a[0], ensure=False)
        await (x.bind(a[1], a[2]) if k == "exchange.bind" else x.unbind(a[1], a[2]))
    elif k == "basic.publish":
        x = ch.default_exchange if a[0] == "" else await ch.get_exchange(a[0], ensure=False)
        await x.publish(aio_pika.Message(b"body", user_id=kw.get("user_id")), a[1], timeout=5)
    elif k == "basic.consume":
        q = await ch.get_queue(a[0], ensure=False)
        await q.consume(lambda m: None)  # type: ignore[arg-type,return-value]
    elif k == "basic.get":
        q = await ch.get_queue(a[0], ensure=False)
        await q.get(fail=False, timeout=5)
    elif k == "queue.purge":
        q = await ch.get_queue(a[0], ensure=False)
        await q.purge()
    else:
        raise AssertionError(k)


CLIENTS = {"pika": run_pika, "aio-pika": run_aio}


@pytest.fixture(params=sorted(CLIENTS))
def run(request: pytest.FixtureRequest, b: ThreadBroker) -> Callable[[Op], Outcome]:
    fn = CLIENTS[request.param]
    return lambda op: fn(b.port, op)


# ---- the matrix ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    perms: tuple[str, str, str]  # u's configure, write, read in v
    op: Op
    refused: str | None  # the 403 text (a regex if it starts with '^'), or None: granted
    topic: tuple[str, str, str] | None = None  # (exchange, write, read) topic permission for u


DLX = {"x-dead-letter-exchange": "dlx"}
AE = {"alternate-exchange": "x"}

CASES: dict[str, Case] = {
    # queue.declare: configure on the queue, before the lookup
    "queue.declare granted": Case(("^mine$", "^$", "^$"), Op("queue.declare", ("mine",)), None),
    "queue.declare refused": Case(("^other$", ".*", ".*"), Op("queue.declare", ("mine",)), q_refused("mine")),
    "queue.declare of an existing queue refused": Case(
        ("^mine$", ".*", ".*"), Op("queue.declare", ("q",)), q_refused("q")
    ),
    "server-named queue.declare granted": Case((r"^amq\.gen-", "^$", "^$"), Op("queue.declare", ("",)), None),
    "server-named queue.declare refused under its generated name": Case(
        ("^mine$", ".*", ".*"),
        Op("queue.declare", ("",)),
        r"^ACCESS_REFUSED - access to queue 'amq\.gen-[A-Za-z0-9_-]{22}' in vhost 'v' refused for user 'u'$",
    ),  # fmt: skip
    # a new queue with a dead-letter exchange: also read on itself and write on the DLX
    "queue.declare with DLX granted": Case(
        ("^dl$", "^dlx$", "^dl$"), Op("queue.declare", ("dl",), {"arguments": DLX}), None
    ),
    "queue.declare with DLX without write on the DLX": Case(
        (".*", "^$", ".*"), Op("queue.declare", ("dl",), {"arguments": DLX}), x_refused("dlx")
    ),
    "queue.declare with DLX without read on itself": Case(
        (".*", ".*", "^$"), Op("queue.declare", ("dl",), {"arguments": DLX}), q_refused("dl")
    ),
    # passive declares: no check at all (RabbitMQ 3.10, probed)
    "passive queue.declare needs nothing": Case(NONE, Op("queue.declare", ("q",), {"passive": True}), None),
    "passive exchange.declare needs nothing": Case(
        NONE, Op("exchange.declare", ("x", "direct"), {"passive": True}), None
    ),
    # exchange.declare: configure; a new one with an alternate exchange also read on itself, write on the AE
    "exchange.declare granted": Case(("^e$", "^$", "^$"), Op("exchange.declare", ("e", "fanout")), None),
    "exchange.declare refused": Case(
        ("^f$", ".*", ".*"), Op("exchange.declare", ("e", "fanout")), x_refused("e")
    ),
    "exchange.declare with AE granted": Case(
        ("^e$", "^x$", "^e$"), Op("exchange.declare", ("e", "fanout"), {"arguments": AE}), None
    ),
    "exchange.declare with AE without write on the AE": Case(
        (".*", "^$", ".*"), Op("exchange.declare", ("e", "fanout"), {"arguments": AE}), x_refused("x")
    ),
    "exchange.declare with AE without read on itself": Case(
        (".*", ".*", "^$"), Op("exchange.declare", ("e", "fanout"), {"arguments": AE}), x_refused("e")
    ),
    # deletes: configure, before the existence check (a missing one without permission: 403)
    "queue.delete granted": Case(("^q$", "^$", "^$"), Op("queue.delete", ("q",)), None),
    "queue.delete refused": Case(("^r$", ".*", ".*"), Op("queue.delete", ("q",)), q_refused("q")),
    "queue.delete of a missing queue granted": Case(
        ("^nope$", "^$", "^$"), Op("queue.delete", ("nope",)), None
    ),
    "queue.delete of a missing queue refused": Case(
        ("^q$", ".*", ".*"), Op("queue.delete", ("nope",)), q_refused("nope")
    ),
    "exchange.delete granted": Case(("^x$", "^$", "^$"), Op("exchange.delete", ("x",)), None),
    "exchange.delete refused": Case(("^q$", ".*", ".*"), Op("exchange.delete", ("x",)), x_refused("x")),
    # the default and amq.* exchanges are refused first, whatever the permissions
    "exchange.delete of the default exchange": Case(
        ALL, Op("exchange.delete", ("",)), "ACCESS_REFUSED - operation not permitted on the default exchange"
    ),
    "exchange.delete of amq.direct": Case(
        ALL,
        Op("exchange.delete", ("amq.direct",)),
        "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost 'v' not allowed",
    ),  # fmt: skip
    "passive exchange.declare of the default exchange": Case(
        ALL,
        Op("exchange.declare", ("", "direct"), {"passive": True}),
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    ),  # fmt: skip
    "exchange.delete of a missing exchange refused": Case(
        ("^x$", ".*", ".*"), Op("exchange.delete", ("nope",)), x_refused("nope")
    ),
    # bindings: write on the destination first, then read on the source
    "queue.bind granted": Case(("^$", "^q$", "^x$"), Op("queue.bind", ("q", "x", "k")), None),
    "queue.bind without write on the queue": Case(
        (".*", "^x$", ".*"), Op("queue.bind", ("q", "x", "k")), q_refused("q")
    ),
    "queue.bind without read on the exchange": Case(
        (".*", ".*", "^q$"), Op("queue.bind", ("q", "x", "k")), x_refused("x")
    ),
    "queue.bind without either: the destination first": Case(
        ("^$", "^$", "^$"), Op("queue.bind", ("q", "x", "k")), q_refused("q")
    ),
    "queue.bind to a missing exchange without read: 403 before 404": Case(
        (".*", ".*", "^q$"), Op("queue.bind", ("q", "nope", "k")), x_refused("nope")
    ),
    "queue.unbind granted": Case(("^$", "^q$", "^x$"), Op("queue.unbind", ("q", "x", "k")), None),
    "queue.unbind without write on the queue": Case(
        (".*", "^x$", ".*"), Op("queue.unbind", ("q", "x", "k")), q_refused("q")
    ),
    "queue.unbind without read on the exchange": Case(
        (".*", ".*", "^q$"), Op("queue.unbind", ("q", "x", "k")), x_refused("x")
    ),
    "exchange.bind granted": Case(("^$", "^x2$", "^x$"), Op("exchange.bind", ("x2", "x", "k")), None),
    "exchange.bind without write on the destination": Case(
        (".*", "^x$", ".*"), Op("exchange.bind", ("x2", "x", "k")), x_refused("x2")
    ),
    "exchange.bind without read on the source": Case(
        (".*", ".*", "^x2$"), Op("exchange.bind", ("x2", "x", "k")), x_refused("x")
    ),
    "exchange.unbind granted": Case(("^$", "^x2$", "^x$"), Op("exchange.unbind", ("x2", "x", "k")), None),
    "exchange.unbind without write on the destination": Case(
        (".*", "^x$", ".*"), Op("exchange.unbind", ("x2", "x", "k")), x_refused("x2")
    ),
    "exchange.unbind without read on the source": Case(
        (".*", ".*", "^x2$"), Op("exchange.unbind", ("x2", "x", "k")), x_refused("x")
    ),
    # basic.publish: write on the exchange, before the lookup; the default exchange is amq.default
    "basic.publish granted": Case(("^$", "^x$", "^$"), Op("basic.publish", ("x", "k")), None),
    "basic.publish refused": Case((".*", "^x2$", ".*"), Op("basic.publish", ("x", "k")), x_refused("x")),
    "basic.publish to a missing exchange without write: 403, not 404": Case(
        (".*", "^x$", ".*"), Op("basic.publish", ("nope", "k")), x_refused("nope")
    ),
    "basic.publish to a missing exchange with write: 404": Case(
        ("^$", ".*", "^$"), Op("basic.publish", ("nope", "k")), "NOT_FOUND - no exchange 'nope' in vhost 'v'"
    ),
    "basic.publish to the default exchange granted as amq.default": Case(
        ("^$", r"^amq\.default$", "^$"), Op("basic.publish", ("", "q")), None
    ),
    "basic.publish to the default exchange refused as amq.default": Case(
        (".*", "^q$", ".*"), Op("basic.publish", ("", "q")), x_refused("amq.default")
    ),
    # the user_id property is checked after the permissions (rabbit_channel: check_user_id_header)
    "basic.publish with a wrong user_id without write: 403 first": Case(
        (".*", "^x2$", ".*"), Op("basic.publish", ("x", "k"), {"user_id": "someone-else"}), x_refused("x")
    ),
    "basic.publish with a wrong user_id with write: 406": Case(
        ("^$", "^x$", "^$"),
        Op("basic.publish", ("x", "k"), {"user_id": "someone-else"}),
        "PRECONDITION_FAILED - user_id property set to 'someone-else' but authenticated user was 'u'",
    ),
    "basic.publish with its own user_id granted": Case(
        ("^$", "^x$", "^$"), Op("basic.publish", ("x", "k"), {"user_id": U}), None
    ),
    # read on the queue
    "basic.consume granted": Case(("^$", "^$", "^q$"), Op("basic.consume", ("q",)), None),
    "basic.consume refused": Case((".*", ".*", "^r$"), Op("basic.consume", ("q",)), q_refused("q")),
    "basic.consume on a missing queue without read: 403 before 404": Case(
        (".*", ".*", "^q$"), Op("basic.consume", ("nope",)), q_refused("nope")
    ),
    "basic.get granted": Case(("^$", "^$", "^q$"), Op("basic.get", ("q",)), None),
    "basic.get refused": Case((".*", ".*", "^r$"), Op("basic.get", ("q",)), q_refused("q")),
    "queue.purge granted": Case(("^$", "^$", "^q$"), Op("queue.purge", ("q",)), None),
    "queue.purge refused": Case((".*", ".*", "^r$"), Op("queue.purge", ("q",)), q_refused("q")),
    # topic permissions: {username} expanded; topic exchanges only; a topic exchange without an entry is free
    "topic write granted": Case(
        ALL, Op("basic.publish", ("amq.topic", "u.a")), None, ("amq.topic", r"^{username}\.", "^$")
    ),
    "topic write refused": Case(
        ALL,
        Op("basic.publish", ("amq.topic", "other.a")),
        topic_refused("other.a"),
        ("amq.topic", r"^{username}\.", ".*"),
    ),  # fmt: skip
    "topic read on the binding key granted": Case(
        ALL, Op("queue.bind", ("q", "amq.topic", "u.#")), None, ("amq.topic", "^$", r"^{username}\.")
    ),  # fmt: skip
    "topic read on the binding key refused": Case(
        ALL,
        Op("queue.bind", ("q", "amq.topic", "other.#")),
        topic_refused("other.#"),
        ("amq.topic", ".*", r"^{username}\."),
    ),  # fmt: skip
    "topic read on exchange.bind refused": Case(
        ALL,
        Op("exchange.bind", ("x", "amq.topic", "other.#")),
        topic_refused("other.#"),
        ("amq.topic", ".*", r"^{username}\."),
    ),  # fmt: skip
    "topic {vhost} expanded": Case(
        ALL, Op("basic.publish", ("amq.topic", "v.a")), None, ("amq.topic", r"^{vhost}\.", "^$")
    ),
    "a topic exchange without an entry is unrestricted": Case(
        ALL, Op("basic.publish", ("t", "other.a")), None, ("amq.topic", "^$", "^$")
    ),
    "a direct exchange is not restricted by topic permissions": Case(
        ALL, Op("basic.publish", ("amq.direct", "other.a")), None, ("amq.direct", "^$", "^$")
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_permission(name: str, b: ThreadBroker, run: Callable[[Op], Outcome]) -> None:
    case = CASES[name]
    set_perms(b, *case.perms)
    if case.topic is not None:
        set_topic(b, *case.topic)
    got = run(case.op)
    if case.refused is None:
        assert got is None, f"{name}: refused {got}"
    else:
        assert got is not None, f"{name}: granted"
        code = {"NOT_FOUND": 404, "PRECONDITION_FAILED": 406}.get(case.refused.split(" ")[0], 403)
        assert got[0] == code
        if case.refused.startswith("^"):
            assert re.match(case.refused, got[1]), got[1]
        else:
            assert got[1] == case.refused


# ---- connection.open ---------------------------------------------------------------------------


def test_connection_open_unknown_vhost_and_no_permission_row_are_530(
    b: ThreadBroker, caplog: pytest.LogCaptureFixture
) -> None:
    def open_pika(vhost: str) -> str:
        params = pika.ConnectionParameters(
            "127.0.0.1", b.port, vhost, pika.PlainCredentials(U, PW), connection_attempts=1, socket_timeout=5
        )
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
            pika.BlockingConnection(params)
        return str(e.value)

    async def open_aio(vhost: str) -> None:
        # aiormq reports a connection.close answering connection.open as an InvalidFrameError that
        # does not carry the text; the text is checked with pika above and in the broker's log here.
        with pytest.raises(aiormq.exceptions.AMQPError, match="Connection.Close"):
            await aio_pika.connect(host="127.0.0.1", port=b.port, login=U, password=PW, virtualhost=vhost)

    # No row for u in v yet; the unknown vhost is found first (RabbitMQ's order), without quotes.
    assert "(530) 'NOT_ALLOWED - vhost nope not found'" in open_pika("nope")
    assert "(530) \"NOT_ALLOWED - access to vhost 'v' refused for user 'u'\"" in open_pika(V)
    caplog.clear()
    asyncio.run(open_aio("nope"))
    asyncio.run(open_aio(V))
    closes = [r.getMessage().rsplit(": ", 1)[-1] for r in caplog.records if r.name == "leveret.connection"]
    assert closes == [
        "NOT_ALLOWED - vhost nope not found",
        "NOT_ALLOWED - access to vhost 'v' refused for user 'u'",
    ]
    # Any row, even one that allows nothing, lets u open the vhost.
    set_perms(b, *NONE)
    assert run_pika(b.port, Op("queue.declare", ("q",), {"passive": True})) is None


# ---- after a refusal, and after a change ------------------------------------------------------


def test_a_403_closes_only_its_channel(b: ThreadBroker) -> None:
    set_perms(b, "^mine", ".*", ".*")
    conn = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", b.port, V, pika.PlainCredentials(U, PW), connection_attempts=1)
    )
    other = conn.channel()
    other.queue_declare("mine-1")
    refused = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        refused.queue_delete("q")
    assert (e.value.reply_code, e.value.reply_text) == (403, q_refused("q"))
    other.confirm_delivery()
    other.basic_publish("", "mine-1", b"still here")
    assert other.basic_get("mine-1", auto_ack=True)[2] == b"still here"
    conn.channel().queue_declare("mine-2")
    conn.close()


def test_a_permission_change_applies_to_open_connections_from_the_next_operation(b: ThreadBroker) -> None:
    """Leveret's behaviour, stronger than RabbitMQ's: RabbitMQ's channels cache their last 12 results,
    so a change may only reach new channels (docs: "may only take effect when the user reconnects").
    Here a change reaches every open channel from its next operation (the memo is cleared on change)."""
    set_perms(b, *ALL)
    conn = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", b.port, V, pika.PlainCredentials(U, PW), connection_attempts=1)
    )
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("x", "k", b"1")  # granted, and now remembered
    ch.basic_get("q")
    set_perms(b, ".*", "^$", ".*")  # write taken away
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_publish("x", "k", b"2")
    assert (e.value.reply_code, e.value.reply_text) == (403, x_refused("x"))
    ch = conn.channel()
    ch.basic_get("q")  # read still granted
    on_loop(b, lambda: b.app.broker.access.clear_permissions(U, V))  # type: ignore[union-attr]
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_get("q")
    assert (e.value.reply_code, e.value.reply_text) == (403, q_refused("q"))
    set_perms(b, *ALL)  # given back: the same connection may again
    conn.channel().basic_get("q")
    conn.close()


def test_a_topic_permission_change_applies_from_the_next_publish(b: ThreadBroker) -> None:
    set_perms(b, *ALL)
    conn = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", b.port, V, pika.PlainCredentials(U, PW), connection_attempts=1)
    )
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("amq.topic", "other.a", b"free")  # no entry: unrestricted
    set_topic(b, "amq.topic", r"^{username}\.", ".*")
    ch.basic_publish("amq.topic", "u.a", b"mine")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_publish("amq.topic", "other.a", b"not mine")
    assert (e.value.reply_code, e.value.reply_text) == (403, topic_refused("other.a"))
    conn.close()


def test_a_reused_consumer_tag_is_refused_before_the_read_permission(b: ThreadBroker) -> None:
    """rabbit_channel checks the tag (530, the connection) before read on the queue (403)."""
    set_perms(b, "^$", "^$", "^q$")
    with RawClient(b.port) as raw:
        raw.handshake(response=f"\x00{U}\x00{PW}".encode(), vhost=V)
        raw.open_channel(1)
        raw.send(1, C.Basic.Consume(queue="q", consumer_tag="tag"))
        raw.expect(C.Basic.ConsumeOk)
        raw.send(1, C.Basic.Consume(queue="nope", consumer_tag="tag"))
        close = raw.expect(C.Connection.Close)
        assert (close.reply_code, close.reply_text) == (
            530,
            "NOT_ALLOWED - attempt to reuse consumer tag 'tag'",
        )
