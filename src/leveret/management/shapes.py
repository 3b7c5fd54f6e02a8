"""Snapshots -> RabbitMQ-shaped JSON objects (rabbit_mgmt_format.erl's job).

Every function here is pure: it takes frozen snapshots (and rates from a
:class:`~leveret.management.rates.RateSampler`) and returns plain ``dict``/``list``
values that :func:`json.dumps` accepts. Field names and value types follow
RabbitMQ's management API (3.13), so scripts written against RabbitMQ keep working.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus

from leveret.management.backend import NodeInfo
from leveret.management.rates import QUEUE_DEPTHS, QUEUE_STATS, TOTALS_STATS, RateSampler
from leveret.model.snapshots import (
    BindingSnapshot,
    ChannelSnapshot,
    ConnectionSnapshot,
    ConsumerSnapshot,
    ExchangeSnapshot,
    QueueSnapshot,
    Totals,
)

#: The RabbitMQ release whose management API and CLI output Leveret mirrors. Tools
#: that gate features on ``rabbitmq_version`` see a version they know.
RABBITMQ_COMPAT_VERSION = "3.13.7"

# Memory estimate per queue: RabbitMQ reports the Erlang process memory; we report a
# fixed overhead plus the bytes held plus a per-message bookkeeping cost.
QUEUE_BASE_MEMORY = 10_000
PER_MESSAGE_MEMORY = 200

JSON = dict[str, Any]


#: Tables and arrays deeper than this are shown as a placeholder, so one odd queue argument or
#: message header cannot make a listing fail (json.dumps recurses too).
MAX_JSON_DEPTH = 100


def jsonable(value: Any, depth: int = 0) -> Any:
    """Make AMQP field-table values JSON-safe (bytes -> str, decimals/other -> str)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, Mapping | list | tuple) and depth >= MAX_JSON_DEPTH:
        return "<nested too deeply>"
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, depth + 1) for v in value]
    return str(value)


def details(rate: float) -> JSON:
    return {"rate": round(rate, 2)}


def channel_name(connection: str, number: int) -> str:
    """RabbitMQ names a channel ``"<connection name> (<number>)"``."""
    return f"{connection} ({number})"


def queue_memory(q: QueueSnapshot) -> int:
    return QUEUE_BASE_MEMORY + q.message_bytes + PER_MESSAGE_MEMORY * q.messages


def queue_json(q: QueueSnapshot, node: str, rates: RateSampler | None) -> JSON:
    """One element of ``GET /api/queues``."""
    r = rates.queue_rates(q.vhost, q.name) if rates else {k: 0.0 for k in (*(k for _, k in QUEUE_STATS), *QUEUE_DEPTHS)}
    stats: JSON = {}
    for field_name, key in QUEUE_STATS:
        stats[key] = int(getattr(q, field_name))
        stats[f"{key}_details"] = details(r[key])
    # RabbitMQ reports plain "deliver" beside "deliver_get"; the model counts them together.
    stats["deliver"] = stats["deliver_get"]
    stats["deliver_details"] = stats["deliver_get_details"]
    out: JSON = {
        "name": q.name,
        "vhost": q.vhost,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive,
        "arguments": jsonable(q.arguments),
        "type": q.type,
        "state": "running",
        "node": node,
        "leader": node,
        "members": [node],
        "policy": q.policy,
        "operator_policy": q.operator_policy,
        "effective_policy_definition": dict(q.effective_policy_definition),
        "exclusive_consumer_tag": None,
        "head_message_timestamp": None,
        "messages": q.messages,
        "messages_details": details(r["messages"]),
        "messages_ready": q.messages_ready,
        "messages_ready_details": details(r["messages_ready"]),
        "messages_unacknowledged": q.messages_unacknowledged,
        "messages_unacknowledged_details": details(r["messages_unacknowledged"]),
        "messages_ram": q.messages,
        "messages_ready_ram": q.messages_ready,
        "messages_unacknowledged_ram": q.messages_unacknowledged,
        "messages_persistent": q.messages if q.durable else 0,
        "messages_paged_out": 0,
        "message_bytes": q.message_bytes,
        "message_bytes_ready": q.message_bytes_ready,
        "message_bytes_unacknowledged": q.message_bytes_unacknowledged,
        "message_bytes_ram": q.message_bytes,
        "message_bytes_persistent": q.message_bytes if q.durable else 0,
        "message_bytes_paged_out": 0,
        "consumers": q.consumers,
        "consumer_capacity": 1.0 if q.consumers else 0.0,
        "consumer_utilisation": 1.0 if q.consumers else 0.0,
        "consumer_timeout": q.consumer_timeout,
        "memory": queue_memory(q),
        "storage_version": 2,
        "message_stats": stats,
    }
    if q.exclusive_owner is not None:
        out["owner_pid_details"] = {"name": q.exclusive_owner}
    return out


def exchange_definition(x: ExchangeSnapshot) -> JSON:
    """An exchange as the definitions document lists it (and the core of ``GET /api/exchanges``)."""
    return {
        "name": x.name,
        "vhost": x.vhost,
        "type": x.type,
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": jsonable(x.arguments),
    }


def exchange_json(x: ExchangeSnapshot) -> JSON:
    out = {**exchange_definition(x), "user_who_performed_action": "rmq-internal"}
    if x.policy:  # RabbitMQ shows the key only when a policy applies
        out["policy"] = x.policy
    return out


