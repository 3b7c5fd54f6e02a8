"""The RabbitMQ Work Queues tutorial, in Go, against Leveret: a client that does not use pamqp.

examples/go/new_task.go and examples/go/worker.go are the tutorial-two programs (amqp091-go), built with
Debian's golang-go and golang-github-rabbitmq-amqp091-go-dev by examples/go/build.sh. The test is skipped
only when `go` is not installed (.ci/install-system-deps.sh installs it).

Round-robin is asserted where it is deterministic. Two workers with prefetch 1 consume "task_queue"; the
test publishes one task (a separate new_task process, as in the tutorial) only after the previous task has
been processed ("Done"). So at each publish the worker that was *not* served last is idle and has acked
its last task long before (a whole new_task run ago), and the broker's round-robin sends the task to it,
whether or not the worker served last has already acked. Hence the tasks strictly alternate: one worker
gets 1, 3, 5 and the other 2, 4, 6 (which one starts depends on consumer registration order, so either
is accepted). Each worker exits by itself after acking 3 (WORKER_MAX_MESSAGES), and the queue must then
be empty: every task acked, none requeued.

Set LEVERET_TEST_AGAINST_URL=amqp://guest:guest@127.0.0.1:PORT/ to run the same test against another
broker (e.g. RabbitMQ, to check the test itself) instead of a Leveret started here.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD_SH = REPO / "examples" / "go" / "build.sh"
LISTEN_RE = re.compile(r"AMQP listening on 127\.0\.0\.1:(\d+)")
RECEIVED_RE = re.compile(r"Received a message: (.*)$")
QUEUE = "task_queue"


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def go_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("go") is None:
        pytest.skip("go is not installed (apt-get install golang-go golang-github-rabbitmq-amqp091-go-dev, "
                    "or .ci/install-system-deps.sh)")
    out = tmp_path_factory.mktemp("go-bin")
    p = subprocess.run(["sh", str(BUILD_SH), str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"examples/go/build.sh failed:\n{p.stdout}\n{p.stderr}"
    return {name: out / name for name in ("new_task", "worker", "rpc_server", "rpc_client")}


class _Lines:
    """Reads a child's output line by line on a thread (so the pipe never fills) and keeps every line."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self.q: queue.Queue[str | None] = queue.Queue()
        self._stream = stream
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self) -> None:
        for raw in self._stream:  # type: ignore[attr-defined]
            line = raw.rstrip("\n")
            self.lines.append(line)
            self.q.put(line)
        self.q.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str] | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            if m := pattern.search(line):
                return m
        return None

    def join(self) -> None:
        self._t.join(timeout=5)


