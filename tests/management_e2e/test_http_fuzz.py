"""HTTP API fuzzing (issue 11): hypothesis sends paths, methods, query strings and bodies (valid-ish
JSON, deep JSON, huge strings, bad percent-encoding, bytes that are not UTF-8) to a live broker.

Invariant: no answer is a 5xx or carries a traceback, and the broker keeps serving AMQP (a Witness
publishes and consumes throughout) and ``/api/overview``. ``LEVERET_HTTP_FUZZ_EXAMPLES`` sets the
number of requests (default 1500, about 20 s)."""

from __future__ import annotations

import base64
import http.client
import json
import os
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.witness import Witness

from .conftest import Live

EXAMPLES = int(os.environ.get("LEVERET_HTTP_FUZZ_EXAMPLES", "1500"))
AUTH = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
WORDS = ["api", "queues", "exchanges", "bindings", "definitions", "overview", "connections", "channels",
         "consumers", "vhosts", "nodes", "healthchecks", "node", "aliveness-test", "whoami", "get", "contents",
         "publish", "e", "q", "source", "destination", "amq.direct", "amq.default", "leveret@localhost"]  # fmt: skip
QUERY_KEYS = ["page", "page_size", "name", "use_regex", "sort", "sort_reverse", "columns", "lengths_age",
              "lengths_incr", "msg_rates_age", "msg_rates_incr", "if-unused", "if-empty", "download"]  # fmt: skip

text = st.text(st.characters(codec="utf-8"), max_size=40)
segment = st.one_of(
    st.sampled_from(WORDS),
    st.just("%2F"),
    text.map(lambda s: quote(s, safe="")),
    st.sampled_from(["%FF", "%", "%G1", "%C0%AF", "%ED%A0%80", "bad%FFname", "%00", "..", "."]),
    st.integers(200, 400).map(lambda n: "n" * n),
)
ROUTES = ["/api/queues", "/api/queues/{v}", "/api/queues/{v}/{n}", "/api/queues/{v}/{n}/get",
          "/api/queues/{v}/{n}/contents", "/api/queues/{v}/{n}/bindings", "/api/exchanges", "/api/exchanges/{v}",
          "/api/exchanges/{v}/{n}", "/api/definitions", "/api/definitions/{v}", "/api/connections",
          "/api/connections/{n}", "/api/channels", "/api/consumers/{v}", "/api/bindings/{v}", "/api/vhosts/{v}",
          "/api/overview", "/api/nodes/{n}", "/api/aliveness-test/{v}", "/api/healthchecks/node"]  # fmt: skip
name = st.one_of(st.sampled_from(["fuzz-q", "amq.direct", "fuzz-q2", ""]), segment)
route = st.builds(
    lambda r, v, n: r.replace("{v}", v).replace("{n}", n),
    st.sampled_from(ROUTES), st.one_of(st.just("%2F"), segment), name,
)  # fmt: skip
path = st.one_of(route, route, st.lists(segment, min_size=1, max_size=6).map(lambda parts: "/api/" + "/".join(parts)))
query_value = st.one_of(
    text, st.integers(-(2**70), 2**70).map(str), st.sampled_from(["true", "", "^(a+)+$", "(x+x+)+y", "%FF", "[", "1e9"])
)
query = st.dictionaries(st.sampled_from(QUERY_KEYS), query_value, max_size=4).map(
    lambda d: "&".join(f"{k}={quote(v, safe='%^$()+')}" for k, v in d.items())
)

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), text,
    st.integers(0, 70_000).map(lambda n: "s" * n),
)  # fmt: skip
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.one_of(text, st.sampled_from(
        ["arguments", "durable", "auto_delete", "ackmode", "count", "encoding", "truncate", "queues", "exchanges",
         "bindings", "name", "vhost", "type", "source", "destination", "routing_key", "x-max-priority",
         "x-message-ttl", "x-dead-letter-exchange", "x-queue-type"])), inner, max_size=5)),
    max_leaves=20,
)  # fmt: skip


def _deep(n: int) -> bytes:
    return b'{"arguments": {"x": ' + b"[" * n + b"]" * n + b"}}"


body = st.one_of(
    st.none(),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["arguments", "queues", "ackmode", "count"]), json_value, max_size=3).map(
        lambda v: json.dumps(v).encode()
    ),
    st.integers(10, 3000).map(_deep),
    st.binary(max_size=200),
    st.sampled_from([b"\xff\xfe{}", b'{"a": "\\ud800"}', b"{", b"null", b"[]", b'"x"', b"{}" + b" " * 10_000]),
)
METHODS = st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"])
vhost = st.one_of(st.just("%2F"), st.just("%2F"), segment)
# Half the requests are aimed at a route that takes a body or a query, with the method it answers.
request = st.one_of(
    st.tuples(METHODS, path),
    st.tuples(st.just("PUT"), st.builds(lambda v, n: f"/api/queues/{v}/{n}", vhost, name)),
    st.tuples(st.just("POST"), st.builds(lambda v, n: f"/api/queues/{v}/{n}/get", vhost, name)),
    st.tuples(st.just("POST"), st.sampled_from(["/api/definitions", "/api/definitions/%2F"])),
    st.tuples(st.just("GET"), st.sampled_from(["/api/queues", "/api/exchanges", "/api/connections", "/api/channels",
                                               "/api/queues/%2F", "/api/overview"])),
)  # fmt: skip


def _send(port: int, method: str, target: str, payload: bytes | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = dict(AUTH)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, target, body=payload, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_http_api_fuzz(live: Live) -> None:
    port = live.broker.app.http_port
    assert port is not None
    seen: dict[str, Any] = {"requests": 0, "statuses": {}}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("LEVERET_HTTP_FUZZ_RANDOM") is None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(req=request, query=query, payload=body)
    def one(req: tuple[str, str], query: str, payload: bytes | None) -> None:
        method, path = req
        target = path + ("?" + query if query else "")
        status, raw = _send(port, method, target, payload if method not in ("GET", "HEAD") else None)
        seen["requests"] += 1
        seen["statuses"][status] = seen["statuses"].get(status, 0) + 1
        assert status < 500, (method, target[:200], (payload or b"")[:200], status, raw[:300])
        assert b"Traceback" not in raw, (method, target[:200], raw[:300])

    conn = live.connect()
    ch = conn.channel()
    ch.queue_declare("fuzz-q")
    for i in range(50):
        ch.basic_publish("", "fuzz-q", b"m%d" % i)
    conn.close()
    with Witness(live.broker.port):
        one()
        status, ov, _ = live.request("GET", "/api/overview")
        assert status == 200 and ov["object_totals"]["connections"] >= 1
    print(f"\nHTTP fuzz: {seen['requests']} requests, statuses {dict(sorted(seen['statuses'].items()))}")
