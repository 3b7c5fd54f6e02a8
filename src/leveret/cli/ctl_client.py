"""A tiny management-API client for leveretctl (stdlib urllib only).

Every failure becomes a :class:`CtlError` carrying a one-line message and the
rabbitmqctl-style exit code, so the CLI never shows a traceback:
69 broker unreachable, 77 authentication refused, 65 not found, 64 bad request,
75 timeout, 70 anything else.
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.request
from typing import Any

EX_USAGE, EX_DATAERR, EX_UNAVAILABLE, EX_SOFTWARE, EX_TEMPFAIL, EX_NOPERM = 64, 65, 69, 70, 75, 77


class CtlError(Exception):
    """``status`` and ``reason``: the HTTP status and the API's reason, when the broker answered."""

    def __init__(self, message: str, exit_code: int, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.status = status
        self.reason = reason


class ApiClient:
    """Talks to ``base_url`` (e.g. ``http://127.0.0.1:15672``) with basic auth."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.auth = f"Basic {token}"
        self.timeout = timeout

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """Send one request; returns (body, headers) for a 2xx, raises CtlError otherwise."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Authorization", self.auth)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read(), dict(resp.headers.items())
        except urllib.error.HTTPError as e:
            raise self._http_error(e) from None
        except http.client.HTTPException as e:  # something answered, not in HTTP (BadStatusLine)
            got = repr(e.args[0])[:40] if e.args else type(e).__name__
            raise CtlError(
                f"{self.base_url} did not answer in HTTP (it sent {got}); --url must be the management "
                "API (port 15672 by default), not the AMQP port (5672)",
                EX_UNAVAILABLE,
            ) from None
        except TimeoutError:
            raise CtlError(
                f"timed out after {self.timeout} seconds waiting for {self.base_url}", EX_TEMPFAIL
            ) from None
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, TimeoutError):
                raise CtlError(f"timed out after {self.timeout} seconds waiting for {self.base_url}",
                               EX_TEMPFAIL) from None  # fmt: skip
            detail = getattr(reason, "strerror", None) or str(reason)
            raise CtlError(
                f"unable to connect to the Leveret broker at {self.base_url} ({detail}); "
                "is it running? (start it with `leveret server`)",
                EX_UNAVAILABLE,
            ) from None

    def get_json(self, path: str) -> Any:
        raw, _ = self.request("GET", path)
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise CtlError(f"{self.base_url}{path} did not return JSON; is it a Leveret/RabbitMQ API?",
                           EX_SOFTWARE) from None  # fmt: skip

    @staticmethod
    def _http_error(e: urllib.error.HTTPError) -> CtlError:
        try:
            payload = json.loads(e.read() or b"{}")
            reason = str(payload.get("reason") or payload.get("error") or e.reason)
        except (json.JSONDecodeError, AttributeError):
            reason = str(e.reason)
        if e.code == 401:
            return CtlError(f"authentication failed: {reason}", EX_NOPERM, 401, reason)
        if e.code == 403:
            return CtlError(f"access refused: {reason}", EX_NOPERM, 403, reason)
        if e.code == 404:
            return CtlError("not found (no such object, vhost or API path)", EX_DATAERR, 404, reason)
        if e.code == 400:
            return CtlError(reason, EX_USAGE, 400, reason)
        return CtlError(f"HTTP {e.code}: {reason}", EX_SOFTWARE, e.code, reason)
