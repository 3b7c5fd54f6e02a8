"""The broker: vhosts, connections, and the operations the server calls.

Every method is synchronous; the caller passes time in through the injected clock.
Errors are raised as :class:`leveret.errors.AMQPError` with RabbitMQ's codes and texts.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from leveret.errors import ChannelError, ConnectionError_, ReplyCode
from leveret.model import arguments as A
from leveret.model import limits as L
from leveret.model import recovery
from leveret.model import validation as V
from leveret.model.access import (
    CONFIGURE,
    K_GLOBAL,
    K_VHOST,
    K_VHOST_LIMITS,
    READ,
    WRITE,
    AccessControl,
    LoginThrottle,
)
from leveret.model.access import QUEUE as Q_RESOURCE
from leveret.model.channel import Channel, ChannelSink, Consumer, Delivery
from leveret.model.connection import ClientConnection
from leveret.model.message import Message
from leveret.model.policy import Policies, Policy, PolicyError, make_policy
from leveret.model.properties import (
    FLAG_USER_ID,
    REJECTED,
    check_user_id,
    dead_letter,
    expiration_ms,
    is_cycle,
    may_have_cc,
    sender_selected,
    with_reply_to,
)
from leveret.model.queue import STORED, Queue
from leveret.model.vhost import VHost, server_name
from leveret.storage.base import Recovered, Store

log = logging.getLogger("leveret.model")

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"  # the pseudo-queue of direct reply-to

TIMEOUT_TEXT = (
    "delivery acknowledgement on channel {channel} timed out. Timeout value used: {ms} ms. "
    "This timeout value can be configured, see consumers doc guide to learn more"
)


_MISSING = object()


class Broker:
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float],
        consumer_timeout: int | None = 1_800_000,
        consumer_timeout_action: str = "close",
        page_limit: int | None = None,
        wall_clock: Callable[[], float] = time.time,
        loopback_users: tuple[str, ...] = ("guest",),
        vhosts: tuple[str, ...] = ("/",),
    ) -> None:
        self.store = store
        self.access = AccessControl(loopback_users=loopback_users, persist=self._persist)
        self.access.on_user_removed = self._close_user_connections
        self.policies = Policies(persist=self._persist)
        self.logins = LoginThrottle(clock=clock)  # failed logins per peer address, AMQP and HTTP
        # Vhost records kept in the store: name -> {"name", "description", "tags"} (definitions shape).
        self.vhost_meta: dict[str, dict[str, Any]] = {}
        # Vhost limits (RabbitMQ's vhost-limits runtime parameter): vhost -> {"max-queues": N, ...}.
        self.vhost_limits: dict[str, dict[str, int]] = {}
        self.max_queues: int | None = None  # the node's own limit per vhost (--max-queues)
        # Global runtime parameters (/api/global-parameters): name -> any JSON value, kept in the store.
        self.global_parameters: dict[str, Any] = {}
        self.wall_clock = wall_clock  # x-death times are wall-clock seconds
        self.ttl_queues: set[Queue] = set()  # see QueueHost
        self.lease_queues: set[Queue] = set()
        self._dead_letters: deque[tuple[Queue, list[Message], str]] = deque()
        self._dead_lettering = False
        self.page_limit = page_limit  # per durable queue: ready bytes kept in RAM before paging
        self.clock = clock
        self.consumer_timeout = consumer_timeout or None
        self.consumer_timeout_action = consumer_timeout_action
        # ``vhosts``: created in memory only (a running node's come from the store, see recover and
        # add_vhost); the default suits a broker built in a test.
        self.vhosts: dict[str, VHost] = {name: self.new_vhost(name) for name in vhosts}
        self.connections: dict[str, ClientConnection] = {}
        # Direct reply-to: generated reply name -> the requesting channel's pseudo-queue.
        self.reply_queues: dict[str, Queue] = {}
        self.next_msg_id = 1
        self.recovery_set_aside = 0  # records recover() could not apply and set aside
        # broker-wide counters (management rates)
        self.published = self.confirmed = self.returned = 0
        # counters of deleted queues, so broker-wide totals never go backwards
        self.delivered_deleted = self.acked_deleted = self.redelivered_deleted = 0

    # ---- recovery ------------------------------------------------------------------------------

    def recover(self, rec: Recovered, *, assume_delivered: bool = False) -> tuple[int, int]:
        """Rebuild durable state from the store (see :func:`leveret.model.recovery.recover`)."""
        return recovery.recover(self, rec, assume_delivered=assume_delivered)

    # ---- vhosts, users ---------------------------------------------------------------------------

    def _persist(self, kind: str, key: str, value: dict[str, Any] | None) -> None:
        self.store.put_definition(kind, key, None if value is None else json.dumps(value, ensure_ascii=False))

    def add_vhost(self, name: str, description: str | None = None, tags: list[str] | None = None) -> VHost:
        """The vhost ``name``, created (with its default exchanges) and kept in the store if it does not
        exist; an existing one keeps its objects, and its description and tags unless new ones are given."""
        V.check_vhost_name(name)
        old = self.vhost_meta.get(name, {})
        meta = {
            "name": name,
            "description": old.get("description", "") if description is None else description,
            "tags": list(old.get("tags", []) if tags is None else tags),
        }
        if self.vhost_meta.get(name) != meta:
            self._persist(K_VHOST, name, meta)
        return self.adopt_vhost(name, meta)

    def adopt_vhost(self, name: str, meta: dict[str, Any] | None = None) -> VHost:
        vh = self.vhosts.get(name)
        if vh is None:
            vh = self.vhosts[name] = self.new_vhost(name)
        if meta is not None:
            self.vhost_meta[name] = meta
        return vh

    def set_vhost_limits(self, name: str, limits: Any) -> None:
        """Merge ``limits`` (max-connections, max-queues) into the vhost's; ValueError with
        RabbitMQ's text, a 404 ChannelError for a missing vhost."""
        self.vhost_or_404(name)
        self._put_vhost_limits(name, L.merged(self.vhost_limits.get(name, {}), limits, L.VHOST_KEYS, "limits"))

    def clear_vhost_limits(self, name: str, key: str = "all") -> None:
        self.vhost_or_404(name)
        self._put_vhost_limits(name, L.cleared(self.vhost_limits.get(name, {}), key))

    def _put_vhost_limits(self, name: str, limits: dict[str, int]) -> None:
        if limits:
            self.vhost_limits[name] = limits
        else:
            self.vhost_limits.pop(name, None)
        self._persist(K_VHOST_LIMITS, name, limits or None)
        self.apply_limits()

    def set_global_parameter(self, name: str, value: Any) -> bool:
        """Set (and keep in the store) a global runtime parameter; True if it existed."""
        existed = name in self.global_parameters
        self.global_parameters[name] = value
        self._persist(K_GLOBAL, name, {"value": value})
        return existed

    def clear_global_parameter(self, name: str) -> bool:
        """Remove a global runtime parameter; False if there was none."""
        if self.global_parameters.pop(name, _MISSING) is _MISSING:
            return False
        self._persist(K_GLOBAL, name, None)
        return True

    def apply_limits(self) -> None:
        """Each vhost's queue limit: the tighter of the node's and its own."""
        for name, vh in self.vhosts.items():
            vh.max_queues = L.smallest(self.max_queues, L.value(self.vhost_limits.get(name), L.MAX_QUEUES))

    def delete_vhost(self, name: str) -> None:
        """Remove a vhost with everything in it: its connections are closed (320), its queues (and
        their messages), exchanges and bindings deleted, permissions on it cleared."""
        vh = self.vhost_or_404(name)
        for conn in [c for c in self.connections.values() if c.vhost == name]:
            conn.sink.force_close(ReplyCode.CONNECTION_FORCED, f"vhost '{name}' is deleted")
            self.disconnect(conn)
        for q in list(vh.queues.values()):
            self._delete_queue(vh, q)
        for x in list(vh.exchanges.values()):
            if x.durable and x.name and not x.name.startswith("amq."):
                self.store.delete_exchange(name, x.name)
        del self.vhosts[name]
        self.vhost_meta.pop(name, None)
        self._persist(K_VHOST, name, None)
        if self.vhost_limits.pop(name, None) is not None:
            self._persist(K_VHOST_LIMITS, name, None)
        self.access.forget_vhost(name)
        self.policies.forget_vhost(name)

    # ---- policies (rabbit_policy) ----------------------------------------------------------------

    def set_policy(
        self, vhost: str, name: str, pattern: Any, definition: Any, priority: Any = 0, apply_to: Any = "all", *,
        operator: bool = False,
    ) -> bool:  # fmt: skip
        """Add or replace a policy (an operator policy with ``operator``) and apply the vhost's policies
        at once. Returns True if it is new. :class:`PolicyError` for a definition RabbitMQ refuses;
        a 404 ChannelError for a missing vhost."""
        vh = self.vhost_or_404(vhost)
        if not name:
            raise PolicyError("policy name must not be empty")
        p = make_policy(vhost, name, pattern, definition, priority, apply_to, operator=operator)
        new = self.policies.put(p, operator=operator)
        vh.apply_policies(name, operator=operator, new=p)
        return new

    def clear_policy(self, vhost: str, name: str, *, operator: bool = False) -> bool:
        """Remove a policy; False if there was none."""
        vh = self.vhosts.get(vhost)
        if vh is None or not self.policies.remove(vhost, name, operator=operator):
            return False
        vh.apply_policies(name, operator=operator)
        return True

    def list_policies(self, vhost: str | None = None, *, operator: bool = False) -> list[Policy]:
        return self.policies.all(vhost, operator=operator)

    def _close_user_connections(self, user: str) -> None:
        for conn in [c for c in self.connections.values() if c.user == user]:
            conn.sink.force_close(ReplyCode.CONNECTION_FORCED, f"user '{user}' was deleted or changed")

    def new_vhost(self, name: str) -> VHost:
        vh = VHost(name, self.store, self.page_limit)
        vh.max_queues = L.smallest(self.max_queues, L.value(self.vhost_limits.get(name), L.MAX_QUEUES))
        vh.host = self
        vh.access = self.access
        vh.policies = self.policies
        return vh

    # ---- connections and channels --------------------------------------------------------------

    def vhost(self, name: str) -> VHost:
        vh = self.vhosts.get(name)
        if vh is None:
            raise ConnectionError_(ReplyCode.NOT_ALLOWED, f"vhost {name} not found")
        return vh

    def vhost_or_404(self, name: str) -> VHost:
        """For management: a missing vhost is 404 rather than a connection error."""
        vh = self.vhosts.get(name)
        if vh is None:
            raise ChannelError(ReplyCode.NOT_FOUND, f"no vhost '{name}'")
        return vh

    def connect(self, conn: ClientConnection) -> None:
        """connection.open, in RabbitMQ's order: the vhost must exist (530 "vhost v not found") and
        be under its max-connections, the user under its own, then the user needs a permission row
        in it (530 "access to vhost 'v' refused for user 'u'")."""
        self.vhost(conn.vhost)
        limit = L.value(self.vhost_limits.get(conn.vhost), L.MAX_CONNECTIONS)
        if limit is not None and sum(1 for c in self.connections.values() if c.vhost == conn.vhost) >= limit:
            raise ConnectionError_(
                ReplyCode.NOT_ALLOWED,
                f"access to vhost '{conn.vhost}' refused for user '{conn.user}': connection limit ({limit}) is reached",
            )
        if conn.user is not None and self.access.user_limit(conn.user, L.MAX_CONNECTIONS) is not None:
            self.access.check_user_connections(
                conn.user, sum(1 for c in self.connections.values() if c.user == conn.user)
            )
        self.access.check_vhost(conn.user, conn.vhost)
        self.connections[conn.name] = conn

    def disconnect(self, conn: ClientConnection) -> None:
        """The connection is gone: requeue its deliveries, drop its exclusive queues."""
        for ch in list(conn.channels.values()):
            self.close_channel(ch)
        vh = self.vhosts.get(conn.vhost)
        for q in list(conn.exclusive_queues):
            if vh is not None:
                self._delete_queue(vh, q)
        conn.exclusive_queues.clear()
        self.connections.pop(conn.name, None)

    def open_channel(self, conn: ClientConnection, number: int, sink: ChannelSink) -> Channel:
        if conn.user is not None and self.access.user_limit(conn.user, L.MAX_CHANNELS) is not None:
            self.access.check_user_channels(
                conn.user, sum(len(c.channels) for c in self.connections.values() if c.user == conn.user)
            )
        ch = Channel(conn, number, sink, self.clock)
        conn.channels[number] = ch
        return ch

    def close_channel(self, ch: Channel) -> None:
        if ch.closed:
            return
        ch.connection.channels.pop(ch.number, None)
        for c in ch.release():
            self._maybe_auto_delete(c.queue)
        self._drop_replies(ch)

    # ---- queues and exchanges ------------------------------------------------------------------

    def declare_queue(
        self, ch: Channel, name: str, *, passive: bool, durable: bool, exclusive: bool, auto_delete: bool,
        arguments: dict[str, Any],
    ) -> Queue:  # fmt: skip
        q = self.vhost(ch.connection.vhost).declare_queue(
            ch.connection, name, passive=passive, durable=durable, exclusive=exclusive, auto_delete=auto_delete,
            arguments=arguments,
        )  # fmt: skip
        q.touch()  # a declare (passive or not) renews an x-expires lease
        return q

    def delete_queue(
        self, vhost: str, name: str, *, if_unused: bool, if_empty: bool, conn: ClientConnection | None,
        user: str | None = None,
    ) -> int:  # fmt: skip
        """queue.delete: configure on the queue, checked before its existence (RabbitMQ's order)."""
        vh = self.vhost(vhost)
        self.access.check(_who(user, conn), vhost, Q_RESOURCE, name, CONFIGURE)
        q = vh.queues.get(name)
        if q is None:
            return 0  # RabbitMQ: deleting a missing queue succeeds
        vh.get_queue(name, conn)
        vh.check_delete(q, if_unused, if_empty)
        who = _who(user, conn)
        log.debug("queue '%s' in vhost '%s' deleted by user '%s'", name, vhost, who,
                  extra={"queue": name, "vhost": vhost, "user": who, "connection": conn.name if conn else None})  # fmt: skip
        return self._delete_queue(vh, q)

    def _delete_queue(self, vh: VHost, q: Queue) -> int:
        for c in list(q.consumers):
            q.remove_consumer(c)
            c.channel.consumers.pop(c.tag, None)
            if c.channel.connection.cancel_notify and not c.channel.closed:
                c.channel.sink.cancel_consumer(c.tag)
        self.delivered_deleted += q.delivered
        self.acked_deleted += q.acked
        self.redelivered_deleted += q.redelivered
        self.ttl_queues.discard(q)
        self.lease_queues.discard(q)
        return vh.delete_queue(q)

    def purge_queue(
        self, vhost: str, name: str, conn: ClientConnection | None, user: str | None = None
    ) -> int:
        vh = self.vhost(vhost)
        self.access.check(_who(user, conn), vhost, Q_RESOURCE, name, READ)
        return vh.get_queue(name, conn).purge()

    def _maybe_auto_delete(self, q: Queue) -> None:
        if q.auto_delete and q.had_consumer and not q.consumers and not q.deleted:
            self._delete_queue(self.vhosts[q.vhost], q)

    # ---- messages ------------------------------------------------------------------------------

    def publish(
        self,
        vhost: str,
        exchange: str,
        routing_key: str,
        properties: bytes,
        body: bytes | bytearray,
        persistent: bool,
        user: str | None = None,
    ) -> tuple[bool, bool, bool]:
        """Route a message. Returns (routed to at least one queue, journalled in the store,
        refused by a queue's x-overflow: the confirm is a basic.nack)."""
        vh = self.vhosts[vhost]
        ttl = self._check_publish(vh, exchange, routing_key, properties, user)
        self.published += 1
        # Sender-selected distribution: CC / BCC add routing keys. The flag test keeps the call off
        # the path of messages without headers.
        if properties and properties[0] & 0x20 and may_have_cc(properties):
            keys, properties = sender_selected(properties)
            if keys:
                queues: dict[int, Queue] = {}
                for key in (routing_key, *keys):
                    for q in vh.route(exchange, key, properties):
                        queues.setdefault(id(q), q)
                return self._enqueue(
                    list(queues.values()), exchange, routing_key, properties, body, persistent, ttl
                )
        routes = vh.route(exchange, routing_key, properties)
        if not routes and not exchange and self.reply_queues:
            reply = self.reply_queues.get(routing_key)
            if reply is not None:  # a direct reply: delivered, yet (RabbitMQ 3.10) not counted as routed
                self._enqueue([reply], exchange, routing_key, properties, body, False, ttl)
                return False, False, False
        return self._enqueue(routes, exchange, routing_key, properties, body, persistent, ttl)

    def check_publish(
        self, vhost: str, exchange: str, properties: bytes, routing_key: str = "", user: str | None = None
    ) -> int | None:
        """What basic.publish refuses before routing, in rabbit_channel's order: no write permission on the
        exchange (403, checked before the lookup), a missing or internal exchange (404, 403), the topic
        write permission (403), a ``user_id`` that is not ``user`` (406), a bad expiration (406). Returns
        the message's own TTL in ms (None without one)."""
        return self._check_publish(self.vhosts[vhost], exchange, routing_key, properties, user)

    def _check_publish(
        self, vh: VHost, exchange: str, routing_key: str, properties: bytes, user: str | None
    ) -> int | None:
        access = self.access
        if user is not None:
            ok = access.writable.get((user, vh.name))
            if ok is None or exchange not in ok:
                access.check_write(user, vh.name, exchange)
        x = vh.exchanges.get(exchange)
        if x is None:
            raise ChannelError(ReplyCode.NOT_FOUND, f"no exchange '{exchange}' in vhost '{vh.name}'", 60, 40)
        if x.internal:
            raise ChannelError(
                ReplyCode.ACCESS_REFUSED,
                f"cannot publish to internal exchange '{exchange}' in vhost '{vh.name}'",
                60,
                40,
            )
        if x.type == "topic":
            access.check_topic(user, vh.name, exchange, routing_key, WRITE)
        if user is not None and len(properties) > 1 and properties[1] & FLAG_USER_ID:
            check_user_id(properties, user)  # after the permissions, as rabbit_channel
        return (
            expiration_ms(properties) if properties and properties[0] & 0x01 else None
        )  # the expiration flag

    def _enqueue(
        self, queues: list[Queue], exchange: str, routing_key: str, properties: bytes, body: bytes | bytearray, persistent: bool,
        ttl: int | None,
    ) -> tuple[bool, bool, bool]:  # fmt: skip
        """Put one message, with a new msg_id, in each of the routed ``queues`` (publish and dead letters)."""
        msg_id = self.next_msg_id
        self.next_msg_id = msg_id + 1
        routed = stored = rejected = False
        for q in queues:
            routed = True
            r = q.publish(Message(msg_id, exchange, routing_key, properties, body, persistent), ttl)
            if r:
                if r == STORED:
                    stored = True
                else:
                    rejected = True
        return routed, stored, rejected

    # ---- dead letters, TTLs, leases ------------------------------------------------------------

    def dead_letter(self, queue: Queue, msgs: list[Message], reason: str) -> None:
        """Republish messages a queue rejected, expired or dropped to its x-dead-letter-exchange.

        Iterative: a dead letter that makes another queue dead-letter is queued, not nested.
        """
        self._dead_letters.append((queue, msgs, reason))
        if self._dead_lettering:
            return
        self._dead_lettering = True
        try:
            while self._dead_letters:
                self._dead_letter(*self._dead_letters.popleft())
        finally:
            self._dead_lettering = False

    def _dead_letter(self, queue: Queue, msgs: list[Message], reason: str) -> None:
        lim = queue.limits
        vh = self.vhosts.get(queue.vhost)
        if lim is None or lim.dlx is None or vh is None or lim.dlx not in vh.exchanges:
            return  # RabbitMQ drops dead letters to a missing exchange
        now = int(self.wall_clock())
        for m in msgs:
            assert m.body is not None
            rk = m.routing_key if lim.dlrk is None else lim.dlrk
            props, deaths = dead_letter(
                m.properties, reason=reason, queue=queue.name, exchange=m.exchange, routing_key=m.routing_key,
                new_routing_key=lim.dlrk is not None, now=now,
            )  # fmt: skip
            targets = vh.route(lim.dlx, rk, props)
            if reason != REJECTED:
                kept = [t for t in targets if not is_cycle(t.name, deaths)]
                if len(kept) < len(targets):
                    log.warning(
                        "Message dropped. Dead-letter queues cycle detected: %s. This cycle will NOT be "
                        "reported again.", [t.name for t in targets if t not in kept] + [d for d, _ in deaths],
                    )  # fmt: skip
                targets = kept
            self._enqueue(targets, lim.dlx, rk, props, m.body, m.persistent, None)

    def expire(self, now: float) -> None:
        """The periodic tick: expire the heads of queues holding messages with a TTL, delete unused
        queues whose x-expires lease ran out."""
        for q in list(self.ttl_queues):
            if not q.deleted:
                q.expire(now)
                if q.ready or q.unacked:
                    continue
            q.ttl_watch = False
            self.ttl_queues.discard(q)
        for q in list(self.lease_queues):
            lim = q.limits
            if q.deleted or lim is None or lim.expires is None:
                self.lease_queues.discard(q)
            elif not q.consumers and now >= q.used_at + lim.expires / 1000.0:
                log.info("queue '%s' in vhost '%s' expired (x-expires %d ms)", q.name, q.vhost, lim.expires,
                         extra={"queue": q.name, "vhost": q.vhost})  # fmt: skip
                self._delete_queue(self.vhosts[q.vhost], q)

    def consume(
        self, ch: Channel, queue: str, tag: str, *, no_ack: bool, exclusive: bool, arguments: dict[str, Any]
    ) -> Consumer:
        """basic.consume, in rabbit_channel's order: a reused tag (530), read on the queue (403, before
        the lookup), the queue (404, 405), exclusive use (403), the arguments."""
        if queue == DIRECT_REPLY_TO:
            return self._consume_replies(ch, tag, no_ack)
        conn = ch.connection
        vh = self.vhost(conn.vhost)
        if tag in ch.consumers:
            raise ConnectionError_(ReplyCode.NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'", 60, 20)
        self.access.check(conn.user, conn.vhost, Q_RESOURCE, queue, READ)
        q = vh.get_queue(queue, conn)
        if not tag:
            tag = server_name("amq.ctag-")
        if q.consumers and (exclusive or q.exclusive_consumer):
            raise ChannelError(ReplyCode.ACCESS_REFUSED, f"queue '{queue}' in vhost '{conn.vhost}' in exclusive use", 60, 20)
        A.validate_consume(queue, conn.vhost, arguments)
        own = A.ms_argument(arguments, "x-consumer-timeout", f"consumer on queue '{queue}' in vhost '{conn.vhost}'")
        timeout = _smallest(self.consumer_timeout, q.consumer_timeout, own)
        c = Consumer(
            tag, ch, q, no_ack=no_ack, exclusive=exclusive, prefetch=ch.prefetch, arguments=arguments, timeout=timeout
        )
        ch.consumers[tag] = c
        q.add_consumer(c)
        return c

    def cancel(self, ch: Channel, tag: str) -> bool:
        """basic.cancel: the consumer stops; its unacked deliveries stay on the channel."""
        c = ch.consumers.pop(tag, None)
        if c is None:
            return False
        c.queue.remove_consumer(c)
        if c.queue is ch.reply_queue:
            self._drop_replies(ch)
            return True
        # Its deliveries remain unacked on the channel; they now belong to no consumer.
        for d in c.deliveries.values():
            d.consumer = None
            ch.gets[d.tag] = d
        c.deliveries.clear()
        self._maybe_auto_delete(c.queue)
        return True

    def get(self, ch: Channel, queue: str, no_ack: bool) -> tuple[int, Message, int] | None:
        conn = ch.connection
        vh = self.vhost(conn.vhost)
        self.access.check(conn.user, conn.vhost, Q_RESOURCE, queue, READ)
        q = vh.get_queue(queue, conn)
        q.touch()
        got = ch.get(q, no_ack, _smallest(self.consumer_timeout, q.consumer_timeout))
        if got is None:
            return None
        return got[0], got[1], len(q.ready)

    # ---- direct reply-to (rabbit_direct_reply_to, RabbitMQ 3.10) -------------------------------
    # A requester consumes the pseudo-queue amq.rabbitmq.reply-to (no-ack, one per channel, no
    # permission check) and publishes requests with that reply_to, which is rewritten to a name of
    # its own; a reply published to the default exchange with that name as routing key goes
    # straight to it (to nobody, silently, once it is gone). Each requester's replies pass through
    # a private queue that is in no vhost, so flow control works as for any consumer.

    def _consume_replies(self, ch: Channel, tag: str, no_ack: bool) -> Consumer:
        conn = ch.connection
        if tag and tag in ch.consumers:
            raise ConnectionError_(ReplyCode.NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'", 60, 20)
        if not no_ack:
            raise ChannelError(ReplyCode.PRECONDITION_FAILED, "reply consumer cannot acknowledge", 60, 20)
        if ch.reply_queue is not None:
            raise ChannelError(ReplyCode.PRECONDITION_FAILED, "reply consumer already set", 60, 20)
        name = f"{DIRECT_REPLY_TO}.{_reply_token()}.{_reply_token()}"
        q = Queue(conn.vhost, name, durable=False, exclusive_owner=conn, auto_delete=False, arguments={},
                  store=self.store, host=self)  # fmt: skip
        tag = tag or server_name("amq.ctag-")
        c = Consumer(tag, ch, q, no_ack=True, exclusive=False, prefetch=0, arguments={}, timeout=None)
        ch.consumers[tag] = c
        ch.reply_queue = q
        self.reply_queues[name] = q
        q.add_consumer(c)
        return c

    def direct_reply_to(self, ch: Channel, properties: bytes) -> bytes:
        """A request asking for a direct reply: its reply_to becomes the channel's reply name; 406 if
        the channel has no reply consumer."""
        q = ch.reply_queue
        if q is None:
            raise ChannelError(ReplyCode.PRECONDITION_FAILED, "fast reply consumer does not exist", 60, 40)
        return with_reply_to(properties, q.name)

    def _drop_replies(self, ch: Channel) -> None:
        q, ch.reply_queue = ch.reply_queue, None
        if q is not None:
            self.reply_queues.pop(q.name, None)
            q.deleted = True
            q.ready.clear()  # replies not yet delivered go with the requester, as in RabbitMQ
            q.ready_bytes = 0

    # ---- consumer acknowledgement timeouts -----------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        """Act on every delivery whose acknowledgement deadline has passed (oldest first)."""
        for conn in list(self.connections.values()):
            for ch in list(conn.channels.values()):
                if ch.unacked and not ch.closed:
                    self._check_channel(ch, now)

    def _check_channel(self, ch: Channel, now: float) -> None:
        expired: Delivery | None = None
        for c in list(ch.consumers.values()):
            if c.deliveries:
                d = next(iter(c.deliveries.values()))
                dl = d.deadline
                if dl is not None and dl <= now and (expired is None or d.tag < expired.tag):
                    expired = d
        for d in ch.gets.values():
            dl = d.deadline
            if dl is not None and dl <= now and (expired is None or d.tag < expired.tag):
                expired = d
            break  # oldest get only
        if expired is None:
            return
        stuck = expired.consumer
        log.warning(
            "Consumer '%s' on channel %d and queue '%s' in vhost '%s' has timed out waiting for a consumer "
            "acknowledgement of a delivery with delivery tag = %d. Timeout used: %d ms. Connection: %s",
            stuck.tag if stuck else "(basic.get)", ch.number, expired.queue.name, expired.queue.vhost, expired.tag,
            expired.timeout, ch.connection.name,
            extra={"connection": ch.connection.name, "user": ch.connection.user, "vhost": expired.queue.vhost,
                   "queue": expired.queue.name, "channel": ch.number},
        )  # fmt: skip
        if self.consumer_timeout_action == "cancel" and stuck is not None and ch.connection.cancel_notify:
            ch.consumers.pop(stuck.tag, None)
            stuck.queue.remove_consumer(stuck)
            ch.requeue_consumer(stuck)
            ch.sink.cancel_consumer(stuck.tag)
            return
        ch.sink.close_channel(ReplyCode.PRECONDITION_FAILED, TIMEOUT_TEXT.format(channel=ch.number, ms=expired.timeout))


def _reply_token() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def _who(user: str | None, conn: ClientConnection | None) -> str | None:
    """The acting user: given explicitly (HTTP), else the connection's; None is the broker itself."""
    return user if user is not None or conn is None else conn.user


def _smallest(*values: int | None) -> int | None:
    vs = [v for v in values if v]
    return min(vs) if vs else None

