"""`leveret backup` while the broker runs and a publisher keeps confirming: the copy starts as a broker
of its own and holds every message confirmed before the backup began (in order, once each), the
queues, and the users made at run time (docs/deploying.md, "Backup")."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pika
import pytest

from tests.helpers import ProcessBroker, wait_for
from tests.http_client import http_request


def test_backup_of_a_running_broker_under_load(tmp_path: Path) -> None:
    b = ProcessBroker(tmp_path / "data").start()
    try:
        status, _, _ = http_request(
            f"http://127.0.0.1:{b.http_port}/api/users/ops", "PUT", {"password": "ops-pw", "tags": "management"},
            ("guest", "guest"),
        )  # fmt: skip
        assert status in (201, 204)
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = conn.channel()
        ch.queue_declare("jobs", durable=True)
        ch.confirm_delivery()
        confirmed: list[int] = []
        stop = threading.Event()

        def publish() -> None:
            i = 0
            while not stop.is_set() and i < 50_000:
                ch.basic_publish("", "jobs", b"%d" % i, pika.BasicProperties(delivery_mode=2))
                confirmed.append(i)  # basic_publish returned: the broker confirmed it
                i += 1

        t = threading.Thread(target=publish)
        t.start()
        wait_for(lambda: len(confirmed) >= 300, timeout=30)
        before = len(confirmed)
        out = subprocess.run(
            [sys.executable, "-m", "leveret", "backup", "--data-dir", str(b.data_dir), str(tmp_path / "copy")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "backed up" in out.stdout
        wait_for(lambda: len(confirmed) >= before + 100, timeout=30)  # the broker kept confirming meanwhile
        stop.set()
        t.join(30)
        total = len(confirmed)
        conn.close()
    finally:
        b.terminate()

    restored = ProcessBroker(tmp_path / "copy").start()
    try:
        conn = pika.BlockingConnection(pika.URLParameters(restored.url))
        ch = conn.channel()
        got = []
        while True:
            m, _, body = ch.basic_get("jobs", auto_ack=True)
            if m is None:
                break
            got.append(int(body))
        conn.close()
        assert got == list(range(len(got))), "a gap, a duplicate or a reordering"
        assert before <= len(got) <= total, (before, len(got), total)
        ops = pika.ConnectionParameters("127.0.0.1", restored.port, "/", pika.PlainCredentials("ops", "ops-pw"))
        # ops came back with its password (the login passes) and, as made, no permission on "/" (530).
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError, match="access to vhost '/' refused for user 'ops'"):
            pika.BlockingConnection(ops)
    finally:
        restored.terminate()


def test_backup_refuses_an_existing_copy_and_a_missing_store(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "leveret", "backup", "--data-dir", str(tmp_path / "nothing"), str(tmp_path / "c")]
    out = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no store at" in out.stderr and "Traceback" not in out.stderr
