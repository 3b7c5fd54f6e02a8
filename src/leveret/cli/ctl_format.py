"""Columns and output formatting for leveretctl, matching rabbitmqctl's.

Each listing (``queues``, ``connections``, ...) names its API path, its banner, its
default columns and one extractor per valid column (API JSON object -> value).
Table output renders values as rabbitmqctl does: booleans ``true``/``false``,
missing values empty, tables/lists as Erlang-ish terms (``[{"x-queue-type","quorum"}]``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import click

Item = dict[str, Any]
Extractor = Callable[[Item], Any]


@dataclass(slots=True)
class Settings:
    url: str = "http://127.0.0.1:15672"
    username: str = "guest"
    password: str = "guest"
    quiet: bool = False
    no_table_headers: bool = False
    formatter: str = "table"
    vhost: str = "/"
    timeout: float = 60.0


def q(segment: str) -> str:
    """URL-encode a path segment (``/`` -> ``%2F``)."""
    return quote(segment, safe="")


class Atoms(list[str]):
    """A list rabbitmqctl shows as Erlang atoms (user and vhost tags): ``[administrator, management]``;
    a JSON list in ``--formatter json``."""


class AtomPairs(dict[str, str]):
    """A mapping rabbitmqctl shows as pairs of atoms (a vhost's cluster_state):
    ``[{leveret@host, running}]``; a JSON object in ``--formatter json``."""


def term(value: Any) -> str:
    """rabbitmqctl's rendering of a value inside a table cell."""
    if value is None:
        return ""
    if isinstance(value, Atoms):
        return "[" + ", ".join(value) + "]"
    if isinstance(value, AtomPairs):
        return "[" + ", ".join(f"{{{k}, {v}}}" for k, v in value.items()) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    return _nested(value)


def _nested(value: Any) -> str:
    if isinstance(value, dict):
        return "[" + ",".join(f"{{{json.dumps(str(k))},{_nested(v)}}}" for k, v in value.items()) + "]"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_nested(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return term(value)


def _key(name: str) -> Extractor:
    return lambda item: item.get(name)


def _path(*names: str) -> Extractor:
    def get(item: Item) -> Any:
        cur: Any = item
        for n in names:
            cur = cur.get(n) if isinstance(cur, dict) else None
        return cur

    return get


@dataclass(frozen=True, slots=True)
class Listing:
    summary: str
    api: str  # path template; {vhost} is replaced by the encoded vhost
    banner_text: str  # {vhost} is replaced by the vhost
    default: tuple[str, ...]
    columns: dict[str, Extractor]
    per_vhost: bool = True

    def path(self, vhost: str) -> str:
        # "sort=" (empty) keeps the broker's own order, as rabbitmqctl lists; the HTTP API
        # otherwise sorts by vhost and name, as RabbitMQ's does.
        return self.api.replace("{vhost}", q(vhost)) + "?sort="

    def banner(self, vhost: str) -> str:
        return self.banner_text.replace("{vhost}", vhost)

    def keep(self, item: Item, vhost: str) -> bool:
        return True


def _keys(*names: str) -> dict[str, Extractor]:
    return {n: _key(n) for n in names}


QUEUE_COLUMNS: dict[str, Extractor] = {
    **_keys("name", "durable", "auto_delete", "arguments", "policy", "exclusive", "messages_ready",
            "messages_unacknowledged", "messages", "messages_ready_ram", "messages_unacknowledged_ram",
            "messages_ram", "messages_persistent", "message_bytes", "message_bytes_ready",
            "message_bytes_unacknowledged", "message_bytes_ram", "message_bytes_persistent",
            "head_message_timestamp", "consumers", "consumer_utilisation", "consumer_capacity", "memory",
            "state", "type", "leader", "members", "consumer_timeout", "exclusive_consumer_tag"),
    "owner_pid": _path("owner_pid_details", "name"),
    "pid": _key("node"),
    "vhost": _key("vhost"),
}  # fmt: skip

LISTINGS: dict[str, Listing] = {
    "queues": Listing(
        "List queues and their properties.",
        "/api/queues/{vhost}", "Listing queues for vhost {vhost} ...", ("name", "messages"), QUEUE_COLUMNS,
    ),
    "exchanges": Listing(
        "List exchanges.",
        "/api/exchanges/{vhost}", "Listing exchanges for vhost {vhost} ...", ("name", "type"),
        {**_keys("name", "type", "durable", "auto_delete", "internal", "arguments", "policy", "vhost")},
    ),
    "bindings": Listing(
        "List bindings.",
        "/api/bindings/{vhost}", "Listing bindings for vhost {vhost}...",
        ("source_name", "source_kind", "destination_name", "destination_kind", "routing_key", "arguments"),
        {
            "source_name": _key("source"), "source_kind": lambda i: "exchange",
            "destination_name": _key("destination"), "destination_kind": _key("destination_type"),
            "routing_key": _key("routing_key"), "arguments": _key("arguments"), "vhost": _key("vhost"),
        },
    ),
    "consumers": Listing(
        "List consumers.",
        "/api/consumers/{vhost}", "Listing consumers in vhost {vhost} ...",
        ("queue_name", "channel_pid", "consumer_tag", "ack_required", "prefetch_count", "active",
         "activity_status", "arguments"),
        {
            "queue_name": _path("queue", "name"), "channel_pid": _path("channel_details", "name"),
            "connection_name": _path("channel_details", "connection_name"),
            **_keys("consumer_tag", "ack_required", "prefetch_count", "active", "activity_status", "arguments",
                    "exclusive", "consumer_timeout"),
        },
    ),
    "connections": Listing(
        "List AMQP connections (all vhosts).",
        "/api/connections", "Listing connections ...", ("user", "peer_host", "peer_port", "state"),
        {
            **_keys("name", "user", "vhost", "peer_host", "peer_port", "host", "port", "state", "channels",
                    "protocol", "auth_mechanism", "ssl", "timeout", "frame_max", "channel_max",
                    "client_properties", "connected_at", "recv_oct", "send_oct", "type", "node"),
            "pid": _key("name"),
        },
        per_vhost=False,
    ),
    "vhosts": Listing(
        "List virtual hosts.",
        "/api/vhosts", "Listing vhosts ...", ("name",),
        {**_keys("name", "description", "default_queue_type", "tracing", "messages", "messages_ready",
                 "messages_unacknowledged"),
         "tags": lambda i: Atoms(i.get("tags") or []),
         "cluster_state": lambda i: AtomPairs(i.get("cluster_state") or {})},
        per_vhost=False,
    ),
    "channels": Listing(
        "List channels (all vhosts).",
        "/api/channels", "Listing channels ...", ("pid", "user", "consumer_count", "messages_unacknowledged"),
        {
            "pid": _key("name"), "connection": _path("connection_details", "name"),
            **_keys("name", "number", "user", "vhost", "transactional", "confirm", "consumer_count",
                    "messages_unacknowledged", "messages_unconfirmed", "messages_uncommitted",
                    "acks_uncommitted", "prefetch_count", "global_prefetch_count", "state"),
        },
        per_vhost=False,
    ),
}  # fmt: skip


def banner(s: Settings, text: str) -> None:
    if not s.quiet and s.formatter != "json":
        click.echo(text)


def print_rows(
    s: Settings, title: str, cols: list[str], rows: list[list[Any]], *, timeout_banner: bool = True,
    headers: bool = True,
) -> None:  # fmt: skip
    """Print a listing in the chosen format (table: banner, header, tab-separated rows).
    ``timeout_banner``: the ``Timeout: ...`` line first; ``headers`` False: never a header row."""
    if s.formatter == "json":
        objs = [json.dumps(dict(zip(cols, row, strict=True))) for row in rows]
        click.echo("[\n" + ",\n".join(objs) + ("\n" if objs else "") + "]")
        return
    if timeout_banner:
        banner(s, f"Timeout: {float(s.timeout)} seconds ...")
    banner(s, title)
    if headers and not s.no_table_headers:
        click.echo("\t".join(cols))
    for row in rows:
        click.echo("\t".join(term(v) for v in row))


def _mb(n: Any) -> str:
    return f"{(n or 0) / 1e6:.4f} mb"


def status_text(overview: Item, node: Item) -> str:
    """rabbitmqctl status-style sections."""
    lines = [
        "Runtime", "",
        f"OS PID: {node.get('os_pid', '')}",
        f"Product name: {overview.get('product_name')}",
        f"Product version: {overview.get('product_version')}",
        f"RabbitMQ version (compatibility): {overview.get('rabbitmq_version')}",
        f"Node name: {overview.get('node')}",
        f"Uptime (seconds): {int(node.get('uptime', 0)) // 1000}",
        "", "Data directory", "",
        f"Node data directory: {node.get('data_dir', '')}",
        "", "Listeners", "",
    ]  # fmt: skip
    lines.extend(
        f"Interface: {li.get('ip_address')}, port: {li.get('port')}, protocol: {li.get('protocol')}"
        for li in overview.get("listeners", [])
    )
    totals = overview.get("object_totals", {})
    qt = overview.get("queue_totals", {})
    ms = overview.get("message_stats", {})

    def rate(key: str) -> str:
        return f"{ms.get(key, 0)} total, {ms.get(f'{key}_details', {}).get('rate', 0.0)}/s"

    lines += [
        "", "Totals", "",
        f"Connection count: {totals.get('connections', 0)}",
        f"Channel count: {totals.get('channels', 0)}",
        f"Queue count: {totals.get('queues', 0)}",
        f"Consumer count: {totals.get('consumers', 0)}",
        f"Exchange count: {totals.get('exchanges', 0)}",
        f"Messages: {qt.get('messages', 0)} (ready {qt.get('messages_ready', 0)}, "
        f"unacknowledged {qt.get('messages_unacknowledged', 0)})",
        f"Published: {rate('publish')}",
        f"Delivered: {rate('deliver_get')}",
        f"Acknowledged: {rate('ack')}",
        f"Redelivered: {rate('redeliver')}",
        "", "Memory", "",
        f"Total memory used: {_mb(node.get('mem_used'))}",
        f"Consumer timeout (ms): {node.get('consumer_timeout')}",
        "", "File Descriptors", "",
        f"Total: {_or_unknown(node.get('fd_used'))}, limit: {_or_unknown(node.get('fd_total'))}",
        f"Sockets: {node.get('sockets_used', 0)}",
    ]  # fmt: skip
    return "\n".join(lines)


def _or_unknown(v: Any) -> str:
    return "unknown" if v is None else str(v)
