"""RabbitMQ's authorisation rules on the management HTTP API and the Prometheus endpoint, against a
real broker over real sockets (reference section 6.1, 6.3).

Users (made in-process through ``broker.access``): alice (management) with a permission row on
vhost va, bob (management) on vb, mon (monitoring) on va, admin (administrator) on both. Each
route class is tried with each tag, allowed and refused with RabbitMQ's exact 401 body; alice may
neither see nor touch vb; queue operations run as the HTTP user, so permission regexes apply; an
AMQP connection's exclusive queue stays its own.
"""

from __future__ import annotations

import base64
import contextlib
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from leveret.model.broker import Broker
from tests.helpers import ThreadBroker, wait_for
from tests.http_client import http_request

PASSWORDS = {"alice": "apw", "bob": "bpw", "mon": "mpw", "admin": "xpw"}
NOT_ADMIN = {"error": "not_authorised", "reason": "Not administrator user"}
NOT_MONITOR = {"error": "not_authorised", "reason": "Not monitor user"}
NOT_VHOST = {"error": "not_authorised", "reason": "User not authorised to access virtual host"}
NOT_OBJECT = {"error": "not_authorised", "reason": "User not authorised to access object"}
REFUSED = {"error": "not_authorised", "reason": "Access refused."}


class Site:
    def __init__(self, broker: ThreadBroker) -> None:
        self.broker = broker
        assert broker.app.broker is not None
        self.model: Broker = broker.app.broker

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.broker.app.http_port}"

    def request(self, user: str, method: str, path: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
        return http_request(self.http + path, method, body, (user, PASSWORDS[user]))

    def get(self, user: str, path: str) -> Any:
        status, body, _ = self.request(user, "GET", path)
        assert status == 200, (user, path, status, body)
        return body

    def in_broker(self, fn: Callable[[Broker], Any]) -> Any:
        return self.broker.call(fn, self.model)

    def queue(self, vhost: str, name: str) -> None:
        self.in_broker(lambda b: b.vhosts[vhost].declare_queue(None, name))

    def amqp(self, user: str, vhost: str, name: str | None = None) -> pika.BlockingConnection:
        params = pika.ConnectionParameters(
            "127.0.0.1", self.broker.port, vhost, pika.PlainCredentials(user, PASSWORDS[user]),
            connection_attempts=1, socket_timeout=5,
            client_properties={"connection_name": name} if name else None,
        )  # fmt: skip
        return pika.BlockingConnection(params)

    def connection_of(self, user: str) -> str:
        conns = wait_for(lambda: [c for c in self.get("admin", "/api/connections") if c["user"] == user])
        name: str = conns[0]["name"]
        return name


def setup(b: Broker) -> None:
    b.add_vhost("va")
    b.add_vhost("vb")
    acc = b.access
    for user, tags in (("alice", "management"), ("bob", "management"), ("mon", "monitoring"),
                       ("admin", "administrator")):  # fmt: skip
        acc.add_user(user, PASSWORDS[user], (tags,))
    acc.set_permissions("alice", "va", ".*", ".*", ".*")
    acc.set_permissions("bob", "vb", ".*", ".*", ".*")
    acc.set_permissions("mon", "va", ".*", ".*", ".*")
    for vhost in ("va", "vb", "/"):
        acc.set_permissions("admin", vhost, ".*", ".*", ".*")


@pytest.fixture
def site(broker_factory: Callable[..., ThreadBroker]) -> Iterator[Site]:
    s = Site(broker_factory(http_port=0, prometheus_port=0))
    s.in_broker(setup)
    s.queue("va", "a-q")
    s.queue("vb", "b-q")
    yield s


# ---- tags per route ---------------------------------------------------------------------------

NODE = "{node}"
# (method, path, body, {user: expected}) where expected is 200-ish (allowed) or a 401 body.
ROUTES: list[tuple[str, str, Any, dict[str, Any]]] = [
    ("GET", "/api/nodes", None, {"alice": NOT_MONITOR, "mon": 200, "admin": 200}),
    ("GET", f"/api/nodes/{NODE}", None, {"alice": NOT_MONITOR, "mon": 200, "admin": 200}),
    ("GET", "/api/definitions", None, {"alice": NOT_ADMIN, "mon": NOT_ADMIN, "admin": 200}),
    ("GET", "/api/definitions/va", None, {"alice": NOT_ADMIN, "mon": NOT_ADMIN, "admin": 200}),
    ("POST", "/api/definitions", {"queues": []}, {"alice": NOT_ADMIN, "mon": NOT_ADMIN, "admin": 204}),
    ("POST", "/api/definitions/va", {"queues": []}, {"alice": NOT_ADMIN, "mon": NOT_ADMIN, "admin": 204}),
    ("GET", "/api/vhosts/va", None, {"alice": NOT_ADMIN, "mon": NOT_ADMIN, "admin": 200}),
    ("GET", "/api/aliveness-test/va", None, {"alice": 200, "bob": NOT_VHOST, "mon": 200, "admin": 200}),
    ("GET", "/api/aliveness-test/vb", None, {"alice": NOT_VHOST, "bob": 200, "mon": NOT_VHOST, "admin": 200}),
    ("GET", "/api/queues/vb", None, {"alice": NOT_VHOST, "bob": 200, "mon": NOT_VHOST, "admin": 200}),
    ("GET", "/api/queues/va", None, {"alice": 200, "bob": NOT_VHOST, "mon": 200, "admin": 200}),
    ("GET", "/api/exchanges/vb", None, {"alice": NOT_VHOST, "bob": 200, "mon": NOT_VHOST, "admin": 200}),
    ("GET", "/api/exchanges/vb/amq.direct", None, {"alice": NOT_VHOST, "bob": 200, "admin": 200}),
    ("GET", "/api/bindings/vb", None, {"alice": NOT_VHOST, "bob": 200, "mon": NOT_VHOST, "admin": 200}),
    ("GET", "/api/consumers/vb", None, {"alice": NOT_VHOST, "bob": 200, "mon": NOT_VHOST, "admin": 200}),
    ("GET", "/api/queues/vb/b-q", None, {"alice": NOT_VHOST, "mon": NOT_VHOST, "bob": 200, "admin": 200}),
    ("GET", "/api/queues/vb/b-q/bindings", None, {"alice": NOT_VHOST, "bob": 200, "admin": 200}),
    ("PUT", "/api/queues/vb/b-q2", {"durable": False}, {"alice": NOT_VHOST, "mon": NOT_VHOST, "bob": 201}),
    ("DELETE", "/api/queues/vb/b-q/contents", None, {"alice": NOT_VHOST, "mon": NOT_VHOST, "bob": 204}),
    ("POST", "/api/queues/vb/b-q/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"},
     {"alice": NOT_VHOST, "mon": NOT_VHOST, "bob": 200}),
    ("DELETE", "/api/queues/vb/b-q", None, {"alice": NOT_VHOST, "mon": NOT_VHOST, "bob": 204}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES]
)
def test_each_tag_against_each_route(
    site: Site, method: str, path: str, body: Any, expected: dict[str, Any]
) -> None:
    node = site.get("admin", "/api/overview")["node"]
    path = path.replace(NODE, node)
    # Refusals first: a refused DELETE must leave the queue for the allowed one.
    for user, want in sorted(expected.items(), key=lambda kv: isinstance(kv[1], int)):
        status, got, headers = site.request(user, method, path, body)
        if isinstance(want, int):
            assert status == want, (user, method, path, status, got)
        else:
            assert (status, got) == (401, want), (user, method, path)
            assert headers["Content-Type"].startswith("application/json")


