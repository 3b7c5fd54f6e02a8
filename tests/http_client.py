"""A real HTTP request with urllib, shared by the management tests."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any


def http_request(
    url: str,
    method: str,
    body: Any = None,
    auth: tuple[str, str] | None = ("guest", "guest"),
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """Returns (status, parsed JSON or text or None, headers). ``body``: JSON-able, or raw bytes."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw, hdrs = resp.status, resp.read(), dict(resp.headers.items())
    except urllib.error.HTTPError as e:
        status, raw, hdrs = e.code, e.read(), dict(e.headers.items())
    if not raw:
        return status, None, hdrs
    try:
        return status, json.loads(raw), hdrs
    except json.JSONDecodeError:
        return status, raw.decode(), hdrs
