"""The broker's log (issue 13): --log-file (appended, reopened when logrotate moves it away and on
SIGHUP), --log-format json (one object a line with fields), connection lines as RabbitMQ writes them,
and never a password."""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pika
import pytest

from leveret.logs import JsonFormatter
from tests.helpers import ProcessBroker, ThreadBroker, wait_for

PASSWORDS = ("app-secret-7", "wrong-secret-8")


class FileBroker:
    """``leveret server --log-file PATH`` as a subprocess: nothing on stderr, so its ports are read
    from the file."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.log = tmp_path / "leveret.log"
        self.stderr = tmp_path / "stderr.txt"
        cmd = [sys.executable, "-m", "leveret", "server", "--amqp-port", "0", "--http-port", "off",
               "--prometheus-port", "off", "--storage", "memory", "--log-file", str(self.log),
               "--user", f"app:{PASSWORDS[0]}", *extra]  # fmt: skip
        with self.stderr.open("w") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_for(lambda: self.log.exists() and "started (pid" in self.log.read_text(), timeout=15)
        except AssertionError:
            self.stop()
            raise AssertionError(self.stderr.read_text()) from None
        m = re.search(r"AMQP listening on [\d.]+:(\d+)", self.log.read_text())
        assert m is not None
        self.port = int(m[1])

    def connect(self, user: str = "app", password: str = PASSWORDS[0]) -> pika.BlockingConnection:
        return pika.BlockingConnection(
            pika.URLParameters(f"amqp://{user}:{password}@127.0.0.1:{self.port}/%2F")
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


@pytest.fixture
def json_broker(tmp_path: Path) -> Iterator[FileBroker]:
    b = FileBroker(tmp_path, "--log-format", "json")
    try:
        yield b
    finally:
        b.stop()


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_json_lines_carry_connection_user_and_vhost(json_broker: FileBroker) -> None:
    b = json_broker
    b.connect().close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        b.connect(password=PASSWORDS[1])
    wait_for(lambda: sum("closing AMQP connection" in str(r["message"]) for r in records(b.log)) == 2)
    assert b.stop() == 0
    recs = records(b.log)  # every line is one JSON object
    for r in recs:
        assert {"time", "level", "logger", "message"} <= set(r), r
        t = datetime.fromisoformat(str(r["time"]))
        assert t.utcoffset() is not None and t.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        assert abs((datetime.now(UTC) - t).total_seconds()) < 120
    opened = next(r for r in recs if "authenticated and granted access" in str(r["message"]))
    name = opened["connection"]
    assert re.fullmatch(r"127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+", str(name))
    assert (opened["user"], opened["vhost"], opened["level"], opened["logger"]) == (
        "app",
        "/",
        "info",
        "leveret.connection",
    )
    closed = next(
        r for r in recs if str(r["message"]).startswith("closing AMQP connection") and r.get("user")
    )
    assert (closed["connection"], closed["user"], closed["vhost"]) == (name, "app", "/")
    accepted = next(r for r in recs if str(r["message"]).startswith("accepting AMQP connection"))
    assert accepted["connection"] == name
    refused = next(r for r in recs if "login refused" in str(r["message"]))
    assert (refused["level"], refused["user"], refused["reason"]) == (
        "warning",
        "app",
        "user 'app' - invalid credentials",
    )
    text = b.log.read_text() + b.stderr.read_text()
    assert b.stderr.read_text() == "", "with --log-file nothing goes to stderr"
    for secret in PASSWORDS:
        assert secret not in text


def test_the_log_file_is_reopened_after_logrotate_moves_it(json_broker: FileBroker, tmp_path: Path) -> None:
    """logrotate's default (create) mode: the file is renamed, then SIGHUP (its postrotate); the next
    lines go to a new file at the same path, none to the old one. Without the signal too: the next line
    after the move opens a new file (a watched-file handler)."""
    b = json_broker
    rotated = tmp_path / "leveret.log.1"
    b.log.rename(rotated)
    b.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: b.log.exists() and "SIGHUP: log file reopened" in b.log.read_text())
    b.connect().close()
    wait_for(lambda: "closing AMQP connection" in b.log.read_text())
    assert "accepting AMQP connection" not in rotated.read_text()
    assert "started (pid" in rotated.read_text()
    # Moved again, no signal this time.
    b.log.rename(tmp_path / "leveret.log.2")
    b.connect().close()
    wait_for(lambda: b.log.exists() and "closing AMQP connection" in b.log.read_text())
    assert b.stop() == 0
    assert "broker stopped" in b.log.read_text()


def test_an_unwritable_log_file_stops_the_start_in_one_line(tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "leveret", "server", "--log-file", str(tmp_path / "missing" / "x.log"),
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        f"leveret: cannot start: cannot open the log file {tmp_path / 'missing' / 'x.log'}: No such file or directory"
    ]
    assert not (tmp_path / "data").exists()


def test_text_lines_as_rabbitmq_writes_them(tmp_path: Path) -> None:
    """rabbit_reader's lines: accepting (only once a byte arrives: a TCP health check logs nothing at
    info), authenticated and granted access, closing after a close handshake, a warning when the socket
    just goes away."""
    b = ProcessBroker(tmp_path / "data", extra=["--storage", "memory"]).start()
    try:
        socket.create_connection(("127.0.0.1", b.port)).close()  # a health check
        c = pika.BlockingConnection(pika.URLParameters(b.url))
        c.close()
        gone = pika.BlockingConnection(pika.URLParameters(b.url))
        sock = gone._impl._transport._sock  # type: ignore[attr-defined]
        sock.shutdown(socket.SHUT_RDWR)
        wait_for(lambda: "client unexpectedly closed TCP connection" in "".join(b.log))
        assert b.terminate() == 0
    finally:
        b.kill()
    lines = [line.split(" ", 2)[2].rstrip() for line in b.log if "leveret.connection:" in line]
    pid = r"<0\.\d+\.0>"
    name = r"127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+"
    expected = [
        rf"INFO    leveret\.connection: accepting AMQP connection ({pid}) \(({name})\)",
        r"INFO    leveret\.connection: connection \1 \(\2\): user 'guest' authenticated and granted access to vhost '/'",
        r"INFO    leveret\.connection: closing AMQP connection \1 \(\2, vhost: '/', user: 'guest'\)",
        rf"INFO    leveret\.connection: accepting AMQP connection ({pid}) \(({name})\)",
        r"INFO    leveret\.connection: connection \3 \(\4\): user 'guest' authenticated and granted access to vhost '/'",
        r"WARNING leveret\.connection: closing AMQP connection \3 \(\4, vhost: '/', user: 'guest'\): client unexpectedly closed TCP connection",
    ]  # fmt: skip
    assert re.fullmatch("\n".join(expected), "\n".join(lines)), "\n".join(lines)


def test_json_formatter_fields_and_exceptions() -> None:
    rec = logging.LogRecord("leveret.x", logging.ERROR, __file__, 1, "queue '%s' gone", ("q",), None)
    rec.queue, rec.vhost = "q", "/"
    try:
        raise ValueError("boom")
    except ValueError:
        rec.exc_info = sys.exc_info()
    out = json.loads(JsonFormatter().format(rec))
    assert out["message"] == "queue 'q' gone" and (out["queue"], out["vhost"], out["level"]) == (
        "q",
        "/",
        "error",
    )
    assert "ValueError: boom" in str(out["exception"]) and str(out["time"]).endswith("+00:00")


def test_queue_expiry_and_consumer_timeout_lines_carry_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    b = ThreadBroker(consumer_timeout=200).start()
    try:
        c = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = c.channel()
        ch.queue_declare("lease", arguments={"x-expires": 100})
        ch.queue_declare("work")
        ch.basic_publish("", "work", b"x")
        ch.basic_consume("work", lambda *a: None)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("timed out" in r.getMessage() for r in caplog.records):
            c.process_data_events(0.05)
        expired = wait_for(lambda: [r for r in caplog.records if "expired (x-expires" in r.getMessage()])
        assert (expired[0].queue, expired[0].vhost) == ("lease", "/")  # type: ignore[attr-defined]
        timed = [r for r in caplog.records if "timed out" in r.getMessage()]
        assert timed, "no consumer timeout"
        t = timed[0]
        assert (t.queue, t.vhost, t.user) == ("work", "/", "guest")  # type: ignore[attr-defined]
        assert re.fullmatch(r"127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+", t.connection)  # type: ignore[attr-defined]
        try:
            c.close()
        except pika.exceptions.AMQPError:
            pass
    finally:
        b.stop()