SHARED = ("/api/overview", "/api/whoami", "/api/vhosts", "/api/connections", "/api/channels", "/api/consumers",
          "/api/healthchecks/node", "/api/exchanges", "/api/queues", "/api/bindings")  # fmt: skip


def test_any_management_user_reads_the_shared_routes_scoped_to_itself(site: Site) -> None:
    with site.amqp("bob", "vb") as conn:
        conn.channel().basic_consume("b-q", lambda *a: None)
        wait_for(lambda: site.get("admin", "/api/consumers"))
        for user in PASSWORDS:
            for path in SHARED:
                site.get(user, path)  # 200 for every tag
        # ... but alice's answers hold nothing of bob's
        seen = {path: str(site.get("alice", path)) for path in SHARED}
        assert not [path for path, text in seen.items() if "'vb'" in text or "'bob'" in text], seen


def test_a_missing_vhost_is_404_for_everyone(site: Site) -> None:
    """RabbitMQ's user_matches_vhost lets a missing vhost through to 404."""
    assert site.request("alice", "GET", "/api/queues/nope")[0] == 404
    assert site.request("admin", "GET", "/api/queues/nope")[0] == 404
    assert site.request("alice", "GET", "/api/vhosts/nope")[:2] == (401, NOT_ADMIN)


# ---- what each user sees ----------------------------------------------------------------------


