"""The benchmark's workload: the scenarios (amqpperf flags, message counts, targets) and amqpperf itself.

SCENARIOS are the issue-7 throughput scenarios; STORAGE_METRICS the figures of the issue-3 storage group.
build_amqpperf() builds the Go load generator from ../shared/tools/amqpperf/main.go (GOPATH mode, Debian's
packages, no network) into bench/.build/; Perf runs it and returns its JSON line; summarize() picks the
figures the tables show out of one such line. Used by run.py; reporting is in report.py.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GOCODE = "/usr/share/gocode"


# ------------------------------------------------------------------------------------------ scenarios
@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    flags: tuple[str, ...]  # amqpperf flags, exactly as in the amqpperf README, minus -url/-count/-json
    count: int  # per amqpperf instance (x parallel in all); for kind "idle": connections
    target: float  # Leveret/RabbitMQ consumed msg/s ratio the issue asks for
    parallel: int = 1  # amqpperf instances at once, each on its own queue (bench.NAME.i); rates are summed
    size: int = 0  # body bytes, for an MB/s figure beside msg/s (0: not shown)
    interleave: bool = False  # run with both brokers up, alternating run by run (noise hits both alike)
    kind: str = "amqpperf"  # or "idle": idle_connections.measure (msg/s column = connections opened/s)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("wq-fair", "tutorial setup: persistent, confirms (100 in flight), manual ack, 1 producer, "
             "4 workers, prefetch 1, 64 B",
             ("-delete-first", "-persistent", "-confirm", "-inflight", "100", "-producers", "1",
              "-consumers", "4", "-prefetch", "1", "-size", "64"), 30_000, 1.25),
    Scenario("wq-stream", "persistent, confirms (200 in flight), manual ack, 1 producer, 1 consumer, "
             "prefetch 100, 64 B",
             ("-delete-first", "-persistent", "-confirm", "-inflight", "200", "-producers", "1",
              "-consumers", "1", "-prefetch", "100", "-size", "64"), 60_000, 1.25),
    Scenario("confirm-sync", "persistent, publish one and wait for its confirm (Celery confirm_publish), "
             "1 consumer, prefetch 1, 64 B",
             ("-delete-first", "-persistent", "-confirm", "-inflight", "1", "-producers", "1",
              "-consumers", "1", "-prefetch", "1", "-size", "64"), 3_000, 1.25),
    Scenario("transient", "no confirms, auto-ack, 1 producer, 1 consumer, 16 B",
             ("-delete-first", "-autoack", "-producers", "1", "-consumers", "1", "-size", "16"),
             200_000, 1.25),  # issue 17: every scenario but the large bodies >= 1.25x (was 0.5x in issue 7)
    # Issue 17: every shape of work.
    Scenario("many-queues", "8 queues at once: persistent, confirms (100 in flight), 1 producer + 1 consumer "
             "each, prefetch 50, 64 B",
             ("-delete-first", "-persistent", "-confirm", "-inflight", "100", "-producers", "1",
              "-consumers", "1", "-prefetch", "50", "-size", "64"), 10_000, 1.25, parallel=8),
    Scenario("fan-in", "4 queues x 4 consumers: persistent, confirms (100 in flight), 1 producer per queue, "
             "prefetch 50, 256 B",
             ("-delete-first", "-persistent", "-confirm", "-inflight", "100", "-producers", "1",
              "-consumers", "4", "-prefetch", "50", "-size", "256"), 15_000, 1.25, parallel=4),
    Scenario("large-64k", "64 KiB persistent bodies, confirms (8 in flight), 1 producer, 1 consumer, prefetch 8",
             ("-delete-first", "-persistent", "-confirm", "-inflight", "8", "-producers", "1",
              "-consumers", "1", "-prefetch", "8", "-size", str(64 << 10)), 8_000, 1.0,
             size=64 << 10, interleave=True),
    Scenario("large-1m", "1 MiB persistent bodies, confirms (8 in flight), 1 producer, 1 consumer, prefetch 8",
             ("-delete-first", "-persistent", "-confirm", "-inflight", "8", "-producers", "1",
              "-consumers", "1", "-prefetch", "8", "-size", str(1 << 20)), 1_000, 1.0,
             size=1 << 20, interleave=True),
    Scenario("large-16m", "16 MiB persistent bodies (RabbitMQ's default max), confirms (8 in flight), "
             "1 producer, 1 consumer, prefetch 8",
             ("-delete-first", "-persistent", "-confirm", "-inflight", "8", "-producers", "1",
              "-consumers", "1", "-prefetch", "8", "-size", str(16 << 20)), 60, 1.0,
             size=16 << 20, interleave=True),
    Scenario("idle-conns", "1,000 idle connections (1 channel each, no heartbeat), opened 50 at a time, on a "
             "fresh broker: connections opened per second; RSS per connection beside it", (), 1_000, 1.25,
             kind="idle"),
)}

# Storage group (issue 3): one backlog, several figures. (label, key, unit, target ratio, higher_is_better)
BACKLOG = 500_000
STORAGE_METRICS: tuple[tuple[str, str, str, float | None, bool], ...] = (
    ("backlog publish (confirms)", "publish_rate", "msg/s", None, True),
    ("RSS per queued message", "rss_per_msg_bytes", "B", 0.5, False),
    ("kill -9 -> accepting connections", "kill_to_connect_s", "s", None, False),
    ("kill -9 -> backlog ready", "kill_to_ready_s", "s", 1.0, False),
    ("kill -9 -> backlog drained", "kill_to_drained_s", "s", None, False),
    ("drain after restart", "drain_rate", "msg/s", None, True),
)
SHORT_LABELS = {"publish_rate": "publish\nmsg/s", "rss_per_msg_bytes": "RSS per\nmessage",
                "kill_to_connect_s": "kill -9 ->\nconnect", "kill_to_ready_s": "kill -9 ->\nready",
                "kill_to_drained_s": "kill -9 ->\ndrained", "drain_rate": "drain\nmsg/s"}


# ------------------------------------------------------------------------------------------ amqpperf
def build_amqpperf(source: Path, build_dir: Path, quiet: bool = False) -> Path:
    """Return an amqpperf binary: `source` itself if it is one, else build `source` (a directory with
    main.go, or main.go) in GOPATH mode into build_dir, reusing a build of the same main.go."""
    if source.is_file() and source.suffix != ".go" and os.access(source, os.X_OK):
        return source
    main_go = source if source.suffix == ".go" else source / "main.go"
    if not main_go.is_file():
        raise SystemExit(f"amqpperf source not found: {main_go} (use --amqpperf PATH)")
    digest = hashlib.sha256(main_go.read_bytes()).hexdigest()[:12]
    binary = build_dir / f"amqpperf-{digest}"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise SystemExit("go not found: apt-get install golang-go golang-github-rabbitmq-amqp091-go-dev")
    if not Path(GOCODE, "src/github.com/rabbitmq/amqp091-go").is_dir():
        raise SystemExit("amqp091-go not in /usr/share/gocode: apt-get install golang-github-rabbitmq-amqp091-go-dev")
    gopath = build_dir / "gopath"
    pkg = gopath / "src" / "amqpperf"
    pkg.mkdir(parents=True, exist_ok=True)
    shutil.copy2(main_go, pkg / "main.go")
    env = dict(os.environ, GO111MODULE="off", GOPATH=f"{gopath}:{GOCODE}", GOFLAGS="",
               GOCACHE=str(build_dir / "go-cache"))
    if not quiet:
        print(f"building amqpperf from {main_go} ...", flush=True)
    tmp = binary.with_suffix(".tmp")
    subprocess.run([go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(tmp), "."], cwd=pkg, env=env,
                   check=True, timeout=600)
    tmp.rename(binary)
    for old in build_dir.glob("amqpperf-*"):
        if old != binary and old.suffix != ".tmp":
            old.unlink(missing_ok=True)
    return binary


class Perf:
    """Runs amqpperf and returns its JSON line (plus the argv and exit status)."""

    def __init__(self, binary: Path, timeout_s: float, verbose: bool) -> None:
        self.binary = binary
        self.timeout_s = timeout_s
        self.verbose = verbose

    def run(self, args: list[str], timeout_s: float | None = None) -> dict[str, Any]:
        t = timeout_s or self.timeout_s
        argv = [str(self.binary), *args, "-json", "-timeout", f"{t:.0f}s"]
        if "-probe" not in args and not self.verbose:
            argv += ["-progress", "0"]
        if self.verbose:
            print("  $ " + shlex.join(argv), flush=True)
        try:
            # amqpperf bounds itself (-timeout, -stall, its own watchdog); this is a last resort.
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=None if self.verbose else subprocess.PIPE,
                               timeout=t + 45, text=True)
        except subprocess.TimeoutExpired:
            return {"ok": False, "errors": [f"amqpperf killed after {t + 45:.0f}s"], "argv": argv}
        out: dict[str, Any] = {}
        for line in reversed(p.stdout.strip().splitlines()):
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    out = json.loads(line)
                    break
        if not out:
            out = {"ok": False, "errors": [f"no JSON from amqpperf (exit {p.returncode}): "
                                           f"{(p.stderr or '')[-500:]}"]}
        out["argv"] = argv
        out["exit_status"] = p.returncode
        return out


    def run_many(self, argvs: list[list[str]], timeout_s: float | None = None) -> list[dict[str, Any]]:
        """Run several amqpperf at once (one per queue); their JSON lines, in order."""
        if len(argvs) == 1:
            return [self.run(argvs[0], timeout_s)]
        with concurrent.futures.ThreadPoolExecutor(len(argvs)) as pool:
            return list(pool.map(lambda a: self.run(a, timeout_s), argvs))


def combine(raws: list[dict[str, Any]]) -> dict[str, Any]:
    """One result out of parallel amqpperf runs: rates and counts summed, latency and CPU the worst."""
    if len(raws) == 1:
        return raws[0]
    lat = [r.get("latency") or {} for r in raws]
    p50 = [x["p50_ms"] for x in lat if x.get("p50_ms") is not None]
    p99 = [x["p99_ms"] for x in lat if x.get("p99_ms") is not None]
    cpus = [r["broker_cpu_s"] for r in raws if r.get("broker_cpu_s") is not None]
    rss = [r["broker_rss_end_kb"] for r in raws if r.get("broker_rss_end_kb")]
    hwm = [r["broker_hwm_kb"] for r in raws if r.get("broker_hwm_kb")]
    return {
        "ok": all(r.get("ok") for r in raws),
        "consume_rate": sum(r.get("consume_rate") or 0.0 for r in raws),
        "publish_rate": sum(r.get("publish_rate") or 0.0 for r in raws),
        "latency": {"p50_ms": max(p50) if p50 else None, "p99_ms": max(p99) if p99 else None},
        "broker_cpu_s": max(cpus) if cpus else None,
        "broker_rss_end_kb": max(rss) if rss else None,
        "broker_hwm_kb": max(hwm) if hwm else None,
        "count": sum(r.get("count") or 0 for r in raws),
        "errors": [e for r in raws for e in (r.get("errors") or [])],
        "parallel": raws,
    }


# ------------------------------------------------------------------------------------------ results
def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    lat = raw.get("latency") or {}
    count = raw.get("count") or 0
    cpu = raw.get("broker_cpu_s")
    return {
        "ok": bool(raw.get("ok")),
        "consume_rate": raw.get("consume_rate", 0.0),
        "publish_rate": raw.get("publish_rate", 0.0),
        "p50_ms": lat.get("p50_ms"),
        "p99_ms": lat.get("p99_ms"),
        "broker_cpu_s": cpu,
        "cpu_s_per_100k": (cpu / count * 100_000) if (cpu is not None and count) else None,
        "rss_mb": raw["broker_rss_end_kb"] / 1024 if raw.get("broker_rss_end_kb") else None,
        "rss_hwm_mb": raw["broker_hwm_kb"] / 1024 if raw.get("broker_hwm_kb") else None,
        "count": count,
        "errors": raw.get("errors") or [],
        **{k: raw[k] for k in ("rss_per_conn_kb", "open_s", "connections", "mb_s") if k in raw},
    }
