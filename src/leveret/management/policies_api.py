"""Policies and operator policies over HTTP, with RabbitMQ 3.10's paths, bodies and answers
(rabbit_mgmt_wm_policies, _policy, _operator_policies, _operator_policy).

Contract:

* ``GET /api/policies[/{vhost}]`` lists the policies of the vhosts the user may see (policymaker or
  administrator); ``GET /api/policies/{vhost}/{name}`` one of them (404 if missing).
* ``PUT /api/policies/{vhost}/{name}`` with ``pattern``, ``definition`` and optional ``priority`` (0)
  and ``apply-to`` (``all``) creates (201) or replaces (204) a policy, which applies at once. A
  definition RabbitMQ refuses is 400 with its text, "Validation failed" first and HTML-escaped as
  rabbit_mgmt_util's ``escape_html_tags`` does. ``DELETE`` removes it (204; 404 if missing).
* ``/api/operator-policies`` likewise, administrators only; its PUT wants ``application/json``
  (415 otherwise, as cowboy answers RabbitMQ's handler).
* An unknown vhost is 404 (a PUT's: ``vhost_not_found``); a PUT without ``pattern`` or
  ``definition`` is 400 ``[{key_missing,definition}]``.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from leveret.errors import AMQPError, ReplyCode
from leveret.management.authz import (
    may_see_vhost,
    require_administrator,
    require_policymaker,
    require_vhost,
)
from leveret.management.backend import Backend
from leveret.management.decode import vhost_not_found, with_decode
from leveret.management.guards import bad_request
from leveret.model.access import User
from leveret.model.policy import PolicyError

log = logging.getLogger("leveret.access")

BACKEND: web.AppKey[Backend] = web.AppKey("policies_api_backend", Backend)
USER, OPERATOR = "/api/policies", "/api/operator-policies"


def register(app: web.Application, backend: Backend) -> None:
    """Add the routes to ``app`` (before it starts)."""
    app[BACKEND] = backend
    r = app.router
    for base in (USER, OPERATOR):
        r.add_get(base, list_policies)
        r.add_get(base + "/{vhost}", list_policies)
        r.add_get(base + "/{vhost}/{name}", get_policy)
        r.add_put(base + "/{vhost}/{name}", put_policy)
        r.add_delete(base + "/{vhost}/{name}", delete_policy)


def validation_failed(text: str) -> web.HTTPException:
    """RabbitMQ's 400 for a refused policy: the rabbitmqctl text, HTML tags escaped."""
    reason = f"Validation failed\n\n{text}\n"
    return bad_request(reason.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def _operator(request: web.Request) -> bool:
    return request.path.startswith(OPERATOR)


def _authorise(request: web.Request) -> User:
    return require_administrator(request) if _operator(request) else require_policymaker(request)


def _vhost(request: web.Request) -> str:
    """The path's vhost: 401 without access to it, 404 if it does not exist."""
    vhost = request.match_info["vhost"]
    require_vhost(request, vhost)
    if vhost not in request.app[BACKEND].vhosts():
        raise AMQPError(ReplyCode.NOT_FOUND, "not found")
    return vhost


async def list_policies(request: web.Request) -> web.Response:
    _authorise(request)
    backend = request.app[BACKEND]
    vhost = request.match_info.get("vhost")
    if vhost is not None:
        _vhost(request)
    rows = backend.policies(vhost, operator=_operator(request))
    if vhost is None:
        rows = [p for p in rows if may_see_vhost(request, p["vhost"])]
    return web.json_response(rows)


async def get_policy(request: web.Request) -> web.Response:
    _authorise(request)
    vhost, name = _vhost(request), request.match_info["name"]
    for p in request.app[BACKEND].policies(vhost, operator=_operator(request)):
        if p["name"] == name:
            return web.json_response(p)
    raise AMQPError(ReplyCode.NOT_FOUND, "not found")


async def put_policy(request: web.Request) -> web.Response:
    acting = _authorise(request)
    operator = _operator(request)
    if operator and request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType()
    body = await with_decode(request, "pattern", "definition")
    if request.match_info["vhost"] not in request.app[BACKEND].vhosts():
        raise vhost_not_found()
    vhost, name = _vhost(request), request.match_info["name"]
    try:
        new = request.app[BACKEND].set_policy(
            vhost, name, body["pattern"], body["definition"], body.get("priority", 0), body.get("apply-to", "all"),
            operator=operator,
        )  # fmt: skip
    except PolicyError as exc:
        raise validation_failed(str(exc)) from None
    _audit(acting, "%s '%s' in vhost '%s' set: %s", operator, name, vhost, body)
    return web.Response(status=201 if new else 204)


async def delete_policy(request: web.Request) -> web.Response:
    acting = _authorise(request)
    operator = _operator(request)
    vhost, name = _vhost(request), request.match_info["name"]
    if not request.app[BACKEND].clear_policy(vhost, name, operator=operator):
        raise AMQPError(ReplyCode.NOT_FOUND, "not found")
    _audit(acting, "%s '%s' in vhost '%s' cleared", operator, name, vhost)
    return web.Response(status=204)


def _audit(acting: User, what: str, operator: bool, *args: Any) -> None:
    log.info(what + " (by '%s' over HTTP)", "operator policy" if operator else "policy", *args, acting.name)