def test_vhosts_list_is_filtered_for_management_users(site: Site) -> None:
    assert [v["name"] for v in site.get("alice", "/api/vhosts")] == ["va"]
    assert [v["name"] for v in site.get("bob", "/api/vhosts")] == ["vb"]
    assert sorted(v["name"] for v in site.get("mon", "/api/vhosts")) == ["/", "va", "vb"]
    assert sorted(v["name"] for v in site.get("admin", "/api/vhosts")) == ["/", "va", "vb"]


def test_lists_show_only_the_vhosts_with_a_permission_row(site: Site) -> None:
    site.in_broker(lambda b: b.vhosts["vb"].bind(None, "b-q", "amq.direct", "k", {}))
    site.in_broker(lambda b: b.vhosts["va"].bind(None, "a-q", "amq.direct", "k", {}))
    for user in ("alice", "mon"):  # monitoring sees every vhost's name, but only its own vhosts' objects
        assert {(q["vhost"], q["name"]) for q in site.get(user, "/api/queues")} == {("va", "a-q")}
        assert {x["vhost"] for x in site.get(user, "/api/exchanges")} == {"va"}
        assert {x["vhost"] for x in site.get(user, "/api/bindings")} == {"va"}
        paged = site.get(user, "/api/exchanges?page=1&page_size=100")
        assert {x["vhost"] for x in paged["items"]} == {"va"}
        assert paged["total_count"] == len(site.get("admin", "/api/exchanges/va"))
    assert {(q["vhost"], q["name"]) for q in site.get("bob", "/api/queues")} == {("vb", "b-q")}
    everything = {(q["vhost"], q["name"]) for q in site.get("admin", "/api/queues")}
    assert {("va", "a-q"), ("vb", "b-q")} <= everything
    assert {x["vhost"] for x in site.get("admin", "/api/bindings")} >= {"va", "vb"}


def test_pagination_counts_only_the_visible_vhosts(site: Site) -> None:
    for i in range(4):
        site.queue("va", f"a-more-{i}")
    for i in range(6):
        site.queue("vb", f"b-more-{i}")
    page = site.get("alice", "/api/queues?page=1&page_size=2")
    assert (page["total_count"], page["filtered_count"], page["item_count"], page["page_count"]) == (
        5,
        5,
        2,
        3,
    )
    assert all(q["vhost"] == "va" for q in page["items"])
    page = site.get("alice", "/api/queues?page=1&page_size=2&name=more")
    assert (page["total_count"], page["filtered_count"], page["page_count"]) == (5, 4, 2)
    last = site.get("alice", "/api/queues?page=3&page_size=2")
    assert [q["name"] for q in last["items"]] == ["a-q"]  # sorted by name: a-more-0..3, then a-q
    page = site.get("admin", "/api/queues?page=1&page_size=2&name=more")
    assert page["filtered_count"] == 10


def test_overview_totals_of_a_management_user_exclude_other_vhosts(site: Site) -> None:
    with site.amqp("alice", "va") as ca, site.amqp("bob", "vb") as cb:
        cha, chb = ca.channel(), cb.channel()
        for _ in range(2):
            cha.basic_publish("", "a-q", b"a")
        for _ in range(5):
            chb.basic_publish("", "b-q", b"b")
        chb.basic_consume("b-q", lambda *a: None)
        wait_for(lambda: site.get("admin", "/api/queues/vb/b-q")["consumers"] == 1)
        wait_for(lambda: site.get("admin", "/api/queues/va/a-q")["messages"] == 2)
        alice = site.get("alice", "/api/overview")
        admin = site.get("admin", "/api/overview")
        mon = site.get("mon", "/api/overview")
    assert alice["queue_totals"]["messages"] == 2
    assert alice["object_totals"]["queues"] == 1
    assert alice["object_totals"]["consumers"] == 0
    assert alice["object_totals"]["connections"] == 1  # her own
    assert alice["object_totals"]["exchanges"] == len(site.get("admin", "/api/exchanges/va"))
    assert alice["message_stats"]["publish"] == 2
    assert "node" not in alice and "listeners" not in alice  # as RabbitMQ: for monitors only
    for everything in (admin, mon):
        assert everything["queue_totals"]["messages"] >= 2  # b-q's were taken by the consumer
        assert everything["object_totals"]["queues"] >= 2
        assert everything["object_totals"]["connections"] == 2
        assert everything["object_totals"]["consumers"] == 1
        assert everything["message_stats"]["publish"] == 7
        assert everything["node"]


