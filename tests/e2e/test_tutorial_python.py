"""The Work Queues tutorial's own Python programs, run unchanged as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ThreadBroker, wait_for

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "run_with_port.py"


def _command(port: int, script: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """The current examples take AMQP_URL; the classic ones are the tutorial's code as it was, run with
    pika's default port patched."""
    if script.parent.name == "classic":
        return [sys.executable, "-u", str(RUNNER), str(port), str(script), *args], dict(os.environ)
    return [sys.executable, "-u", str(script), *args], {**os.environ, "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{port}/"}


def _run(port: int, script: Path, *args: str, **kw: object) -> subprocess.Popen[str]:
    cmd, env = _command(port, script, *args)
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kw,  # type: ignore[call-overload]
    )  # fmt: skip


@pytest.mark.parametrize("form", ["current", "classic"])
def test_three_workers_share_tasks_round_robin(broker: ThreadBroker, form: str) -> None:
    folder = ROOT / "examples" if form == "current" else ROOT / "examples" / "classic"
    workers = [_run(broker.port, folder / "worker.py") for _ in range(3)]
    try:
        # wait until all three consumers are attached
        def consumers() -> int:
            vh = broker.app.broker.vhosts["/"]  # type: ignore[union-attr]
            q = vh.queues.get("task_queue")
            return len(q.consumers) if q else 0

        wait_for(lambda: broker.call(consumers) == 3, timeout=15)
        for i in range(6):
            cmd, env = _command(broker.port, folder / "new_task.py", f"task{i}")
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True, env=env)
            assert f" [x] Sent task{i}" in out.stdout
        wait_for(lambda: broker.call(lambda: broker.app.broker.vhosts["/"].queues["task_queue"].acked) == 6, 15)  # type: ignore[union-attr]
    finally:
        for w in workers:
            w.terminate()
        outputs = [w.communicate(timeout=10)[0] for w in workers]
    received = [[line.split("Received ")[1] for line in o.splitlines() if "Received" in line] for o in outputs]
    # Round-robin in the order the workers subscribed: each gets every third task.
    assert sorted(map(sorted, received)) == [["task0", "task3"], ["task1", "task4"], ["task2", "task5"]]
    assert all(o.count(" [x] Done") == 2 for o in outputs)


def test_quorum_and_classic_forms_accepted_and_exclusive_of_each_other(broker: ThreadBroker) -> None:
    """Declaring the quorum form on a classic queue fails like RabbitMQ (406, x-queue-type)."""
    out = subprocess.run(
        [sys.executable, str(RUNNER), str(broker.port), str(ROOT / "examples/classic/new_task.py"), "x"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    cmd, env = _command(broker.port, ROOT / "examples/new_task.py", "y")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode != 0
    assert "inequivalent arg 'x-queue-type' for queue 'task_queue' in vhost '/'" in out.stdout + out.stderr
