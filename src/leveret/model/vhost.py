"""A virtual host: its exchanges, queues and bindings, the declare/delete/bind rules, and routing.

:meth:`VHost.route` is the one place a message is routed: publish and dead-lettering
both call it.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from leveret.errors import (
    ChannelError,
    ConnectionError_,
    ReplyCode,
    not_found,
    precondition_failed,
    resource_locked,
)
from leveret.model import arguments as A
from leveret.model import validation as V
from leveret.model.access import CONFIGURE, READ, WRITE, AccessControl
from leveret.model.access import EXCHANGE as X_RESOURCE
from leveret.model.access import QUEUE as Q_RESOURCE
from leveret.model.connection import ClientConnection
from leveret.model.exchange import EXCHANGE, QUEUE, TYPES, DefaultExchange, Exchange
from leveret.model.headers import headers_table
from leveret.model.policy import Policies, Policy
from leveret.model.queue import Queue, QueueHost
from leveret.storage.base import BindingRecord, ExchangeRecord, QueueRecord, Store

STANDARD_EXCHANGES = (
    ("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"), ("amq.headers", "headers"),
    ("amq.match", "headers"),
)  # fmt: skip

DEFAULT_EXCHANGE_REFUSED = "operation not permitted on the default exchange"


def server_name(prefix: str) -> str:
    return prefix + base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


class VHost:
    def __init__(self, name: str, store: Store, page_limit: int | None = None) -> None:
        self.name = name
        self.store = store
        self.page_limit = page_limit  # see Queue.page_limit
        self.host: QueueHost | None = None  # the broker, set when it adopts this vhost (TTLs, dead letters)
        # Who may do what (the broker's, shared by every vhost). The ``user`` of each operation below is
        # the acting user (an AMQP connection's, the HTTP API's); None is the broker itself (recovery,
        # definitions loaded at start): nothing is checked.
        self.access = AccessControl()
        self.policies: Policies | None = None  # the broker's, applied to each new queue and exchange
        self.max_queues: int | None = None  # the node's and the vhost's queue limit (see Broker.apply_limits)
        self.queues: dict[str, Queue] = {}
        self.exchanges: dict[str, Exchange] = {"": DefaultExchange(name, "")}
        for xname, xtype in STANDARD_EXCHANGES:
            self.exchanges[xname] = TYPES[xtype](name, xname)

    # ---- queues --------------------------------------------------------------------------------

    def get_queue(self, name: str, conn: ClientConnection | None = None) -> Queue:
        """The queue, or 404; 405 if it is exclusive to another connection."""
        q = self.queues.get(name)
        if q is None:
            raise not_found(f"no queue '{name}' in vhost '{self.name}'")
        if conn is not None and q.exclusive_owner is not None and q.exclusive_owner is not conn:
            raise resource_locked(
                f"cannot obtain exclusive access to locked queue '{name}' in vhost '{self.name}'. It could be "
                "originally declared on another connection or the exclusive property value does not match that "
                "of the original declaration."
            )
        return q

    def declare_queue(
        self,
        conn: ClientConnection | None,
        name: str,
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        user: str | None = None,
    ) -> Queue:
        """queue.declare. Permissions (RabbitMQ's order): configure on the queue before the lookup
        (a server-named queue under its generated name); a new queue with a dead-letter exchange
        also needs read on itself and write on that exchange. Passive: no check (as RabbitMQ 3.10)."""
        V.check_shortstr("queue name", name)
        args = dict(arguments or {})
        if passive:
            if not name:
                raise not_found(f"no queue '' in vhost '{self.name}'")
            return self.get_queue(name, conn)
        if not name:
            name = server_name("amq.gen-")
        else:
            A.check_name("queue", name)
        if user is None and conn is not None:
            user = conn.user
        self.access.check(user, self.name, Q_RESOURCE, name, CONFIGURE)
        V.check_arguments(args, f"queue '{name}' in vhost '{self.name}'")
        q = self.queues.get(name)
        if q is not None:
            self.get_queue(name, conn)  # exclusivity check
            A.check_flag("queue", name, self.name, "durable", durable, q.durable)
            A.check_flag("queue", name, self.name, "auto_delete", auto_delete, q.auto_delete)
            if exclusive != (q.exclusive_owner is not None):
                self.get_queue(name, None if exclusive else conn)
                raise resource_locked(
                    f"cannot obtain exclusive access to locked queue '{name}' in vhost '{self.name}'. It could be "
                    "originally declared on another connection or the exclusive property value does not match "
                    "that of the original declaration."
                )
            A.check_equivalent_args(name, self.name, args, q.arguments)
            return q
        A.validate_queue(name, self.name, durable, exclusive, auto_delete, args)
        dlx = args.get("x-dead-letter-exchange")
        if user is not None and isinstance(dlx, str | bytes):
            self.access.check(user, self.name, Q_RESOURCE, name, READ)
            self.access.check(
                user, self.name, X_RESOURCE, dlx.decode() if isinstance(dlx, bytes) else dlx, WRITE
            )
        timeout = A.ms_argument(args, "x-consumer-timeout", f"queue '{name}' in vhost '{self.name}'")
        if self.max_queues is not None and len(self.queues) >= self.max_queues:
            raise precondition_failed(
                f"cannot declare queue '{name}': queue limit in vhost '{self.name}' ({self.max_queues}) is reached"
            )
        q = Queue(
            self.name,
            name,
            durable=durable,
            exclusive_owner=conn if exclusive else None,
            auto_delete=auto_delete,
            arguments=args,
            store=self.store,
            consumer_timeout=timeout,
            page_limit=self.page_limit if durable and not exclusive else None,
            host=self.host,
        )
        if self.policies is not None:
            self.policies.apply_queue(q)
        if durable and not exclusive:
            # Before the queue exists: arguments the store cannot keep raise here and leave nothing behind.
            self.store.save_queue(QueueRecord(self.name, name, durable, auto_delete, args))
        self.queues[name] = q
        if exclusive and conn is not None:
            conn.exclusive_queues.append(q)
        self.exchanges[""].bind(QUEUE, name, name, {})  # implicit binding, shown by list_bindings
        return q

    def delete_queue(self, q: Queue) -> int:
        """Remove the queue; its consumers are cancelled by the caller. Returns the ready count."""
        n = len(q.ready)
        q.deleted = True
        self.queues.pop(q.name, None)
        for x in list(self.exchanges.values()):
            if x.unbind_destination(QUEUE, q.name):
                self._maybe_auto_delete(x)
        if q.durable and q.exclusive_owner is None:
            self.store.delete_queue(self.name, q.name)
        q.ready.clear()
        q.ready_bytes = 0
        if q.exclusive_owner is not None:
            owner = q.exclusive_owner
            if isinstance(owner, ClientConnection) and q in owner.exclusive_queues:
                owner.exclusive_queues.remove(q)
        return n

    def check_delete(self, q: Queue, if_unused: bool, if_empty: bool) -> None:
        # RabbitMQ (rabbit_amqqueue_process delete): if-empty is checked first, and "empty" means
        # no ready messages (BQ:is_empty); unacknowledged deliveries do not count.
        if if_empty and q.ready:
            raise precondition_failed(f"queue '{q.name}' in vhost '{self.name}' not empty")
        if if_unused and q.consumers:
            raise precondition_failed(f"queue '{q.name}' in vhost '{self.name}' in use")

    # ---- exchanges -----------------------------------------------------------------------------

    def get_exchange(self, name: str) -> Exchange:
        x = self.exchanges.get(name)
        if x is None:
            raise not_found(f"no exchange '{name}' in vhost '{self.name}'")
        return x

    def declare_exchange(
        self,
        name: str,
        type_: str,
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
        user: str | None = None,
    ) -> Exchange:
        """exchange.declare. Permissions: configure on the exchange before the lookup; a new one with an
        alternate exchange also needs read on itself and write on the alternate. Passive: no check."""
        V.check_shortstr("exchange name", name)
        if not name:  # passive too (rabbit_channel: check_not_default_exchange)
            raise ChannelError(ReplyCode.ACCESS_REFUSED, DEFAULT_EXCHANGE_REFUSED)
        if passive:
            return self.get_exchange(name)
        V.check_arguments(dict(arguments or {}), f"exchange '{name}' in vhost '{self.name}'")
        if type_ not in TYPES:
            raise ConnectionError_(ReplyCode.COMMAND_INVALID, f"unknown exchange type '{type_}'")
        self.access.check(user, self.name, X_RESOURCE, name, CONFIGURE)
        x = self.exchanges.get(name)
        if x is not None:
            A.check_flag("exchange", name, self.name, "type", type_, x.type)  # type: ignore[arg-type]
            A.check_flag("exchange", name, self.name, "durable", durable, x.durable)
            A.check_flag("exchange", name, self.name, "auto_delete", auto_delete, x.auto_delete)
            A.check_flag("exchange", name, self.name, "internal", internal, x.internal)
            A.check_equivalent_args(
                name, self.name, dict(arguments or {}), x.arguments, "exchange", ("alternate-exchange",)
            )
            return x
        A.check_name("exchange", name)
        ae = (arguments or {}).get("alternate-exchange")
        if user is not None and isinstance(ae, str | bytes):
            self.access.check(user, self.name, X_RESOURCE, name, READ)
            self.access.check(user, self.name, X_RESOURCE, ae.decode() if isinstance(ae, bytes) else ae, WRITE)
        x = TYPES[type_](
            self.name,
            name,
            durable=durable,
            auto_delete=auto_delete,
            internal=internal,
            arguments=dict(arguments or {}),
        )
        if self.policies is not None:
            self.policies.apply_exchange(x)
        if durable:  # first, as for queues
            self.store.save_exchange(
                ExchangeRecord(self.name, name, type_, durable, auto_delete, internal, x.arguments)
            )
        self.exchanges[name] = x
        return x

    def delete_exchange(self, name: str, if_unused: bool, user: str | None = None) -> None:
        """exchange.delete, in rabbit_channel's order: the default exchange and the amq.* ones are refused
        (403), then configure on the exchange, before the existence check."""
        if not name:
            raise ChannelError(ReplyCode.ACCESS_REFUSED, DEFAULT_EXCHANGE_REFUSED)
        if name.startswith("amq."):
            raise ChannelError(
                ReplyCode.ACCESS_REFUSED, f"deletion of system exchange '{name}' in vhost '{self.name}' not allowed"
            )
        self.access.check(user, self.name, X_RESOURCE, name, CONFIGURE)
        x = self.exchanges.get(name)
        if x is None:
            return  # RabbitMQ: deleting a missing exchange is ok
        if if_unused and x.bindings:  # bindings *from* it: being a destination does not count
            raise precondition_failed(f"exchange '{name}' in vhost '{self.name}' in use")
        self._remove_exchange(x)

    def _remove_exchange(self, x: Exchange) -> None:
        """Delete ``x`` with its bindings from and to it; sources left unbound may auto-delete."""
        del self.exchanges[x.name]
        if x.durable:
            self.store.delete_exchange(self.name, x.name)  # the store drops its bindings too
        for src in list(self.exchanges.values()):
            if src.unbind_destination(EXCHANGE, x.name):
                self._maybe_auto_delete(src)

    def _maybe_auto_delete(self, x: Exchange) -> None:
        """RabbitMQ: an auto-delete exchange goes when the last binding from it is removed."""
        if x.auto_delete and not x.bindings and self.exchanges.get(x.name) is x:
            self._remove_exchange(x)

    # ---- bindings ------------------------------------------------------------------------------
    # RabbitMQ's order of checks: write on the destination, the default exchange (403), read on the
    # source, the source (404), the destination (404), the binding's arguments (406), queue
    # exclusivity (405); for a topic source, the topic read permission on the binding key.
    # Unbinding something that is missing (exchange, queue or binding) succeeds.

    def _check_bind_access(
        self, user: str | None, dest_kind: str, destination: str, source: str, routing_key: str
    ) -> None:
        if user is None:
            if not source or not destination:
                raise ChannelError(ReplyCode.ACCESS_REFUSED, DEFAULT_EXCHANGE_REFUSED)
            return
        self.access.check(user, self.name, dest_kind, destination, WRITE)
        if not source or not destination:
            raise ChannelError(ReplyCode.ACCESS_REFUSED, DEFAULT_EXCHANGE_REFUSED)
        self.access.check(user, self.name, X_RESOURCE, source, READ)
        src = self.exchanges.get(source)
        if src is not None and src.type == "topic":
            self.access.check_topic(user, self.name, source, routing_key, READ)

    def bind(
        self, conn: ClientConnection | None, queue: str, exchange: str, routing_key: str, args: dict[str, Any],
        user: str | None = None,
    ) -> None:  # fmt: skip
        """queue.bind: bind ``queue`` to ``exchange``."""
        self._check_binding(routing_key, args)
        self._check_bind_access(user if user is not None or conn is None else conn.user, Q_RESOURCE, queue, exchange,
                                routing_key)  # fmt: skip
        x = self.get_exchange(exchange)
        if queue not in self.queues:
            self.get_queue(queue)  # 404
        x.validate_binding(args)
        q = self.get_queue(queue, conn)
        if x.bind(QUEUE, q.name, routing_key, dict(args)) and q.durable and x.durable and q.exclusive_owner is None:
            self.store.save_binding(BindingRecord(self.name, exchange, q.name, QUEUE, routing_key, dict(args)))

    def unbind(
        self, conn: ClientConnection | None, queue: str, exchange: str, routing_key: str, args: dict[str, Any],
        user: str | None = None,
    ) -> None:  # fmt: skip
        """queue.unbind: remove the binding equal to (exchange, queue, routing key, arguments)."""
        self._check_binding(routing_key, args)
        self._check_bind_access(user if user is not None or conn is None else conn.user, Q_RESOURCE, queue, exchange,
                                routing_key)  # fmt: skip
        x = self.exchanges.get(exchange)
        q = self.queues.get(queue)
        if x is None or q is None or not x.has_binding(QUEUE, queue, routing_key, args):
            return
        self.get_queue(queue, conn)  # 405 for another connection's exclusive queue
        x.unbind(QUEUE, queue, routing_key, args)
        if q.durable and x.durable:
            self.store.delete_binding(BindingRecord(self.name, exchange, queue, QUEUE, routing_key, dict(args)))
        self._maybe_auto_delete(x)

    def bind_exchange(
        self, destination: str, source: str, routing_key: str, args: dict[str, Any], user: str | None = None
    ) -> None:
        """exchange.bind: messages routed by ``source`` also go through ``destination``."""
        self._check_binding(routing_key, args)
        self._check_bind_access(user, X_RESOURCE, destination, source, routing_key)
        src = self.get_exchange(source)
        dst = self.get_exchange(destination)
        src.validate_binding(args)
        if src.bind(EXCHANGE, destination, routing_key, dict(args)) and src.durable and dst.durable:
            self.store.save_binding(BindingRecord(self.name, source, destination, EXCHANGE, routing_key, dict(args)))

    def unbind_exchange(
        self, destination: str, source: str, routing_key: str, args: dict[str, Any], user: str | None = None
    ) -> None:
        """exchange.unbind; a missing exchange or binding is not an error."""
        self._check_binding(routing_key, args)
        self._check_bind_access(user, X_RESOURCE, destination, source, routing_key)
        src = self.exchanges.get(source)
        dst = self.exchanges.get(destination)
        if src is None or dst is None or not src.unbind(EXCHANGE, destination, routing_key, args):
            return
        if src.durable and dst.durable:
            self.store.delete_binding(BindingRecord(self.name, source, destination, EXCHANGE, routing_key, dict(args)))
        self._maybe_auto_delete(src)

    def _check_binding(self, routing_key: str, args: dict[str, Any]) -> None:
        V.check_shortstr("routing key", routing_key)
        V.check_arguments(args, f"binding in vhost '{self.name}'")

    def recover_binding(self, b: BindingRecord) -> None:
        """Put back a binding read from the store (skipped if either end was not recovered)."""
        src = self.exchanges.get(b.source)
        ends = self.queues if b.destination_type == QUEUE else self.exchanges
        if src is not None and b.destination in ends:
            src.bind(b.destination_type, b.destination, b.routing_key, dict(b.arguments))

    def apply_policies(self, name: str | None = None, *, operator: bool = False, new: Policy | None = None) -> None:
        """Policies changed: every queue and exchange takes its (new) policy at once.

        With ``name`` (the policy set or cleared; ``new``: its new version, None if cleared) only the
        objects it can concern are looked at again: those that had it and those it matches now. The
        others keep theirs, so setting one policy costs one match per object, not one per policy
        per object (an import of hundreds of policies over thousands of queues stays fast)."""
        if self.policies is None:
            return
        for q in list(self.queues.values()):
            if q.deleted:
                continue
            if name is not None:
                had = q.operator_policy if operator else q.policy
                if (had is None or had.name != name) and (new is None or not new.matches("queues", q.name, q.type)):
                    continue
            self.policies.apply_queue(q)
        if operator:
            return  # operator policies apply to queues only
        for x in list(self.exchanges.values()):
            if name is not None:
                had_x = x.policy
                if (had_x is None or had_x.name != name) and (new is None or not new.matches("exchanges", x.name)):
                    continue
            self.policies.apply_exchange(x)

    # ---- routing -------------------------------------------------------------------------------

    def route(self, exchange: str, routing_key: str, properties: bytes) -> list[Queue]:
        """The queues a message published to ``exchange`` reaches, each once.

        Follows exchange-to-exchange bindings (an exchange is visited at most once, so
        cycles end), whatever ``internal`` says: that only refuses direct publishes, which
        the caller checks. An exchange whose bindings match nothing (neither queue nor
        exchange) hands the message to its alternate exchange, if it has one, as
        rabbit_exchange:route1 does. A missing exchange routes nowhere. ``properties`` is the raw
        content-header property section; its headers table is decoded only if a headers
        exchange is on the way.
        """
        queues = self.queues
        if not exchange:  # the default exchange routes by queue name, and nothing is bound from it
            q = queues.get(routing_key)
            return [] if q is None else [q]
        x = self.exchanges.get(exchange)
        if x is None:
            return []
        if x.simple:  # the hot path: no headers, no exchange destinations
            names = x.route(routing_key)
            if len(names) == 1:  # the usual case, without building a list in a loop
                q = queues.get(names[0])
                return [] if q is None else [q]
            return [q for n in names if (q := queues.get(n)) is not None]
        headers: dict[str, Any] | None = None
        seen = {x.name}
        work = [x]
        found: dict[str, None] = {}  # queue names in order, each once
        while work:
            x = work.pop()
            if x.needs_headers and headers is None:
                headers = headers_table(properties)
            names = x.route(routing_key, headers)
            found.update(dict.fromkeys(names))
            xns = x.route_exchanges(routing_key, headers)
            if not names and not xns and x.alternate is not None:
                xns = [x.alternate]
            for xn in xns:
                if xn not in seen:
                    seen.add(xn)
                    nx = self.exchanges.get(xn)
                    if nx is not None:
                        work.append(nx)
        return [q for n in found if (q := queues.get(n)) is not None]
