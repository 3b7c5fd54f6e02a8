"""Who is asking, and may they: HTTP basic authentication against the broker's users
(:class:`leveret.model.access.AccessControl`), and RabbitMQ's tag rules for the HTTP API.

Every ``/api/`` request goes through :func:`auth_middleware`: a missing or wrong login is 401 with
``WWW-Authenticate`` (RabbitMQ's realm), a user without a management tag (administrator,
monitoring, policymaker, management) 401 "Not management user". A failed login is logged with the
user, the peer and the reason (never the password), and a peer address with repeated failures has
its every request answered only after the shared throttle's delay (``LoginThrottle``: the same
object as the AMQP listener's), without slowing anyone else.

Handlers then call :func:`current_user` and the ``require_*`` helpers (RabbitMQ's
``is_authorized_*``): each raises the 401 RabbitMQ answers (``Not administrator user``, ``Not
monitor user``, ``User not authorised to access virtual host``, ...).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from leveret.model.access import AccessControl, LoginRefused, LoginThrottle, User

log = logging.getLogger("leveret.management")

ACCESS: web.AppKey[AccessControl] = web.AppKey("access", AccessControl)
LOGINS: web.AppKey[LoginThrottle] = web.AppKey("logins", LoginThrottle)
# Request storage key of the authenticated User (web.RequestKey where aiohttp has it, >= 3.13).
_USER: Any = getattr(web, "RequestKey", lambda name, kind: name)("leveret.user", User)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REALM = {"WWW-Authenticate": 'Basic realm="RabbitMQ Management"'}


def is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        addr = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def not_authorised(reason: str, *, realm: bool = False, error: str = "not_authorised") -> web.HTTPUnauthorized:
    """RabbitMQ's 401 body: ``{"error": "not_authorised", "reason": ...}`` (a failed login is
    ``not_authorized``, spelt so by rabbit_mgmt_util:not_authenticated)."""
    return web.HTTPUnauthorized(
        text=json.dumps({"error": error, "reason": reason}),
        content_type="application/json",
        headers=REALM if realm else None,
    )


def credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) from a basic ``Authorization`` header; None if absent or malformed."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (user, password) if sep else None


def authenticate(header: str | None, remote: str | None, access: AccessControl) -> tuple[User | None, str]:
    """Check a basic ``Authorization`` header. Returns (user, "") or (None, the log's reason)."""
    creds = credentials(header)
    if creds is None:
        return None, "no or malformed basic credentials"
    name, password = creds
    try:
        return access.authenticate(name, password, "127.0.0.1" if is_loopback(remote) else (remote or "?")), ""
    except LoginRefused as exc:
        return None, exc.reason


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/") or request.method == "OPTIONS":
        return await handler(request)
    app = request.app
    peer = request.remote or "?"
    logins = app[LOGINS]
    delay = logins.delay(peer)
    if delay > 0:
        await asyncio.sleep(delay)
    header = request.headers.get("Authorization")
    user, reason = authenticate(header, request.remote, app[ACCESS])
    if user is None:
        if header is not None:  # a browser's first, credential-less request is not an attempt
            if not delay:  # a held one was counted when it was held
                logins.failed(peer)
            log.warning("HTTP login refused from %s: %s (%s %s)", peer, reason, request.method, request.path)
        # No WWW-Authenticate for the dashboard's own fetches, so browsers show its login
        # field instead of a native password dialog.
        ajax = request.headers.get("X-Requested-With") == "XMLHttpRequest"
        if header is None:  # RabbitMQ (cowboy) answers a request without credentials with no body
            raise web.HTTPUnauthorized(headers=None if ajax else REALM)
        if "localhost" in reason:  # RabbitMQ's text
            raise not_authorised("User can only log in via localhost", realm=not ajax, error="not_authorized")
        raise not_authorised("Login failed", realm=not ajax, error="not_authorized")
    logins.succeeded(peer)
    if not user.is_management:
        log.warning("HTTP login refused from %s: user '%s' has no management tag", peer, user.name)
        raise not_authorised("Not management user")
    request[_USER] = user
    return await handler(request)


def current_user(request: web.Request) -> User:
    """The authenticated user of an ``/api/`` request (set by :func:`auth_middleware`)."""
    user: User = request[_USER]
    return user


def require_administrator(request: web.Request) -> User:
    u = current_user(request)
    if not u.is_administrator:
        raise not_authorised("Not administrator user")
    return u


def require_monitor(request: web.Request) -> User:
    """Monitoring or administrator."""
    u = current_user(request)
    if not u.is_monitor:
        raise not_authorised("Not monitor user")
    return u


def require_policymaker(request: web.Request) -> User:
    """Policymaker or administrator."""
    u = current_user(request)
    if not u.is_policymaker:
        raise not_authorised("Not policymaker user")
    return u


def may_see_vhost(request: web.Request, vhost: str) -> bool:
    """Administrators see every vhost; anyone else those it has a permission row in."""
    u = current_user(request)
    return u.is_administrator or request.app[ACCESS].may_use_vhost(u.name, vhost)


def require_vhost(request: web.Request, vhost: str) -> User:
    u = current_user(request)
    if not may_see_vhost(request, vhost):
        raise not_authorised("User not authorised to access virtual host")
    return u


def visible_vhosts(request: web.Request) -> set[str] | None:
    """The vhosts this user's lists show: None means all (administrators)."""
    u = current_user(request)
    if u.is_administrator:
        return None
    return request.app[ACCESS].vhosts_of(u.name)


def new_throttle() -> LoginThrottle:
    return LoginThrottle(clock=time.monotonic)
