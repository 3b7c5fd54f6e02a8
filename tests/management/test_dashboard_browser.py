"""The dashboard in real headless Chromium against the management app over a FakeBackend
under simulated load: the queue table shows the backend's counts and both charts drew
points. A screenshot is kept in test-artifacts/dashboard.png.

Needs Debian's ``chromium`` (``.ci/install-browser.sh``); skipped only when it is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from leveret.management.http import build_app

from .conftest import USERS, Served, populated_backend, serve

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p and Path(p).exists()), None)  # fmt: skip

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (run .ci/install-browser.sh)"
)


class DomScan(HTMLParser):
    """Collects data-testid'd elements: queue rows with their cells, cards, canvas data-points."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.text: dict[str, str] = {}
        self.attrs_by_id: dict[str, dict[str, str]] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        tid = a.get("data-testid")
        if tid == "queue-row":
            self.rows.append({"vhost": a.get("data-vhost", ""), "name": a.get("data-name", "")})
        if tid:
            self.attrs_by_id[tid] = a
        if tag not in ("input", "meta", "link", "br", "img", "polyline"):
            self._open.append(tid)

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("input", "meta", "link", "br", "img", "polyline") and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        tid = next((t for t in reversed(self._open) if t), None)
        if tid is None:
            return
        if tid.startswith("q-") and self.rows:
            self.rows[-1][tid] = self.rows[-1].get(tid, "") + data.strip()
        else:
            self.text[tid] = self.text.get(tid, "") + data.strip()


def chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={tmp}", "--window-size=1400,1000",
            "--virtual-time-budget=6000", *extra, url]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=90)


@pytest.fixture
def loaded_api() -> Iterator[Served]:
    backend = populated_backend(load_rate=40.0)  # counters grow 40/s: non-zero rates
    for url, loop in serve(lambda: build_app(backend, users=dict(USERS), rates_interval=0.2)):
        time.sleep(1.5)  # let the sampler collect some history for the chart prefill
        yield Served(url, backend, loop)


def test_dashboard_table_and_chart(loaded_api: Served, tmp_path: Path) -> None:
    p = chromium(loaded_api.url + "/?interval=500", tmp_path / "profile", "--dump-dom")
    assert p.returncode == 0, p.stderr[-2000:]
    dom = DomScan()
    dom.feed(p.stdout)

    # Every queue, with the backend's exact counts.
    expected = {(q.vhost, q.name): q for q in loaded_api.backend.queues()}
    assert {(r["vhost"], r["name"]) for r in dom.rows} == set(expected)
    for row in dom.rows:
        q = expected[(row["vhost"], row["name"])]
        assert row["q-ready"] == str(q.messages_ready), row
        assert row["q-unacked"] == str(q.messages_unacknowledged), row
        assert row["q-messages"] == str(q.messages), row
        assert row["q-consumers"] == str(q.consumers), row
        assert float(row["q-publish"]) > 0, row

    assert dom.text["total-ready"] == "11" and dom.text["total-unacked"] == "2"
    assert dom.text["total-consumers"] == "1" and dom.text["total-connections"] == "1"
    assert float(dom.text["rate-publish"]) > 0
    assert dom.text["status"].startswith("live"), dom.text.get("status")
    assert dom.text["queue-count"] == "(3)"

    # Both charts drew a line (the page keeps points in window.leveretChartPoints too).
    for chart in ("depth-chart", "rate-chart"):
        assert int(dom.attrs_by_id[chart]["data-points"]) >= 2, dom.attrs_by_id[chart]

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    p = chromium(loaded_api.url + "/?interval=500", tmp_path / "profile2", f"--screenshot={shot}")
    assert p.returncode == 0, p.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 10_000


def test_dashboard_shows_login_failure(loaded_api: Served, tmp_path: Path) -> None:
    # guest is refused when it is not in users: the page must say so, not hang or pop a dialog.
    for url, _loop in serve(lambda: build_app(loaded_api.backend, users={"admin": "x"})):
        p = chromium(url + "/", tmp_path / "profile", "--dump-dom")
        assert p.returncode == 0, p.stderr[-2000:]
        dom = DomScan()
        dom.feed(p.stdout)
        assert dom.text["status"] == "login failed"
        assert dom.rows == []
