"""Runtime parameters over HTTP, as RabbitMQ 3.10 answers them on a node without the plugins that
register components (rabbit_mgmt_wm_parameters, _parameter, _global_parameters, _global_parameter).

Per-vhost parameters belong to a component (``shovel``, ``federation-upstream``, ...), and Leveret
has none, so:

* ``GET /api/parameters[/{component}[/{vhost}]]`` is ``[]`` (an unknown vhost: 404);
  ``GET`` or ``DELETE /api/parameters/{component}/{vhost}/{name}`` is 404.
* ``PUT /api/parameters/{component}/{vhost}/{name}`` is refused with RabbitMQ's text for an unknown
  component, 400 ``Validation failed\\n\\ncomponent shovel not found\\n`` (after 404
  ``vhost_not_found`` for a missing vhost and 400 ``[{key_missing,value}]`` for a body without one).
  These routes need the policymaker (or administrator) tag and access to the vhost.

Vhost limits are served by :mod:`leveret.management.limits_api` (``/api/vhost-limits``).

Global parameters take any JSON value under any name (administrators only): ``PUT
/api/global-parameters/{name}`` with ``value`` creates (201) or replaces (204), ``DELETE`` removes
(204, 404 if missing), ``GET`` lists ``{"name", "value"}`` objects, ``internal_cluster_id`` among
them as on RabbitMQ (made at the first start, then kept). They are kept in the data directory, as
RabbitMQ keeps them, so they survive restarts.
"""

from __future__ import annotations

import base64
import logging
import os
from typing import Any

from aiohttp import web

from leveret.errors import AMQPError, ReplyCode
from leveret.management.authz import require_administrator, require_policymaker
from leveret.management.backend import Backend
from leveret.management.decode import path_vhost, vhost_not_found, with_decode
from leveret.management.policies_api import validation_failed

log = logging.getLogger("leveret.access")

BACKEND: web.AppKey[Backend] = web.AppKey("parameters_api_backend", Backend)
NOT_FOUND = AMQPError(ReplyCode.NOT_FOUND, "not found")
CLUSTER_ID = "internal_cluster_id"


def register(app: web.Application, backend: Backend) -> None:
    """Add the routes to ``app`` (before it starts)."""
    app[BACKEND] = backend
    if CLUSTER_ID not in backend.global_parameters():
        # rabbit_nodes:persistent_cluster_id's form: a random 16-byte id, base64url, made once
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        backend.set_global_parameter(CLUSTER_ID, f"leveret-cluster-id-{cluster_id}")
    r = app.router
    r.add_get("/api/parameters", list_parameters)
    r.add_get("/api/parameters/{component}", list_parameters)
    r.add_get("/api/parameters/{component}/{vhost}", list_parameters)
    r.add_get("/api/parameters/{component}/{vhost}/{name}", get_parameter)
    r.add_put("/api/parameters/{component}/{vhost}/{name}", put_parameter)
    r.add_delete("/api/parameters/{component}/{vhost}/{name}", get_parameter)
    r.add_get("/api/global-parameters", list_globals)
    r.add_get("/api/global-parameters/{name}", get_global)
    r.add_put("/api/global-parameters/{name}", put_global)
    r.add_delete("/api/global-parameters/{name}", delete_global)


def _vhost(request: web.Request) -> str:
    return path_vhost(request, request.app[BACKEND].vhosts())


async def list_parameters(request: web.Request) -> web.Response:
    require_policymaker(request)
    if "vhost" in request.match_info:
        _vhost(request)
    return web.json_response([])


async def get_parameter(request: web.Request) -> web.Response:
    """GET and DELETE of one parameter: there are none."""
    require_policymaker(request)
    _vhost(request)
    raise NOT_FOUND


async def put_parameter(request: web.Request) -> web.Response:
    require_policymaker(request)
    await with_decode(request, "value")
    if request.match_info["vhost"] not in request.app[BACKEND].vhosts():
        raise vhost_not_found()
    _vhost(request)
    raise validation_failed(f"component {request.match_info['component']} not found")


def _global(name: str, value: Any) -> dict[str, Any]:
    return {"name": name, "value": value}


async def list_globals(request: web.Request) -> web.Response:
    require_administrator(request)
    params = request.app[BACKEND].global_parameters()
    return web.json_response([_global(k, v) for k, v in sorted(params.items())])


async def get_global(request: web.Request) -> web.Response:
    require_administrator(request)
    name = request.match_info["name"]
    params = request.app[BACKEND].global_parameters()
    if name not in params:
        raise NOT_FOUND
    return web.json_response(_global(name, params[name]))


async def put_global(request: web.Request) -> web.Response:
    acting = require_administrator(request)
    body = await with_decode(request, "value")
    name = request.match_info["name"]
    existed = request.app[BACKEND].set_global_parameter(name, body["value"])
    log.info("global parameter '%s' set (by '%s' over HTTP)", name, acting.name)
    return web.Response(status=204 if existed else 201)


async def delete_global(request: web.Request) -> web.Response:
    acting = require_administrator(request)
    name = request.match_info["name"]
    if not request.app[BACKEND].clear_global_parameter(name):
        raise NOT_FOUND
    log.info("global parameter '%s' cleared (by '%s' over HTTP)", name, acting.name)
    return web.Response(status=204)