def properties_key(routing_key: str, arguments: Mapping[str, Any]) -> str:
    """RabbitMQ's binding ``properties_key``: ``~`` for an empty key without arguments."""
    if not arguments:
        return "~" if routing_key == "" else _quote_binding(routing_key)
    # RabbitMQ: base64url of a 32-bit hash of the arguments (erlang:phash2, not reproducible here)
    canonical = json.dumps(arguments, sort_keys=True, default=repr).encode()
    digest = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()[:4]).decode().rstrip("=")
    return f"{_quote_binding(routing_key)}~{digest}"


def _quote_binding(routing_key: str) -> str:
    """rabbit_mgmt_format:quote_binding: ``quote_plus`` (letters, digits, ``_.-`` kept, space as
    ``+``), then ``~`` as ``%7E`` (so ``~`` only ever separates the arguments' hash)."""
    return quote_plus(routing_key, safe="").replace("~", "%7E")


def binding_definition(b: BindingSnapshot) -> JSON:
    """A binding as the definitions document lists it (and the core of ``GET /api/bindings``)."""
    return {
        "source": b.source,
        "vhost": b.vhost,
        "destination": b.destination,
        "destination_type": b.destination_type,
        "routing_key": b.routing_key,
        "arguments": jsonable(b.arguments),
    }


def binding_json(b: BindingSnapshot) -> JSON:
    return {**binding_definition(b), "properties_key": properties_key(b.routing_key, b.arguments)}


def connection_json(c: ConnectionSnapshot, node: str) -> JSON:
    return {
        "name": c.name,
        "node": node,
        "vhost": c.vhost,
        "user": c.user,
        "user_who_performed_action": c.user,
        "state": c.state,
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "auth_mechanism": "PLAIN",
        "ssl": False,
        "peer_host": c.peer_host,
        "peer_port": c.peer_port,
        "host": c.host,
        "port": c.port,
        "channels": c.channels,
        "channel_max": c.channel_max,
        "frame_max": c.frame_max,
        "timeout": c.heartbeat,
        "connected_at": int(c.connected_at * 1000),
        "client_properties": jsonable(c.client_properties),
        "recv_oct": c.recv_oct,
        "send_oct": c.send_oct,
        "recv_oct_details": details(0.0),
        "send_oct_details": details(0.0),
    }


def channel_json(ch: ChannelSnapshot, node: str, peers: Mapping[str, ConnectionSnapshot]) -> JSON:
    conn = peers.get(ch.connection)
    return {
        "name": channel_name(ch.connection, ch.number),
        "number": ch.number,
        "node": node,
        "vhost": ch.vhost,
        "user": ch.user,
        "user_who_performed_action": ch.user,
        "state": ch.state,
        "connection_details": {
            "name": ch.connection,
            "peer_host": conn.peer_host if conn else None,
            "peer_port": conn.peer_port if conn else None,
        },
        "consumer_count": ch.consumer_count,
        "messages_unacknowledged": ch.messages_unacknowledged,
        "messages_unconfirmed": 0,
        "messages_uncommitted": ch.messages_uncommitted,
        "acks_uncommitted": ch.acks_uncommitted,
        "prefetch_count": ch.prefetch_count,
        "global_prefetch_count": ch.global_prefetch_count,
        "confirm": ch.confirm,
        "transactional": ch.transactional,
    }


def consumer_json(c: ConsumerSnapshot, node: str, peers: Mapping[str, ConnectionSnapshot]) -> JSON:
    conn = peers.get(c.connection)
    return {
        "consumer_tag": c.consumer_tag,
        "queue": {"name": c.queue, "vhost": c.vhost},
        "channel_details": {
            "name": channel_name(c.connection, c.channel),
            "number": c.channel,
            "connection_name": c.connection,
            "peer_host": conn.peer_host if conn else None,
            "peer_port": conn.peer_port if conn else None,
            "user": conn.user if conn else None,
            "node": node,
        },
        "ack_required": c.ack_required,
        "exclusive": c.exclusive,
        "prefetch_count": c.prefetch_count,
        "arguments": jsonable(c.arguments),
        "consumer_timeout": c.consumer_timeout,
        "active": True,
        "activity_status": "up",
    }


def message_stats(
    totals: Totals, rates: RateSampler | None, given: Mapping[str, float] | None = None
) -> JSON:
    """Overview ``message_stats``: cumulative counts plus ``*_details.rate`` (the broker's rates
    from ``rates``, or ``given`` ones keyed like :data:`TOTALS_STATS`)."""
    r = given if given is not None else rates.totals_rates() if rates else {k: 0.0 for _, k in TOTALS_STATS}
    out: JSON = {}
    for field_name, key in TOTALS_STATS:
        out[key] = int(getattr(totals, field_name))
        out[f"{key}_details"] = details(r[key])
    out["deliver"] = out["deliver_get"]
    out["deliver_details"] = out["deliver_get_details"]
    return out


def listener_json(listener: Mapping[str, Any], node: str) -> JSON:
    out = {"node": node, "socket_opts": {}}
    out.update(jsonable(listener))
    return out


def node_json(info: NodeInfo, now: float) -> JSON:
    """One element of ``GET /api/nodes`` (the fields leveretctl status reads)."""
    return {
        "name": info.node,
        "type": "disc",
        "running": True,
        "os_pid": str(info.pid),
        "mem_used": info.rss_bytes,
        "fd_used": info.fd_used,
        "fd_total": info.fd_total,
        "sockets_used": info.sockets_used,
        "uptime": max(0, int((now - info.started_at) * 1000)),
        "product_name": info.product_name,
        "product_version": info.product_version,
        "rabbitmq_version": RABBITMQ_COMPAT_VERSION,
        "data_dir": info.data_dir,
        "consumer_timeout": info.consumer_timeout,
        "listeners": [listener_json(x, info.node) for x in info.listeners],
    }
