"""Prometheus metrics in RabbitMQ's names (rabbitmq_prometheus plugin, port 15692).

``build_metrics_app(backend)`` serves:

* ``GET /metrics``: aggregated values, as RabbitMQ does by default: queue gauges are
  summed over all queues and carry no labels.
* ``GET /metrics/per-object``: the same families, queue gauges and counters labelled
  ``{vhost, queue}`` one sample per queue. These name every vhost and queue, so this endpoint
  needs HTTP basic auth of a user tagged ``monitoring`` or ``administrator`` (the users of the
  broker's :class:`~leveret.model.access.AccessControl`, with the management API's login
  throttle): 401 ``{"error": "not_authorised", ...}`` with ``WWW-Authenticate`` otherwise
  ("Login failed", "Not monitor user"). Prometheus scrapes it with ``basic_auth`` in its
  ``scrape_config``.

Output is the Prometheus text exposition format 0.0.4, written directly (no runtime
dependency); tests parse it with ``prometheus_client.parser``. Every value is read
from backend snapshots at request time, so counts are exact at the moment of the
scrape. ``/metrics`` needs no authentication, like RabbitMQ's plugin: it names no vhost or
queue. (RabbitMQ's plugin has no authentication on either endpoint; per-object metrics are the
one place Leveret asks for more.)
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable

from aiohttp import web

from leveret.management.authz import authenticate, new_throttle, not_authorised
from leveret.management.backend import Backend
from leveret.management.shapes import RABBITMQ_COMPAT_VERSION
from leveret.model.access import AccessControl, LoginThrottle
from leveret.model.snapshots import QueueSnapshot

log = logging.getLogger("leveret.management")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_BACKEND: web.AppKey[Backend] = web.AppKey("metrics_backend", Backend)
METRICS_ACCESS: web.AppKey[AccessControl] = web.AppKey("metrics_access", AccessControl)
METRICS_LOGINS: web.AppKey[LoginThrottle] = web.AppKey("metrics_logins", LoginThrottle)

Labels = dict[str, str]
Sample = tuple[Labels, float]

# (name, help, QueueSnapshot attribute) for queue depth gauges.
QUEUE_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("rabbitmq_queue_messages_ready", "Messages ready to be delivered to consumers", "messages_ready"),
    ("rabbitmq_queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged",
     "messages_unacknowledged"),
    ("rabbitmq_queue_messages", "Sum of ready and unacknowledged messages - total queue depth", "messages"),
    ("rabbitmq_queue_messages_ready_bytes", "Size in bytes of ready messages", "message_bytes_ready"),
    ("rabbitmq_queue_messages_unacked_bytes", "Size in bytes of all unacknowledged messages",
     "message_bytes_unacknowledged"),
    ("rabbitmq_queue_messages_bytes", "Size in bytes of ready and unacknowledged messages", "message_bytes"),
    ("rabbitmq_queue_consumers", "Consumers on a queue", "consumers"),
)  # fmt: skip

# Per-queue cumulative counters (per-object endpoint only).
QUEUE_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("rabbitmq_queue_messages_published", "Total number of messages published to queues", "published"),
    ("rabbitmq_queue_messages_delivered", "Total number of messages delivered from queues", "delivered"),
    ("rabbitmq_queue_messages_acked", "Total number of messages acknowledged by consumers", "acked"),
    ("rabbitmq_queue_messages_redelivered", "Total number of messages redelivered", "redelivered"),
)

# Global counters from Totals, labelled protocol="amqp091" like RabbitMQ's.
GLOBAL_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("rabbitmq_global_messages_received", "Total number of messages received from publishers", "published"),
    ("rabbitmq_global_messages_delivered", "Total number of messages delivered to consumers", "delivered"),
    ("rabbitmq_global_messages_acknowledged", "Total number of messages acknowledged by consumers", "acked"),
    ("rabbitmq_global_messages_redelivered", "Total number of messages redelivered to consumers", "redelivered"),
    ("rabbitmq_global_messages_confirmed", "Total number of messages confirmed to publishers", "confirmed"),
    ("rabbitmq_global_messages_unroutable_returned", "Total number of messages returned to publishers as unroutable",
     "returned"),
)  # fmt: skip


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_value(v: float) -> str:
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        """Write one metric family; counters get the ``_total`` suffix on samples."""
        self.lines.append(f"# HELP {name}{'_total' if kind == 'counter' else ''} {help_text}")
        self.lines.append(f"# TYPE {name}{'_total' if kind == 'counter' else ''} {kind}")
        suffix = "_total" if kind == "counter" else ""
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self.lines.append(
                f"{name}{suffix}{'{' + label_text + '}' if label_text else ''} {_fmt_value(value)}"
            )

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _rss_fallback() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def render(backend: Backend, per_object: bool) -> str:
    """The exposition text for one scrape."""
    info = backend.node_info()
    queues: list[QueueSnapshot] = backend.queues()
    totals = backend.totals()
    w = _Writer()
    proto = {"protocol": "amqp091"}
    for name, help_text, attr in QUEUE_GAUGES:
        if per_object:
            samples: list[Sample] = [({"vhost": q.vhost, "queue": q.name}, getattr(q, attr)) for q in queues]
        else:
            samples = [({}, sum(getattr(q, attr) for q in queues))]
        w.family(name, "gauge", help_text, samples)
    if per_object:
        for name, help_text, attr in QUEUE_COUNTERS:
            w.family(name, "counter", help_text,
                     [({"vhost": q.vhost, "queue": q.name}, getattr(q, attr)) for q in queues])  # fmt: skip
    for name, help_text, attr in GLOBAL_COUNTERS:
        w.family(name, "counter", help_text, [(proto, getattr(totals, attr))])
    w.family(
        "rabbitmq_connections", "gauge", "Connections currently open", [({}, len(backend.connections()))]
    )
    w.family("rabbitmq_channels", "gauge", "Channels currently open", [({}, len(backend.channels()))])
    w.family("rabbitmq_consumers", "gauge", "Consumers currently connected", [({}, len(backend.consumers()))])
    w.family("rabbitmq_queues", "gauge", "Queues available", [({}, len(queues))])
    w.family("rabbitmq_process_resident_memory_bytes", "gauge", "Memory used in bytes",
             [({}, info.rss_bytes or _rss_fallback())])  # fmt: skip
    w.family("rabbitmq_identity_info", "gauge", "RabbitMQ node & cluster identity info",
             [({"rabbitmq_node": info.node, "rabbitmq_cluster": info.node,
                "rabbitmq_endpoint": "per-object" if per_object else "aggregated"}, 1)])  # fmt: skip
    w.family("rabbitmq_build_info", "gauge", "RabbitMQ & Erlang/OTP version info",
             [({"rabbitmq_version": RABBITMQ_COMPAT_VERSION, "product_name": info.product_name,
                "product_version": info.product_version}, 1)])  # fmt: skip
    return w.text()


async def _aggregated(request: web.Request) -> web.Response:
    return web.Response(body=render(request.app[METRICS_BACKEND], False).encode(),
                        headers={"Content-Type": CONTENT_TYPE})  # fmt: skip


async def _require_monitor(request: web.Request) -> None:
    """Basic auth of a monitoring or administrator user, else 401 with ``WWW-Authenticate``.
    Failed logins are logged and throttled per peer as on the management API."""
    logins = request.app[METRICS_LOGINS]
    peer = request.remote or "?"
    delay = logins.delay(peer)
    if delay > 0:
        await asyncio.sleep(delay)
    header = request.headers.get("Authorization")
    user, reason = authenticate(header, request.remote, request.app[METRICS_ACCESS])
    if user is None:
        if header is not None:
            logins.failed(peer)
            log.warning("metrics login refused from %s: %s", peer, reason)
        raise not_authorised("Login failed" if header else "Not monitor user", realm=True)
    logins.succeeded(peer)
    if not user.is_monitor:
        log.warning("metrics refused to %s: user '%s' is not a monitoring user", peer, user.name)
        raise not_authorised("Not monitor user", realm=True)


async def _per_object(request: web.Request) -> web.Response:
    await _require_monitor(request)
    return web.Response(body=render(request.app[METRICS_BACKEND], True).encode(),
                        headers={"Content-Type": CONTENT_TYPE})  # fmt: skip


def build_metrics_app(
    backend: Backend,
    *,
    access: AccessControl | None = None,
    logins: LoginThrottle | None = None,
    users: dict[str, str] | None = None,
) -> web.Application:
    """The Prometheus endpoint app (RabbitMQ serves it on port 15692). ``access``: whose users may
    read per-object metrics (the broker's); without it, ``users`` (name -> password) are made
    administrators of an app on its own (tests), and with neither nobody may."""
    app = web.Application()
    app[METRICS_BACKEND] = backend
    if access is None:
        access = AccessControl()
        for name, password in (users or {}).items():
            access.add_user(name, password, ("administrator",))
    app[METRICS_ACCESS] = access
    app[METRICS_LOGINS] = logins if logins is not None else new_throttle()
    app.router.add_get("/metrics", _aggregated)
    app.router.add_get("/metrics/per-object", _per_object)
    return app
