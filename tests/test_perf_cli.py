"""`leveret perf` as a user runs it: a subprocess against a real broker, summary checked exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pika
import pytest

from leveret.cli.perf import percentiles
from leveret.cli.perf_client import URL
from tests.helpers import ThreadBroker

SRC = str(Path(__file__).resolve().parents[1] / "src")


def perf(broker: ThreadBroker, *args: str, timeout: float = 60) -> tuple[int, dict[str, Any], str]:
    """Run ``leveret perf --json`` against ``broker``; (exit status, summary, stderr)."""
    out = subprocess.run(
        [sys.executable, "-m", "leveret", "perf", "--url", broker.url, "--json", "--timeout", "10", *args],
        capture_output=True, text=True, timeout=timeout, env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.stdout.strip(), out.stderr
    return out.returncode, json.loads(out.stdout), out.stderr


def test_transient_no_loss(broker: ThreadBroker) -> None:
    rc, s, err = perf(broker, "--count", "3000", "--producers", "2", "--consumers", "2", "--delete-first")
    assert rc == 0, err
    assert s["ok"] and s["error"] is None
    assert (s["sent"], s["received"], s["missing"], s["duplicates"], s["foreign"]) == (3000, 3000, 0, 0, 0)
    assert s["latency_ms"]["p50"] <= s["latency_ms"]["p99"] <= s["latency_ms"]["max"]
    assert s["send_rate"] > 0 and s["receive_rate"] > 0


def test_work_queue_confirms_persistent_prefetch(broker: ThreadBroker) -> None:
    rc, s, err = perf(
        broker,
        "-C",
        "1000",
        "-x",
        "1",
        "-y",
        "3",
        "-Q",
        "1",
        "-c",
        "50",
        "--persistent",
        "-s",
        "64",
        "--delete-first",
    )
    assert rc == 0, err
    assert (s["sent"], s["confirmed"], s["nacked"], s["received"], s["missing"]) == (1000, 1000, 0, 1000, 0)
    assert s["confirm_latency_ms"]["p50"] > 0
    assert (s["size"], s["prefetch"], s["confirm"], s["persistent"]) == (64, 1, 50, True)


def test_confirm_one_at_a_time_autoack_large_body(broker: ThreadBroker) -> None:
    # 200 KB bodies span several frames (frame_max 128 KB)
    rc, s, err = perf(broker, "-C", "50", "-c", "1", "-a", "-s", str(200 * 1024), "--delete-first")
    assert rc == 0, err
    assert (s["sent"], s["confirmed"], s["received"], s["duplicates"]) == (50, 50, 50, 0)


def test_time_mode_with_rate_stops_by_itself(broker: ThreadBroker) -> None:
    rc, s, err = perf(broker, "--time", "1.5", "--rate", "200", "--delete-first")
    assert rc == 0, err
    assert 200 <= s["sent"] <= 320  # ~300 at 200/s for 1.5 s
    assert s["received"] == s["sent"] and s["missing"] == 0
    assert "sent" in err and "received" in err  # progress lines on stderr


def test_every_progress_line_has_its_latency(broker: ThreadBroker) -> None:
    """Each per-second line reports the latency of that second (it once did only on the first line: the
    consumers kept appending to a list the ticker had replaced)."""
    rc, s, err = perf(broker, "--time", "3.5", "--rate", "300", "--delete-first")
    assert rc == 0, err
    lines = [line for line in err.splitlines() if "received" in line and "/s" in line]
    assert len(lines) >= 3, err
    assert all("latency p50" in line for line in lines), err


def test_producers_only_then_consumers_only(broker: ThreadBroker) -> None:
    rc, s, err = perf(broker, "-C", "500", "-y", "0", "-c", "100", "--delete-first")
    assert rc == 0, err
    assert (s["sent"], s["confirmed"], s["received"]) == (500, 500, 0)
    rc, s, err = perf(broker, "-C", "500", "-x", "0")
    assert rc == 0, err
    assert (s["sent"], s["received"], s["foreign"]) == (0, 500, 0)


def test_leftover_messages_are_foreign_not_counted(broker: ThreadBroker) -> None:
    rc, _, err = perf(broker, "-C", "20", "-y", "0", "--delete-first")
    assert rc == 0, err
    rc, s, err = perf(broker, "-C", "100")  # the 20 from the first run are still there
    assert rc == 0, err
    assert (s["sent"], s["received"], s["foreign"], s["missing"]) == (100, 100, 20, 0)


def test_text_summary(broker: ThreadBroker) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "leveret", "perf", "--url", broker.url, "-C", "200", "--quiet", "--delete-first"],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (
        "sent        200" in out.stdout and "received    200" in out.stdout and "result      OK" in out.stdout
    )
    assert out.stderr == ""


def test_broker_error_is_reported(broker: ThreadBroker) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    conn.channel().queue_declare("perf-durable", durable=True)
    conn.close()
    out = subprocess.run(
        [sys.executable, "-m", "leveret", "perf", "--url", broker.url, "-q", "perf-durable", "-C", "10"],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 2
    assert "406" in out.stderr and "--delete-first" in out.stderr


def test_unreachable_broker() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "leveret", "perf", "--url", "amqp://guest:guest@127.0.0.1:1/%2F", "-C", "10"],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 2
    assert "cannot run against amqp://guest@127.0.0.1:1/%2F" in out.stderr


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/%2F", URL("127.0.0.1", 5672, "guest", "guest", "/", False)),
        ("amqp://u:p%40ss@h/v", URL("h", 5672, "u", "p@ss", "v", False)),
        ("amqps://h:1234", URL("h", 1234, "guest", "guest", "/", True)),
    ],
)
def test_url(url: str, expected: URL) -> None:
    assert URL.parse(url) == expected


def test_percentiles() -> None:
    p = percentiles(list(range(1000, 101_000, 1000)))  # 1..100 ms
    assert (p["min"], p["p50"], p["p99"], p["max"]) == (1.0, 50.0, 99.0, 100.0)
    assert percentiles([]) == {}
