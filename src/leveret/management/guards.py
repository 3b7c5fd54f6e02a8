"""What the HTTP API does before and around its handlers, so no client input can make it fail:
RabbitMQ's JSON error shape for every failure (never a traceback page), path segments that must
percent-decode to UTF-8, and request bodies that are bounded in size and time, must be Unicode JSON
objects, and are parsed without holding the event loop for long.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web

from leveret.errors import AMQPError, ReplyCode
from leveret.management.jsonbody import loads_sliced
from leveret.management.listing import ListingError

log = logging.getLogger("leveret.management")

JSON = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TIMEOUT: web.AppKey[float] = web.AppKey("request_timeout", float)

#: Largest request body (RabbitMQ's default ``management.http.max_body_size``): a definitions
#: file of about 200,000 queues. Bigger bodies get 400 "Exceeded HTTP request body size limit".
MAX_BODY = 20_000_000
#: Seconds a client may take to send a request's headers (and, idle, between requests) and,
#: separately, its body; then the connection is closed (headers) or answered 408 (body).
REQUEST_TIMEOUT = 30.0
#: Bodies at least this big are parsed in slices (see jsonbody.py).
SLICED_PARSE = 1_000_000
#: Seconds to drain the unread rest of a body after answering early (a 400, a 408), then close.
LINGER = 2.0
# JSON escapes of UTF-16 surrogates: json.loads accepts a lone one, which no UTF-8 text can hold.
# Pairs are removed first, then any surrogate escape left is lone. Both scans run in C with a literal
# prefix: 30 ms for an 18 MB definitions file. (An escaped backslash before "ud800" is refused too.)
_SURROGATE_PAIR = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")

def error_response(status: int, error: str, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": error, "reason": reason}, status=status, headers=headers)


def bad_request(reason: Any) -> web.HTTPException:
    """RabbitMQ's 400: ``reason`` is text, or an Erlang term rendered as JSON (``["not_int", "priority"]``)."""
    return web.HTTPBadRequest(
        text=json.dumps({"error": "bad_request", "reason": reason}), content_type="application/json"
    )


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes RabbitMQ's JSON error shape; nothing escapes as a traceback page."""
    try:
        return await handler(request)
    except AMQPError as e:
        # What the model refuses, as RabbitMQ's management answers it for operations it runs on
        # the broker as the HTTP user (rabbit_mgmt_util:direct_request): a 403 (a permission,
        # an ``amq.`` name) is 401 "Access refused." with no detail, any other soft error 400 with
        # the bare explanation (no ``CODE - `` prefix).
        if e.code == ReplyCode.NOT_FOUND:
            return error_response(404, "Object Not Found", "Not Found")
        if e.code in (ReplyCode.ACCESS_REFUSED, ReplyCode.NOT_ALLOWED):
            return error_response(401, "not_authorised", "Access refused.")
        return error_response(400, "bad_request", e.detail)
    except ListingError as e:
        return error_response(400, e.error, e.reason)
    except web.HTTPException as e:
        if e.content_type == "application/json" or e.status < 400:
            raise
        if e.status == 404 and request.method not in ("GET", "HEAD") and request.path.startswith("/api/"):
            # RabbitMQ's catch-all route for unknown /api/ paths answers GET only
            return web.Response(status=405, headers={"Allow": "HEAD, GET, OPTIONS"})
        if e.status == 404:
            return error_response(404, "Object Not Found", "Not Found")
        if e.status in (401, 405):  # cowboy's: no body (401: a request without credentials)
            keep = {k: e.headers[k] for k in ("Allow", "WWW-Authenticate") if k in e.headers}
            return web.Response(status=e.status, headers=keep)
        return error_response(e.status, e.reason, e.reason)
    except RecursionError:
        return error_response(400, "bad_request", "nested too deeply")
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception as e:
        log.exception("management handler failed: %s %s", request.method, request.path)
        return error_response(500, "internal_server_error", f"{type(e).__name__}; the broker log has the details")


@web.middleware
async def strict_path_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Path segments must percent-decode to UTF-8; otherwise ``bad%FFname`` would reach a
    handler as the literal text (yarl keeps undecodable escapes as they are)."""
    for part in request.rel_url.raw_parts:
        if "%" in part:
            try:
                unquote_to_bytes(part).decode("utf-8")
            except UnicodeDecodeError:
                return error_response(400, "bad_request", "path segment is not valid UTF-8 once percent-decoded")
    return await handler(request)


def _has_lone_surrogate(raw: bytes) -> bool:
    if b"\\ud" not in raw and b"\\uD" not in raw:
        return False
    return _SURROGATE.search(_SURROGATE_PAIR.sub(b"", raw)) is not None


async def json_body(request: web.Request) -> JSON:
    """The request body as a JSON object: 400 if it is too big, not JSON, nested too deeply or
    holds text that is not Unicode; 408 if it does not arrive within :data:`REQUEST_TIMEOUT`."""
    if not request.can_read_body:
        return {}
    try:
        async with asyncio.timeout(request.app[TIMEOUT]):
            raw = await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=json.dumps({"error": "request_timeout", "reason": "request body not received in time"}),
            content_type="application/json", headers={"Connection": "close"},
        ) from None  # fmt: skip
    except web.HTTPRequestEntityTooLarge:
        raise bad_request("Exceeded HTTP request body size limit") from None
    if not raw.strip():
        return {}
    if _has_lone_surrogate(raw):
        raise bad_request("body holds a lone UTF-16 surrogate escape, which is not Unicode text")
    try:
        # A big body (a definitions file) is parsed a slice per loop turn, as UTF-8 only.
        body = json.loads(raw) if len(raw) < SLICED_PARSE else await loads_sliced(raw.decode("utf-8"))
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        raise bad_request("not_json") from None
    except RecursionError:
        raise bad_request("body is nested too deeply") from None
    if body is None:
        return {}
    if isinstance(body, str):  # rabbit_mgmt_util:decode's own text
        raise bad_request("invalid payload: the request body JSON-decoded to a string. "
                          "Is the input doubly-JSON-encoded?")  # fmt: skip
    if not isinstance(body, dict):
        raise bad_request("not_json")
    return body
