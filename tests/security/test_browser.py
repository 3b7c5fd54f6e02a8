"""The management API and dashboard against a hostile web page (issue 12, "the browser").

A page on another origin can make a logged-in browser send requests to the broker: HTML forms
(form-urlencoded, multipart, or text/plain crafted to look like JSON), ``fetch`` in ``no-cors``
mode with the browser's cached basic-auth credentials, and frames. RabbitMQ takes JSON on most
routes whatever the Content-Type and checks no Origin, so such a page could drain or create queues.
Leveret refuses state-changing requests that are not ``application/json`` (415) or that come from
another origin (403), sends no CORS headers, forbids framing, and the dashboard keeps credentials
in memory only. Tested over real HTTP and in real headless Chromium (skipped only when missing).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pika
import pytest
import trustme
from aiohttp import web
from multidict import CIMultiDict

from leveret.management import browser
from leveret.management import http as http_module
from tests.helpers import ThreadBroker
from tests.http_client import http_request
from tests.management.conftest import USERS, serve
from tests.management.fake_backend import FakeBackend
from tests.management.test_dashboard_browser import CHROMIUM, chromium

from .conftest import TLSBrokerFactory, client_context
from .devtools import devtools_page
from .evil_page import EVIL_DEFS, FRAME_FORMS, GET_ALL, WINDOW_FORMS, attack_page

VICTIM_MESSAGES = 5
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (run .ci/install-browser.sh)"
)


# ---- a real broker whose management app records what it answered ---------------------------
@dataclass
class Seen:
    """One response the broker's management app sent, with the request headers that matter here."""

    method: str
    path: str
    status: int
    origin: str | None
    content_type: str | None
    fetch_dest: str | None
    authorized: bool


@dataclass
class Victim:
    broker: ThreadBroker
    seen: list[Seen]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.broker.app.http_port}"

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any, dict[str, str]]:
        return http_request(self.http + path, method, body, **kw)

    def queue_names(self) -> set[str]:
        status, body, _ = self.request("GET", "/api/queues")
        assert status == 200, body
        return {q["name"] for q in body}

    def victim_depth(self) -> int:
        """Messages in 'victim', asked over AMQP (a passive declare)."""
        conn = pika.BlockingConnection(pika.URLParameters(self.broker.url))
        try:
            ok = conn.channel().queue_declare("victim", passive=True)
            return int(ok.method.message_count)
        finally:
            conn.close()


@pytest.fixture
def victim(broker_factory: Callable[..., ThreadBroker], monkeypatch: pytest.MonkeyPatch) -> Victim:
    """A ThreadBroker with management on an ephemeral port and a durable queue 'victim' holding
    :data:`VICTIM_MESSAGES` messages. The app the broker builds records every response it sends
    (the broker imports ``build_app`` when it starts, so the patch is in place by then)."""
    seen: list[Seen] = []
    real_build_app = http_module.build_app

    def recording_build_app(*args: Any, **kwargs: Any) -> web.Application:
        app = real_build_app(*args, **kwargs)

        async def record(request: web.Request, response: web.StreamResponse) -> None:
            h = request.headers
            seen.append(Seen(request.method, request.raw_path, response.status, h.get("Origin"),
                             h.get("Content-Type"), h.get("Sec-Fetch-Dest"), "Authorization" in h))  # fmt: skip

        app.on_response_prepare.append(record)
        return app

    monkeypatch.setattr(http_module, "build_app", recording_build_app)
    broker = broker_factory(http_port=0)
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.queue_declare("victim", durable=True)
    for i in range(VICTIM_MESSAGES):
        ch.basic_publish("", "victim", b"secret %d" % i)
    conn.close()
    v = Victim(broker, seen)
    assert v.victim_depth() == VICTIM_MESSAGES
    return v


# ---- raw HTTP: the request exactly as given ---------------------------------------------------
Headers = dict[str, str] | list[tuple[str, str]]
GUEST = aiohttp.BasicAuth("guest", "guest")


