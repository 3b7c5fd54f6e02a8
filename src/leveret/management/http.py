"""The management HTTP API (RabbitMQ's paths and JSON shapes) and the dashboard.

``build_app(backend, users=...)`` returns an :class:`aiohttp.web.Application` that the
broker runs in its own event loop (port 15672 by default). Contract:

* Every ``/api/...`` route needs HTTP basic auth against ``users``; a user in
  ``loopback_users`` (``guest``) is accepted only from a loopback peer. Failures are
  401 ``{"error": "not_authorised", "reason": ...}``.
* Tags gate routes as RabbitMQ 3.10 does (:mod:`leveret.management.authz`): any management user
  for overview, whoami, vhosts, connections, channels, consumers, healthchecks; a permission row
  in ``{vhost}`` (administrators always pass) for its queues, exchanges, bindings, consumers and
  aliveness test; monitoring or administrator for nodes; administrator for definitions and
  ``/api/vhosts/{vhost}``. Connection objects: GET by monitoring, administrator or owner, DELETE by
  administrator or owner. Lists without ``{vhost}`` show a non-administrator only the vhosts it
  has a row in, and a user without monitoring only its own connections, channels and consumers;
  the overview's totals count what the user can see.
* Queue operations run as the HTTP user (``user=`` to the backend), so the model checks its
  permissions; a refusal (403) becomes 401 ``Access refused.``.
* Backend errors map as RabbitMQ's do: AMQPError 404 -> 404
  ``{"error": "Object Not Found", "reason": "Not Found"}``; 405/406 (and other soft
  codes) -> 400 ``{"error": "bad_request", "reason": <the bare explanation>}``. A malformed
  request body is 400 too (RabbitMQ's ``not_json``). Anything else escaping a handler is a bug: 500, logged. Bodies, paths and
  timeouts are checked as :mod:`leveret.management.guards` says.
* Lists follow :mod:`leveret.management.listing` (RabbitMQ's pagination, filters, sorting), and
  no request runs long on the event loop: work over every queue goes a slice per loop turn.
* ``{vhost}`` and ``{name}`` in paths are URL-encoded (``%2F`` is the vhost ``/``).
* Rates come from a :class:`~leveret.management.rates.RateSampler` that the app
  ticks every ``rates_interval`` seconds while it runs (``app[RATES]``).
* ``GET /`` serves the dashboard (``static/index.html``); static files need no auth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from leveret.errors import AMQPError, ReplyCode
from leveret.management import (
    access_api,
    browser,
    limits_api,
    objects_api,
    parameters_api,
    policies_api,
    queues_api,
    shapes,
)
from leveret.management import definitions as defs
from leveret.management.authz import (
    ACCESS,
    LOGINS,
    auth_middleware,
    current_user,
    new_throttle,
    not_authorised,
    require_administrator,
    require_monitor,
    visible_vhosts,
)
from leveret.management.backend import Backend, QueueCounters, QueueKey
from leveret.management.decode import flag, path_vhost, with_decode
from leveret.management.guards import (
    LINGER,
    MAX_BODY,
    REQUEST_TIMEOUT,
    TIMEOUT,
    bad_request,
    errors_middleware,
    strict_path_middleware,
)
from leveret.management.listing import SLICE, Source, gc_paused, respond, stream_all
from leveret.management.rates import TOTALS_STATS, RateSampler, Sample
from leveret.model.access import AccessControl, LoginThrottle
from leveret.model.snapshots import ChannelSnapshot, ConnectionSnapshot, ExchangeSnapshot, Totals

log = logging.getLogger("leveret.management")

STATIC_DIR = Path(__file__).with_name("static")
BACKEND: web.AppKey[Backend] = web.AppKey("backend", Backend)
RATES: web.AppKey[RateSampler] = web.AppKey("rates", RateSampler)
INTERVAL: web.AppKey[float] = web.AppKey("rates_interval", float)
TICKER: web.AppKey[asyncio.Task[None]] = web.AppKey("ticker", asyncio.Task)

JSON = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Queues read per loop turn when summing or sampling every queue.
COUNT_SLICE = 1000


# ---- helpers ------------------------------------------------------------------------
def _backend(request: web.Request) -> Backend:
    return request.app[BACKEND]


def _node(request: web.Request) -> str:
    return _backend(request).node_info().node


def _vhost(request: web.Request) -> str:
    return path_vhost(request, _backend(request).vhosts())


def _listed_vhosts(request: web.Request) -> list[str] | None:
    """The vhosts a list shows: the path's ``{vhost}`` (checked), or every vhost this user has a
    permission row in; None means all of them (administrators, no ``{vhost}``)."""
    if "vhost" in request.match_info:
        return [_vhost(request)]
    seen = visible_vhosts(request)
    return None if seen is None else [v for v in _backend(request).vhosts() if v in seen]


def _queue_keys(b: Backend, vhosts: list[str] | None) -> list[QueueKey]:
    """Queue keys of these vhosts (all for None), gathered per vhost so a user seeing one vhost
    never costs a pass over every queue of the others."""
    if vhosts is None:
        return b.queue_keys()
    if len(vhosts) == 1:
        return b.queue_keys(vhosts[0])
    return [k for v in vhosts for k in b.queue_keys(v)]


def _per_vhost(fetch: Callable[[str | None], Iterable[Any]], vhosts: list[str] | None) -> list[Any]:
    """``fetch(vhost)`` joined over ``vhosts`` (``fetch(None)``: all, for None)."""
    if vhosts is None:
        return list(fetch(None))
    return [x for v in vhosts for x in fetch(v)]


async def _counted(b: Backend, keys: list[QueueKey]) -> tuple[int, int, int]:
    """(ready, unacknowledged, consumers) summed over ``keys``, a slice per loop turn."""
    ready, unacked, consumers, _, _ = await _user_totals(b, None, keys)
    return ready, unacked, consumers


def _rendered(render: Callable[[Any], JSON]) -> Callable[[Sequence[Any]], list[tuple[Any, JSON]]]:
    return lambda chunk: [(e, render(e)) for e in chunk]


def _samples(samples: list[Sample], incr: float, attr: str | int) -> list[JSON]:
    """RabbitMQ ``samples`` (newest first, timestamps in ms), at most one per ``incr`` s."""
    chosen: list[Sample] = []
    for s in reversed(samples):
        if not chosen or chosen[-1].t - s.t >= incr - 1e-6:
            chosen.append(s)
    return [
        {"sample": s.counters[attr] if isinstance(attr, int) else getattr(s, attr),
         "timestamp": int(s.wall * 1000)}
        for s in chosen
    ]  # fmt: skip


def _age_param(request: web.Request, name: str) -> tuple[float, float] | None:
    if name not in request.query:
        return None
    try:
        age = float(request.query[name])
        incr = float(request.query.get(name.replace("_age", "_incr"), "1"))
    except ValueError:
        raise bad_request(f"{name} must be a number") from None
    return age, max(incr, 0.001)


# ---- handlers -----------------------------------------------------------------------
async def _user_totals(
    b: Backend, rates: RateSampler | None, keys: list[QueueKey]
) -> tuple[int, int, int, Totals, dict[str, float]]:
    """What :func:`overview` shows a user who sees only some vhosts, from those vhosts' queues
    alone, a slice per loop turn: (ready, unacknowledged, consumers, message counts, their rates).
    Publishes are counted where they reached a queue; confirms and returns, kept per broker only,
    are 0."""
    ready = unacked = consumers = published = delivered = acked = redelivered = 0
    r = {key: 0.0 for _, key in TOTALS_STATS}
    for i in range(0, len(keys), COUNT_SLICE):
        with gc_paused():
            for c in b.queue_counters(keys[i : i + COUNT_SLICE]):
                ready += c.messages_ready
                unacked += c.messages_unacknowledged
                consumers += c.consumers
                published += c.published
                delivered += c.delivered
                acked += c.acked
                redelivered += c.redelivered
                if rates is None:
                    continue
                for key, value in rates.queue_rates(c.vhost, c.name).items():
                    if key in r:  # message rates (not the depth rates it also gives)
                        r[key] += value
        await asyncio.sleep(0)
    return ready, unacked, consumers, Totals(published, delivered, acked, redelivered), r


async def overview(request: web.Request) -> web.Response:
    """Administrators and monitoring users see the whole broker. Anyone else (RabbitMQ's
    ``get_overview(User)``): queues, exchanges, consumers and message counts of the vhosts it has
    a permission row in, its own connections and channels; no node, listeners or history samples
    (they are the broker's); depth rates 0 (kept per broker only)."""
    b = _backend(request)
    rates = request.app[RATES]
    info = b.node_info()
    user = current_user(request)
    everything = user.is_monitor
    if everything:
        counts = b.object_counts()
        ready, unacked, consumers = await _counted(b, b.queue_keys())
        depth = rates.depth_rates()
        stats = shapes.message_stats(b.totals(), rates)
    else:
        vhosts = _listed_vhosts(request) or []
        keys = _queue_keys(b, vhosts)
        mine = [c for c in b.connections() if c.user == user.name]
        counts = {"connections": len(mine), "channels": sum(c.channels for c in mine),
                  "exchanges": sum(len(b.exchanges(v)) for v in vhosts), "queues": len(keys)}  # fmt: skip
        ready, unacked, consumers, totals, own_rates = await _user_totals(b, rates, keys)
        depth = {"messages": 0.0, "messages_ready": 0.0, "messages_unacknowledged": 0.0}
        stats = shapes.message_stats(totals, None, own_rates)
    queue_totals: JSON = {
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
    }
    for key in list(queue_totals):
        queue_totals[f"{key}_details"] = shapes.details(depth[key])
    lengths = _age_param(request, "lengths_age")
    if lengths:
        samples = rates.samples(lengths[0]) if everything else []
        for key in ("messages", "messages_ready", "messages_unacknowledged"):
            queue_totals[f"{key}_details"]["samples"] = _samples(samples, lengths[1], key)
    msg_rates = _age_param(request, "msg_rates_age")
    if msg_rates:
        samples = rates.samples(msg_rates[0]) if everything else []
        for i, (_, key) in enumerate(TOTALS_STATS):
            stats[f"{key}_details"]["samples"] = _samples(samples, msg_rates[1], i)
    body: JSON = {
        "management_version": shapes.RABBITMQ_COMPAT_VERSION,
        "rabbitmq_version": shapes.RABBITMQ_COMPAT_VERSION,
        "product_name": info.product_name,
        "product_version": info.product_version,
        "cluster_name": info.node,
        "erlang_version": "n/a",
        "erlang_full_version": "n/a",
        "release_series_support_status": "supported",
        "rates_mode": "basic",
        # How far back rates and samples go (RabbitMQ's ages in seconds): the sampler's history.
        "sample_retention_policies": {k: [int(rates.history)] for k in ("global", "basic", "detailed")},
        "disable_stats": False,
        "enable_queue_totals": False,
    }
    if everything:
        body["node"] = info.node
        body["listeners"] = [shapes.listener_json(x, info.node) for x in info.listeners]
        body["contexts"] = []
    body.update({
        "exchange_types": [{"name": t, "enabled": True} for t in info.exchange_types],
        "object_totals": {
            "connections": counts["connections"],
            "channels": counts["channels"],
            "exchanges": counts["exchanges"],
            "queues": counts["queues"],
            "consumers": consumers,
        },
        "queue_totals": queue_totals,
        "message_stats": stats,
        "statistics_db_event_queue": 0,
    })  # fmt: skip
    return web.json_response(body)


async def list_queues(request: web.Request) -> web.StreamResponse:
    vhosts = _listed_vhosts(request)
    b = _backend(request)
    node = _node(request)
    rates = request.app[RATES]

    def render(keys: Sequence[QueueKey]) -> list[tuple[QueueKey, JSON]]:
        return [((q.vhost, q.name), shapes.queue_json(q, node, rates)) for q in b.queues_by_key(keys)]

    def sort_values(path: str, keys: Sequence[QueueKey]) -> list[tuple[QueueKey, Any]] | None:
        if path in _COUNTER_SORTS:
            get = _COUNTER_SORTS[path]
            return [((c.vhost, c.name), get(c)) for c in b.queue_counters(keys)]
        rate = _RATE_SORTS.get(path)
        if rate is None:
            return None
        return [(k, round(rates.queue_rates(*k)[rate], 2)) for k in keys]

    # Keys, not snapshots: filtering, the default sort and paging need only names, and the
    # dashboard's sorts only counters, so a page of 30,000 queues renders 100 of them.
    return await respond(request, Source(_queue_keys(b, vhosts), _key_name, _same, render, sort_values))


# Sort paths a queue listing answers from QueueCounters (the values queue_json would show).
_COUNTER_SORTS: dict[str, Callable[[QueueCounters], Any]] = {
    "name": lambda c: c.name, "vhost": lambda c: c.vhost, "messages": lambda c: c.messages,
    "messages_ready": lambda c: c.messages_ready, "messages_unacknowledged": lambda c: c.messages_unacknowledged,
    "consumers": lambda c: c.consumers,
}  # fmt: skip
_RATE_SORTS = {f"message_stats.{key}_details.rate": key for key in ("publish", "deliver_get", "ack", "redeliver")}


def _key_name(key: QueueKey) -> str:
    return key[1]


def _same(key: QueueKey) -> QueueKey:
    return key


def _vhost_name(x: ExchangeSnapshot) -> tuple[str, str]:
    return (x.vhost, x.name)


async def get_queue(request: web.Request) -> web.Response:
    q = _backend(request).queue(_vhost(request), request.match_info["name"])
    return web.json_response(shapes.queue_json(q, _node(request), request.app[RATES]))


async def list_connections(request: web.Request) -> web.StreamResponse:
    node = _node(request)

    def render(c: ConnectionSnapshot) -> JSON:
        return shapes.connection_json(c, node)

    conns = _backend(request).connections()
    user = current_user(request)
    if not user.is_monitor:  # RabbitMQ's filter_conn_ch_list: a management user sees its own
        conns = [c for c in conns if c.user == user.name]
    return await respond(request, Source(conns, _conn_name, _conn_key, _rendered(render)))


def _conn_name(c: ConnectionSnapshot) -> str:
    return c.name


def _conn_key(c: ConnectionSnapshot) -> tuple[str, str]:
    return (c.vhost, c.name)


def _connection(request: web.Request, may: bool) -> ConnectionSnapshot | None:
    """The ``{name}`` connection, for a user who ``may`` act on anyone's or who owns it; else 401
    "User not authorised to access object" (RabbitMQ's ``is_authorized_user``: a missing
    connection has no owner, so only those who ``may`` learn it is missing)."""
    name = request.match_info["name"]
    found = next((c for c in _backend(request).connections() if c.name == name), None)
    if not may and (found is None or found.user != current_user(request).name):
        raise not_authorised("User not authorised to access object")
    return found


async def get_connection(request: web.Request) -> web.Response:
    c = _connection(request, current_user(request).is_monitor)
    if c is None:
        raise AMQPError(ReplyCode.NOT_FOUND, f"no connection '{request.match_info['name']}'")
    return web.json_response(shapes.connection_json(c, _node(request)))


async def close_connection(request: web.Request) -> web.Response:
    _connection(request, current_user(request).is_administrator)
    reason = request.headers.get("X-Reason", "Closed via management plugin")
    if not _backend(request).close_connection(request.match_info["name"], reason):
        raise AMQPError(ReplyCode.NOT_FOUND, "no such connection")
    return web.Response(status=204)


async def list_channels(request: web.Request) -> web.StreamResponse:
    b = _backend(request)
    peers = {c.name: c for c in b.connections()}
    node = _node(request)

    def render(ch: ChannelSnapshot) -> JSON:
        return shapes.channel_json(ch, node, peers)

    def name(ch: ChannelSnapshot) -> str:
        return shapes.channel_name(ch.connection, ch.number)

    def key(ch: ChannelSnapshot) -> tuple[str, str, int]:
        return (ch.vhost, ch.connection, ch.number)

    chans = b.channels()
    user = current_user(request)
    if not user.is_monitor:
        chans = [ch for ch in chans if ch.user == user.name]
    return await respond(request, Source(chans, name, key, _rendered(render)))


async def list_consumers(request: web.Request) -> web.StreamResponse:
    """Consumers of the vhosts the user has a permission row in (all for administrators); a user
    without the monitoring tag sees only those on its own connections (RabbitMQ's filter_user)."""
    b = _backend(request)
    consumers = _per_vhost(b.consumers, _listed_vhosts(request))
    peers = {c.name: c for c in b.connections()}
    user = current_user(request)
    if not user.is_monitor:
        consumers = [c for c in consumers if c.connection in peers and peers[c.connection].user == user.name]
    node = _node(request)
    return await stream_all(request, consumers, lambda c: shapes.consumer_json(c, node, peers))


async def list_exchanges(request: web.Request) -> web.StreamResponse:
    xs = _per_vhost(_backend(request).exchanges, _listed_vhosts(request))
    return await respond(request, Source(xs, _x_name, _vhost_name, _rendered(shapes.exchange_json)))


def _x_name(x: ExchangeSnapshot) -> str:
    return x.name


async def get_exchange(request: web.Request) -> web.Response:
    vhost, name = _vhost(request), request.match_info["name"]
    for x in _backend(request).exchanges(vhost):
        if x.name == name:
            return web.json_response(shapes.exchange_json(x))
    raise AMQPError(ReplyCode.NOT_FOUND, f"no exchange '{name}'")


async def list_bindings(request: web.Request) -> web.StreamResponse:
    bindings = _per_vhost(_backend(request).bindings, _listed_vhosts(request))
    return await stream_all(request, bindings, shapes.binding_json)


async def get_definitions(request: web.Request) -> web.StreamResponse:
    require_administrator(request)  # the export holds password hashes
    vhost = _vhost(request) if "vhost" in request.match_info else None
    b = _backend(request)
    doc = defs.export_definitions(b, request.app[ACCESS], vhost, with_queues=False)
    del doc["queues"]
    keys = b.queue_keys(vhost)
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if flag(request, "download") or "download" in request.query:
        headers["Content-Disposition"] = 'attachment; filename="leveret_definitions.json"'
    resp = web.StreamResponse(headers=headers)
    await resp.prepare(request)
    # The queues go last, a slice per loop turn: 200,000 of them must not stall AMQP.
    await resp.write(json.dumps(doc)[:-1].encode() + b', "queues": [')
    sep = b""
    for i in range(0, len(keys), SLICE):
        with gc_paused():
            items = [defs.queue_definition(q) for q in b.queues_by_key(keys[i : i + SLICE]) if not q.exclusive]
            if vhost is not None:  # RabbitMQ's per-vhost shape names no vhost
                for item in items:
                    del item["vhost"]
            chunk = json.dumps(items)[1:-1].encode() if items else b""
        if chunk:
            await resp.write(sep + chunk)
            sep = b","
        await asyncio.sleep(0)
    await resp.write(b"]}")
    await resp.write_eof()
    return resp


async def post_definitions(request: web.Request) -> web.Response:
    require_administrator(request)  # it creates users and grants permissions
    vhost = _vhost(request) if "vhost" in request.match_info else None
    body = await with_decode(request)
    report = await defs.import_definitions_sliced(_backend(request), body, vhost, access=request.app[ACCESS])
    if report.ignored:
        log.info("definitions import ignored: %s", ", ".join(report.ignored))
        # for leveretctl to print; a header, so the answer stays RabbitMQ's 204
        return web.Response(status=204, headers={"X-Leveret-Ignored": "; ".join(report.ignored)})
    return web.Response(status=204)


async def healthcheck(request: web.Request) -> web.Response:
    failure = _backend(request).node_info().failure
    if failure is not None:  # RabbitMQ's failed health check: 503 with a reason
        return web.json_response({"status": "failed", "reason": failure}, status=503)
    return web.json_response({"status": "ok"})


async def whoami(request: web.Request) -> web.Response:
    u = current_user(request)  # set by authz.auth_middleware
    return web.json_response({"name": u.name, "tags": list(u.tags)})


async def _vhost_json(request: web.Request, vhost: str) -> JSON:
    b = _backend(request)
    ready, unacked, _ = await _counted(b, b.queue_keys(vhost))
    meta = b.vhost_metadata(vhost)
    return {
        "name": vhost, "description": meta["description"], "tags": meta["tags"], "default_queue_type": "classic",
        "tracing": False, "metadata": meta, "cluster_state": {_node(request): "running"},
        "messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked,
    }  # fmt: skip


async def list_vhosts(request: web.Request) -> web.Response:
    """Every vhost for administrators and monitoring users (RabbitMQ's list_visible_vhosts), the
    ones with a permission row for anyone else."""
    vhosts = _backend(request).vhosts()
    if not current_user(request).is_monitor:
        seen = visible_vhosts(request) or set()
        vhosts = [v for v in vhosts if v in seen]
    return web.json_response([await _vhost_json(request, v) for v in vhosts])


async def get_vhost(request: web.Request) -> web.Response:
    require_administrator(request)
    return web.json_response(await _vhost_json(request, _vhost(request)))


async def list_nodes(request: web.Request) -> web.Response:
    require_monitor(request)
    return web.json_response([shapes.node_json(_backend(request).node_info(), time.time())])


async def get_node(request: web.Request) -> web.Response:
    require_monitor(request)
    info = _backend(request).node_info()
    if request.match_info["node"] != info.node:
        raise AMQPError(ReplyCode.NOT_FOUND, "no such node")
    return web.json_response(shapes.node_json(info, time.time()))


async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


# ---- rate ticker --------------------------------------------------------------------
def sample_once(app: web.Application) -> None:
    """Feed the app's sampler one sample from the backend, all at once (for tests)."""
    b = app[BACKEND]
    app[RATES].tick(time.monotonic(), time.time(), b.totals(), b.queue_counters(b.queue_keys()))


async def sample_sliced(app: web.Application) -> None:
    """:func:`sample_once` reading :data:`COUNT_SLICE` queues per loop turn (the ticker's way)."""
    b = app[BACKEND]
    tick = app[RATES].begin_tick(time.monotonic(), time.time(), b.totals())
    if tick is None:
        return
    keys = b.queue_keys()
    for i in range(0, len(keys), COUNT_SLICE):
        with gc_paused():
            tick.feed(b.queue_counters(keys[i : i + COUNT_SLICE]))
        await asyncio.sleep(0)
    tick.finish()


async def _tick_forever(app: web.Application) -> None:
    while True:
        try:
            await sample_sliced(app)
        except Exception:
            log.exception("rate sampling failed")
        await asyncio.sleep(app[INTERVAL])


async def _ticker(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(_tick_forever(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# ---- assembly -----------------------------------------------------------------------
def build_app(
    backend: Backend,
    *,
    users: dict[str, str] | None = None,
    loopback_users: Iterable[str] = ("guest",),
    access: AccessControl | None = None,
    logins: LoginThrottle | None = None,
    rates_interval: float = 1.0,
    rates: RateSampler | None = None,
    request_timeout: float = REQUEST_TIMEOUT,
    allowed_origins: Iterable[str] = (),
) -> web.Application:
    """The management app; run it with ``aiohttp.web.AppRunner`` in the broker's loop.
    ``allowed_origins``: pages that may change things besides the broker's own (see browser.py)."""
    app = web.Application(
        middlewares=[errors_middleware, strict_path_middleware, browser.cross_site_middleware, auth_middleware],
        client_max_size=MAX_BODY,
        # aiohttp closes a connection whose request headers are still incomplete (or which sits
        # idle between requests) when keepalive_timeout runs out (its default is an hour); after
        # answering a request whose body is still arriving it waits lingering_time for the rest.
        handler_args={"keepalive_timeout": request_timeout, "lingering_time": LINGER},
    )  # fmt: skip
    app[BACKEND] = backend
    app[RATES] = rates if rates is not None else RateSampler()
    if access is None:  # a management app on its own (tests): these users are administrators
        access = AccessControl(loopback_users=loopback_users)
        for name, password in (users or {}).items():
            access.add_user(name, password, ("administrator",))
    app[ACCESS] = access
    app[LOGINS] = logins if logins is not None else new_throttle()
    app[INTERVAL] = rates_interval
    app[TIMEOUT] = request_timeout
    app.cleanup_ctx.append(_ticker)
    browser.setup(app, allowed_origins)
    r = app.router
    r.add_get("/", dashboard)
    r.add_static("/static/", STATIC_DIR, show_index=False)
    r.add_get("/api/overview", overview)
    r.add_get("/api/whoami", whoami)
    r.add_get("/api/healthchecks/node", healthcheck)
    r.add_get("/api/nodes", list_nodes)
    r.add_get("/api/nodes/{node}", get_node)
    r.add_get("/api/vhosts", list_vhosts)
    r.add_get("/api/vhosts/{vhost}", get_vhost)
    r.add_get("/api/queues", list_queues)
    r.add_get("/api/queues/{vhost}", list_queues)
    r.add_get("/api/queues/{vhost}/{name}", get_queue)
    r.add_get("/api/connections", list_connections)
    r.add_get("/api/connections/{name}", get_connection)
    r.add_delete("/api/connections/{name}", close_connection)
    r.add_get("/api/channels", list_channels)
    r.add_get("/api/consumers", list_consumers)
    r.add_get("/api/consumers/{vhost}", list_consumers)
    r.add_get("/api/exchanges", list_exchanges)
    r.add_get("/api/exchanges/{vhost}", list_exchanges)
    r.add_get("/api/exchanges/{vhost}/{name}", get_exchange)
    r.add_get("/api/bindings", list_bindings)
    r.add_get("/api/bindings/{vhost}", list_bindings)
    r.add_get("/api/definitions", get_definitions)
    r.add_post("/api/definitions", post_definitions)
    r.add_get("/api/definitions/{vhost}", get_definitions)
    r.add_post("/api/definitions/{vhost}", post_definitions)
    access_api.register(app, backend)  # users, vhosts, permissions
    policies_api.register(app, backend)  # policies, operator policies
    limits_api.register(app, backend)  # user and vhost limits
    queues_api.register(app, backend)  # queue declare, delete, purge, get, actions
    objects_api.register(app, backend)  # exchanges, bindings, publish, health checks, aliveness
    parameters_api.register(app, backend)  # runtime and global parameters
    return app
