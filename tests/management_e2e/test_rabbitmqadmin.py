"""Debian's ``rabbitmqadmin`` (the Python CLI of the rabbitmq-server package, 3.10) against a live
Leveret: list, declare, publish, get, purge, delete, close connection, export and import, each
command's exit code and output checked."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import wait_for

from .conftest import Live


def _find() -> str | None:
    for candidate in (shutil.which("rabbitmqadmin"), "/usr/sbin/rabbitmqadmin", "/usr/bin/rabbitmqadmin"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


ADMIN = _find()
pytestmark = pytest.mark.skipif(
    ADMIN is None,
    reason="rabbitmqadmin is not installed (Debian's rabbitmq-server package; .ci/install-system-deps.sh)",
)

Admin = Callable[..., str]


@pytest.fixture
def admin(live: Live) -> Admin:
    port = str(live.broker.app.http_port)

    def run(*args: str, expect: int = 0, stderr: bool = False) -> str:
        assert ADMIN is not None
        done = subprocess.run([ADMIN, "-H", "127.0.0.1", "-P", port, "-u", "guest", "-p", "guest", *args],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        assert done.returncode == expect, (args, done.returncode, done.stdout, done.stderr)
        return done.stderr if stderr else done.stdout

    return run


def _rows(out: str) -> list[list[str]]:
    """The cells of rabbitmqadmin's table output (``-f tsv`` would drop the header)."""
    return [
        [c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("|")
    ]


def test_declare_publish_get_purge_delete(live: Live, admin: Admin) -> None:
    assert admin("declare", "queue", "name=jobs", "durable=true") == "queue declared\n"
    assert admin("declare", "exchange", "name=events", "type=topic") == "exchange declared\n"
    assert admin("declare", "binding", "source=events", "destination=jobs", "routing_key=job.*") == (
        "binding declared\n"
    )
    assert ["events", "jobs", "job.*"] in _rows(
        admin("list", "bindings", "source", "destination", "routing_key")
    )
    assert ["events", "topic"] in _rows(admin("list", "exchanges", "name", "type"))
    assert ["jobs", "True"] in _rows(admin("list", "queues", "name", "durable"))

    assert admin("publish", "exchange=events", "routing_key=job.a", "payload=first") == "Message published\n"
    assert admin("publish", "routing_key=jobs", "payload=second", 'properties={"delivery_mode":2}') == (
        "Message published\n"
    )
    out = admin("publish", "exchange=events", "routing_key=nowhere", "payload=lost")
    assert out == "Message published but NOT routed\n"
    assert ["jobs", "2"] in _rows(admin("list", "queues", "name", "messages"))

    # get: requeue by default (ack_requeue_true), so the second get sees it redelivered
    rows = _rows(admin("get", "queue=jobs", "count=2"))
    header, *msgs = rows
    col = {name: i for i, name in enumerate(header)}
    assert [(m[col["payload"]], m[col["redelivered"]]) for m in msgs] == [
        ("first", "False"),
        ("second", "False"),
    ]
    rows = _rows(admin("get", "queue=jobs", "ackmode=ack_requeue_false"))
    assert rows[1][col["payload"]] == "first" and rows[1][col["redelivered"]] == "True"
    assert live.queue("jobs")["messages"] == 1

    assert admin("purge", "queue", "name=jobs") == "queue purged\n"
    assert live.queue("jobs")["messages"] == 0
    assert admin("delete", "binding", "source=events", "destination=jobs", "destination_type=queue",
                 "properties_key=job.*") == "binding deleted\n"  # fmt: skip
    assert live.get("/api/bindings/%2F/e/events/q/jobs") == []
    assert admin("delete", "exchange", "name=events") == "exchange deleted\n"
    assert admin("delete", "queue", "name=jobs") == "queue deleted\n"
    assert live.get("/api/queues/%2F") == []
    # rabbit_channel's refusal through the HTTP API is 401 "Access refused.": rabbitmqadmin exits 1
    out = admin("delete", "exchange", "name=amq.direct", expect=1, stderr=True)
    assert out == "*** Access refused: /api/exchanges/%2F/amq.direct\n\n"


def test_lists_and_close_connection(live: Live, admin: Admin) -> None:
    conn = live.connect("held-by-test")
    conn.channel()
    try:
        name = wait_for(lambda: next(iter(live.get("/api/connections")), None))["name"]
        assert [name, "guest"] in _rows(admin("list", "connections", "name", "user"))
        assert len(_rows(admin("list", "channels", "name"))) == 2
        assert ["guest", "administrator"] in _rows(admin("list", "users", "name", "tags"))
        assert ["/"] in _rows(admin("list", "vhosts", "name"))
        assert ["/", ".*", ".*", "guest", ".*"] in _rows(admin("list", "permissions"))
        assert admin("list", "policies") == "No items\n"
        assert admin("close", "connection", f"name={name}") == "connection closed\n"
        wait_for(lambda: live.get("/api/connections") == [])
    finally:
        if conn.is_open:
            try:
                conn.close()
            except Exception:
                pass


def test_export_and_import(live: Live, admin: Admin, tmp_path: Path) -> None:
    admin("declare", "queue", "name=kept", "durable=true")
    admin("declare", "exchange", "name=kx", "type=fanout", "durable=true")
    admin("declare", "binding", "source=kx", "destination=kept")
    path = tmp_path / "defs.json"
    out = admin("export", str(path))
    assert out == f'Exported definitions for 127.0.0.1 to "{path}"\n'
    doc = json.loads(path.read_text())
    assert any(q["name"] == "kept" for q in doc["queues"])
    assert any(b["source"] == "kx" and b["destination"] == "kept" for b in doc["bindings"])

    admin("delete", "queue", "name=kept")
    admin("delete", "exchange", "name=kx")
    out = admin("import", str(path))
    assert out.startswith(f'Uploaded definitions from "127.0.0.1" to {path}.')
    assert live.queue("kept")["durable"] is True
    assert [b["source"] for b in live.get("/api/queues/%2F/kept/bindings")] == ["", "kx"]
