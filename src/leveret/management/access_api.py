"""Users, vhosts, permissions and topic permissions over HTTP, with RabbitMQ 3.10's paths, bodies,
shapes and status codes (rabbit_mgmt_wm_user(s), _users_bulk_delete, _permission(s)[_user|_vhost],
_topic_permission(s)[_user|_vhost] and _vhost). Every route is administrator only (401 "Not
administrator user"), so password hashes appear in no other user's responses.

Contract (RabbitMQ's):

* ``PUT /api/users/{name}`` creates (201) or replaces (204) a user. The body needs ``tags`` (a list
  or a comma-separated string; else 400 ``tags_not_present``) and may carry ``password`` (hashed
  here with sha256) or ``password_hash`` (base64, taken as is, with ``hashing_algorithm`` or
  sha256), not both (400 ``both_password_and_password_hash_are_provided``). With neither, a new
  user cannot log in with a password and an existing one loses its password. ``limits`` is kept
  when absent. Changing a user's password closes its connections (AccessControl's rule).
* ``PUT /api/permissions/{vhost}/{user}`` needs ``configure``, ``write`` and ``read`` (400
  ``[{key_missing,read}]``); an unknown user or vhost is 400 ``vhost_or_user_not_found``; a regex
  Python cannot compile is 400 naming it. ``PUT /api/topic-permissions/{vhost}/{user}`` likewise
  with ``exchange``, ``write``, ``read``. GET and DELETE of a row that does not exist are 404.
* ``PUT /api/vhosts/{name}`` (body optional: ``description``, ``tags``) creates (201, and the acting
  user gets ``.*`` on all three, as rabbit_vhost:put_vhost grants) or updates (204) a vhost;
  ``DELETE`` removes it with everything in it (its connections are closed with 320).
* Every change is logged (``leveret.access``, INFO) with the administrator who made it.

:func:`apply_user` is RabbitMQ's ``put_user``: the definitions import uses it too.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from leveret.errors import AMQPError, ReplyCode
from leveret.management.authz import ACCESS, require_administrator
from leveret.management.backend import Backend
from leveret.management.decode import with_decode
from leveret.management.guards import bad_request
from leveret.model import limits as L
from leveret.model.access import HASHES, MD5, SHA256, AccessControl, User, parse_tags

log = logging.getLogger("leveret.access")

JSON = dict[str, Any]
BACKEND: web.AppKey[Backend] = web.AppKey("access_api_backend", Backend)
FULL = (".*", ".*", ".*")


def register(app: web.Application, backend: Backend) -> None:
    """Add the routes to ``app`` (before it starts); ``backend`` creates and deletes vhosts."""
    app[BACKEND] = backend
    r = app.router
    # Fixed paths before the {user} ones.
    r.add_get("/api/users", list_users)
    r.add_get("/api/users/without-permissions", users_without_permissions)
    r.add_post("/api/users/bulk-delete", bulk_delete_users)
    r.add_get("/api/users/{user}", get_user)
    r.add_put("/api/users/{user}", put_user)
    r.add_delete("/api/users/{user}", delete_user)
    r.add_get("/api/users/{user}/permissions", user_permissions)
    r.add_get("/api/users/{user}/topic-permissions", user_topic_permissions)
    r.add_get("/api/permissions", list_permissions)
    r.add_get("/api/permissions/{vhost}/{user}", get_permission)
    r.add_put("/api/permissions/{vhost}/{user}", put_permission)
    r.add_delete("/api/permissions/{vhost}/{user}", delete_permission)
    r.add_get("/api/topic-permissions", list_topic_permissions)
    r.add_get("/api/topic-permissions/{vhost}/{user}", get_topic_permission)
    r.add_put("/api/topic-permissions/{vhost}/{user}", put_topic_permission)
    r.add_delete("/api/topic-permissions/{vhost}/{user}", delete_topic_permission)
    r.add_delete("/api/topic-permissions/{vhost}/{user}/{exchange}", delete_topic_permission)
    r.add_put("/api/vhosts/{vhost}", put_vhost)
    r.add_delete("/api/vhosts/{vhost}", delete_vhost)
    r.add_get("/api/vhosts/{vhost}/permissions", vhost_permissions)
    r.add_get("/api/vhosts/{vhost}/topic-permissions", vhost_topic_permissions)


# ---- the rules shared with the definitions import ------------------------------------------------


def hashing_algorithm_for(version: object) -> str:
    """The algorithm of a hash given without one, from the file's RabbitMQ version, as
    rabbit_auth_backend_internal:hashing_algorithm/2: 3.6.0 sha256, 3.0-3.5 md5, else sha256."""
    v = version if isinstance(version, str) else ""
    if re.match(r"3\.[0-5]\.", v):
        return MD5
    return SHA256


def tags_of(value: object) -> tuple[str, ...]:
    """Tags from a list of strings or a comma-separated string (400 text otherwise)."""
    if isinstance(value, str):
        return parse_tags(value)
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return parse_tags(value)
    raise ValueError("tags must be a list of strings or a comma-separated string")


def _limits(value: object) -> dict[str, Any]:
    if value is None or value == []:  # RabbitMQ exports an empty proplist as []
        return {}
    return L.validate(value, L.USER_KEYS, "user-limits")


def _given(entry: JSON, key: str) -> bool:
    return entry.get(key) is not None


def apply_user(access: AccessControl, name: str, entry: JSON, version: object = None) -> User:
    """Create or replace user ``name`` from a JSON object (an HTTP body or a definitions entry), as
    RabbitMQ's put_user does. ``version``: the definitions file's RabbitMQ version, which picks the
    algorithm of a hash given without one. Raises ValueError with RabbitMQ's reason."""
    if _given(entry, "tags"):
        tags = tags_of(entry["tags"])
    elif _given(entry, "administrator"):  # the pre-3.0 form
        tags = ("administrator",) if str(entry["administrator"]).lower() in ("true", "1", "yes") else ()
    else:
        raise ValueError("tags_not_present")
    has_password, has_hash = _given(entry, "password"), _given(entry, "password_hash")
    if has_password and has_hash:
        raise ValueError("both_password_and_password_hash_are_provided")
    old = access.users.get(name)
    limits = _limits(entry.get("limits")) if "limits" in entry else dict(old.limits) if old else {}
    if has_password:
        password = entry["password"]
        if not isinstance(password, str):
            raise ValueError("password must be a string")
        return access.add_user(name, password, tags, limits=limits)
    if has_hash:
        password_hash = entry["password_hash"]
        if not isinstance(password_hash, str):
            raise ValueError("password_hash must be a string")
        try:
            raw = base64.b64decode(password_hash, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"password_hash of user '{name}' is not valid base64") from None
        if raw and len(raw) <= 4:
            raise ValueError(f"password_hash of user '{name}' is too short to hold a salt and a digest")
        algorithm = entry.get("hashing_algorithm") or hashing_algorithm_for(version)
        if algorithm not in HASHES:
            raise ValueError(f"unsupported hashing_algorithm '{algorithm}' (one of {', '.join(HASHES)})")
        return access.add_user(
            name, None, tags, password_hash=password_hash, hashing_algorithm=str(algorithm), limits=limits
        )
    # Neither: the user cannot log in with a password (RabbitMQ keeps it for other mechanisms).
    return access.add_user(name, None, tags, limits=limits)


