"""The request prelude the HTTP API's handlers share, as RabbitMQ's rabbit_mgmt_util does it: the body
with its required keys (``with_decode``), booleans and integers given as JSON or as strings
(``parse_bool``, ``parse_int``: rabbitmqadmin sends ``"true"`` and ``"5"``), query flags, and the
``{vhost}`` of a path.

Refusals are RabbitMQ's 400s, whose ``reason`` is the Erlang term rendered as JSON: a tuple
``{not_boolean,V}`` is the list ``["not_boolean", V]``.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from aiohttp import web

from leveret.errors import AMQPError, ReplyCode
from leveret.management.authz import require_vhost
from leveret.management.guards import bad_request, json_body

JSON = dict[str, Any]


def missing_keys(body: JSON, *keys: str) -> None:
    """400 with RabbitMQ's reason (``[{key_missing,read}]``, every missing key) unless ``body`` has
    every key."""
    missing = [k for k in keys if k not in body]
    if missing:
        raise bad_request("[" + ",".join(f"{{key_missing,{k}}}" for k in missing) + "]")


async def with_decode(request: web.Request, *keys: str) -> JSON:
    """The body as a JSON object (see :func:`guards.json_body`) holding every one of ``keys``."""
    body = await json_body(request)
    missing_keys(body, *keys)
    return body


def parse_bool(body: JSON, key: str, default: bool) -> bool:
    """rabbit_mgmt_util:parse_bool: JSON booleans, ``"true"``/``"false"``; absent or null is
    ``default``; anything else 400 ``["not_boolean", V]``."""
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    if v in ("true", "false"):
        return bool(v == "true")
    raise bad_request(["not_boolean", v])


def parse_int(v: Any) -> int:
    """rabbit_mgmt_util:parse_int: a JSON integer or a string of one; else 400 ``["not_integer", V]``."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            pass
    raise bad_request(["not_integer", v])


def flag(request: web.Request, name: str) -> bool:
    """A query flag (``?if-unused=true``)."""
    return request.query.get(name, "false").lower() in ("true", "1", "yes")


def path_vhost(request: web.Request, vhosts: Collection[str]) -> str:
    """The ``{vhost}`` path segment: 404 when it is not in ``vhosts``, then 401 "User not authorised
    to access virtual host" unless the user has a permission row there (administrators always pass),
    in RabbitMQ's order (``user_matches_vhost`` lets a missing vhost through)."""
    vhost = request.match_info["vhost"]
    if vhost not in vhosts:
        raise AMQPError(ReplyCode.NOT_FOUND, f"no vhost '{vhost}'")
    require_vhost(request, vhost)
    return vhost


def vhost_not_found() -> web.HTTPException:
    """RabbitMQ's 404 for declaring in a vhost that does not exist (the declare's own check)."""
    return not_found("vhost_not_found")


def not_found(reason: str) -> web.HTTPException:
    """A 404 with RabbitMQ's ``not_found`` error (rabbit_mgmt_util:not_found), not the router's."""
    return web.HTTPNotFound(text=json.dumps({"error": "not_found", "reason": reason}), content_type="application/json")
