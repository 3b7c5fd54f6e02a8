"""Rebuilding the broker's durable state from what the store recovered (at start).

Separate from :mod:`leveret.model.broker` because it runs once, before any client, and knows the
store's record shapes; the broker only offers the adopt/new-vhost hooks it uses.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import TYPE_CHECKING

from leveret.model import arguments as A
from leveret.model import limits as L
from leveret.model.access import K_GLOBAL, K_VHOST, K_VHOST_LIMITS
from leveret.model.exchange import QUEUE, TYPES
from leveret.model.message import Message
from leveret.model.queue import Queue
from leveret.storage.base import ExchangeRecord, QueueRecord, Recovered, SetAside, describe

if TYPE_CHECKING:
    from leveret.model.broker import Broker

log = logging.getLogger("leveret.model")


def recover(broker: Broker, rec: Recovered, *, assume_delivered: bool = False) -> tuple[int, int]:
    """Rebuild durable state from the store. Returns (queues, messages) recovered.

    ``assume_delivered`` (after a crash) flags every message redelivered, since the
    delivered marks of the last moments may not have reached the disk.

    A record this version cannot apply (an exchange type it does not know, arguments it
    refuses, a message whose properties do not parse: written by another version, or by
    hand) is set aside in the store (:meth:`Store.set_aside`, which logs it by name)
    and skipped; the broker starts with everything else. ``recovery_set_aside`` counts them.
    """
    broker.next_msg_id = max(broker.next_msg_id, rec.next_msg_id)
    set_aside = broker.access.load(rec.definitions)
    for key in broker.policies.load(rec.definitions):
        set_aside += 1
        log.error("stored %s cannot be read; it is ignored", key)
    for key, text in rec.definitions.get(K_VHOST, {}).items():
        try:
            meta = json.loads(text)
            broker.adopt_vhost(str(meta["name"]), meta)
        except Exception as exc:
            set_aside += 1
            log.error("stored vhost %s cannot be read (%s); it is ignored", key, _reason(exc))
    for key, text in rec.definitions.get(K_VHOST_LIMITS, {}).items():
        try:
            broker.vhost_limits[key] = L.validate(json.loads(text), L.VHOST_KEYS, "limits")
        except Exception as exc:
            set_aside += 1
            log.error("stored limits of vhost %s cannot be read (%s); they are ignored", key, _reason(exc))
    broker.apply_limits()
    for key, text in rec.definitions.get(K_GLOBAL, {}).items():
        try:
            broker.global_parameters[key] = json.loads(text)["value"]
        except Exception as exc:
            set_aside += 1
            log.error("stored global parameter %s cannot be read (%s); it is ignored", key, _reason(exc))
    for x in rec.exchanges:
        try:
            _recover_exchange(broker, x)
        except Exception as exc:
            _set_aside(broker, x, _reason(exc))
            set_aside += 1
    nq = nmsg = 0
    for qr in rec.queues:
        try:
            q = _recover_queue(broker, qr)
        except Exception as exc:
            _set_aside(broker, qr, _reason(exc))
            set_aside += 1
            continue
        nq += 1
        bad: list[int] = []
        reason = ""
        for m in rec.messages.get((qr.vhost, qr.name), ()):
            try:
                q.restore(
                    Message(
                        m.msg_id, m.exchange, m.routing_key, m.properties, m.body, True,
                        m.delivered or assume_delivered,
                    ),
                    m.expires_at,
                )  # fmt: skip
            except Exception as exc:
                bad.append(m.msg_id)
                reason = reason or _reason(exc)
                continue
            nmsg += 1
        if bad:
            _set_aside(broker, (qr.vhost, qr.name, bad), reason)
            set_aside += len(bad)
    for b in rec.bindings:
        bvh = broker.vhosts.get(b.vhost)
        ends = None if bvh is None else bvh.queues if b.destination_type == QUEUE else bvh.exchanges
        if bvh is None or ends is None or b.source not in bvh.exchanges or b.destination not in ends:
            # Left behind by an older version (or set aside above): it would come back to life
            # under a queue or exchange declared later with the same name.
            _set_aside(broker, b, "its source or destination was not recovered")
            set_aside += 1
            continue
        try:
            bvh.recover_binding(b)
        except Exception as exc:
            src = bvh.exchanges.get(b.source)
            if src is not None:  # bind() may have kept it before its index refused it
                with contextlib.suppress(Exception):
                    src.unbind(b.destination_type, b.destination, b.routing_key, dict(b.arguments))
            _set_aside(broker, b, _reason(exc))
            set_aside += 1
    broker.recovery_set_aside = set_aside
    return nq, nmsg


def _set_aside(broker: Broker, what: SetAside | tuple[str, str, list[int]], reason: str) -> None:
    """Ask the store to quarantine ``what``; if even that fails, log it and go on."""
    try:
        if isinstance(what, tuple):
            broker.store.set_aside_messages(*what, reason)
        else:
            broker.store.set_aside(what, reason)
    except Exception:
        name = f"messages of queue '{what[1]}'" if isinstance(what, tuple) else describe(what)
        log.exception("could not set aside %s (%s); it is skipped but stays in the store", name, reason)


def _recover_exchange(broker: Broker, x: ExchangeRecord) -> None:
    vh = broker.vhosts.setdefault(x.vhost, broker.new_vhost(x.vhost))
    if x.name not in vh.exchanges:
        kind = TYPES.get(x.type)
        if kind is None:
            raise ValueError(f"unknown exchange type '{x.type}'")
        vh.exchanges[x.name] = kind(
            x.vhost, x.name, durable=True, auto_delete=x.auto_delete, internal=x.internal, arguments=x.arguments
        )
        broker.policies.apply_exchange(vh.exchanges[x.name])


def _recover_queue(broker: Broker, qr: QueueRecord) -> Queue:
    vh = broker.vhosts.setdefault(qr.vhost, broker.new_vhost(qr.vhost))
    q = Queue(
        qr.vhost, qr.name, durable=True, exclusive_owner=None, auto_delete=qr.auto_delete,
        arguments=dict(qr.arguments), store=broker.store, page_limit=broker.page_limit, host=broker,
        consumer_timeout=A.ms_argument(qr.arguments, "x-consumer-timeout", f"queue '{qr.name}'"),
    )  # fmt: skip
    broker.policies.apply_queue(q)  # before its messages come back: a policy's message-ttl applies to them
    vh.queues[qr.name] = q
    vh.exchanges[""].bind(QUEUE, qr.name, qr.name, {})
    return q


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:300] + "..."
