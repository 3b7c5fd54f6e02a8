"""User and vhost limits over HTTP, with RabbitMQ 3.10's paths, bodies and answers (probed on 3.10.8;
rabbit_mgmt_wm_user_limits / _user_limit / _limits / _limit).

Contract:

* ``GET /api/user-limits[/{user}]``: ``[{"user": u, "value": {"max-connections": N, ...}}]`` for users
  that have limits (an unknown user is 404). ``PUT /api/user-limits/{user}/{name}`` with
  ``{"value": N}`` sets one limit (204); ``DELETE`` clears it (204, also when it was not set).
  Errors are 400 with rabbitmqctl's texts: ``[{key_missing,value}]``, ``Unrecognised terms
  [{<<"foo">>,3}] in user-limits``, ``max-connections should be a number, actually was <<"x">>``,
  and an unknown user ``["no_such_user", "u"]``. Administrators only.
* ``GET /api/vhost-limits[/{vhost}]``: ``[{"vhost": v, "value": {...}}]`` (the vhosts the user may
  see); ``PUT /api/vhost-limits/{vhost}/{name}`` with ``{"value": N}`` (administrators; 204), a
  refused value is 400 "Validation failed" with the text, as for policies; ``DELETE`` clears it.
* Limits: ``max-connections`` and ``max-channels`` for users, ``max-connections`` and ``max-queues``
  for vhosts; -1 means none. They apply at once to the next connection, channel or queue.

Deviation: RabbitMQ answers DELETE of an unknown user's limit with 500 and an empty body; here 404.
Extension: DELETE of limit ``all`` clears every limit (what leveretctl clear_vhost_limits uses).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from leveret.errors import AMQPError, ReplyCode
from leveret.management.authz import ACCESS, may_see_vhost, require_administrator, require_vhost
from leveret.management.backend import Backend
from leveret.management.decode import with_decode
from leveret.management.guards import bad_request
from leveret.management.policies_api import validation_failed

log = logging.getLogger("leveret.access")

BACKEND: web.AppKey[Backend] = web.AppKey("limits_api_backend", Backend)


def register(app: web.Application, backend: Backend) -> None:
    app[BACKEND] = backend
    r = app.router
    r.add_get("/api/user-limits", list_user_limits)
    r.add_get("/api/user-limits/{user}", list_user_limits)
    r.add_put("/api/user-limits/{user}/{name}", put_user_limit)
    r.add_delete("/api/user-limits/{user}/{name}", delete_user_limit)
    r.add_get("/api/vhost-limits", list_vhost_limits)
    r.add_get("/api/vhost-limits/{vhost}", list_vhost_limits)
    r.add_put("/api/vhost-limits/{vhost}/{name}", put_vhost_limit)
    r.add_delete("/api/vhost-limits/{vhost}/{name}", delete_vhost_limit)


async def _value(request: web.Request) -> Any:
    return (await with_decode(request, "value"))["value"]


def _not_found() -> AMQPError:
    return AMQPError(ReplyCode.NOT_FOUND, "not found")


async def list_user_limits(request: web.Request) -> web.Response:
    require_administrator(request)
    access = request.app[ACCESS]
    name = request.match_info.get("user")
    if name is not None and name not in access.users:
        raise _not_found()
    rows = [{"user": u.name, "value": dict(u.limits)} for u in access.users.values()
            if u.limits and (name is None or u.name == name)]  # fmt: skip
    return web.json_response(rows)


async def put_user_limit(request: web.Request) -> web.Response:
    acting = require_administrator(request)
    user, key = request.match_info["user"], request.match_info["name"]
    value = await _value(request)
    access = request.app[ACCESS]
    if user not in access.users:
        raise web.HTTPBadRequest(text=json.dumps({"error": "bad_request", "reason": ["no_such_user", user]}),
                                 content_type="application/json")  # fmt: skip
    try:
        access.set_user_limits(user, {key: value})
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    log.info("limit %s of user '%s' set to %r (by '%s' over HTTP)", key, user, value, acting.name)
    return web.Response(status=204)


async def delete_user_limit(request: web.Request) -> web.Response:
    acting = require_administrator(request)
    user, key = request.match_info["user"], request.match_info["name"]
    access = request.app[ACCESS]
    if user not in access.users:
        raise _not_found()
    access.clear_user_limits(user, key)
    log.info("limit %s of user '%s' cleared (by '%s' over HTTP)", key, user, acting.name)
    return web.Response(status=204)


def _vhost(request: web.Request) -> str:
    vhost = request.match_info["vhost"]
    require_vhost(request, vhost)
    if vhost not in request.app[BACKEND].vhosts():
        raise _not_found()
    return vhost


async def list_vhost_limits(request: web.Request) -> web.Response:
    vhost = request.match_info.get("vhost")
    if vhost is not None:
        _vhost(request)
    rows = request.app[BACKEND].vhost_limits(vhost)
    return web.json_response([r for r in rows if may_see_vhost(request, r["vhost"])])


async def put_vhost_limit(request: web.Request) -> web.Response:
    acting = require_administrator(request)
    vhost, key = _vhost(request), request.match_info["name"]
    value = await _value(request)
    try:
        request.app[BACKEND].set_vhost_limits(vhost, {key: value})
    except ValueError as exc:
        raise validation_failed(str(exc)) from None
    log.info("limit %s of vhost '%s' set to %r (by '%s' over HTTP)", key, vhost, value, acting.name)
    return web.Response(status=204)


async def delete_vhost_limit(request: web.Request) -> web.Response:
    acting = require_administrator(request)
    vhost, key = _vhost(request), request.match_info["name"]
    request.app[BACKEND].clear_vhost_limits(vhost, key)
    log.info("limit %s of vhost '%s' cleared (by '%s' over HTTP)", key, vhost, acting.name)
    return web.Response(status=204)
