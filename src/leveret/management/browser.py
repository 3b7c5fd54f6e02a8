"""What keeps the management API and dashboard safe from other web pages in the user's browser.

A page on another origin can make the browser send requests to the broker, and the browser adds the
basic-auth credentials it has cached for it (or takes them from a URL such as
``http://guest:guest@host:15672/...``). It cannot read the answers (no CORS header is ever sent),
but a state-changing request does its harm without being read. Without a CORS preflight a page can
send only GET, HEAD and POST, and a POST body only as ``application/x-www-form-urlencoded``,
``multipart/form-data`` or ``text/plain``. So, for a state-changing request (POST, PUT, DELETE,
PATCH; all of them are under ``/api/``, but every path is checked):

* :func:`cross_site_middleware` answers 403 ``forbidden`` when an ``Origin`` header names another
  origin than the broker's own (scheme, host and port, from the ``Host`` header and whether the
  connection is TLS) or one of ``allowed_origins``; without ``Origin``, when ``Sec-Fetch-Site``
  says the request came from another site or origin. Then 415 ``unsupported_media_type`` when it
  declares a Content-Type other than ``application/json`` (parameters such as ``charset`` are
  fine), or carries a body without declaring one. A request with no body and no Content-Type
  (``curl -X DELETE``) passes. Clients that are not browsers send no ``Origin``: they pass.
  Both checks run before authentication, so a hostile page cannot even make the broker check
  (and count as failed) the credentials it sends. Each refusal is logged.
* :func:`security_headers`, an ``on_response_prepare`` hook (a middleware would miss the answers
  that handlers stream, which are sent before the middleware sees them), puts on every answer a
  Content-Security-Policy that allows only the dashboard's own files and forbids framing,
  ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
  ``Vary: Origin``, and ``Cache-Control: no-store`` on ``/api/``; it removes any
  ``Access-Control-*`` header, so no other origin may read an answer.

RabbitMQ accepts any Content-Type on most routes and never refuses an Origin (see
docs/security.md, "Browser safety"); Leveret deliberately goes further.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from yarl import URL

from leveret.management.guards import error_response

log = logging.getLogger("leveret.management")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: An origin as (scheme, host, port), the port explicit or the scheme's default.
Origin = tuple[str, str, int]
ALLOWED_ORIGINS: web.AppKey[frozenset[Origin]] = web.AppKey("allowed_origins", frozenset)

STATE_CHANGING = frozenset({"POST", "PUT", "DELETE", "PATCH"})
#: ``Sec-Fetch-Site`` values of requests that did not come from another page: the dashboard's own
#: requests, and what the user typed or bookmarked.
_OWN_SITE = frozenset({"same-origin", "none"})

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "connect-src 'self'", "object-src 'none'", "frame-ancestors 'none'", "base-uri 'none'",
    "form-action 'self'",
])  # fmt: skip
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def parse_origin(text: str) -> Origin | None:
    """``text`` as an origin (``scheme://host[:port]``, http or https, nothing else), or None.
    ``Origin: null`` (sandboxed frames, some redirects, ``file:`` pages) is None: it matches nothing."""
    try:
        url = URL(text.strip())
    except (ValueError, TypeError):
        return None
    if url.scheme not in ("http", "https") or not url.host or url.port is None:
        return None
    if url.user is not None or url.password is not None or url.path not in ("", "/"):
        return None
    if url.query_string or url.fragment:
        return None
    return url.scheme, url.host.lower().rstrip("."), url.port


def allowed_origins(origins: Iterable[str]) -> frozenset[Origin]:
    """The configured extra origins, parsed; ValueError names one that is not an origin."""
    parsed = set()
    for text in origins:
        origin = parse_origin(text)
        if origin is None:
            raise ValueError(f"allowed origin {text!r} is not scheme://host[:port]")
        parsed.add(origin)
    return frozenset(parsed)


def own_origin(request: web.Request) -> Origin | None:
    """The origin the client addressed: its ``Host`` header and whether the connection is TLS.
    (Not ``request.host``: without a Host header it asks the resolver for this machine's name.)"""
    hosts = request.headers.getall("Host", [])
    if len(hosts) != 1:
        return None
    return parse_origin(f"{'https' if request.secure else 'http'}://{hosts[0]}")


def _shown(values: list[str]) -> str:
    """Header values as a refusal quotes them (and the log): at most 200 characters."""
    text = ", ".join(values)
    return text if len(text) <= 200 else text[:200] + "..."


def _forbidden(request: web.Request, reason: str) -> web.Response:
    log.warning("refused %s %s from %s: %s", request.method, request.raw_path, request.remote, reason)
    return error_response(403, "forbidden", reason)


def _unsupported(request: web.Request, reason: str) -> web.Response:
    log.warning("refused %s %s from %s: %s", request.method, request.raw_path, request.remote, reason)
    return error_response(415, "unsupported_media_type", reason)


def origin_refusal(request: web.Request) -> web.Response | None:
    """403 for a request another origin's page made the browser send, else None."""
    origins = request.headers.getall("Origin", [])
    if not origins:
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site.strip().lower() not in _OWN_SITE:
            return _forbidden(request, f"cross-origin request refused (Sec-Fetch-Site: {_shown([site])})")
        return None
    if len(origins) == 1:
        origin = parse_origin(origins[0])
        if origin is not None and (origin == own_origin(request) or origin in request.app[ALLOWED_ORIGINS]):
            return None
    return _forbidden(request, f"cross-origin request refused (Origin: {_shown(origins)})")


def media_type_refusal(request: web.Request) -> web.Response | None:
    """415 unless the request declares ``application/json``, or has neither body nor Content-Type."""
    types = request.headers.getall("Content-Type", [])
    if not types:
        if request.body_exists:
            return _unsupported(request, "a request body must be sent as Content-Type: application/json")
        return None
    media_type = types[0].partition(";")[0].strip().lower()
    if len(types) == 1 and media_type == "application/json":
        return None
    return _unsupported(request, f"Content-Type {_shown(types)} is not supported here: send application/json")


@web.middleware
async def cross_site_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuses state-changing requests from other origins (403) and in other media types than
    JSON (415), as the module docstring says; passes everything else on. Every path is checked,
    not only ``/api/``: none other changes anything today, and one that one day does is covered."""
    if request.method in STATE_CHANGING:
        refusal = origin_refusal(request) or media_type_refusal(request)
        if refusal is not None:
            return refusal
    return await handler(request)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: the headers the module docstring lists, on every answer."""
    headers = response.headers
    for name in {n for n in headers if n.lower().startswith("access-control-")}:
        headers.popall(name, None)
    headers.update(SECURITY_HEADERS)
    vary = headers.get("Vary", "")
    if "origin" not in vary.lower():
        headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
    if request.path.startswith("/api/"):
        headers["Cache-Control"] = "no-store"


def setup(app: web.Application, origins: Iterable[str] = ()) -> None:
    """Store ``origins`` (see :func:`allowed_origins`) and hook :func:`security_headers` into ``app``.
    :func:`cross_site_middleware` goes in the app's middleware list, before authentication."""
    app[ALLOWED_ORIGINS] = allowed_origins(origins)
    app.on_response_prepare.append(security_headers)
