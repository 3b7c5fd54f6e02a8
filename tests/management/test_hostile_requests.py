"""Requests an untrusted HTTP client can send: half-sent requests, bad percent-encoding, names AMQP
cannot carry, bodies too big, too deep or not Unicode. Each gets a 4xx in RabbitMQ's JSON shape,
or the connection closed, never a 500 (issue 11, item 7). Raw sockets where urllib would refuse."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator

import pytest

from leveret.management.http import LINGER, MAX_BODY, build_app

from .conftest import USERS, Served, populated_backend, serve

AUTH = "Authorization: Basic " + base64.b64encode(b"guest:guest").decode()
TIMEOUT = 1.0


@pytest.fixture
def short(api: Served) -> Iterator[Served]:
    """The management app with a 1 s request timeout."""
    backend = populated_backend()
    app = lambda: build_app(backend, users=dict(USERS), request_timeout=TIMEOUT)  # noqa: E731
    for url, loop in serve(app):
        yield Served(url, backend, loop)


def _connect(served: Served) -> socket.socket:
    host, port = served.url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def _closed_within(s: socket.socket, seconds: float) -> tuple[float, bytes]:
    """Read until the server closes; returns (seconds it took, what it sent)."""
    started = time.monotonic()
    got = b""
    s.settimeout(seconds)
    try:
        while chunk := s.recv(65536):
            got += chunk
    except TimeoutError:
        raise AssertionError(f"connection still open after {seconds} s; got {got[:200]!r}") from None
    except ConnectionResetError:
        pass
    return time.monotonic() - started, got


def test_headers_never_finished_are_timed_out(short: Served) -> None:
    with _connect(short) as s:
        s.sendall(b"GET /api/overview HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        took, _ = _closed_within(s, TIMEOUT + 5)
    assert took < TIMEOUT + 5


def test_headers_trickled_byte_by_byte_are_timed_out(short: Served) -> None:
    with _connect(short) as s:
        s.sendall(b"GET /api/overview HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        deadline = time.monotonic() + TIMEOUT + 5
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                s.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            s.settimeout(0.2)
            try:
                closed = s.recv(100) == b""
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed = True
        assert closed, "a client trickling header bytes kept its connection past the timeout"


def test_body_never_sent_is_408(short: Served) -> None:
    with _connect(short) as s:
        s.sendall(f"PUT /api/queues/%2F/slow HTTP/1.1\r\nHost: x\r\n{AUTH}\r\nContent-Type: application/json\r\n"
                  "Content-Length: 100\r\n\r\n{".encode())  # fmt: skip
        _, got = _closed_within(s, TIMEOUT + LINGER + 5)
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b'"error": "request_timeout"' in got
    assert "slow" not in {q.name for q in short.backend.qs.values()}


def test_invalid_utf8_in_a_path_is_400_and_creates_nothing(api: Served) -> None:
    for method in ("PUT", "GET", "DELETE"):
        status, body, _ = api.request(method, "/api/queues/%2F/bad%FFname", {} if method == "PUT" else None)
        assert status == 400 and body["error"] == "bad_request", (method, status, body)
    assert not [k for k in api.backend.qs if "bad" in k[1]]
    # an escaped percent sign is a real character of the name
    status, _, _ = api.request("PUT", "/api/queues/%2F/bad%25FFname", {})
    assert status == 201 and ("/", "bad%FFname") in api.backend.qs
    status, body, _ = api.request("GET", "/api/queues/%C0%AF/x")  # overlong encoding of "/"
    assert status == 400


def test_names_longer_than_255_bytes_are_400(api: Served) -> None:
    status, body, _ = api.request("PUT", "/api/queues/%2F/" + "q" * 256, {})
    assert status == 400 and body == {
        "error": "bad_request", "reason": "queue should be less than 255 bytes, actually was 256\n"
    }
    status, _, _ = api.request("PUT", "/api/queues/%2F/" + "q" * 255, {})
    assert status == 201
    # 128 two-byte characters are 256 bytes
    status, body, _ = api.request("PUT", "/api/queues/%2F/" + "%C3%A9" * 128, {})
    assert status == 400 and "actually was 256" in body["reason"]
    doc = {"queues": [{"name": "d" * 300, "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}]}
    status, body, _ = api.request("POST", "/api/definitions", doc)
    assert status == 400 and body["error"] == "bad_request" and "300 bytes" in body["reason"]
    doc = {"bindings": [{"source": "amq.direct", "vhost": "/", "destination": "hello",
                         "destination_type": "queue", "routing_key": "r" * 256, "arguments": {}}]}  # fmt: skip
    status, body, _ = api.request("POST", "/api/definitions", doc)
    assert status == 400 and "routing key" in body["reason"]


@pytest.mark.parametrize("depth", [50_000, 1_200])
def test_deeply_nested_json_body_is_400(api: Served, depth: int) -> None:
    raw = b'{"arguments": {"x": ' + b"[" * depth + b"]" * depth + b"}}"
    status, body, _ = api.request("PUT", "/api/queues/%2F/deep", raw)
    assert status == 400 and body["error"] == "bad_request" and "nested too deeply" in body["reason"]
    status, body, _ = api.request("POST", "/api/definitions", b'{"queues": ' + b"[" * depth + b"]" * depth + b"}")
    assert status == 400 and body["error"] == "bad_request"


def test_nested_arguments_never_break_a_listing(api: Served) -> None:
    deep: object = 1
    for _ in range(400):
        deep = [deep]
    api.backend.add_queue("/", "deep-args", arguments={"x-odd": deep})
    status, body, _ = api.request("GET", "/api/queues/%2F/deep-args")
    assert status == 200 and "nested too deeply" in json.dumps(body["arguments"])
    status, body, _ = api.request("GET", "/api/queues")
    assert status == 200 and any(q["name"] == "deep-args" for q in body)


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe{}", b'{"arguments": {"x": "\\ud800"}}', b'{"arguments": {"\\udc00": 1}}', b"[1,2", b"nul\x00l"],
)
def test_bodies_that_are_not_unicode_json_are_400(api: Served, raw: bytes) -> None:
    status, body, _ = api.request("PUT", "/api/queues/%2F/odd", raw)
    assert status == 400 and body["error"] == "bad_request", (raw, status, body)
    assert ("/", "odd") not in api.backend.qs


def test_surrogate_pairs_are_fine(api: Served) -> None:
    status, _, _ = api.request("PUT", "/api/queues/%2F/emoji", b'{"arguments": {"x-note": "\\ud83d\\ude00"}}')
    assert status == 201 and api.backend.qs[("/", "emoji")].arguments == {"x-note": "\U0001f600"}


def test_body_over_the_limit_is_400_with_rabbitmqs_text(api: Served) -> None:
    raw = b'{"pad": "' + b"x" * (MAX_BODY + 10) + b'"}'
    status, body, _ = api.request("POST", "/api/definitions", raw)
    assert (status, body) == (400, {"error": "bad_request", "reason": "Exceeded HTTP request body size limit"})


def test_a_failing_handler_answers_json_without_a_traceback(api: Served) -> None:
    def boom(*args: object) -> list[object]:
        raise RecursionError("maximum recursion depth exceeded") if args else ValueError("x" * 100_000)

    api.backend.channels = boom  # type: ignore[method-assign,assignment]
    status, body, _ = api.request("GET", "/api/channels")
    assert status == 500 and body["error"] == "internal_server_error"
    assert "Traceback" not in json.dumps(body) and len(json.dumps(body)) < 200
