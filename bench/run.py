#!/usr/bin/env python3
"""Leveret vs RabbitMQ, side by side, measured with the same Go load generator (amqpperf).

One command runs the issue-7 scenarios against Leveret (this checkout) and, when it is installed, against
RabbitMQ, one broker at a time, each started here on its own ports and its own throw-away data dir and
stopped by PID. It prints a table of consumed msg/s, the Leveret/RabbitMQ ratio against its target, p50/p99
end-to-end latency, broker CPU seconds per 100k messages and broker RSS, and writes

    bench/results/<UTC timestamp>.json   every figure and every raw amqpperf result
    bench/results/latest.json            the same
    bench/results/latest.png             bar charts (throughput, ratios vs targets)
    bench/results/latest.md              the table in Markdown, for docs/benchmarks.md

amqpperf is built from ../shared/tools/amqpperf/main.go (beside the repo) into bench/.build/ on first use,
with Debian's golang-go and golang-github-rabbitmq-amqp091-go-dev (see bench/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from brokers import (  # noqa: E402
    Broker,
    BrokerError,
    Epmd,
    LeveretBroker,
    RabbitMQBroker,
    find_rabbitmq_server,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_AMQPPERF = REPO.parent / "shared" / "tools" / "amqpperf"
GOCODE = "/usr/share/gocode"


# ------------------------------------------------------------------------------------------ scenarios
@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    flags: tuple[str, ...]  # amqpperf flags, exactly as in the amqpperf README, minus -url/-count/-json
    count: int
    target: float  # Leveret/RabbitMQ consumed msg/s ratio the issue asks for


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
             200_000, 0.5),
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
    }


def fmt(v: Any, spec: str = ",.0f", dash: str = "-") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return dash
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or a < 0 or b < 0:
        return None
    return a / b


# ------------------------------------------------------------------------------------------ the run
@dataclass
class Run:
    args: argparse.Namespace
    perf: Perf
    workroot: Path
    epmd: Epmd | None = None
    live: list[Broker] = field(default_factory=list)
    rabbit_script: Path | None = None
    failures: int = 0

    def log(self, msg: str) -> None:
        print(msg, flush=True)

    def new_broker(self, kind: str, tag: str) -> Broker:
        workdir = Path(tempfile.mkdtemp(prefix=f"{kind}-{tag}-", dir=self.workroot))
        b: Broker
        if kind == "leveret":
            cmd = shlex.split(self.args.leveret_cmd) if self.args.leveret_cmd else [sys.executable, "-m", "leveret"]
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
            b = LeveretBroker(workdir, cmd, self.args.leveret_arg, env)
        else:
            assert self.rabbit_script is not None
            if self.epmd is None:
                self.epmd = Epmd(self.workroot)
                self.epmd.start()
            b = RabbitMQBroker(workdir, self.rabbit_script, self.epmd)
        self.live.append(b)
        return b

    def start(self, b: Broker) -> None:
        t0 = time.monotonic()
        b.start(timeout=self.args.start_timeout)
        self.log(f"  {b.name} up in {time.monotonic() - t0:.1f}s (pid {b.pid}, port {b.port})")

    def stop(self, b: Broker) -> None:
        b.stop()
        self.log(f"  {b.name} stopped in {b.stop_took_s:.1f}s")
        if b in self.live:
            self.live.remove(b)

    def cleanup(self) -> None:
        for b in list(self.live):
            with contextlib.suppress(Exception):
                b.stop(timeout=10)
        self.live.clear()
        if self.epmd is not None:
            self.epmd.stop()
            self.epmd = None

    def count(self, base: int) -> int:
        return max(100, int(base * self.args.count_scale))

    # -- throughput group ----------------------------------------------------------------------------
    def throughput(self, broker_kind: str, scenarios: list[Scenario]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        b: Broker | None = None

        def fresh() -> Broker:
            nonlocal b
            if b is not None:
                self.stop(b)
            b = self.new_broker(broker_kind, "tp")
            self.start(b)
            return b

        try:
            fresh()
            assert b is not None
            if not self.args.no_warmup:
                w = self.perf.run(["-url", b.url, "-queue", "bench.warmup", "-delete-first", "-persistent",
                                   "-confirm", "-inflight", "100", "-consumers", "2", "-prefetch", "10",
                                   "-count", str(self.count(10_000)), "-size", "64"], 120)
                self.log(f"  warm-up: {fmt(w.get('consume_rate'))} msg/s" + ("" if w.get("ok") else " (NOT OK)"))
            for i, sc in enumerate(scenarios):
                if self.args.fresh_broker and i > 0:
                    fresh()
                assert b is not None
                if not b.alive():
                    fresh()
                runs = []
                for rep in range(self.args.repeat):
                    raw = self.perf.run(["-url", b.url, "-queue", f"bench.{sc.name}", *sc.flags,
                                         "-count", str(self.count(sc.count)), "-broker-pid", str(b.pid),
                                         "-label", f"{broker_kind}/{sc.name}/{rep}"])
                    s = summarize(raw)
                    runs.append((s, raw))
                    self.log(f"  {sc.name:<13} {fmt(s['consume_rate']):>9} msg/s  p50 {fmt(s['p50_ms'], '.2f')} ms"
                             f"  p99 {fmt(s['p99_ms'], '.2f')} ms  cpu/100k {fmt(s['cpu_s_per_100k'], '.2f')} s"
                             f"  rss {fmt(s['rss_mb'], '.0f')} MB" + ("" if s["ok"] else f"  NOT OK {s['errors'][:2]}"))
                    if not b.alive():
                        self.log(f"  {broker_kind} died during {sc.name}")
                        break
                ok_runs = [r for r in runs if r[0]["ok"]] or runs
                ok_runs.sort(key=lambda r: r[0]["consume_rate"] or 0)
                best = ok_runs[len(ok_runs) // 2]  # median run by consumed msg/s
                entry = dict(best[0])
                entry["runs"] = [r[1] for r in runs]
                if len(runs) > 1:
                    entry["consume_rates"] = [r[0]["consume_rate"] for r in runs]
                    entry["consume_rate_stdev"] = statistics.pstdev(entry["consume_rates"])
                if not all(r[0]["ok"] for r in runs):
                    self.failures += 1
                out[sc.name] = entry
        except BrokerError as e:
            self.failures += 1
            self.log(f"  {broker_kind}: {e}")
            for sc in scenarios:
                out.setdefault(sc.name, {"ok": False, "errors": [f"broker: {str(e)[:2000]}"]})
        finally:
            if b is not None:
                self.stop(b)
        return out

    # -- storage group (issue 3) ---------------------------------------------------------------------
    def storage(self, broker_kind: str) -> dict[str, Any]:
        """Backlog of N persistent 64-byte messages published with confirms, then kill -9 and recovery.

        1. fresh broker, empty data dir; RSS baseline;
        2. publish N with confirms (200 in flight), no consumer -> publish msg/s;
        3. let it settle (settle_s), RSS again -> (RSS - baseline) / N bytes per queued message;
        4. SIGKILL the broker process; restart it at once on the same data dir and port, while
           `amqpperf -probe -probe-min N` polls -> kill->first connection, kill->queue holds N again;
        5. drain the N (1 consumer, prefetch 100, manual ack), checking every id exactly once ->
           kill->drained, drain msg/s.
        """
        n = self.args.backlog if self.args.backlog else self.count(BACKLOG)
        t = self.args.storage_timeout
        q = "bench.backlog"
        res: dict[str, Any] = {"count": n, "ok": False, "errors": []}
        b = self.new_broker(broker_kind, "storage")
        try:
            self.start(b)
            time.sleep(1.0)
            res["rss_baseline_kb"] = base = b.rss_kb()
            pub = self.perf.run(["-url", b.url, "-queue", q, "-delete-first", "-persistent", "-confirm",
                                 "-inflight", "200", "-producers", "1", "-consumers", "0", "-size", "64",
                                 "-count", str(n), "-broker-pid", str(b.pid), "-stall", "30s",
                                 "-label", f"{broker_kind}/backlog/publish"], t)
            res["publish"] = pub
            res["publish_rate"] = pub.get("publish_rate")
            res["broker_cpu_s_publish"] = pub.get("broker_cpu_s")
            self.log(f"  backlog publish: {fmt(pub.get('confirmed'))}/{n} confirmed at "
                     f"{fmt(pub.get('publish_rate'))} msg/s" + ("" if pub.get("ok") else f"  NOT OK {pub.get('errors')}"))
            if not pub.get("ok"):
                raise BrokerError(f"backlog publish failed: {pub.get('errors')}")
            samples = []
            deadline = time.monotonic() + self.args.settle
            while True:
                samples.append(b.rss_kb())
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
            res["rss_samples_kb"] = samples
            res["rss_kb"] = rss = samples[-1]
            res["rss_hwm_kb"] = pub.get("broker_hwm_kb")
            res["rss_per_msg_bytes"] = (rss - base) * 1024 / n if rss > 0 and base > 0 else None
            self.log(f"  RSS {base / 1024:.0f} MB -> {rss / 1024:.0f} MB: "
                     f"{fmt(res['rss_per_msg_bytes'], '.0f')} bytes per queued message")

            killed_ns = b.kill9()
            b.start(wait=False)
            probe = self.perf.run(["-url", b.url, "-queue", q, "-persistent", "-probe", "-probe-min", str(n),
                                   "-probe-interval", "50ms", "-label", f"{broker_kind}/backlog/probe"], t)
            res["probe"] = probe
            if probe.get("first_conn_unix_ns"):
                res["kill_to_connect_s"] = (probe["first_conn_unix_ns"] - killed_ns) / 1e9
            if not probe.get("ready"):
                raise BrokerError(f"after kill -9 the queue never held {n} messages: "
                                  f"{probe.get('queue_messages')} seen, {probe.get('last_error')}")
            res["kill_to_ready_s"] = (probe["ready_unix_ns"] - killed_ns) / 1e9
            b.wait_ready(30)  # learn the BEAM's PID after the restart
            self.log(f"  kill -9 -> connect {fmt(res.get('kill_to_connect_s'), '.2f')} s, "
                     f"-> {n} ready {res['kill_to_ready_s']:.2f} s (RSS {b.rss_kb() / 1024:.0f} MB)")
            drain_started_ns = time.time_ns()
            drain = self.perf.run(["-url", b.url, "-queue", q, "-persistent", "-producers", "0", "-nonce", "0",
                                   "-consumers", "1", "-prefetch", "100", "-count", str(n), "-linger", "0s",
                                   "-stall", "30s", "-broker-pid", str(b.pid),
                                   "-label", f"{broker_kind}/backlog/drain"], t)
            res["drain"] = drain
            res["drain_rate"] = drain.get("consume_rate")
            if drain.get("consume_s"):
                res["kill_to_drained_s"] = (drain_started_ns - killed_ns) / 1e9 + drain["consume_s"]
            self.log(f"  drain: {fmt(drain.get('unique'))}/{n} at {fmt(drain.get('consume_rate'))} msg/s, "
                     f"missing {drain.get('missing')}, duplicates {drain.get('duplicates')}; kill -9 -> drained "
                     f"{fmt(res.get('kill_to_drained_s'), '.2f')} s" + ("" if drain.get("ok") else f"  NOT OK {drain.get('errors')}"))
            res["ok"] = bool(drain.get("ok"))
            if not res["ok"]:
                res["errors"].append(f"drain: {drain.get('errors')}")
        except BrokerError as e:
            res["errors"].append(str(e)[:3000])
            self.log(f"  {broker_kind}: {e}")
        finally:
            self.stop(b)
        if not res["ok"]:
            self.failures += 1
        return res


# ------------------------------------------------------------------------------------------ machine
def machine_info(rabbit_version: str | None) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)

    def cmd(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=REPO).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    otp = ""
    with contextlib.suppress(OSError):
        otp = next(iter(sorted(Path("/usr/lib/erlang/releases").glob("*/OTP_VERSION")))).read_text().strip()
    rev = cmd("git", "rev-parse", "--short", "HEAD")
    if rev and cmd("git", "status", "--porcelain", "--untracked-files=no", "--", "src"):
        rev += "+dirty"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "mem_gb": mem_gb,
        "os": platform.platform(), "python": platform.python_version(),
        "go": cmd("go", "version"), "rabbitmq": rabbit_version, "erlang_otp": otp or None,
        "leveret_rev": rev or None,
    }


# ------------------------------------------------------------------------------------------ report
def table_rows(results: dict[str, Any], brokers: list[str]) -> tuple[list[str], list[list[str]]]:
    """One row per (scenario, broker); the ratio and target sit on the Leveret row."""
    both = "leveret" in brokers and "rabbitmq" in brokers
    head = ["scenario", "broker", "msg/s", "L/R", "target", "p50 ms", "p99 ms", "CPU s/100k", "RSS MB"]
    rows = []
    for name, per in results.items():
        for i, b in enumerate(brokers):
            r = per.get(b) or {}
            x = per.get("ratio") if (both and b == "leveret") else None
            tgt = SCENARIOS[name].target
            rows.append([
                name if i == 0 else "", b,
                fmt(r.get("consume_rate")) + ("" if r.get("ok") else " !"),
                (fmt(x, ".2f") + ("" if x is None else (" ok" if x >= tgt else " <"))) if both and b == "leveret" else "",
                f">= {tgt:g}x" if both and b == "leveret" else "",
                fmt(r.get("p50_ms"), ".1f"), fmt(r.get("p99_ms"), ".1f"),
                fmt(r.get("cpu_s_per_100k"), ".2f"), fmt(r.get("rss_mb"), ".0f"),
            ])
    return head, rows


def storage_rows(storage: dict[str, Any], brokers: list[str]) -> tuple[list[str], list[list[str]]]:
    both = "leveret" in brokers and "rabbitmq" in brokers
    first: dict[str, Any] = next(iter(storage.values()), {})
    head = ["backlog (" + fmt(first.get("count")) + " x 64 B persistent)", *brokers]
    if both:
        head += ["L/R", "target"]
    rows = []
    for label, key, unit, target, higher in STORAGE_METRICS:
        row = [f"{label} ({unit})"]
        vals = []
        for b in brokers:
            v = (storage.get(b) or {}).get(key)
            vals.append(v)
            row.append(fmt(v, ".2f" if unit == "s" else ",.0f"))
        if both:
            x = ratio(vals[brokers.index("leveret")], vals[brokers.index("rabbitmq")])
            ok = "" if (x is None or target is None) else (" ok" if (x >= target if higher else x <= target) else " <")
            row += [fmt(x, ".2f") + ok, "-" if target is None else (">= " if higher else "<= ") + f"{target:g}x"]
        rows.append(row)
    return head, rows


def print_table(title: str, head: list[str], rows: list[list[str]], plain: bool, left: int = 2) -> None:
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if not plain:
        t = Table(title=title)
        for i, h in enumerate(head):
            t.add_column(h, justify="left" if i < left else "right")
        for r in rows:
            t.add_row(*r)
        Console(width=max(110, shutil.get_terminal_size((110, 24)).columns)).print(t)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) if i < left else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True))))
    for r in rows:
        print("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [f"Run {doc['timestamp']} on {m['cpu']}, {m['cores']} cores, {m['mem_gb']} GB RAM; "
             f"Python {m['python']}, RabbitMQ {m['rabbitmq'] or '-'} (Erlang/OTP {m['erlang_otp'] or '-'}), "
             f"Leveret {m['leveret_rev'] or '-'}; count scale {doc['args']['count_scale']}, "
             f"{doc['args']['repeat']} run(s) per scenario (median).", ""]
    for head, rows in ([table_rows(doc["results"], doc["brokers"])] if doc["results"] else []) + (
            [storage_rows(doc["storage"], doc["brokers"])] if doc.get("storage") else []):
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" for _ in head) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no PNG", file=sys.stderr)
        return False
    results, storage, brokers = doc["results"], doc.get("storage") or {}, doc["brokers"]
    both = "leveret" in brokers and "rabbitmq" in brokers
    panels = (1 if results else 0) + (1 if results and both else 0) + (1 if storage and both else 0)
    if panels == 0:
        return False
    fig, grid = plt.subplots(1, panels, figsize=(5.5 * panels, 4.6), squeeze=False)
    axes = list(grid[0])
    colors = {"leveret": "#4c72b0", "rabbitmq": "#dd8452"}
    names = list(results)
    if results:
        ax = axes.pop(0)
        width = 0.8 / max(1, len(brokers))
        for i, b in enumerate(brokers):
            vals = [(results[n].get(b) or {}).get("consume_rate") or 0 for n in names]
            xs = [j + (i - (len(brokers) - 1) / 2) * width for j in range(len(names))]
            bars = ax.bar(xs, vals, width, label=b, color=colors.get(b))
            ax.bar_label(bars, labels=[f"{v / 1000:.1f}k" if v else "" for v in vals], fontsize=7)
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel("consumed msg/s (log)")
        ax.set_title("Throughput")
        ax.legend()

    def ratio_panel(ax: Any, labels: list[str], vals: list[float | None], targets: list[float | None],
                    higher: list[bool], title: str) -> None:
        ys = [v or 0 for v in vals]
        cols = []
        for v, t, h in zip(vals, targets, higher, strict=True):
            met = v is not None and t is not None and (v >= t if h else v <= t)
            cols.append("#55a868" if met else ("#c44e52" if (v is not None and t is not None) else "#8c8c8c"))
        bars = ax.bar(range(len(labels)), ys, 0.6, color=cols)
        ax.bar_label(bars, labels=[f"{v:.2f}" if v is not None else "n/a" for v in vals], fontsize=8)
        for j, t in enumerate(targets):
            if t is not None:
                ax.hlines(t, j - 0.4, j + 0.4, colors="black", linestyles="dashed", linewidth=1)
        ax.axhline(1.0, color="grey", linewidth=0.6)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylabel("Leveret / RabbitMQ")
        ax.set_title(title)

    if results and both:
        ratio_panel(axes.pop(0), names, [results[n].get("ratio") for n in names],
                    [SCENARIOS[n].target for n in names], [True] * len(names),
                    "Throughput ratio (dashed: target, higher is better)")
    if storage and both:
        labels, vals, targets, higher = [], [], [], []
        for _label, key, _unit, target, hi in STORAGE_METRICS:
            labels.append(SHORT_LABELS.get(key, key))
            vals.append(ratio((storage.get("leveret") or {}).get(key), (storage.get("rabbitmq") or {}).get(key)))
            targets.append(target)
            higher.append(hi)
        ratio_panel(axes.pop(0), labels, vals, targets, higher,
                    f"Backlog of {fmt((storage.get('rabbitmq') or {}).get('count'))}: ratio (dashed: target)")
    m = doc["machine"]
    fig.suptitle(f"Leveret vs RabbitMQ {m['rabbitmq'] or ''} - {doc['timestamp']} - {m['cores']} cores, "
                 f"{m['cpu'][:40]}", fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".png.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
    return True


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# ------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios (amqpperf flags from its README; target = Leveret/RabbitMQ consumed msg/s):\n"
        + "\n".join(f"  {s.name:<13} {s.count:>7,} msgs  target >= {s.target:g}x  {s.description}"
                    for s in SCENARIOS.values())
        + "\n\nstorage group (--storage-scenarios, issue 3): a backlog of 500,000 persistent 64-byte messages"
          "\n  published with confirms (publish msg/s; broker RSS per queued message), then kill -9, restart on"
          "\n  the same data dir: time until it accepts connections, until the queue holds the whole backlog"
          "\n  again (target <= 1x RabbitMQ), until it is drained (every id exactly once)."
          "\n\nexamples:\n"
          "  python bench/run.py                                  # everything, both brokers (~2 min)\n"
          "  python bench/run.py --count-scale 0.2 --no-warmup    # quick look\n"
          "  python bench/run.py --brokers rabbitmq --scenarios none --storage-scenarios\n"
          "  python bench/run.py --brokers leveret --scenarios wq-fair --repeat 5 -v\n",
    )
    p.add_argument("--brokers", default="leveret,rabbitmq",
                   help="comma-separated, in run order (default: leveret,rabbitmq; rabbitmq is skipped with a "
                        "note when it is not installed)")
    p.add_argument("--scenarios", default="all",
                   help="comma-separated throughput scenarios, 'all' (default) or 'none'")
    p.add_argument("--storage-scenarios", action="store_true",
                   help="also run the storage group: 500k backlog, RSS per message, kill -9 recovery")
    p.add_argument("--count-scale", type=float, default=1.0, metavar="F",
                   help="multiply every message count by F (e.g. 0.1 for a quick run; min 100 messages)")
    p.add_argument("--backlog", type=int, default=0, metavar="N",
                   help="backlog size for the storage group (default 500,000 x --count-scale)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="runs per scenario; the median (by consumed msg/s) is reported (default 1)")
    p.add_argument("--no-warmup", action="store_true", help="skip the short unrecorded warm-up run per broker")
    p.add_argument("--fresh-broker", action="store_true",
                   help="restart the broker (new data dir) before every throughput scenario; by default each "
                        "broker is started once for the throughput group (queues are deleted between scenarios)")
    p.add_argument("--amqpperf", type=Path, default=DEFAULT_AMQPPERF, metavar="PATH",
                   help="amqpperf source dir, its main.go, or a built binary (default: ../shared/tools/amqpperf "
                        "beside the repo)")
    p.add_argument("--leveret-cmd", default=None, metavar="CMD",
                   help="command that runs Leveret's CLI (default: '%(python)s -m leveret' with src/ on "
                        "PYTHONPATH); 'server --amqp-port N --http-port 0 --data-dir DIR' is appended"
                        .replace("%(python)s", "python"))
    p.add_argument("--leveret-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for 'leveret server' (repeatable), e.g. --leveret-arg=--some-flag")
    p.add_argument("--rabbitmq-server", default=None, metavar="PATH",
                   help="RabbitMQ's sbin/rabbitmq-server script (default: found under /usr/lib/rabbitmq)")
    p.add_argument("--timeout", type=float, default=180, metavar="S",
                   help="limit for each amqpperf run in seconds (default 180); each run also gives up after "
                        "30 s without progress")
    p.add_argument("--storage-timeout", type=float, default=300, metavar="S",
                   help="limit for each step of the storage group (default 300)")
    p.add_argument("--settle", type=float, default=3.0, metavar="S",
                   help="seconds to wait after the backlog is confirmed before reading RSS (default 3)")
    p.add_argument("--start-timeout", type=float, default=60, metavar="S",
                   help="how long a broker may take to start (default 60)")
    p.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results", metavar="DIR",
                   help="where results go (default bench/results)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p.add_argument("--plain", action="store_true", help="plain-text table even if rich is installed")
    p.add_argument("--keep-workdir", action="store_true",
                   help="keep broker data dirs and logs (printed at the end) instead of deleting them")
    p.add_argument("--list", action="store_true", help="list scenarios and exit")
    p.add_argument("--report", type=Path, default=None, metavar="JSON",
                   help="run nothing: print the tables of a results JSON and rewrite latest.md/latest.png from it")
    p.add_argument("-v", "--verbose", action="store_true", help="show amqpperf commands and progress")
    a = p.parse_args(argv)
    if a.scenarios == "all":
        a.scenario_list = list(SCENARIOS)
    elif a.scenarios in ("none", ""):
        a.scenario_list = []
    else:
        a.scenario_list = [s.strip() for s in a.scenarios.split(",") if s.strip()]
        bad = [s for s in a.scenario_list if s not in SCENARIOS]
        if bad:
            p.error(f"unknown scenario(s) {bad}; choose from {list(SCENARIOS)}")
    a.broker_list = [b.strip() for b in a.brokers.split(",") if b.strip()]
    bad = [b for b in a.broker_list if b not in ("leveret", "rabbitmq")]
    if bad or not a.broker_list:
        p.error(f"unknown broker(s) {bad}; choose from leveret, rabbitmq")
    if a.count_scale <= 0 or a.repeat < 1:
        p.error("--count-scale must be > 0 and --repeat >= 1")
    if not a.scenario_list and not a.storage_scenarios and not a.list and not a.report:
        p.error("nothing to run: --scenarios none without --storage-scenarios")
    return a


def report(doc: dict[str, Any], args: argparse.Namespace, write_json: bool) -> None:
    """Print the tables of a results document and write it out (JSON, Markdown, PNG)."""
    if doc["results"]:
        head, rows = table_rows(doc["results"], doc["brokers"])
        print_table("consumed msg/s, latency, broker CPU and RSS  (! = run not OK)", head, rows, args.plain)
    if doc.get("storage"):
        head, rows = storage_rows(doc["storage"], doc["brokers"])
        print_table("storage: backlog and kill -9 recovery", head, rows, args.plain, left=1)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    wrote = []
    if write_json:
        text = json.dumps(doc, indent=1, default=str) + "\n"
        write_atomic(out / f"{doc['timestamp']}.json", text)
        write_atomic(out / "latest.json", text)
        wrote += [f"{doc['timestamp']}.json", "latest.json"]
    write_atomic(out / "latest.md", markdown(doc))
    wrote.append("latest.md")
    if not args.no_plot and plot(doc, out / "latest.png"):
        wrote.append("latest.png")
    print(f"\nwrote {', '.join(str(out / w) for w in wrote)}  ({doc['duration_s']:.0f} s run)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for s in SCENARIOS.values():
            print(f"{s.name:<13} {s.count:>7,}  >= {s.target:g}x  {s.description}")
        print(f"{'backlog':<13} {BACKLOG:>7,}  storage group (--storage-scenarios)")
        return 0

    if args.report:
        doc = json.loads(args.report.read_text())
        report(doc, args, write_json=False)
        return 0

    brokers = list(args.broker_list)
    rabbit_script = None
    if "rabbitmq" in brokers:
        rabbit_script = find_rabbitmq_server(args.rabbitmq_server)
        if rabbit_script is None:
            print("rabbitmq-server not installed (apt-get install rabbitmq-server): running Leveret only")
            brokers.remove("rabbitmq")
    if not brokers:
        print("no broker to run", file=sys.stderr)
        return 2

    perf = Perf(build_amqpperf(args.amqpperf.resolve(), BENCH_DIR / ".build"), args.timeout, args.verbose)
    workroot = Path(tempfile.mkdtemp(prefix="leveret-bench-"))
    run = Run(args, perf, workroot, rabbit_script=rabbit_script)

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results: dict[str, dict[str, Any]] = {n: {} for n in args.scenario_list}
    storage: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        for kind in brokers:
            if args.scenario_list:
                print(f"== {kind}: throughput scenarios", flush=True)
                for name, r in run.throughput(kind, [SCENARIOS[n] for n in args.scenario_list]).items():
                    results[name][kind] = r
            if args.storage_scenarios:
                print(f"== {kind}: storage (backlog, kill -9 recovery)", flush=True)
                storage[kind] = run.storage(kind)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping brokers", file=sys.stderr)
        run.cleanup()
        return 130
    finally:
        run.cleanup()
        if args.keep_workdir:
            print(f"broker data dirs and logs kept in {workroot}")
        else:
            shutil.rmtree(workroot, ignore_errors=True)

    for per in results.values():
        per["ratio"] = ratio((per.get("leveret") or {}).get("consume_rate"),
                             (per.get("rabbitmq") or {}).get("consume_rate"))
    rv = re.search(r"rabbitmq_server-([\d.]+)", str(rabbit_script)) if rabbit_script else None
    doc = {
        "timestamp": stamp,
        "machine": machine_info(rv.group(1) if rv else None),
        "duration_s": round(time.monotonic() - t0, 1),
        "args": {"brokers": brokers, "scenarios": args.scenario_list, "storage": args.storage_scenarios,
                 "count_scale": args.count_scale, "backlog": args.backlog, "repeat": args.repeat,
                 "warmup": not args.no_warmup, "fresh_broker": args.fresh_broker,
                 "leveret_cmd": args.leveret_cmd, "leveret_args": args.leveret_arg},
        "brokers": brokers,
        "targets": {n: SCENARIOS[n].target for n in args.scenario_list},
        "results": results,
        "storage": storage,
        "failures": run.failures,
    }

    report(doc, args, write_json=True)
    if run.failures:
        print(f"{run.failures} scenario(s) failed or were not OK (see errors in the JSON)", file=sys.stderr)
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
