"""RabbitMQ definitions JSON: export the topology, import it back.

The format is RabbitMQ's (docs/definitions.md), so a file exported here loads into
a RabbitMQ cluster with ``rabbitmqctl import_definitions`` and the other way round.

Export contract: user-declared exchanges (not the default exchange, not ``amq.*``),
non-exclusive queues (exclusive ones die with their connection, RabbitMQ skips them
too), and bindings whose source is not the default exchange. Users carry a
``rabbit_password_hashing_sha256`` hash (4-byte salt + SHA-256(salt + password),
base64), which RabbitMQ accepts.

Import contract: vhosts must already exist (Leveret has a fixed vhost set);
exchanges are declared before queues, queues before bindings; declaring something
that already exists with the same properties is a no-op; a mismatch raises the
backend's :class:`~leveret.errors.AMQPError` (406). Users, permissions, policies and
parameters are accepted and ignored (reported in :class:`ImportReport.ignored`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from leveret.errors import AMQPError, ReplyCode
from leveret.management.backend import Backend
from leveret.management.shapes import (
    RABBITMQ_COMPAT_VERSION,
    binding_definition,
    exchange_definition,
    jsonable,
)
from leveret.model.access import AccessControl
from leveret.model.snapshots import QueueSnapshot
from leveret.model.validation import check_shortstr

#: Declarations per event-loop turn when importing over HTTP.
IMPORT_SLICE = 50


def queue_definition(q: QueueSnapshot) -> dict[str, Any]:
    """A queue as the definitions document lists it."""
    return {
        "name": q.name,
        "vhost": q.vhost,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "arguments": jsonable(q.arguments),
        "type": q.type,
    }


def export_definitions(
    backend: Backend, access: AccessControl, vhost: str | None = None, *, with_queues: bool = True
) -> dict[str, Any]:
    """The definitions document for the whole broker, or for one ``vhost``; ``with_queues=False``
    leaves ``queues`` empty for a caller that adds them a slice at a time."""
    info = backend.node_info()
    vhosts = [v for v in backend.vhosts() if vhost is None or v == vhost]
    queues = [queue_definition(q) for q in backend.queues(vhost) if not q.exclusive] if with_queues else []
    exchanges = [
        exchange_definition(x)
        for x in backend.exchanges(vhost)
        if x.name != "" and not x.name.startswith("amq.")
    ]
    bindings = [
        binding_definition(b)
        for b in backend.bindings(vhost)
        if b.source != ""
    ]
    doc: dict[str, Any] = {
        "rabbit_version": RABBITMQ_COMPAT_VERSION,
        "rabbitmq_version": RABBITMQ_COMPAT_VERSION,
        "product_name": info.product_name,
        "product_version": info.product_version,
    }
    if vhost is None:
        doc.update(
            users=[u.record() for _, u in sorted(access.users.items())],
            vhosts=[{"name": v, "limits": [], "metadata": {"description": "", "tags": []}} for v in vhosts],
            permissions=[p.record() for _, p in sorted(access.permissions.items())],
            topic_permissions=[t.record() for _, t in sorted(access.topic_permissions.items())],
            parameters=[],
            global_parameters=[{"name": "cluster_name", "value": info.node}],
        )
    doc.update(policies=[], queues=queues, exchanges=exchanges, bindings=bindings)
    return doc


@dataclass(slots=True)
class ImportReport:
    exchanges: int = 0
    queues: int = 0
    bindings: int = 0
    ignored: list[str] = field(default_factory=list)


def check_name(kind: str, name: str) -> str:
    """``name`` if AMQP could carry it (a shortstr of UTF-8); else 406, which HTTP answers as 400
    ``bad_request``. The model's own check (one text everywhere), made here too because a request
    is refused before it reaches a backend."""
    check_shortstr(kind if kind == "routing key" else f"{kind} name", name)
    return name


def _bad(detail: str) -> AMQPError:
    return AMQPError(ReplyCode.PRECONDITION_FAILED, detail)


def _items(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _bad(f"definitions key '{key}' must be a list of objects")
    return value


def import_definitions(backend: Backend, doc: Any, vhost: str | None = None) -> ImportReport:
    """Declare everything in ``doc``; ``vhost`` (per-vhost import) overrides each item's vhost.

    Raises AMQPError: 406 for a malformed document or an inequivalent redeclaration,
    404 for an unknown vhost.
    """
    report = ImportReport()
    for _ in import_steps(backend, doc, report, vhost):
        pass
    return report


async def import_definitions_sliced(
    backend: Backend, doc: Any, vhost: str | None = None, slice_size: int = IMPORT_SLICE
) -> ImportReport:
    """:func:`import_definitions`, yielding to the event loop every ``slice_size`` declarations,
    so importing 200,000 queues does not stall AMQP. What was declared before an error stays."""
    report = ImportReport()
    for n, _ in enumerate(import_steps(backend, doc, report, vhost), 1):
        if n % slice_size == 0:
            await asyncio.sleep(0)
    return report


def import_steps(backend: Backend, doc: Any, report: ImportReport, vhost: str | None = None) -> Iterator[None]:
    """Declare ``doc``'s objects one at a time, yielding after each (see :func:`import_definitions`)."""
    if not isinstance(doc, dict):
        raise _bad("definitions must be a JSON object")
    known = set(backend.vhosts())
    for key in ("users", "permissions", "topic_permissions", "policies", "parameters", "global_parameters"):
        if doc.get(key):
            report.ignored.append(key)
    for v in _items(doc, "vhosts"):
        if str(v.get("name")) not in known:
            raise AMQPError(ReplyCode.NOT_FOUND, f"no vhost '{v.get('name')}' (Leveret cannot create vhosts)")

    def vh(item: dict[str, Any]) -> str:
        name = vhost if vhost is not None else str(item.get("vhost", "/"))
        if name not in known:
            raise AMQPError(ReplyCode.NOT_FOUND, f"no vhost '{name}'")
        return name

    try:
        for x in _items(doc, "exchanges"):
            if str(x["name"]).startswith("amq.") or x["name"] == "":
                continue
            backend.declare_exchange(
                vh(x),
                check_name("exchange", str(x["name"])),
                str(x.get("type", "direct")),
                bool(x.get("durable", True)),
                bool(x.get("auto_delete", False)),
                bool(x.get("internal", False)),
                dict(x.get("arguments") or {}),
            )
            report.exchanges += 1
            yield
        for q in _items(doc, "queues"):
            args = dict(q.get("arguments") or {})
            if q.get("type") and "x-queue-type" not in args and q["type"] != "classic":
                args["x-queue-type"] = q["type"]
            backend.declare_queue(
                vh(q), check_name("queue", str(q["name"])), bool(q.get("durable", True)), bool(q.get("auto_delete", False)), args
            )
            report.queues += 1
            yield
        for b in _items(doc, "bindings"):
            backend.bind(
                vh(b),
                check_name("exchange", str(b["source"])),
                check_name(str(b.get("destination_type", "queue")), str(b["destination"])),
                str(b.get("destination_type", "queue")),
                check_name("routing key", str(b.get("routing_key", ""))),
                dict(b.get("arguments") or {}),
            )
            report.bindings += 1
            yield
    except (KeyError, TypeError, ValueError) as e:
        raise _bad(f"malformed definitions: {e!r}") from e
