"""Run the example suites on Leveret's pytest fixture and on a RabbitMQ node, and time both.

    python examples/testing/measure.py [--runs 3] [--suite celery_app] [--node-only]

Each run is ``pytest -q SUITE`` in a fresh process, timed from its start to its exit (wall clock,
``time.perf_counter``): interpreter start, imports, the broker (the fixture starts one inside the
run), the workers, the tests. On RabbitMQ, a private node is started first with bench/brokers.py (its
own epmd, ports and data dir; the time it takes is reported on its own line, as a team's CI would pay
it once per job) and the suites get its URL through ``EXAMPLE_AMQP_URL``. Nothing else differs
between the two runs: the same test files, the same worker code. ``--node-only`` starts the node,
prints its URL and waits for Ctrl-C (to run the suites by hand).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SUITES = ("celery_app", "dramatiq_app")


def pytest_cmd(suite: str) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", suite]
    if not any(ep.value == "leveret.pytest_plugin" for ep in importlib.metadata.entry_points(group="pytest11")):
        # An install that predates the entry point (an old editable install): load the plugin by name.
        cmd[3:3] = ["-p", "leveret.pytest_plugin"]
    return cmd


def run_suite(suite: str, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(pytest_cmd(suite), cwd=HERE, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    if proc.returncode != 0:
        raise SystemExit(f"{suite} failed ({env.get('EXAMPLE_AMQP_URL') or 'fixture'}):\n{proc.stdout}\n{proc.stderr}")
    return seconds, tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--suite", action="append", choices=SUITES)
    parser.add_argument("--node-only", action="store_true")
    args = parser.parse_args()
    suites = args.suite or list(SUITES)
    sys.path.insert(0, str(ROOT))
    from bench.brokers import Epmd, RabbitMQBroker, find_rabbitmq_server

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(HERE)])}
    env.pop("EXAMPLE_AMQP_URL", None)
    results: dict[tuple[str, str], list[float]] = {}
    if not args.node_only:
        for suite in suites:
            for _ in range(args.runs):
                seconds, tail = run_suite(suite, env)
                results.setdefault((suite, "Leveret fixture"), []).append(seconds)
                print(f"{suite:14} Leveret fixture  {seconds:6.2f} s  {tail}", flush=True)

    script = find_rabbitmq_server()
    if script is None:
        raise SystemExit("RabbitMQ is not installed: only the fixture runs were measured")
    with tempfile.TemporaryDirectory(prefix="leveret-examples-rabbitmq-") as tmp:
        (Path(tmp) / "epmd").mkdir()
        epmd = Epmd(Path(tmp) / "epmd")
        epmd.start()
        node = RabbitMQBroker(Path(tmp) / "rabbitmq", script, epmd, nodename="rabbit-examples@localhost")
        try:
            started = time.perf_counter()
            node.start(timeout=120)
            boot = time.perf_counter() - started
            url = f"amqp://guest:guest@127.0.0.1:{node.port}/"
            print(f"RabbitMQ {node.version} node started in {boot:.2f} s: {url}", flush=True)
            if args.node_only:
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    return
            for suite in suites:
                for _ in range(args.runs):
                    seconds, tail = run_suite(suite, {**env, "EXAMPLE_AMQP_URL": url})
                    results.setdefault((suite, "RabbitMQ node"), []).append(seconds)
                    print(f"{suite:14} RabbitMQ node    {seconds:6.2f} s  {tail}", flush=True)
        finally:
            node.stop()
            epmd.stop()

    print(f"\nmedian of {args.runs} runs (wall clock of the whole pytest process):")
    for suite in suites:
        fixture = statistics.median(results[(suite, "Leveret fixture")])
        rabbit = statistics.median(results[(suite, "RabbitMQ node")])
        print(f"  {suite:14} Leveret fixture {fixture:6.2f} s   RabbitMQ node {rabbit:6.2f} s (+{boot:.2f} s to start it)")


if __name__ == "__main__":
    main()