# ---- helpers ---------------------------------------------------------------------------------------


def _access(request: web.Request) -> AccessControl:
    return request.app[ACCESS]


def _backend(request: web.Request) -> Backend:
    return request.app[BACKEND]


def _not_found() -> AMQPError:
    return AMQPError(ReplyCode.NOT_FOUND, "not found")


def _user(request: web.Request) -> User:
    """The ``{user}`` of the path, 404 if there is no such user."""
    u = _access(request).users.get(request.match_info["user"])
    if u is None:
        raise _not_found()
    return u


def _vhost_exists(request: web.Request, vhost: str) -> bool:
    return vhost in _backend(request).vhosts()


def _sorted(records: Iterable[JSON]) -> list[JSON]:
    """RabbitMQ's reply_list order for permissions: by vhost, then user."""
    return sorted(records, key=lambda r: (r.get("vhost", ""), r.get("user", ""), r.get("exchange", "")))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _audit(acting: User, what: str, *args: object) -> None:
    log.info(what + " (by '%s' over HTTP)", *args, acting.name)


# ---- users -----------------------------------------------------------------------------------------


async def list_users(request: web.Request) -> web.Response:
    require_administrator(request)
    return _json([u.record() for _, u in sorted(_access(request).users.items())])


async def users_without_permissions(request: web.Request) -> web.Response:
    require_administrator(request)
    access = _access(request)
    with_rows = {user for user, _ in access.permissions}
    return _json([u.record() for name, u in sorted(access.users.items()) if name not in with_rows])


