"""Handlers for the cold-path methods: ``handler(conn, channel, method)``.

``channel`` is the :class:`ServerChannel` the method arrived on (None on channel 0).
Handlers raise :class:`AMQPError`; the connection turns that into a channel or
connection close.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands as C

from leveret import __version__
from leveret.errors import ChannelError, ConnectionError_, ReplyCode
from leveret.model.broker import DIRECT_REPLY_TO
from leveret.model.properties import with_delivery_count
from leveret.protocol import codec
from leveret.server import auth

if TYPE_CHECKING:
    from leveret.server.channel import ServerChannel
    from leveret.server.connection import AMQPServerProtocol

log = logging.getLogger("leveret.connection")

Handler = Callable[["AMQPServerProtocol", "ServerChannel | None", Any], None]
METHOD_HANDLERS: dict[type, Handler] = {}


def handles(*types: type) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for t in types:
            METHOD_HANDLERS[t] = fn
        return fn

    return deco


def _table(v: Any) -> dict[str, Any]:
    return dict(v) if isinstance(v, dict) else {}


def _reply(conn: AMQPServerProtocol, ch: ServerChannel, method: Any, durable: bool) -> None:
    """Send a -ok; if it answers a change to durable state, only once the store has fsynced it.

    A client that saw declare-ok (bind-ok, delete-ok) for a durable object can rely on
    it surviving a crash, as it can on a publisher confirm.
    """
    data = codec.encode_method(ch.number, method)
    if durable:
        conn.reply_when_durable(ch.number, data)
    else:
        conn.write(data)


def _durable_queue(conn: AMQPServerProtocol, name: str) -> bool:
    assert conn.client is not None
    q = conn.broker.vhost(conn.client.vhost).queues.get(name)
    return q is not None and q.durable and q.exclusive_owner is None


def _durable_exchange(conn: AMQPServerProtocol, name: str) -> bool:
    assert conn.client is not None
    x = conn.broker.vhost(conn.client.vhost).exchanges.get(name)
    return x is not None and x.durable


# ---- connection ----------------------------------------------------------------------------------


SERVER_PROPERTIES: dict[str, Any] = {
    "product": "Leveret",
    "version": __version__,
    "platform": "Python",
    "copyright": "Leveret contributors",
    "information": "AMQP 0-9-1 work-queue broker; see https://www.rabbitmq.com/tutorials/tutorial-two-python",
    "cluster_name": "leveret",
    "capabilities": {
        "publisher_confirms": True,
        "exchange_exchange_bindings": True,
        "basic.nack": True,
        "consumer_cancel_notify": True,
        "connection.blocked": True,
        "consumer_priorities": True,
        "authentication_failure_close": True,
        "per_consumer_qos": True,
        "direct_reply_to": True,
    },
}


def send_start(conn: AMQPServerProtocol) -> None:
    """connection.start, sent once the client's protocol header is in."""
    conn.write(
        codec.encode_method(
            0,
            C.Connection.Start(
                version_major=0, version_minor=9, server_properties=SERVER_PROPERTIES,
                mechanisms=auth.mechanisms(conn.cert_user), locales="en_US",
            ),  # fmt: skip
        )
    )


@handles(C.Connection.StartOk)
def start_ok(conn: AMQPServerProtocol, _: Any, m: C.Connection.StartOk) -> None:
    """Log in. A peer address with repeated failures has its every attempt (right or wrong) answered
    only after the throttle's delay; its input waits meanwhile, other peers are not slowed."""
    delay = conn.broker.logins.delay(conn.peer[0])
    if delay > 0:
        conn.hold(delay, lambda: _login(conn, m, held=True))
    else:
        _login(conn, m)


def _login(conn: AMQPServerProtocol, m: C.Connection.StartOk, held: bool = False) -> None:
    s = conn.settings
    logins = conn.broker.logins
    response = m.response if isinstance(m.response, bytes) else str(m.response).encode("latin-1")
    try:
        conn.user = auth.authenticate(
            m.mechanism, response, conn.broker.access, conn.peer[0], conn.cert_user, conn.name
        )
    except ConnectionError_:
        if not held:  # a held attempt was counted when it was held
            logins.failed(conn.peer[0])
        raise
    logins.succeeded(conn.peer[0])
    conn.client_properties = _table(m.client_properties)
    conn.write(codec.encode_method(0, C.Connection.Tune(s.channel_max, s.frame_max, s.heartbeat)))


def _negotiate(server: int, client: int) -> int:
    """0 means 'no limit' on either side; otherwise the smaller wins."""
    if server == 0 or client == 0:
        return max(server, client)
    return min(server, client)


