"""Queue declare, delete, purge, get, bindings and actions over HTTP, with RabbitMQ 3.10's paths,
bodies, status codes and texts (rabbit_mgmt_wm_queue, _queue_purge, _queue_get, _queue_actions,
_bindings). Listing and showing queues (rates, pagination) stay in http.py.

Every operation runs as the HTTP user (``user=`` to the backend), so the model checks that user's
permissions; its refusals map as guards.errors_middleware says (a 403 is 401 "Access refused.",
another soft error 400 with the bare text, as rabbit_mgmt_util:direct_request answers them).
"""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from leveret.errors import AMQPError, ReplyCode
from leveret.management import definitions as defs
from leveret.management import shapes
from leveret.management.authz import current_user, require_administrator
from leveret.management.backend import Backend, GotMessage
from leveret.management.decode import (
    flag,
    not_found,
    parse_bool,
    parse_int,
    path_vhost,
    vhost_not_found,
    with_decode,
)
from leveret.management.guards import bad_request
from leveret.management.listing import stream_all
from leveret.model.snapshots import BindingSnapshot

JSON = dict[str, Any]
BACKEND: web.AppKey[Backend] = web.AppKey("queues_api_backend", Backend)
ACKMODES = {"ack_requeue_true": True, "reject_requeue_true": True,
            "ack_requeue_false": False, "reject_requeue_false": False}  # fmt: skip


def register(app: web.Application, backend: Backend) -> None:
    """Add the routes to ``app`` (before it starts); they act on ``backend``."""
    app[BACKEND] = backend
    r = app.router
    r.add_put("/api/queues/{vhost}/{name}", put_queue)
    r.add_delete("/api/queues/{vhost}/{name}", delete_queue)
    r.add_delete("/api/queues/{vhost}/{name}/contents", purge_queue)
    r.add_post("/api/queues/{vhost}/{name}/get", get_messages)
    r.add_get("/api/queues/{vhost}/{name}/bindings", queue_bindings)
    r.add_post("/api/queues/{vhost}/{name}/actions", queue_actions)


def _b(request: web.Request) -> Backend:
    return request.app[BACKEND]


def _vhost(request: web.Request) -> str:
    return path_vhost(request, _b(request).vhosts())


def _user(request: web.Request) -> str:
    return current_user(request).name


async def put_queue(request: web.Request) -> web.Response:
    """rabbit_mgmt_wm_queue: 201 created, 204 if it was there (and equivalent). A missing vhost is
    404 ``vhost_not_found`` (the declare's own check, after the body is read)."""
    b = _b(request)
    vhost, name = request.match_info["vhost"], request.match_info["name"]
    body = await with_decode(request)
    if vhost not in b.vhosts():
        raise vhost_not_found()
    vhost = _vhost(request)
    arguments = body.get("arguments") or {}
    if not isinstance(arguments, dict):  # RabbitMQ crashes (500) here; a 400 says why
        raise bad_request("arguments must be a JSON object")
    if body.get("type") and "x-queue-type" not in arguments:
        arguments["x-queue-type"] = body["type"]
    durable, auto_delete = parse_bool(body, "durable", True), parse_bool(body, "auto_delete", False)
    if len(name.encode()) > 255:  # rabbit_mgmt_wm_queue's check, with its text
        raise bad_request(f"queue should be less than 255 bytes, actually was {len(name.encode())}\n")
    defs.check_name("queue", name)
    try:
        b.queue(vhost, name)
        existed = True
    except AMQPError as e:
        if e.code != ReplyCode.NOT_FOUND:
            raise
        existed = False
    b.declare_queue(vhost, name, durable, auto_delete, arguments, user=_user(request))
    return web.Response(status=204 if existed else 201)


