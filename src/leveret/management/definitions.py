"""RabbitMQ definitions JSON: export the topology, users and permissions; import them back.

The format is RabbitMQ's (docs/definitions.md), so a file exported here loads into
a RabbitMQ cluster with ``rabbitmqctl import_definitions`` and the other way round.

Export contract: users with their stored hash (``rabbit_password_hashing_sha256``: 4-byte salt +
SHA-256(salt + password), base64, which RabbitMQ accepts), vhosts with their description and tags
(``metadata``), permissions and topic permissions; user-declared exchanges (not the default
exchange, not ``amq.*``), non-exclusive queues (exclusive ones die with their connection,
RabbitMQ skips them too), and bindings whose source is not the default exchange.

Import contract, in RabbitMQ's order: users (:func:`~leveret.management.access_api.apply_user`,
RabbitMQ's put_user: a ``password_hash`` with its ``hashing_algorithm``, or one picked from the
file's version, or a cleartext ``password``; ``tags`` a list or a comma string), vhosts (created,
or their description and tags updated), permissions and topic permissions, then exchanges, queues
and bindings. The users, vhosts and permissions are all checked before any is applied: an entry
RabbitMQ would refuse, a bad regex, or a permission naming a user or vhost that neither the file
nor the broker has is a 406 naming the entry, and none of them is applied. Declaring an object
that already exists with the same properties is a no-op; a mismatch raises the backend's
:class:`~leveret.errors.AMQPError` (406). The import acts as the broker itself (no permission
checks; the HTTP route is administrator only). Policies are applied before the objects; vhost
limits travel as RabbitMQ 3.10 writes them, a ``parameters`` entry ``{"component": "vhost-limits",
"name": "limits", "vhost": v, "value": {"max-queues": N, ...}}`` (the import replaces the vhost's
limits with ``value``), applied before the queues as rabbit_definitions does.

Global parameters are exported and imported as RabbitMQ does (any name, any JSON value, kept in the
data directory), except the node identity (below).

Nothing is dropped silently. What Leveret cannot honour (another runtime parameter component such
as ``shovel`` or ``federation-upstream``, a queue type other than classic and quorum, an exchange
type from a plugin) is refused before anything is applied: one 406 that names every such object.
The node identity (the ``cluster_name`` and ``internal_cluster_id`` global parameters, which
describe the exporting node; the export writes this node's name as ``cluster_name``) and users, vhosts and
permissions in a per-vhost import (as in RabbitMQ), or users and permissions when no ``access`` is
given, are skipped and listed in :attr:`ImportReport.ignored` (the HTTP route returns them in the
``X-Leveret-Ignored`` header, which leveretctl prints).

Versions: ``rabbit_version`` and ``rabbitmq_version`` say which RabbitMQ definitions format the file
is in, :data:`DEFINITIONS_FORMAT_VERSION`, the one the tests in tests/migration import into and
export from a real RabbitMQ (RabbitMQ reads the version only to pick the hashing algorithm of a
hash given without one: any 3.6+ reads as SHA-256); ``product_name`` and ``product_version`` name
Leveret and its own version (RabbitMQ ignores both).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from leveret.errors import AMQPError, ReplyCode
from leveret.management.access_api import apply_user, tags_of
from leveret.management.backend import Backend
from leveret.management.shapes import (
    binding_definition,
    exchange_definition,
    jsonable,
)
from leveret.model import limits as L
from leveret.model.access import AccessControl, Permission, TopicPermission, check_user_name
from leveret.model.arguments import QUEUE_TYPES
from leveret.model.exchange import TYPES as EXCHANGE_TYPES
from leveret.model.policy import PolicyError
from leveret.model.snapshots import QueueSnapshot
from leveret.model.validation import check_shortstr, check_vhost_name

#: Declarations per event-loop turn when importing over HTTP.
IMPORT_SLICE = 50

#: The RabbitMQ definitions format written (``rabbit_version``): RabbitMQ 3.10's, which
#: tests/migration checks against a real 3.10 node both ways.
DEFINITIONS_FORMAT_VERSION = "3.10.8"

#: The runtime parameter component that carries vhost limits in RabbitMQ's definitions.
VHOST_LIMITS = "vhost-limits"

#: Global parameters that describe the exporting node, not the topology: skipped (and reported).
NODE_IDENTITY = ("cluster_name", "internal_cluster_id")


def vhost_limit_parameters(backend: Backend, vhost: str | None = None) -> list[dict[str, Any]]:
    """Vhost limits as RabbitMQ 3.10 exports them: one ``vhost-limits`` parameter per vhost."""
    return [
        {"value": dict(row["value"]), "vhost": row["vhost"], "component": VHOST_LIMITS, "name": "limits"}
        for row in backend.vhost_limits(vhost)
        if row["value"]
    ]


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
    policies = backend.policies(vhost)
    limits = {row["vhost"]: row["value"] for row in backend.vhost_limits(vhost)}
    if vhost is not None:
        # RabbitMQ's per-vhost shape (GET /api/definitions/{vhost}): no users, vhosts or permissions,
        # no product keys, and queues, exchanges and bindings without their "vhost" (the import
        # names it).
        for item in (*queues, *exchanges, *bindings):
            item.pop("vhost", None)
        return {"rabbit_version": DEFINITIONS_FORMAT_VERSION, "parameters": vhost_limit_parameters(backend, vhost),
                "policies": policies,
                "queues": queues, "exchanges": exchanges, "bindings": bindings}  # fmt: skip
    doc: dict[str, Any] = {
        "rabbit_version": DEFINITIONS_FORMAT_VERSION,
        "rabbitmq_version": DEFINITIONS_FORMAT_VERSION,
        "product_name": info.product_name,
        "product_version": info.product_version,
    }
    doc.update(
        users=[u.record() for _, u in sorted(access.users.items())],
        # "limits" as RabbitMQ 3.10 writes it (a proplist: [[key, value]]); the import reads the
        # vhost-limits parameters instead, as RabbitMQ does
        vhosts=[{"name": v, "limits": sorted([k, n] for k, n in limits.get(v, {}).items()),
                 "metadata": backend.vhost_metadata(v)} for v in vhosts],  # fmt: skip
        permissions=[p.record() for _, p in sorted(access.permissions.items())],
        topic_permissions=[t.record() for _, t in sorted(access.topic_permissions.items())],
        parameters=vhost_limit_parameters(backend),
        global_parameters=[{"name": "cluster_name", "value": info.node}] + [
            {"name": k, "value": v} for k, v in sorted(backend.global_parameters().items()) if k not in NODE_IDENTITY
        ],
    )
    doc.update(policies=policies, queues=queues, exchanges=exchanges, bindings=bindings)
    return doc


@dataclass(slots=True)
class ImportReport:
    users: int = 0
    vhosts: int = 0
    permissions: int = 0
    topic_permissions: int = 0
    exchanges: int = 0
    queues: int = 0
    bindings: int = 0
    policies: int = 0
    parameters: int = 0
    global_parameters: int = 0
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


def import_definitions(
    backend: Backend, doc: Any, vhost: str | None = None, *, access: AccessControl | None = None
) -> ImportReport:
    """Apply everything in ``doc``; ``vhost`` (per-vhost import) overrides each item's vhost.
    Users and permissions go to ``access``.

    Raises AMQPError: 406 for a malformed document or entry or an inequivalent redeclaration,
    404 for an unknown vhost.
    """
    report = ImportReport()
    for _ in import_steps(backend, doc, report, vhost, access=access):
        pass
    return report


async def import_definitions_sliced(
    backend: Backend, doc: Any, vhost: str | None = None, slice_size: int = IMPORT_SLICE, *,
    access: AccessControl | None = None,
) -> ImportReport:  # fmt: skip
    """:func:`import_definitions`, yielding to the event loop every ``slice_size`` declarations,
    so importing 200,000 queues does not stall AMQP. What was declared before an error stays."""
    report = ImportReport()
    for n, _ in enumerate(import_steps(backend, doc, report, vhost, access=access), 1):
        if n % slice_size == 0:
            await asyncio.sleep(0)
    return report


def _str(entry: dict[str, Any], key: str, what: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        raise _bad(f"{what}: '{key}' must be a string")
    return value


def _vhost_entry(v: dict[str, Any]) -> tuple[str, str, list[str]]:
    """(name, description, tags) of a vhosts entry: the keys, or its ``metadata``'s (RabbitMQ's rule)."""
    name = _str(v, "name", "vhost entry")
    meta = v.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    description = v.get("description", meta.get("description", "")) or ""
    if not isinstance(description, str):
        raise _bad(f"vhost '{name}': description must be a string")
    try:
        tags = list(tags_of(v.get("tags", meta.get("tags")) or []))
        check_vhost_name(name)
    except ValueError as e:
        raise _bad(f"vhost '{name}': {e}") from None
    except AMQPError as e:
        raise _bad(f"vhost '{name}': {e.detail}") from None
    return name, description, tags


def _check_access(
    doc: dict[str, Any], backend: Backend, access: AccessControl, vhosts: list[tuple[str, str, list[str]]]
) -> None:
    """Every users, permissions and topic_permissions entry as RabbitMQ would take it, before any is
    applied: users are tried on a scratch AccessControl."""
    version = doc.get("rabbitmq_version", doc.get("rabbit_version"))
    scratch = AccessControl(loopback_users=())
    for u in _items(doc, "users"):
        name = _str(u, "name", "user entry")
        try:
            check_user_name(name)
            apply_user(scratch, name, u, version)
        except ValueError as e:
            raise _bad(f"user '{name}': {e}") from None
    users = set(scratch.users) | set(access.users)
    known = {name for name, _, _ in vhosts} | set(backend.vhosts())
    for kind in ("permissions", "topic_permissions"):
        for p in _items(doc, kind):
            what = "permission" if kind == "permissions" else "topic permission"
            user, vh = _str(p, "user", f"{what} entry"), _str(p, "vhost", f"{what} entry")
            label = f"{what} for user '{user}' in vhost '{vh}'"
            if user not in users:
                raise _bad(f"{label}: no such user '{user}' (not in the file's users nor the broker's)")
            if vh not in known:
                raise _bad(f"{label}: no such vhost '{vh}' (not in the file's vhosts nor the broker's)")
            try:
                if kind == "permissions":
                    Permission(user, vh, p.get("configure"), p.get("write"), p.get("read"))  # type: ignore[arg-type]
                else:
                    TopicPermission(user, vh, _str(p, "exchange", label), p.get("write"), p.get("read"))  # type: ignore[arg-type]
            except ValueError as e:
                raise _bad(f"{label}: {e}") from None


def _access_steps(
    doc: dict[str, Any], backend: Backend, report: ImportReport, access: AccessControl | None
) -> Iterator[None]:
    """Users, vhosts, permissions and topic permissions of a whole-broker import."""
    vhosts = [_vhost_entry(v) for v in _items(doc, "vhosts")]
    if access is None:
        for key in ("users", "permissions", "topic_permissions"):
            if doc.get(key):
                report.ignored.append(key)
    else:
        _check_access(doc, backend, access, vhosts)
        version = doc.get("rabbitmq_version", doc.get("rabbit_version"))
        for u in _items(doc, "users"):
            apply_user(access, u["name"], u, version)
            report.users += 1
            yield
    for name, description, tags in vhosts:
        backend.add_vhost(name, description, tags)
        report.vhosts += 1
        yield
    if access is None:
        return
    for p in _items(doc, "permissions"):
        access.set_permissions(p["user"], p["vhost"], p["configure"], p["write"], p["read"])
        report.permissions += 1
        yield
    for t in _items(doc, "topic_permissions"):
        access.set_topic_permissions(t["user"], t["vhost"], t["exchange"], t["write"], t["read"])
        report.topic_permissions += 1
        yield


def _refusals(doc: dict[str, Any]) -> list[str]:
    """Every entry of ``doc`` that Leveret cannot honour, each naming its object (empty: all can be)."""
    out: list[str] = []
    for p in _items(doc, "parameters"):
        component = p.get("component")
        if component != VHOST_LIMITS:
            out.append(f"parameter '{p.get('name')}' of component '{component}' in vhost '{p.get('vhost', '/')}'"
                       " (Leveret has only the vhost-limits component; no shovel or federation plugins)")  # fmt: skip
    out.extend(f"global parameter {g.get('name')!r} (a name must be a string and a value is required)"
               for g in _items(doc, "global_parameters") if not isinstance(g.get("name"), str) or "value" not in g)  # fmt: skip
    for q in _items(doc, "queues"):
        args = q.get("arguments") or {}
        qtype = args.get("x-queue-type", q.get("type")) if isinstance(args, dict) else q.get("type")
        if qtype is not None and qtype not in QUEUE_TYPES:
            out.append(f"queue '{q.get('name')}' in vhost '{q.get('vhost', '/')}' of type '{qtype}'"
                       f" (Leveret has {' and '.join(QUEUE_TYPES)} queues)")  # fmt: skip
    for x in _items(doc, "exchanges"):
        xtype = x.get("type", "direct")
        if xtype not in EXCHANGE_TYPES:
            out.append(f"exchange '{x.get('name')}' in vhost '{x.get('vhost', '/')}' of type '{xtype}'"
                       f" (Leveret has {', '.join(EXCHANGE_TYPES)} exchanges)")  # fmt: skip
    return out


def import_steps(
    backend: Backend, doc: Any, report: ImportReport, vhost: str | None = None, *,
    access: AccessControl | None = None,
) -> Iterator[None]:  # fmt: skip
    """Apply ``doc``'s entries one at a time, yielding after each (see :func:`import_definitions`)."""
    if not isinstance(doc, dict):
        raise _bad("definitions must be a JSON object")
    refused = _refusals(doc)
    if refused:
        raise _bad("definitions not imported: Leveret cannot honour " + "; ".join(refused))
    for g in _items(doc, "global_parameters"):
        if g["name"] in NODE_IDENTITY or vhost is not None:
            report.ignored.append(f"global parameter {g['name']} (names the exporting node)"
                                  if g["name"] in NODE_IDENTITY else f"global parameter {g['name']}")  # fmt: skip
    if vhost is None:
        yield from _access_steps(doc, backend, report, access)
        for g in _items(doc, "global_parameters"):
            if g["name"] not in NODE_IDENTITY:
                backend.set_global_parameter(g["name"], g["value"])
                report.global_parameters += 1
                yield
    else:  # RabbitMQ's per-vhost import takes only the vhost's objects
        for key in ("users", "vhosts", "permissions", "topic_permissions"):
            if doc.get(key):
                report.ignored.append(key)
    known = set(backend.vhosts())

    def vh(item: dict[str, Any]) -> str:
        name = vhost if vhost is not None else str(item.get("vhost", "/"))
        if name not in known:
            raise AMQPError(ReplyCode.NOT_FOUND, f"no vhost '{name}'")
        return name

    try:
        for p in _items(doc, "parameters"):  # vhost-limits only (_refusals): before the queues, as RabbitMQ
            where = vh(p)
            try:
                limits = L.validate(p.get("value"), L.VHOST_KEYS, "limits")
            except ValueError as e:
                raise _bad(f"vhost limits of vhost '{where}': {e}") from None
            backend.clear_vhost_limits(where, "all")
            if limits:
                backend.set_vhost_limits(where, limits)
            report.parameters += 1
            yield
        for p in _items(doc, "policies"):  # before the objects they apply to, as rabbit_definitions
            name = str(p["name"])
            try:
                backend.set_policy(
                    vh(p), name, p.get("pattern"), p.get("definition"), p.get("priority", 0), p.get("apply-to", "all")
                )
            except PolicyError as e:
                raise _bad(f"policy '{name}': Validation failed\n\n{e}") from None
            report.policies += 1
            yield
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