@handles(C.Connection.TuneOk)
def tune_ok(conn: AMQPServerProtocol, _: Any, m: C.Connection.TuneOk) -> None:
    s = conn.settings
    frame_max = _negotiate(s.frame_max, m.frame_max)
    if frame_max < 4096:
        raise ConnectionError_(ReplyCode.NOT_ALLOWED, f"frame_max={m.frame_max} < 4096 min size", 10, 31)
    channel_max = _negotiate(s.channel_max, m.channel_max) or 65535
    conn.amqp.tune(frame_max, channel_max)
    conn.heartbeat = m.heartbeat  # the client's choice (it saw our proposal in tune)


@handles(C.Connection.Open)
def open_(conn: AMQPServerProtocol, _: Any, m: C.Connection.Open) -> None:
    limit = conn.settings.max_connections
    if limit is not None and len(conn.broker.connections) >= limit:
        raise ConnectionError_(
            ReplyCode.NOT_ALLOWED,
            f"access to vhost '{m.virtual_host or '/'}' refused for user '{conn.user}': connection limit ({limit}) is reached",
            10,
            40,
        )
    conn.open_client(m.virtual_host or "/")
    conn.write(codec.encode_method(0, C.Connection.OpenOk()))


@handles(C.Connection.Close)
def close(conn: AMQPServerProtocol, _: Any, m: C.Connection.Close) -> None:
    """close-ok, then, as RabbitMQ, the socket is left for the client to close (see linger)."""
    conn._release()
    conn.write(codec.encode_method(0, C.Connection.CloseOk()))
    conn.linger()


@handles(C.Connection.CloseOk)
def close_ok(conn: AMQPServerProtocol, _: Any, m: C.Connection.CloseOk) -> None:
    conn._release()
    conn.close_transport()


@handles(C.Connection.UpdateSecret)
def update_secret(conn: AMQPServerProtocol, _: Any, m: C.Connection.UpdateSecret) -> None:
    """As RabbitMQ's internal user database: the new secret is accepted without being checked (only
    its OAuth 2 backend re-validates tokens); the reason goes to the log, never the secret."""
    log.info("connection %s: user '%s' updated its secret (reason: %s)", conn.name, conn.user, m.reason)
    conn.write(codec.encode_method(0, C.Connection.UpdateSecretOk()))


@handles(C.Connection.Blocked, C.Connection.Unblocked, C.Connection.UpdateSecretOk)
def ignore(conn: AMQPServerProtocol, _: Any, m: Any) -> None:
    pass


# ---- channel -------------------------------------------------------------------------------------


@handles(C.Channel.Close)
def channel_close(conn: AMQPServerProtocol, ch: ServerChannel | None, m: Any) -> None:
    if ch is None:
        return
    conn.channels.pop(ch.number, None)
    conn.broker.close_channel(ch.model)
    conn.write(codec.encode_method(ch.number, C.Channel.CloseOk()))


@handles(C.Channel.Flow)
def channel_flow(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Channel.Flow) -> None:
    assert ch is not None
    if not m.active:
        raise ConnectionError_(ReplyCode.NOT_IMPLEMENTED, "active=false", 20, 20)
    conn.write(codec.encode_method(ch.number, C.Channel.FlowOk(active=True)))


# ---- exchange ------------------------------------------------------------------------------------


@handles(C.Exchange.Declare)
def exchange_declare(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Exchange.Declare) -> None:
    assert ch is not None and conn.client is not None
    conn.broker.vhost(conn.client.vhost).declare_exchange(
        m.exchange, m.exchange_type, passive=m.passive, durable=m.durable, auto_delete=m.auto_delete,
        internal=m.internal, arguments=_table(m.arguments), user=conn.client.user,
    )  # fmt: skip
    if not m.nowait:
        _reply(conn, ch, C.Exchange.DeclareOk(), m.durable and not m.passive)


@handles(C.Exchange.Delete)
def exchange_delete(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Exchange.Delete) -> None:
    assert ch is not None and conn.client is not None
    durable = _durable_exchange(conn, m.exchange)
    conn.broker.vhost(conn.client.vhost).delete_exchange(m.exchange, m.if_unused, conn.client.user)
    if not m.nowait:
        _reply(conn, ch, C.Exchange.DeleteOk(), durable)


@handles(C.Exchange.Bind)
def exchange_bind(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Exchange.Bind) -> None:
    assert ch is not None and conn.client is not None
    conn.broker.vhost(conn.client.vhost).bind_exchange(
        m.destination, m.source, m.routing_key, _table(m.arguments), conn.client.user
    )
    if not m.nowait:
        _reply(conn, ch, C.Exchange.BindOk(), _durable_exchange(conn, m.source) and _durable_exchange(conn, m.destination))