def _stop(proc: subprocess.Popen[str], timeout: float = 10) -> None:
    """Stop our own child by PID: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


@pytest.fixture
def amqp_url(tmp_path: Path) -> Iterator[str]:
    """A broker for one test: a fresh Leveret on an ephemeral port, or LEVERET_TEST_AGAINST_URL."""
    other = os.environ.get("LEVERET_TEST_AGAINST_URL")
    if other:
        _delete_queue(other, QUEUE)
        yield other
        _delete_queue(other, QUEUE)
        return
    data = tmp_path / "leveret-data"
    data.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.Popen(
        [sys.executable, "-m", "leveret", "server", "--amqp-port", "0", "--http-port", "0", "--data-dir", str(data)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    out = _Lines(proc.stdout)
    try:
        m = out.wait_for(LISTEN_RE, timeout=30)
        if m is None:
            _stop(proc)
            out.join()
            pytest.fail("leveret server printed no 'AMQP listening on 127.0.0.1:PORT' line:\n" + "\n".join(out.lines[-40:]))
        yield f"amqp://guest:guest@127.0.0.1:{m.group(1)}/"
    finally:
        _stop(proc)
        out.join()
        assert proc.stdout is not None
        proc.stdout.close()


def _delete_queue(url: str, name: str) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        conn.channel().queue_delete(name)
    finally:
        conn.close()


def _queue_counts(url: str, name: str) -> tuple[int, int]:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ok = conn.channel().queue_declare(name, durable=True, passive=True)
        return ok.method.message_count, ok.method.consumer_count
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------- the test
def test_go_work_queues_round_robin(go_programs: dict[str, Path], amqp_url: str) -> None:
    env = dict(os.environ, AMQP_URL=amqp_url, WORKER_MAX_MESSAGES="3")
    workers = [subprocess.Popen([str(go_programs["worker"])], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env) for _ in range(2)]
    logs = [_Lines(w.stdout) for w in workers]
    try:
        for i, log in enumerate(logs):
            assert log.wait_for(re.compile(r"\[\*\] Waiting for messages"), 30), \
                f"worker {i} did not start consuming:\n" + "\n".join(log.lines)

        tasks = [f"task-{i}" for i in range(1, 7)]  # no dots: instant work
        for n, task in enumerate(tasks, start=1):
            p = subprocess.run([str(go_programs["new_task"]), task], capture_output=True, text=True, env=env,
                               timeout=30)
            assert p.returncode == 0, f"new_task {task} failed:\n{p.stdout}{p.stderr}"
            assert f"[x] Sent {task}" in p.stdout + p.stderr
            deadline = time.monotonic() + 30
            while sum(line.endswith(" Done") for log in logs for line in log.lines) < n:
                assert time.monotonic() < deadline, f"{task} was not processed:\n" + \
                    "\n".join(f"worker {i}: {line}" for i, log in enumerate(logs) for line in log.lines)
                time.sleep(0.01)

        for i, w in enumerate(workers):
            try:
                assert w.wait(timeout=30) == 0, f"worker {i} exited with {w.returncode}"
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker {i} did not exit after 3 acks:\n" + "\n".join(logs[i].lines))
    finally:
        for w, log in zip(workers, logs, strict=True):
            _stop(w)
            log.join()
            assert w.stdout is not None
            w.stdout.close()

    got = [[m.group(1) for line in log.lines if (m := RECEIVED_RE.search(line))] for log in logs]
    for i, log in enumerate(logs):
        assert any("Acked 3 messages, exiting" in line for line in log.lines), "\n".join(log.lines)
        assert len(got[i]) == 3, f"worker {i} got {got[i]}"
    assert sorted(got[0] + got[1]) == tasks
    assert sorted(got, key=lambda g: g[0]) == [["task-1", "task-3", "task-5"], ["task-2", "task-4", "task-6"]], \
        f"tasks did not alternate between the workers: {got}"
    # every task acked: nothing left (requeued or unacked) and no consumer left behind
    assert _queue_counts(amqp_url, QUEUE) == (0, 0)


@pytest.mark.parametrize("direct", [False, True], ids=["callback-queue", "direct-reply-to"])
def test_go_rpc(go_programs: dict[str, Path], amqp_url: str, direct: bool) -> None:
    """The RPC tutorial's Go programs: a server answering fib(n), clients asking with a callback queue or
    with direct reply-to (amq.rabbitmq.reply-to)."""
    env = dict(os.environ, AMQP_URL=amqp_url, RPC_MAX_REQUESTS="3")
    if direct:
        env["DIRECT_REPLY_TO"] = "1"
    server = subprocess.Popen([str(go_programs["rpc_server"])], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    log = _Lines(server.stdout)
    try:
        assert log.wait_for(re.compile(r"Awaiting RPC requests"), 30), "\n".join(log.lines)
        for n, expected in ((10, 55), (15, 610), (20, 6765)):
            p = subprocess.run([str(go_programs["rpc_client"]), str(n)], capture_output=True, text=True, env=env,
                               timeout=30)  # fmt: skip
            assert p.returncode == 0, p.stdout + p.stderr
            assert f"[.] Got {expected}" in p.stdout + p.stderr
        assert server.wait(timeout=30) == 0  # it served 3 and exited
    finally:
        _stop(server)
        log.join()
        assert server.stdout is not None
        server.stdout.close()