def test_connections_channels_and_consumers_of_a_management_user_are_its_own(site: Site) -> None:
    with site.amqp("alice", "va") as ca, site.amqp("bob", "vb") as cb, site.amqp("admin", "va") as cx:
        ca.channel().basic_consume("a-q", lambda *a: None)
        cb.channel().basic_consume("b-q", lambda *a: None)
        cx.channel().basic_consume("a-q", lambda *a: None)
        wait_for(lambda: len(site.get("admin", "/api/consumers")) == 3)
        assert {c["user"] for c in site.get("alice", "/api/connections")} == {"alice"}
        assert {c["user"] for c in site.get("alice", "/api/channels")} == {"alice"}
        paged = site.get("alice", "/api/connections?page=1&page_size=10")
        assert (paged["total_count"], paged["filtered_count"]) == (1, 1)
        assert [c["channel_details"]["user"] for c in site.get("alice", "/api/consumers")] == ["alice"]
        assert site.get("alice", "/api/consumers/va") == site.get("alice", "/api/consumers")
        assert {c["user"] for c in site.get("mon", "/api/connections")} == {"alice", "bob", "admin"}
        assert {c["user"] for c in site.get("mon", "/api/channels")} == {"alice", "bob", "admin"}
        # monitoring: every user's consumers, in the vhosts it has a row in
        assert sorted(c["channel_details"]["user"] for c in site.get("mon", "/api/consumers")) == [
            "admin",
            "alice",
        ]
        assert len(site.get("admin", "/api/consumers")) == 3


def test_connection_objects_owner_monitor_administrator(site: Site) -> None:
    ca, cb = site.amqp("alice", "va"), site.amqp("bob", "vb")
    try:
        mine, bobs = site.connection_of("alice"), site.connection_of("bob")
        quoted = {n: urllib.request.quote(n, safe="") for n in (mine, bobs)}
        assert site.request("alice", "GET", f"/api/connections/{quoted[bobs]}")[:2] == (401, NOT_OBJECT)
        assert site.get("alice", f"/api/connections/{quoted[mine]}")["user"] == "alice"
        assert site.get("mon", f"/api/connections/{quoted[bobs]}")["user"] == "bob"
        assert site.request("alice", "GET", "/api/connections/nope")[:2] == (401, NOT_OBJECT)
        assert site.request("mon", "GET", "/api/connections/nope")[0] == 404
        # DELETE: owner or administrator; monitoring is not enough
        assert site.request("alice", "DELETE", f"/api/connections/{quoted[bobs]}")[:2] == (401, NOT_OBJECT)
        assert site.request("mon", "DELETE", f"/api/connections/{quoted[bobs]}")[:2] == (401, NOT_OBJECT)
        assert site.request("alice", "DELETE", "/api/connections/nope")[:2] == (401, NOT_OBJECT)
        cb.process_data_events(0.1)
        assert cb.is_open, "bob's connection survived alice's and mon's attempts"
        assert site.request("alice", "DELETE", f"/api/connections/{quoted[mine]}")[0] == 204
        wait_for(lambda: not [c for c in site.get("admin", "/api/connections") if c["user"] == "alice"])
        with pytest.raises(pika.exceptions.AMQPError):
            for _ in range(50):
                ca.process_data_events(0.1)
        assert site.request("admin", "DELETE", f"/api/connections/{quoted[bobs]}")[0] == 204
        wait_for(lambda: not site.get("admin", "/api/connections"))
    finally:
        for conn in (ca, cb):
            with contextlib.suppress(pika.exceptions.AMQPError):
                conn.close()


# ---- operations run as the HTTP user ----------------------------------------------------------


def test_a_permission_regex_refusal_over_http_is_401_access_refused(site: Site) -> None:
    site.in_broker(lambda b: b.access.set_permissions("alice", "va", "^a-", ".*", "^a-"))
    site.queue("va", "b-mine-not")
    assert site.request("alice", "PUT", "/api/queues/va/b-q", {"durable": False})[:2] == (401, REFUSED)
    assert site.request("alice", "PUT", "/api/queues/va/a-new", {"durable": False})[0] == 201
    assert site.request("alice", "DELETE", "/api/queues/va/b-mine-not")[:2] == (401, REFUSED)
    assert site.request("alice", "DELETE", "/api/queues/va/b-mine-not/contents")[:2] == (401, REFUSED)
    get = {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}
    assert site.request("alice", "POST", "/api/queues/va/b-mine-not/get", get)[:2] == (401, REFUSED)
    assert site.request("alice", "POST", "/api/queues/va/a-new/get", get)[:2] == (200, [])
    assert site.request("alice", "DELETE", "/api/queues/va/a-new")[0] == 204
    assert {q["name"] for q in site.get("admin", "/api/queues/va")} == {"a-q", "b-mine-not"}
    # An administrator acts through the model too: no permission row on the vhost, no queue.
    site.in_broker(lambda b: b.access.clear_permissions("admin", "va"))
    assert site.request("admin", "PUT", "/api/queues/va/x-q", {"durable": False})[:2] == (401, REFUSED)