async def delete_queue(request: web.Request) -> web.Response:
    deleted = _b(request).delete_queue(
        _vhost(request), request.match_info["name"],
        if_unused=flag(request, "if-unused"), if_empty=flag(request, "if-empty"), user=_user(request),
    )  # fmt: skip
    # Not in RabbitMQ: the count lets leveretctl say how many messages went with the queue.
    return web.Response(status=204, headers={"X-Messages-Deleted": str(deleted)})


async def purge_queue(request: web.Request) -> web.Response:
    purged = _b(request).purge_queue(_vhost(request), request.match_info["name"], user=_user(request))
    return web.Response(status=204, headers={"X-Messages-Purged": str(purged)})


def _got_json(m: GotMessage, encoding: str, truncate: int | None) -> JSON:
    payload = m.payload if truncate is None else m.payload[:truncate]
    text: str | None = None
    if encoding == "auto":
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    return {
        "payload_bytes": len(m.payload),
        "redelivered": m.redelivered,
        "exchange": m.exchange,
        "routing_key": m.routing_key,
        "message_count": m.message_count,
        "properties": shapes.jsonable(m.properties),
        "payload": text if text is not None else base64.b64encode(payload).decode(),
        "payload_encoding": "string" if text is not None else "base64",
    }


async def get_messages(request: web.Request) -> web.Response:
    """rabbit_mgmt_wm_queue_get: the body first (``[{key_missing,encoding}]``), then basic.get on a
    channel, whose 404 is ``not_found`` with the channel's text. A count below 1 gets nothing."""
    vhost, name = _vhost(request), request.match_info["name"]
    body = await with_decode(request, "count", "ackmode", "encoding")
    ackmode = body["ackmode"]
    if not isinstance(ackmode, str) or ackmode not in ACKMODES:  # RabbitMQ: 500 (a crash)
        raise bad_request(f"ackmode must be one of {', '.join(ACKMODES)}")
    encoding = body["encoding"]
    if not isinstance(encoding, str) or encoding not in ("auto", "base64"):
        raise bad_request("Unsupported encoding. Please use auto or base64.")
    count = parse_int(body["count"])  # numbers may come as strings (rabbitmqadmin sends them so)
    truncate = None if body.get("truncate") is None else parse_int(body["truncate"])
    b = _b(request)
    try:
        b.queue(vhost, name)
    except AMQPError as e:
        if e.code == ReplyCode.NOT_FOUND:
            raise not_found(f"NOT_FOUND - no queue '{name}' in vhost '{vhost}'") from None
        raise
    if count < 1:
        return web.json_response([])
    got = b.get_messages(
        vhost, name, count, ACKMODES[ackmode], user=_user(request), reject=ackmode == "reject_requeue_false"
    )
    return web.json_response([_got_json(m, encoding, truncate) for m in got])


async def queue_bindings(request: web.Request) -> web.StreamResponse:
    """A queue's bindings, the default exchange's first. RabbitMQ lists that implicit one even for a
    queue that does not exist, and nothing (200) for a vhost that does not exist."""
    b = _b(request)
    if request.match_info["vhost"] not in b.vhosts():
        return web.json_response([])
    vhost, name = _vhost(request), request.match_info["name"]
    mine = [x for x in b.bindings(vhost) if x.destination == name and x.destination_type == "queue"]
    if not any(x.source == "" for x in mine):
        mine.insert(0, BindingSnapshot(vhost, "", name, "queue", name, {}))
    return await stream_all(request, mine, shapes.binding_json)


async def queue_actions(request: web.Request) -> web.Response:
    """rabbit_mgmt_wm_queue_actions (administrators): ``sync`` and ``cancel_sync`` act on classic
    mirrors; a single node has none, so both succeed doing nothing (204). Others: 400."""
    require_administrator(request)
    vhost, name = _vhost(request), request.match_info["name"]
    body = await with_decode(request, "action")
    _b(request).queue(vhost, name)  # rabbit_amqqueue:with: 404 for a missing queue
    action = body["action"]
    if action not in ("sync", "cancel_sync"):
        raise bad_request(f'{{unknown,<<"{action}">>}}')
    return web.Response(status=204)