@dataclass
class Answer:
    status: int
    body: Any
    headers: CIMultiDict[str]


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def send(
    url: str, method: str, body: bytes | None = None, headers: Headers | None = None, *,
    auth: aiohttp.BasicAuth | None = GUEST, chunked: bool = False, ssl_context: ssl.SSLContext | None = None,
) -> Answer:  # fmt: skip
    """One request with aiohttp's client, adding no Content-Type of its own (it would say
    application/octet-stream for bytes). ``chunked`` sends the body with Transfer-Encoding: chunked."""

    async def go() -> Answer:
        async with aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as session:
            data: Any = _chunks(body or b"") if chunked else body
            h = CIMultiDict(headers or {})
            async with session.request(method, url, data=data, headers=h, auth=auth, ssl=ssl_context) as resp:
                raw = await resp.read()
                try:
                    parsed: Any = json.loads(raw) if raw else None
                except ValueError:
                    parsed = raw.decode(errors="replace")
                return Answer(resp.status, parsed, CIMultiDict(resp.headers))

    return asyncio.run(go())


def depth_and_queues(v: Victim) -> tuple[int, set[str]]:
    return v.victim_depth(), v.queue_names()


JSON_GET = json.dumps(GET_ALL).encode()
# (method, path, body) of each state-changing route tried, with what it would do if accepted.
ATTEMPTS = [
    ("PUT", "/api/queues/%2F/evilq", b'{"durable": true}'),  # create a queue
    ("POST", "/api/queues/%2F/victim/get", JSON_GET),  # take every message
    ("POST", "/api/definitions", json.dumps(EVIL_DEFS).encode()),  # create a queue
    ("DELETE", "/api/queues/%2F/victim/contents", b"{}"),  # purge
    ("DELETE", "/api/queues/%2F/victim", b"{}"),  # delete
]
FORM_TYPES = [
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=----x",
    "application/jsonx",
    "application/json-patch+json",
]


def test_bodies_that_are_not_json_are_refused_and_change_nothing(victim: Victim, caplog: Any) -> None:
    before = depth_and_queues(victim)
    caplog.set_level(logging.WARNING, "leveret.management")
    for method, path, body in ATTEMPTS:
        for ctype in FORM_TYPES:
            a = send(victim.http + path, method, body, {"Content-Type": ctype})
            assert a.status == 415, (method, path, ctype, a.status, a.body)
            assert a.body["error"] == "unsupported_media_type", a.body
            assert ctype in a.body["reason"], a.body
        # A body with no Content-Type at all, sent whole or in chunks.
        for chunked in (False, True):
            a = send(victim.http + path, method, body, chunked=chunked)
            assert a.status == 415, (method, path, "no type", chunked, a.status, a.body)
            assert a.body == {"error": "unsupported_media_type",
                              "reason": "a request body must be sent as Content-Type: application/json"}  # fmt: skip
        # Two Content-Types, one of them JSON (aiohttp's parser refuses the request itself).
        a = send(
            victim.http + path,
            method,
            body,
            [("Content-Type", "application/json"), ("Content-Type", "text/plain")],
        )
        assert a.status in (400, 415), (method, path, a.status)
    assert depth_and_queues(victim) == before
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == len(ATTEMPTS) * (len(FORM_TYPES) + 2)


