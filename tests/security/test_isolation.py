"""One user cannot see or touch another vhost's objects, whichever way it comes in: AMQP, the HTTP
API, leveretctl, the dashboard's data and the Prometheus endpoint (issue 12). alice has vhost va,
bob vb (users and queues from test_http_authz's ``setup``); each way is tried by alice against vb
and, as the control that shows the refusal is not a broken path, by bob.
"""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pika
import pytest

from tests.helpers import ThreadBroker
from tests.management_e2e.conftest import run_ctl
from tests.security.test_http_authz import NOT_VHOST, PASSWORDS, Site, setup


@pytest.fixture
def site(broker_factory: Callable[..., ThreadBroker]) -> Iterator[Site]:
    s = Site(broker_factory(http_port=0, prometheus_port=0))
    s.in_broker(setup)
    s.queue("va", "a-q")
    s.queue("vb", "b-q")
    yield s


def test_amqp_vhost_and_objects(site: Site) -> None:
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        site.amqp("alice", "vb")
    assert "NOT_ALLOWED - access to vhost 'vb' refused for user 'alice'" in str(info.value)
    conn = site.amqp("bob", "vb")
    ch = conn.channel()
    ch.basic_publish("", "b-q", b"secret")
    conn.close()
    # alice, in her own vhost, does not reach vb's queue: a name is per vhost.
    conn = site.amqp("alice", "va")
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        ch.queue_declare("b-q", passive=True)
    assert closed.value.reply_code == 404
    conn.close()
    assert site.in_broker(lambda b: len(b.vhosts["vb"].queues["b-q"].ready)) == 1


def test_http_lists_and_objects(site: Site) -> None:
    names = {(q["vhost"], q["name"]) for q in site.get("alice", "/api/queues")}
    assert ("vb", "b-q") not in names and ("va", "a-q") in names
    assert {v["name"] for v in site.get("alice", "/api/vhosts")} == {"va"}
    for method, path in (("GET", "/api/queues/vb/b-q"), ("DELETE", "/api/queues/vb/b-q/contents"),
                         ("DELETE", "/api/queues/vb/b-q")):  # fmt: skip
        status, body, _ = site.request("alice", method, path)
        assert (status, body) == (401, NOT_VHOST), (method, path)
    assert ("vb", "b-q") in {(q["vhost"], q["name"]) for q in site.get("bob", "/api/queues")}


def ctl(site: Site, user: str, *args: str) -> tuple[int, str]:
    env = {**os.environ, "LEVERET_USERNAME": user, "LEVERET_PASSWORD": PASSWORDS[user]}
    p = run_ctl("--url", site.http, *args, env=env)
    return p.returncode, p.stdout + p.stderr


def test_leveretctl(site: Site) -> None:
    rc, out = ctl(site, "alice", "-p", "vb", "list_queues")
    assert rc != 0 and "not authorised to access virtual host" in out and "b-q" not in out, out
    assert "Traceback" not in out
    rc, out = ctl(site, "alice", "-p", "vb", "purge_queue", "b-q")
    assert rc != 0 and "Traceback" not in out, out
    rc, out = ctl(site, "alice", "-p", "va", "list_queues")
    assert rc == 0 and "a-q" in out and "b-q" not in out, out
    rc, out = ctl(site, "bob", "-p", "vb", "list_queues")
    assert rc == 0 and "b-q" in out, out
    assert site.in_broker(lambda b: "b-q" in b.vhosts["vb"].queues)


def test_dashboard_data(site: Site) -> None:
    """The dashboard reads /api/overview and a page of /api/queues as the logged-in user."""
    overview = site.get("alice", "/api/overview")
    assert overview["object_totals"]["queues"] == 1  # a-q only
    page = site.get("alice", "/api/queues?page=1&page_size=100")
    assert [q["name"] for q in page["items"]] == ["a-q"] and page["total_count"] == 1


def test_metrics(site: Site) -> None:
    port = site.broker.app.prometheus_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert "b-q" not in text and "vb" not in text  # aggregated: no object names
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics/per-object")
    auth = "Basic " + base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode()
    req.add_header("Authorization", auth)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 401