@handles(C.Exchange.Unbind)
def exchange_unbind(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Exchange.Unbind) -> None:
    assert ch is not None and conn.client is not None
    durable = _durable_exchange(conn, m.source) and _durable_exchange(conn, m.destination)
    conn.broker.vhost(conn.client.vhost).unbind_exchange(
        m.destination, m.source, m.routing_key, _table(m.arguments), conn.client.user
    )
    if not m.nowait:
        _reply(conn, ch, C.Exchange.UnbindOk(), durable)


# ---- queue ---------------------------------------------------------------------------------------


@handles(C.Queue.Declare)
def queue_declare(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Queue.Declare) -> None:
    assert ch is not None and conn.client is not None
    if m.queue == DIRECT_REPLY_TO or m.queue.startswith(DIRECT_REPLY_TO + "."):  # the pseudo-queue, or a reply name
        if m.queue != DIRECT_REPLY_TO and m.queue not in conn.broker.reply_queues:
            raise ChannelError(ReplyCode.NOT_FOUND, f"no queue '{m.queue}' in vhost '{conn.client.vhost}'", 50, 10)
        if not m.nowait:
            conn.write(codec.encode_method(ch.number, codec.unchecked(C.Queue.DeclareOk, queue=m.queue, message_count=0, consumer_count=1)))
        return
    q = conn.broker.declare_queue(
        ch.model, m.queue, passive=m.passive, durable=m.durable, exclusive=m.exclusive,
        auto_delete=m.auto_delete, arguments=_table(m.arguments),
    )  # fmt: skip
    if not m.nowait:
        ok = codec.unchecked(C.Queue.DeclareOk, queue=q.name, message_count=len(q.ready), consumer_count=len(q.consumers))
        _reply(conn, ch, ok, q.durable and q.exclusive_owner is None and not m.passive)


@handles(C.Queue.Delete)
def queue_delete(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Queue.Delete) -> None:
    assert ch is not None and conn.client is not None
    durable = _durable_queue(conn, m.queue)
    n = conn.broker.delete_queue(
        conn.client.vhost, m.queue, if_unused=m.if_unused, if_empty=m.if_empty, conn=conn.client
    )
    if not m.nowait:
        _reply(conn, ch, C.Queue.DeleteOk(n), durable)


@handles(C.Queue.Purge)
def queue_purge(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Queue.Purge) -> None:
    assert ch is not None and conn.client is not None
    n = conn.broker.purge_queue(conn.client.vhost, m.queue, conn.client)
    if not m.nowait:
        conn.write(codec.encode_method(ch.number, C.Queue.PurgeOk(n)))


@handles(C.Queue.Bind)
def queue_bind(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Queue.Bind) -> None:
    assert ch is not None and conn.client is not None
    conn.broker.vhost(conn.client.vhost).bind(conn.client, m.queue, m.exchange, m.routing_key, _table(m.arguments))
    if not m.nowait:
        _reply(conn, ch, C.Queue.BindOk(), _durable_queue(conn, m.queue) and _durable_exchange(conn, m.exchange))


@handles(C.Queue.Unbind)
def queue_unbind(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Queue.Unbind) -> None:
    assert ch is not None and conn.client is not None
    durable = _durable_queue(conn, m.queue) and _durable_exchange(conn, m.exchange)
    conn.broker.vhost(conn.client.vhost).unbind(conn.client, m.queue, m.exchange, m.routing_key, _table(m.arguments))
    _reply(conn, ch, C.Queue.UnbindOk(), durable)


# ---- basic ---------------------------------------------------------------------------------------


@handles(C.Basic.Qos)
def basic_qos(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Basic.Qos) -> None:
    assert ch is not None
    if m.prefetch_size:
        raise ConnectionError_(ReplyCode.NOT_IMPLEMENTED, f"prefetch_size!=0 ({m.prefetch_size})", 60, 10)
    ch.model.set_qos(m.prefetch_count, m.global_)
    conn.write(codec.encode_method(ch.number, C.Basic.QosOk()))


@handles(C.Basic.Consume)
def basic_consume(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Basic.Consume) -> None:
    assert ch is not None
    # consume-ok must precede the first deliver: reply before the consumer starts.
    model = ch.model
    limit = conn.settings.max_consumers_per_channel
    if limit is not None and len(model.consumers) >= limit and m.consumer_tag not in model.consumers:
        raise ConnectionError_(ReplyCode.NOT_ALLOWED, f"reached maximum ({limit}) of consumers per channel", 60, 20)
    paused = model.paused
    model.paused = True
    try:
        c = conn.broker.consume(
            model, m.queue, m.consumer_tag, no_ack=m.no_ack, exclusive=m.exclusive, arguments=_table(m.arguments)
        )
    finally:
        model.paused = paused
    if not m.nowait:
        conn.write(codec.encode_method(ch.number, codec.unchecked(C.Basic.ConsumeOk, consumer_tag=c.tag)))
    if not paused and c.queue.ready:
        c.queue.dispatch()