def test_json_and_bodiless_requests_pass(victim: Victim) -> None:
    url = victim.http
    for i, ctype in enumerate(
        ["application/json", "application/json; charset=utf-8", "Application/JSON ;charset=UTF-8"]
    ):
        a = send(f"{url}/api/queues/%2F/made{i}", "PUT", b'{"durable": false}', {"Content-Type": ctype})
        assert a.status == 201, (ctype, a.status, a.body)
    a = send(url + "/api/queues/%2F/victim/get", "POST", json.dumps({**GET_ALL, "count": 1}).encode(),
             {"Content-Type": "application/json"})  # fmt: skip
    assert a.status == 200 and len(a.body) == 1, a.body
    # No body and no Content-Type, as curl -X DELETE and leveretctl send them.
    assert send(url + "/api/queues/%2F/made0", "DELETE").status == 204
    assert send(url + "/api/queues/%2F/made1", "DELETE", b"").status == 204  # Content-Length: 0
    assert send(url + "/api/definitions", "POST", b"").status == 204  # imports nothing
    # PUT without a body: a queue with the defaults (RabbitMQ's `curl -X PUT .../api/queues/%2F/q`).
    assert send(url + "/api/queues/%2F/bare", "PUT").status == 201
    # An empty body that says it is a form is still a form.
    a = send(
        url + "/api/queues/%2F/made2", "DELETE", b"", {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert a.status == 415, a.body
    assert victim.victim_depth() == VICTIM_MESSAGES - 1
    assert {"made2", "bare"} <= victim.queue_names() and not {"made0", "made1"} & victim.queue_names()


def test_foreign_origin_is_refused_and_changes_nothing(victim: Victim, caplog: Any) -> None:
    port = victim.broker.app.http_port
    before = depth_and_queues(victim)
    caplog.set_level(logging.WARNING, "leveret.management")
    foreign = [
        "http://evil.example", f"http://127.0.0.1:{port + 1}", f"https://127.0.0.1:{port}",
        f"http://localhost:{port}", f"http://127.0.0.1:{port}.evil.example", "null", "garbage",
        f"http://guest:guest@127.0.0.1:{port}",
    ]  # fmt: skip
    for method, path, body in ATTEMPTS:
        for origin in foreign:
            a = send(victim.http + path, method, body, {"Content-Type": "application/json", "Origin": origin})
            assert a.status == 403, (method, path, origin, a.status, a.body)
            assert a.body == {
                "error": "forbidden",
                "reason": f"cross-origin request refused (Origin: {origin})",
            }
            assert "Access-Control-Allow-Origin" not in a.headers
        # Origin is refused before credentials are looked at: a wrong password changes nothing.
        a = send(victim.http + path, method, body, {"Content-Type": "application/json", "Origin": "http://evil.example"},
                 auth=aiohttp.BasicAuth("guest", "wrong"))  # fmt: skip
        assert a.status == 403
        # Without Origin, Sec-Fetch-Site tells where a browser's request came from.
        for site in ("cross-site", "same-site"):
            a = send(
                victim.http + path, method, body, {"Content-Type": "application/json", "Sec-Fetch-Site": site}
            )
            assert a.status == 403, (method, path, site, a.status)
            assert a.body["reason"] == f"cross-origin request refused (Sec-Fetch-Site: {site})"
    # What the refusal quotes is bounded.
    a = send(
        victim.http + "/api/definitions",
        "POST",
        b"{}",
        {"Content-Type": "application/json", "Origin": "x" * 5000},
    )
    assert a.status == 403 and len(a.body["reason"]) < 300, a.body
    two = [("Origin", victim.http), ("Origin", "http://evil.example")]
    a = send(
        victim.http + "/api/queues/%2F/evilq", "PUT", b"{}", [("Content-Type", "application/json"), *two]
    )
    assert a.status == 403
    assert depth_and_queues(victim) == before
    assert (
        len([r for r in caplog.records if "cross-origin" in r.getMessage()])
        == len(ATTEMPTS) * (len(foreign) + 3) + 2
    )


def test_own_origin_and_no_origin_pass(victim: Victim) -> None:
    port = victim.broker.app.http_port
    json_type = {"Content-Type": "application/json"}
    cases = [
        {"Origin": victim.http},  # the dashboard
        {"Origin": f"HTTP://127.0.0.1:{port}"},  # case does not matter
        {"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"},  # by the name it was reached at
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {},  # curl, leveretctl, Python clients
    ]
    for i, extra in enumerate(cases):
        a = send(f"{victim.http}/api/queues/%2F/mine{i}", "PUT", b"{}", {**json_type, **extra})
        assert a.status == 201, (extra, a.status, a.body)
        a = send(f"{victim.http}/api/queues/%2F/mine{i}", "DELETE", None, extra)
        assert a.status == 204, (extra, a.status, a.body)
    # GETs are not state-changing: another origin's GET is answered, but no CORS header lets
    # that origin read the answer.
    a = send(
        victim.http + "/api/overview",
        "GET",
        None,
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert a.status == 200
    assert not [h for h in a.headers if h.lower().startswith("access-control-")]
    assert "Origin" in a.headers["Vary"]
    # A CORS preflight gets nothing that would allow the real request.
    a = send(victim.http + "/api/queues/%2F/evilq", "OPTIONS", None, {
        "Origin": "http://evil.example", "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type,authorization"}, auth=None)  # fmt: skip
    assert a.status >= 400 and not [h for h in a.headers if h.lower().startswith("access-control-")]


def test_allowed_origins_are_configurable() -> None:
    backend = FakeBackend()
    backend.add_queue("/", "q", ready=2)

    def app() -> web.Application:
        return http_module.build_app(
            backend, users=dict(USERS), allowed_origins=["https://Admin.Example.com"]
        )

    for url, _loop in serve(app):
        headers = {"Content-Type": "application/json"}
        a = send(
            url + "/api/queues/%2F/q/contents",
            "DELETE",
            None,
            {**headers, "Origin": "https://admin.example.com:443"},
        )
        assert a.status == 204, a.body
        a = send(url + "/api/queues/%2F/q", "DELETE", None, {**headers, "Origin": "http://admin.example.com"})
        assert a.status == 403, a.body
    with pytest.raises(ValueError, match="not scheme://host"):
        http_module.build_app(backend, users=dict(USERS), allowed_origins=["admin.example.com"])


def test_https_origin_is_the_https_listener(tls_broker: TLSBrokerFactory, ca: trustme.CA) -> None:
    b = tls_broker(https_port=0)  # AMQPS and HTTPS on ephemeral ports, no plain HTTP
    port = b.app.https_port
    ctx = client_context(ca)
    url = f"https://localhost:{port}/api/queues/%2F/q"
    json_type = {"Content-Type": "application/json"}
    assert (
        send(url, "PUT", b"{}", {**json_type, "Origin": f"https://localhost:{port}"}, ssl_context=ctx).status
        == 201
    )
    a = send(url, "DELETE", None, {**json_type, "Origin": f"http://localhost:{port}"}, ssl_context=ctx)
    assert a.status == 403, a.body
    a = send(url, "GET", None, ssl_context=ctx)
    assert a.status == 200 and a.headers["X-Frame-Options"] == "DENY"


EXPECTED_HEADERS = {
    "Content-Security-Policy": browser.CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def test_security_headers_on_every_answer(victim: Victim) -> None:
    json_type = {"Content-Type": "application/json"}
    cases: list[tuple[str, str, Any, dict[str, Any], int]] = [
        ("GET", "/", None, {}, 200),
        ("GET", "/static/app.js", None, {}, 200),
        ("GET", "/static/style.css", None, {}, 200),
        ("GET", "/static/nope.js", None, {}, 404),
        ("GET", "/nope", None, {}, 404),
        ("GET", "/api/overview", None, {}, 200),
        ("GET", "/api/queues", None, {}, 200),  # streamed
        ("GET", "/api/definitions", None, {}, 200),  # streamed
        ("GET", "/api/queues/%2F/nope", None, {}, 404),
        ("GET", "/api/nope", None, {}, 404),
        ("GET", "/api/overview", None, {"auth": None}, 401),
        ("GET", "/api/overview", None, {"auth": aiohttp.BasicAuth("guest", "wrong")}, 401),
        ("PUT", "/api/queues/%2F/x", b"{", {"headers": json_type}, 400),
        ("PUT", "/api/queues/%2F/x", b"{}", {"headers": {"Content-Type": "text/plain"}}, 415),
        ("PUT", "/api/queues/%2F/x", b"{}", {"headers": {**json_type, "Origin": "http://evil.example"}}, 403),
        ("PUT", "/api/queues/%2F/x", b"{}", {"headers": json_type}, 201),
        ("DELETE", "/api/queues/%2F/x", None, {}, 204),
        # Outside /api/ too (the login form's post, were app.js not to run).
        ("POST", "/", b"username=a", {"headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415),
        ("POST", "/", None, {"headers": {"Origin": "http://evil.example"}}, 403),
        ("POST", "/", None, {}, 405),
    ]
    for method, path, body, kw, status in cases:
        a = send(victim.http + path, method, body, **kw)
        assert a.status == status, (method, path, a.status, a.body)
        for name, value in EXPECTED_HEADERS.items():
            assert a.headers.get(name) == value, (method, path, name, a.headers)
        assert "Origin" in a.headers.getall("Vary", [""])[0], (method, path, a.headers)
        assert not [h for h in a.headers if h.lower().startswith("access-control-")]
        if path.startswith("/api/"):
            assert a.headers["Cache-Control"] == "no-store", (method, path, a.headers)


# ---- the evil page, in a real browser -------------------------------------------------------
@dataclass
class Evil:
    url: str
    reports: dict[str, str]
    done: threading.Event


@pytest.fixture
def evil(victim: Victim) -> Iterator[Evil]:
    """The attacker's server: another port on 127.0.0.1, so another origin."""
    reports: dict[str, str] = {}
    done = threading.Event()
    page = attack_page(victim.http, victim.http.replace("http://", "http://guest:guest@"))

    async def attack(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def report(request: web.Request) -> web.Response:
        doc = json.loads(await request.text())
        reports[doc["step"]] = doc["outcome"]
        if doc["step"] == "done":
            done.set()
        return web.Response(status=204)

    def make() -> web.Application:
        app = web.Application()
        app.router.add_get("/attack", attack)
        app.router.add_post("/report", report)
        return app

    for url, _loop in serve(make):
        yield Evil(url, reports, done)


@needs_chromium
def test_cross_origin_page_cannot_drain_create_or_frame(
    victim: Victim, evil: Evil, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "leveret.management")
    # Popups stand in for the clicks that would let a real page open windows. The budget is
    # virtual time: it stands still while requests are in flight.
    args = ("--disable-popup-blocking", "--virtual-time-budget=120000", "--dump-dom")
    p = chromium(evil.url + "/attack", tmp_path / "profile", *args)
    assert p.returncode == 0, p.stderr[-2000:]
    assert evil.done.is_set(), f"the attack page did not finish: {evil.reports}"
    seen = "\n".join(map(str, victim.seen))

    # Nothing was taken or made.
    assert victim.victim_depth() == VICTIM_MESSAGES, seen
    assert not {n for n in victim.queue_names() if n.startswith("evil")}, seen

    # Every state-changing request the page got the browser to send reached the broker and was
    # refused (403 or 415), and logged. The browser did send credentials with some: what stopped
    # them is the broker's check, not a browser that happened to send nothing.
    changing = [s for s in victim.seen if s.method in ("POST", "PUT", "DELETE", "PATCH")]
    assert changing and all(s.status in (403, 415) for s in changing), seen
    assert {(s.method, s.path) for s in changing} == {
        ("POST", "/api/queues/%2F/victim/get"), ("POST", "/api/definitions")
    }, seen  # fmt: skip
    assert len(changing) >= len(WINDOW_FORMS) + len(FRAME_FORMS) + 2, seen  # forms, and fetch()es
    assert any(s.authorized for s in changing), seen
    assert {s.fetch_dest for s in changing} >= {"document", "iframe", "empty"}, seen
    refusals = [r for r in caplog.records if r.getMessage().startswith("refused ")]
    assert len(refusals) == len(changing)
    # The browser itself stopped what needs CORS (the preflight got no CORS answer) and what
    # puts credentials in a fetch() URL.
    assert evil.reports["fetch-put-no-cors"].startswith("refused by the browser"), evil.reports
    assert evil.reports["fetch-put-cors-json"].startswith("refused by the browser"), evil.reports
    assert evil.reports["fetch-creds-in-url"].startswith("refused by the browser"), evil.reports
    assert not [s for s in victim.seen if s.method == "OPTIONS" and s.status < 300], seen

    # The dashboard in the attacker's frame: the broker served it, refusing to be framed, and the
    # browser obeyed: it never ran the page, which would have fetched its script and style.
    assert [s for s in victim.seen if s.path == "/" and s.fetch_dest == "iframe"], seen
    assert not [s for s in victim.seen if s.path.startswith("/static/")], seen


# ---- the dashboard: credentials in memory only, nothing the policy refuses ----------------------
STATIC = Path(http_module.STATIC_DIR)


def test_dashboard_sources_keep_no_credentials_and_no_inline_code() -> None:
    js = re.sub(r"(^|\s)//.*", "", re.sub(r"/\*.*?\*/", "", (STATIC / "app.js").read_text(), flags=re.S))
    for stored in ("localStorage", "document.cookie", "sessionStorage.setItem", "sessionStorage.getItem"):
        assert stored not in js, stored

    class Inline(HTMLParser):
        found: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            for name, value in attrs:
                if (
                    name.startswith("on")
                    or name == "style"
                    or (value or "").lower().startswith("javascript:")
                ):
                    self.found.append(f"<{tag} {name}>")
            if tag == "script" and "src" not in dict(attrs):
                self.found.append("<script> without src")

    page = Inline()
    page.feed((STATIC / "index.html").read_text())
    assert page.found == []


STORAGE = """JSON.stringify({session: Object.assign({}, sessionStorage), local: Object.assign({}, localStorage),
                             cookie: document.cookie, state: JSON.stringify(window.leveretState)})"""


@needs_chromium
def test_dashboard_keeps_the_login_in_memory_only(tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.add_queue("/", "q", ready=2)
    # No guest: the dashboard's guest/guest default fails until the user logs in.
    for url, _loop in serve(lambda: http_module.build_app(backend, users={"admin": "s3cret"})):

        async def go(url: str) -> None:
            assert CHROMIUM is not None
            async with devtools_page(CHROMIUM, tmp_path / "profile") as page, asyncio.timeout(60):
                await page.load("Page.navigate", url=url + "/?interval=250")
                assert await page.status("login failed")
                await page.js("""document.getElementById("login-user").value = "admin";
                                 document.getElementById("login-pass").value = "s3cret";
                                 document.getElementById("login").requestSubmit();""")
                assert await page.status("live")
                stored = json.loads(await page.js(STORAGE))
                assert stored["session"] == stored["local"] == {} and stored["cookie"] == "", stored
                assert "s3cret" not in stored["state"], stored["state"]

                # What an earlier dashboard left in this tab is neither used nor kept.
                await page.js(
                    'sessionStorage.setItem("leveret.user", "admin"); sessionStorage.setItem("leveret.pass", "s3cret")'
                )
                await page.load("Page.reload")
                assert await page.status("login failed")  # logged out: the form asks again
                stored = json.loads(await page.js(STORAGE))
                assert stored["session"] == stored["local"] == {} and stored["cookie"] == "", stored

                # The page ran under the broker's Content-Security-Policy without a refusal.
                refused = [m for m in page.console() if "Content Security Policy" in m or "Refused" in m]
                assert not refused, page.console()

        asyncio.run(go(url))