async def get_user(request: web.Request) -> web.Response:
    require_administrator(request)
    return _json(_user(request).record())


async def put_user(request: web.Request) -> web.Response:
    acting = require_administrator(request)
    name = request.match_info["user"]
    body = await with_decode(request)
    access = _access(request)
    created = name not in access.users
    try:
        u = apply_user(access, name, body)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    _audit(acting, "user '%s' %s with tags %s", name, "created" if created else "replaced", list(u.tags))
    return web.Response(status=201 if created else 204)


async def delete_user(request: web.Request) -> web.Response:
    acting = require_administrator(request)
    name = _user(request).name
    _access(request).delete_user(name)
    _audit(acting, "user '%s' deleted", name)
    return web.Response(status=204)


async def bulk_delete_users(request: web.Request) -> web.Response:
    acting = require_administrator(request)
    body = await with_decode(request, "users")
    names = body["users"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise bad_request("users must be a list of user names")
    access = _access(request)
    for name in names:
        if name in access.users:  # deleting a missing user is not an error here
            access.delete_user(name)
            _audit(acting, "user '%s' deleted", name)
    return web.Response(status=204)


async def user_permissions(request: web.Request) -> web.Response:
    require_administrator(request)
    name = _user(request).name
    return _json(_sorted(p.record() for (u, _), p in _access(request).permissions.items() if u == name))


async def user_topic_permissions(request: web.Request) -> web.Response:
    require_administrator(request)
    name = _user(request).name
    return _json(
        _sorted(t.record() for (u, _, _), t in _access(request).topic_permissions.items() if u == name)
    )


# ---- permissions -----------------------------------------------------------------------------------


def _user_and_vhost(request: web.Request) -> tuple[str, str] | None:
    """(user, vhost) of the path if both exist, else None."""
    user, vhost = request.match_info["user"], request.match_info["vhost"]
    if user not in _access(request).users or not _vhost_exists(request, vhost):
        return None
    return user, vhost


async def list_permissions(request: web.Request) -> web.Response:
    require_administrator(request)
    return _json(_sorted(p.record() for p in _access(request).permissions.values()))


async def get_permission(request: web.Request) -> web.Response:
    require_administrator(request)
    key = _user_and_vhost(request)
    p = _access(request).permissions.get((key[0], key[1])) if key else None
    if p is None:
        raise _not_found()
    return _json(p.record())


async def put_permission(request: web.Request) -> web.Response:
    acting = require_administrator(request)
    key = _user_and_vhost(request)
    if key is None:
        raise bad_request("vhost_or_user_not_found")
    body = await with_decode(request, "configure", "write", "read")
    access = _access(request)
    existed = key in access.permissions
    try:
        p = access.set_permissions(key[0], key[1], body["configure"], body["write"], body["read"])
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    _audit(acting, "permissions of user '%s' in vhost '%s' set to configure '%s' write '%s' read '%s'",
           p.user, p.vhost, p.configure, p.write, p.read)  # fmt: skip
    return web.Response(status=204 if existed else 201)


async def delete_permission(request: web.Request) -> web.Response:
    acting = require_administrator(request)
    key = _user_and_vhost(request)
    if key is None or not _access(request).clear_permissions(*key):
        raise _not_found()
    _audit(acting, "permissions of user '%s' in vhost '%s' cleared", *key)
    return web.Response(status=204)


async def list_topic_permissions(request: web.Request) -> web.Response:
    require_administrator(request)
    return _json(_sorted(t.record() for t in _access(request).topic_permissions.values()))


def _topic_rows(request: web.Request) -> list[JSON]:
    """The path user's topic permissions in the path vhost; 404 if none (or no such user/vhost)."""
    key = _user_and_vhost(request)
    rows = [] if key is None else [
        t.record() for (u, v, _), t in _access(request).topic_permissions.items() if (u, v) == key
    ]  # fmt: skip
    if not rows:
        raise _not_found()
    return _sorted(rows)


async def get_topic_permission(request: web.Request) -> web.Response:
    require_administrator(request)
    return _json(_topic_rows(request))


async def put_topic_permission(request: web.Request) -> web.Response:
    acting = require_administrator(request)
    key = _user_and_vhost(request)
    if key is None:
        raise bad_request("vhost_or_user_not_found")
    body = await with_decode(request, "exchange", "write", "read")
    exchange = body["exchange"]
    if not isinstance(exchange, str):
        raise bad_request("exchange must be a string")
    access = _access(request)
    existed = any((u, v) == key for (u, v, _) in access.topic_permissions)
    try:
        t = access.set_topic_permissions(key[0], key[1], exchange, body["write"], body["read"])
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    _audit(acting, "topic permissions of user '%s' in vhost '%s' on exchange '%s' set to write '%s' read '%s'",
           t.user, t.vhost, t.exchange, t.write, t.read)  # fmt: skip
    return web.Response(status=204 if existed else 201)


async def delete_topic_permission(request: web.Request) -> web.Response:
    """All of the user's topic permissions in the vhost, or only those of ``{exchange}`` (a path
    segment, as RabbitMQ's route, or ``?exchange=``)."""
    acting = require_administrator(request)
    _topic_rows(request)
    user, vhost = request.match_info["user"], request.match_info["vhost"]
    exchange = request.match_info.get("exchange", request.query.get("exchange"))
    n = _access(request).clear_topic_permissions(user, vhost, exchange)
    _audit(acting, "%d topic permissions of user '%s' in vhost '%s' cleared", n, user, vhost)
    return web.Response(status=204)


# ---- vhosts ----------------------------------------------------------------------------------------


async def put_vhost(request: web.Request) -> web.Response:
    acting = require_administrator(request)
    name = request.match_info["vhost"]
    body = await with_decode(request)
    description = body.get("description") or ""
    if not isinstance(description, str):
        raise bad_request("description must be a string")
    try:
        tags = list(tags_of(body.get("tags") or ""))
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    b = _backend(request)
    created = name not in b.vhosts()
    b.add_vhost(name, description, tags)
    _audit(acting, "vhost '%s' %s", name, "created" if created else "updated")
    access = _access(request)
    if created and acting.name in access.users:  # rabbit_vhost:maybe_grant_full_permissions
        access.set_permissions(acting.name, name, *FULL)
        _audit(
            acting,
            "permissions of user '%s' in vhost '%s' set to '.*' (it created the vhost)",
            acting.name,
            name,
        )
    return web.Response(status=201 if created else 204)


async def delete_vhost(request: web.Request) -> web.Response:
    acting = require_administrator(request)
    name = request.match_info["vhost"]
    b = _backend(request)
    if name not in b.vhosts():
        raise _not_found()
    b.delete_vhost(name)
    _audit(acting, "vhost '%s' deleted with everything in it", name)
    return web.Response(status=204)


async def vhost_permissions(request: web.Request) -> web.Response:
    require_administrator(request)
    vhost = request.match_info["vhost"]
    if not _vhost_exists(request, vhost):
        raise _not_found()
    return _json(_sorted(p.record() for (_, v), p in _access(request).permissions.items() if v == vhost))


async def vhost_topic_permissions(request: web.Request) -> web.Response:
    require_administrator(request)
    vhost = request.match_info["vhost"]
    if not _vhost_exists(request, vhost):
        raise _not_found()
    return _json(
        _sorted(t.record() for (_, v, _), t in _access(request).topic_permissions.items() if v == vhost)
    )