@handles(C.Basic.Cancel)
def basic_cancel(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Basic.Cancel) -> None:
    assert ch is not None
    conn.broker.cancel(ch.model, m.consumer_tag or "")
    if not m.nowait:
        conn.write(codec.encode_method(ch.number, codec.unchecked(C.Basic.CancelOk, consumer_tag=m.consumer_tag)))


@handles(C.Basic.CancelOk)
def basic_cancel_ok(conn: AMQPServerProtocol, ch: ServerChannel | None, m: Any) -> None:
    pass  # reply to a broker-sent basic.cancel


@handles(C.Basic.Get)
def basic_get(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Basic.Get) -> None:
    assert ch is not None
    got = conn.broker.get(ch.model, m.queue, m.no_ack)
    if got is None:
        conn.write(codec.encode_method(ch.number, C.Basic.GetEmpty()))
        return
    tag, msg, remaining = got
    assert msg.body is not None  # Queue.take pages bodies in
    # Quorum queues (RabbitMQ 3.10): basic.get-ok always carries x-delivery-count, 0 the first time.
    props = msg.properties if msg.delivery_count is None else with_delivery_count(msg.properties, msg.delivery_count)
    conn.write(
        codec.encode_get_ok(
            ch.number, tag, msg.redelivered, codec.shortstr(msg.exchange), codec.shortstr(msg.routing_key),
            remaining, props, msg.body, conn.amqp.frame_max,
        )  # fmt: skip
    )


@handles(C.Basic.Recover)
def basic_recover(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Basic.Recover) -> None:
    assert ch is not None
    if not m.requeue:
        raise ConnectionError_(ReplyCode.NOT_IMPLEMENTED, "requeue=false", 60, 110)
    ch.model.recover()
    conn.write(codec.encode_method(ch.number, C.Basic.RecoverOk()))


@handles(C.Basic.RecoverAsync)
def basic_recover_async(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Basic.RecoverAsync) -> None:
    assert ch is not None
    if not m.requeue:
        raise ConnectionError_(ReplyCode.NOT_IMPLEMENTED, "requeue=false", 60, 100)
    ch.model.recover()


# ---- confirm -------------------------------------------------------------------------------------


@handles(C.Confirm.Select)
def confirm_select(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Confirm.Select) -> None:
    assert ch is not None
    if ch.model.tx is not None:
        raise ChannelError(ReplyCode.PRECONDITION_FAILED, "cannot switch from tx to confirm mode")
    ch.model.confirm = True
    if not m.nowait:
        conn.write(codec.encode_method(ch.number, C.Confirm.SelectOk()))


# ---- transactions --------------------------------------------------------------------------------
# As RabbitMQ does: publishes are checked when they arrive and routed at tx.commit; acks, nacks and
# rejects take their deliveries out of the unacked set at once (a second ack is an error) and are
# applied at tx.commit or given back at tx.rollback. commit-ok follows the fsync of what it stored.


@handles(C.Tx.Select)
def tx_select(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Tx.Select) -> None:
    assert ch is not None
    if ch.model.confirm:
        raise ChannelError(ReplyCode.PRECONDITION_FAILED, "cannot switch from confirm to tx mode")
    ch.model.tx_select()
    conn.write(codec.encode_method(ch.number, C.Tx.SelectOk()))


def _transactional(ch: ServerChannel | None) -> ServerChannel:
    assert ch is not None
    if ch.model.tx is None:
        raise ChannelError(ReplyCode.PRECONDITION_FAILED, "channel is not transactional")
    return ch


@handles(C.Tx.Commit)
def tx_commit(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Tx.Commit) -> None:
    ch = _transactional(ch)
    stored = conn.commit_publishes(ch)
    ch.model.tx_commit()
    ok = codec.encode_method(ch.number, C.Tx.CommitOk())
    if stored:
        conn.reply_when_durable(ch.number, ok)
    else:
        conn.write(ok)


@handles(C.Tx.Rollback)
def tx_rollback(conn: AMQPServerProtocol, ch: ServerChannel | None, m: C.Tx.Rollback) -> None:
    ch = _transactional(ch)
    ch.tx_publishes.clear()
    ch.model.tx_publishes_held = 0
    ch.model.tx_rollback()
    conn.write(codec.encode_method(ch.number, C.Tx.RollbackOk()))