def test_an_exclusive_queue_cannot_be_deleted_purged_or_got_over_http(site: Site) -> None:
    with site.amqp("admin", "va") as conn:
        ch = conn.channel()
        ch.queue_declare("excl", exclusive=True)
        ch.basic_publish("", "excl", b"mine")
        wait_for(lambda: site.get("admin", "/api/queues/va/excl")["messages"] == 1)
        locked = "cannot obtain exclusive access to locked queue 'excl' in vhost 'va'"
        for method, path, body in (
            ("DELETE", "/api/queues/va/excl", None),
            ("DELETE", "/api/queues/va/excl/contents", None),
            ("POST", "/api/queues/va/excl/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}),
            ("POST", "/api/queues/va/excl/get", {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}),
            ("PUT", "/api/queues/va/excl", {"durable": False}),
        ):
            status, got, _ = site.request("admin", method, path, body)
            assert status == 400 and got["error"] == "bad_request", (method, path, status, got)
            assert got["reason"].startswith(locked), got
        assert site.get("admin", "/api/queues/va/excl")["messages"] == 1
        method, _, body = ch.basic_get("excl", auto_ack=True)
        assert body == b"mine"


# ---- Prometheus -------------------------------------------------------------------------------


def scrape(
    site: Site, path: str, user: str | None = None, password: str | None = None
) -> tuple[int, str, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{site.broker.app.prometheus_port}{path}")
    if user is not None:
        creds = f"{user}:{password or PASSWORDS[user]}".encode()
        req.add_header("Authorization", "Basic " + base64.b64encode(creds).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode(), resp.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers


def test_per_object_metrics_need_a_monitoring_user(site: Site) -> None:
    status, text, _ = scrape(site, "/metrics")
    assert status == 200 and "rabbitmq_queues" in text and 'queue="' not in text
    for who in (None, "alice"):
        status, text, headers = scrape(site, "/metrics/per-object", who)
        assert status == 401, who
        assert headers["WWW-Authenticate"].startswith("Basic realm=")
        assert "b-q" not in text and "vb" not in text
    status, text, headers = scrape(site, "/metrics/per-object", "mon", "wrong")
    assert status == 401 and "Login failed" in text
    for who in ("mon", "admin"):
        status, text, _ = scrape(site, "/metrics/per-object", who)
        assert status == 200, who
        assert 'rabbitmq_queue_messages_ready{vhost="vb",queue="b-q"} 0' in text


# ---- the dashboard ----------------------------------------------------------------------------


def test_the_dashboard_works_for_a_management_user(
    broker_factory: Callable[..., ThreadBroker], tmp_path: Path
) -> None:
    """guest as a plain management user: overview and queues answer, nodes do not; the dashboard
    shows the vhost's queues, the cluster name where monitors see the node, and stays live."""
    from tests.management.test_dashboard_browser import CHROMIUM, DomScan, chromium

    if CHROMIUM is None:
        pytest.skip("chromium not installed")
    site = Site(broker_factory(http_port=0, default_user_tags=("management",)))
    site.queue("/", "dash-q")
    assert http_request(site.http + "/api/nodes", "GET")[:2] == (401, NOT_MONITOR)  # as guest
    status, overview, _ = http_request(site.http + "/api/overview", "GET")
    assert status == 200 and "node" not in overview
    p = chromium(site.http + "/?interval=500", tmp_path / "profile", "--dump-dom")
    assert p.returncode == 0, p.stderr[-2000:]
    dom = DomScan()
    dom.feed(p.stdout)
    assert dom.text["status"].startswith("live"), dom.text.get("status")
    assert [r["name"] for r in dom.rows] == ["dash-q"]
    node = re.search(r'<span id="node-name">([^<]*)</span>', p.stdout)
    assert node is not None and node.group(1) == overview["cluster_name"], p.stdout[:3000]
