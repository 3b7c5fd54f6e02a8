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

# The scenarios and amqpperf (build, run) are in scenarios.py, the tables, Markdown and plot in report.py;
# this module starts and stops the brokers, runs the groups and puts the results document together.

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
import idle_connections  # noqa: E402
from brokers import (  # noqa: E402
    Broker,
    BrokerError,
    Epmd,
    LeveretBroker,
    RabbitMQBroker,
    find_rabbitmq_server,
)
from report import fmt, ratio, report  # noqa: E402
from scenarios import BACKLOG, SCENARIOS, Perf, Scenario, build_amqpperf, combine, summarize  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_AMQPPERF = REPO.parent / "shared" / "tools" / "amqpperf"
GROUPS = {
    "classic": ("wq-fair", "wq-stream", "confirm-sync", "transient"),
    "shapes": ("many-queues", "fan-in", "idle-conns"),
    "large": ("large-64k", "large-1m", "large-16m"),
}


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
    disk: list[dict[str, Any]] = field(default_factory=list)  # dd measurements of the disk's own limit

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
            # Its own node name per tag: in an interleaved group the idle-connections scenario's fresh node
            # runs beside the group's node, and two nodes of one name on one epmd refuse to start.
            b = RabbitMQBroker(workdir, self.rabbit_script, self.epmd, nodename=f"rabbit-bench-{tag}@localhost")
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
                if (self.args.fresh_broker and i > 0) or sc.kind == "idle":  # idle: RSS per connection on a fresh heap
                    fresh()
                assert b is not None
                if not b.alive():
                    fresh()
                runs = []
                for rep in range(self.args.repeat):
                    runs.append(self.run_scenario(b, sc, rep, broker_kind))
                    if not b.alive():
                        self.log(f"  {broker_kind} died during {sc.name}")
                        break
                out[sc.name] = self.median_entry(runs)
        except BrokerError as e:
            self.failures += 1
            self.log(f"  {broker_kind}: {e}")
            for sc in scenarios:
                out.setdefault(sc.name, {"ok": False, "errors": [f"broker: {str(e)[:2000]}"]})
        finally:
            if b is not None:
                self.stop(b)
        return out

    def run_scenario(self, b: Broker, sc: Scenario, rep: int, broker_kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """One run of ``sc`` against ``b``: (summary, raw result)."""
        if sc.kind == "idle":
            host = b.url.split("@")[-1].split(":")[0] or "127.0.0.1"
            raw = asyncio.run(idle_connections.measure(host, b.port, b.pid, self.count(sc.count)))
            raw["label"] = f"{broker_kind}/{sc.name}/{rep}"
        else:
            argvs = [["-url", b.url, "-queue", f"bench.{sc.name}" + (f".{i}" if sc.parallel > 1 else ""),
                      *sc.flags, "-count", str(self.count(sc.count)), "-broker-pid", str(b.pid),
                      "-label", f"{broker_kind}/{sc.name}/{rep}"] for i in range(sc.parallel)]
            raw = combine(self.perf.run_many(argvs))
        if sc.size and raw.get("consume_rate"):
            raw["mb_s"] = raw["consume_rate"] * sc.size / 1e6
        s = summarize(raw)
        extra = ""
        if "rss_per_conn_kb" in s:
            extra = f"  {fmt(s['rss_per_conn_kb'], '.1f')} KB RSS/conn, {fmt(s.get('open_s'), '.2f')} s to open"
        elif "mb_s" in s:
            extra = f"  {fmt(s['mb_s'], '.0f')} MB/s  hwm {fmt(s['rss_hwm_mb'], '.0f')} MB"
        self.log(f"  {sc.name:<13} {broker_kind:<8} {fmt(s['consume_rate']):>9} msg/s  p50 {fmt(s['p50_ms'], '.2f')} ms"
                 f"  p99 {fmt(s['p99_ms'], '.2f')} ms  cpu/100k {fmt(s['cpu_s_per_100k'], '.2f')} s"
                 f"  rss {fmt(s['rss_mb'], '.0f')} MB" + extra + ("" if s["ok"] else f"  NOT OK {s['errors'][:2]}"))
        return s, raw

    def median_entry(self, runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
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
        return entry

    # -- interleaved group: both brokers up, alternating run by run ------------------------------------
    def interleaved(self, kinds: list[str], scenarios: list[Scenario]) -> dict[str, dict[str, Any]]:
        """Every broker of ``kinds`` started once; each scenario run ``--repeat`` times, brokers alternating
        (L, R, L, R, ...), so the machine's noise of the moment hits both; the disk's own limit is measured
        before and after (``dd bs=1M conv=fdatasync`` in the data dirs' file system)."""
        out: dict[str, dict[str, Any]] = {sc.name: {} for sc in scenarios}
        brokers: dict[str, Broker] = {}
        runs: dict[tuple[str, str], list[tuple[dict[str, Any], dict[str, Any]]]] = {}
        self.disk.append(disk_limit(self.workroot))
        self.log(f"  disk (dd bs=1M count=1024 conv=fdatasync): {fmt(self.disk[-1].get('mb_s'), '.0f')} MB/s")
        try:
            for kind in kinds:
                brokers[kind] = self.new_broker(kind, "il")
                self.start(brokers[kind])
            for sc in scenarios:
                for rep in range(self.args.repeat):
                    for kind, b in brokers.items():
                        if sc.kind == "idle":
                            # RSS per connection needs a broker whose heap has not been grown by earlier runs.
                            fresh = self.new_broker(kind, "idle")
                            try:
                                self.start(fresh)
                                time.sleep(1.0)
                                runs.setdefault((sc.name, kind), []).append(self.run_scenario(fresh, sc, rep, kind))
                            finally:
                                self.stop(fresh)
                            continue
                        if not b.alive():
                            self.start(b)
                        runs.setdefault((sc.name, kind), []).append(self.run_scenario(b, sc, rep, kind))
            for (name, kind), rs in runs.items():
                out[name][kind] = self.median_entry(rs)
        except BrokerError as e:
            self.failures += 1
            self.log(f"  interleaved: {e}")
            for (name, kind), rs in runs.items():  # what finished before the failure still counts
                if rs:
                    out[name][kind] = self.median_entry(rs)
            for sc in scenarios:
                for kind in kinds:
                    out[sc.name].setdefault(kind, {"ok": False, "errors": [f"broker: {str(e)[:2000]}"]})
        finally:
            for b in brokers.values():
                self.stop(b)
        self.disk.append(disk_limit(self.workroot))
        self.log(f"  disk (dd bs=1M count=1024 conv=fdatasync): {fmt(self.disk[-1].get('mb_s'), '.0f')} MB/s")
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


def disk_limit(where: Path) -> dict[str, Any]:
    """The disk's own sequential write rate with fdatasync, as ``dd`` reports it (1 GiB in ``where``)."""
    target = where / "dd.tmp"
    try:
        p = subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=1M", "count=1024", "conv=fdatasync"],
                           capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "dd took more than 300 s"}
    finally:
        target.unlink(missing_ok=True)
    m = re.search(r"copied, ([\d.]+) s", p.stderr)
    secs = float(m.group(1)) if m else None
    return {"ok": bool(secs), "seconds": secs, "mb_s": (1 << 30) / secs / 1e6 if secs else None,
            "output": p.stderr.strip().splitlines()[-1:] }


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
                   help="comma-separated throughput scenarios, 'all' (default), 'none', or a group: "
                        + ", ".join(f"'{g}' ({', '.join(v)})" for g, v in GROUPS.items()))
    p.add_argument("--storage-scenarios", action="store_true",
                   help="also run the storage group: 500k backlog, RSS per message, kill -9 recovery")
    p.add_argument("--count-scale", type=float, default=1.0, metavar="F",
                   help="multiply every message count by F (e.g. 0.1 for a quick run; min 100 messages)")
    p.add_argument("--backlog", type=int, default=0, metavar="N",
                   help="backlog size for the storage group (default 500,000 x --count-scale)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="runs per scenario; the median (by consumed msg/s) is reported (default 1)")
    p.add_argument("--interleave", action="store_true",
                   help="run every selected scenario with both brokers up, alternating run by run (the large-body "
                        "scenarios always are); the disk's own limit (dd) is measured before and after")
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
    elif a.scenarios in GROUPS:
        a.scenario_list = list(GROUPS[a.scenarios])
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
        interleave = [SCENARIOS[n] for n in args.scenario_list if SCENARIOS[n].interleave or args.interleave]
        in_turn = [SCENARIOS[n] for n in args.scenario_list if SCENARIOS[n] not in interleave]
        for kind in brokers:
            if in_turn:
                print(f"== {kind}: throughput scenarios", flush=True)
                for name, r in run.throughput(kind, in_turn).items():
                    results[name][kind] = r
            if args.storage_scenarios:
                print(f"== {kind}: storage (backlog, kill -9 recovery)", flush=True)
                storage[kind] = run.storage(kind)
        if interleave:
            print(f"== {' / '.join(brokers)}: interleaved scenarios", flush=True)
            for name, per in run.interleaved(brokers, interleave).items():
                results[name].update(per)
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
        "disk": run.disk,
        "failures": run.failures,
    }

    report(doc, args, write_json=True)
    if run.failures:
        print(f"{run.failures} scenario(s) failed or were not OK (see errors in the JSON)", file=sys.stderr)
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
