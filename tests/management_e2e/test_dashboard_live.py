"""The dashboard in real headless Chromium against a LIVE broker under load: pika publishers and
consumers in background threads, a worker holding unacked messages in another process. The
table must show the broker's exact counts and both charts must have drawn points. A
screenshot is kept in test-artifacts/dashboard-live.png.

Skipped only when Chromium is missing (Debian's ``chromium``; see .ci/install-system-deps.sh)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pika
import pytest

from tests.management.test_dashboard_browser import ARTIFACTS, CHROMIUM, DomScan, chromium

from .conftest import Holder, Live
from .load import Load

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")


def test_dashboard_live_under_load(live: Live, holders: Callable[..., Holder], tmp_path: Path) -> None:
    with live.connect() as conn:
        ch = conn.channel()
        ch.queue_declare("idle", durable=True)
        ch.queue_declare("held", durable=True, arguments={"x-queue-type": "quorum"})
        for i in range(7):
            ch.basic_publish("", "idle", b"idle %d" % i, pika.BasicProperties(delivery_mode=2))
        for i in range(5):
            ch.basic_publish("", "held", b"held %d" % i)
    holders(live.amqp, "held", 2).wait_for(2)  # ready 3, unacked 2

    with Load(live.amqp, "busy", rate=150):
        time.sleep(2.5)  # the rate sampler (1 s ticks) collects history for the charts and rates
        p = chromium(live.http + "/?interval=500", tmp_path / "profile", "--dump-dom")
        assert p.returncode == 0, p.stderr[-2000:]
        dom = DomScan()
        dom.feed(p.stdout)

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard-live.png"
        shot.unlink(missing_ok=True)
        s = chromium(live.http + "/?interval=500", tmp_path / "profile2", f"--screenshot={shot}")
        assert s.returncode == 0, s.stderr[-2000:]
        assert shot.exists() and shot.stat().st_size > 10_000

    assert dom.text["status"].startswith("live"), dom.text.get("status")
    rows = {r["name"]: r for r in dom.rows}
    assert set(rows) == {"idle", "held", "busy"} and dom.text["queue-count"] == "(3)"
    for name, (ready, unacked, consumers, qtype) in {"idle": (7, 0, 0, "classic"),
                                                     "held": (3, 2, 1, "quorum")}.items():  # fmt: skip
        row = rows[name]
        assert (row["q-ready"], row["q-unacked"], row["q-messages"], row["q-consumers"], row["q-type"]) == (
            str(ready),
            str(unacked),
            str(ready + unacked),
            str(consumers),
            qtype,
        ), row
        assert row["q-vhost"] == "/"
    busy = rows["busy"]
    assert busy["q-consumers"] == "1"
    assert float(busy["q-publish"]) > 0 and float(busy["q-ack"]) > 0, busy

    # the footer names the Prometheus listener's real port (it once said :15692 whatever it was)
    assert dom.text["metrics-port"] == f":{live.broker.app.prometheus_port}/metrics"
    # cards: connections = the holder + the load's publisher and consumer
    assert dom.text["total-connections"] == "3"
    assert dom.text["total-consumers"] == "2"
    assert int(dom.text["total-unacked"]) >= 2 and int(dom.text["total-ready"]) >= 10
    for card in ("rate-publish", "rate-deliver", "rate-ack"):
        assert float(dom.text[card]) > 0, (card, dom.text[card])
    for chart in ("depth-chart", "rate-chart"):
        assert int(dom.attrs_by_id[chart]["data-points"]) >= 2, dom.attrs_by_id[chart]
