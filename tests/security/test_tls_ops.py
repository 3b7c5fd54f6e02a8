"""TLS around the broker: HTTPS management, certificates reloaded on SIGHUP in a real subprocess broker
(uvloop), and the command line's TLS options."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pika
import pytest
import trustme

from tests.helpers import ProcessBroker, ThreadBroker, wait_for
from tests.security.conftest import (
    Files,
    TLSBrokerFactory,
    client_context,
    pika_params,
    round_trip,
    tls_port,
    write_cert,
    write_files,
)

pytestmark = pytest.mark.timeout(90)


def https_get(port: int, path: str, ctx: ssl.SSLContext, host: str = "localhost") -> tuple[int, Any]:
    req = urllib.request.Request(f"https://{host}:{port}{path}")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_https_management_overview(tls_broker: TLSBrokerFactory, ca: trustme.CA) -> None:
    b: ThreadBroker = tls_broker(https_port=0)
    port = b.app.https_port
    assert port
    status, overview = https_get(port, "/api/overview", client_context(ca))
    assert status == 200
    listeners = {(x["protocol"], x["port"]) for x in overview["listeners"]}
    assert ("amqp/ssl", tls_port(b)) in listeners  # RabbitMQ's name for the AMQPS listener
    assert ("https", port) in listeners
    assert ("amqp", b.port) in listeners
    # The same certificate checks as AMQPS: a client trusting another CA is refused.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        https_get(port, "/api/overview", client_context(trustme.CA()))
    # Plain HTTP to the HTTPS port gets no answer.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /api/overview HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert b"200 OK" not in s.recv(1000)


def test_half_open_https_handshake_is_dropped(tls_broker: TLSBrokerFactory, ca: trustme.CA) -> None:
    """tls_handshake_timeout (1 s here) holds for the HTTPS listener too, not asyncio's 60 s."""
    b: ThreadBroker = tls_broker(https_port=0)
    assert b.app.https_port
    with socket.create_connection(("127.0.0.1", b.app.https_port), timeout=10) as silent:
        started = time.monotonic()
        assert (
            https_get(b.app.https_port, "/api/overview", client_context(ca))[0] == 200
        )  # others get in meanwhile
        try:
            assert silent.recv(100) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - started < 5


def tls_args(files: Files, *extra: str) -> list[str]:
    return [
        "--tls-cert", str(files.cert), "--tls-key", str(files.key), "--amqps-port", "0", "--https-port", "0",
        "--tls-handshake-timeout", "1", *extra,
    ]  # fmt: skip


def log_has(b: ProcessBroker, text: str) -> bool:
    return any(text in line for line in list(b.log))


def test_sighup_reloads_certificates_for_new_connections_only(tmp_path: Path, ca: trustme.CA) -> None:
    files = write_files(ca, tmp_path / "tls")
    b = ProcessBroker(
        tmp_path / "data", extra=tls_args(files, "--tls-ca", str(files.ca), "--user", "alice:apw")
    ).start()
    try:
        assert b.amqps_port and b.https_port
        old = pika.BlockingConnection(pika_params(b.amqps_port, client_context(ca)))
        assert round_trip(old, "before") == b"over tls"
        # EXTERNAL under uvloop (the thread brokers of test_tls.py run asyncio's own loop).
        alice = client_context(ca, ca.issue_cert("alice.example", common_name="alice"))
        with pika.BlockingConnection(
            pika_params(b.amqps_port, alice, credentials=pika.credentials.ExternalCredentials())
        ):
            wait_for(lambda: log_has(b, "user 'alice' authenticated"), timeout=5)

        # The operator drops in a certificate from a new CA, in place, and signals the broker.
        new_ca = trustme.CA()
        write_cert(new_ca.issue_cert("localhost", "127.0.0.1"), tmp_path / "tls", "server")
        assert b.proc is not None
        b.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: log_has(b, "TLS certificates reloaded"), timeout=10)

        with pika.BlockingConnection(pika_params(b.amqps_port, client_context(new_ca))) as conn:
            assert round_trip(conn, "after") == b"over tls"
        # A client trusting only the old CA no longer gets in.
        with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError)):
            pika.BlockingConnection(pika_params(b.amqps_port, client_context(ca))).close()
        assert https_get(b.https_port, "/api/overview", client_context(new_ca))[0] == 200  # HTTPS too
        # The connection made before the reload keeps its session and still works.
        assert round_trip(old, "before", b"still here") == b"still here"
        old.close()

        # A broken file on SIGHUP: the error is logged, the current certificate stays.
        files.cert.write_text("not a certificate\n")
        b.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: log_has(b, "TLS certificates not reloaded"), timeout=10)
        with pika.BlockingConnection(pika_params(b.amqps_port, client_context(new_ca))) as conn:
            assert round_trip(conn, "broken-file") == b"over tls"

        # uvloop's listener drops a silent half-open handshake after --tls-handshake-timeout too.
        with socket.create_connection(("127.0.0.1", b.amqps_port), timeout=10) as silent:
            started = time.monotonic()
            try:
                assert silent.recv(100) == b""
            except ConnectionResetError:
                pass
            assert time.monotonic() - started < 5
        assert b.terminate() == 0
    finally:
        b.kill()


def run_cli(*args: str, timeout: float = 20, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``leveret server ARGS`` in memory on port 0; stopped with SIGTERM once it says it started."""
    cmd = [
        sys.executable,
        "-m",
        "leveret",
        "server",
        "--storage",
        "memory",
        "--amqp-port",
        "0",
        "--prometheus-port",
        "off",
        *args,
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
    )
    out: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            if "started (pid" in line:
                proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout), "".join(out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()


def test_cli_with_a_certificate_serves_https_and_no_plain_http_unless_asked(files: Files) -> None:
    code, out = run_cli(
        "--tls-cert", str(files.cert), "--tls-key", str(files.key), "--amqps-port", "0", "--https-port", "0"
    )
    assert code == 0, out
    assert "AMQPS listening on 127.0.0.1:" in out and "AMQP listening on 127.0.0.1:" in out
    assert "HTTPS management listening" in out
    assert "HTTP management listening" not in out  # as RabbitMQ with only management.ssl.* configured
    code, out = run_cli(
        "--tls-cert", str(files.cert), "--tls-key", str(files.key), "--amqps-port", "0", "--https-port", "0", "--http-port", "0"
    )  # fmt: skip
    assert code == 0 and "HTTP management listening" in out and "HTTPS management listening" in out, out


def test_cli_amqps_only_from_environment_variables(files: Files) -> None:
    env = {"LEVERET_TLS_CERT": str(files.cert), "LEVERET_TLS_KEY": str(files.key), "LEVERET_AMQPS_PORT": "0"}
    code, out = run_cli("--amqp-port", "off", "--https-port", "off", env=env)
    assert code == 0, out
    assert "AMQPS listening" in out and "AMQP listening" not in out and "HTTPS management" not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "{dir}/missing.pem"], "cannot load certificate"),
        (
            ["--tls-cert", "{cert}", "--tls-key", "{ca}"],
            "not PEM, or the key does not belong to the certificate",
        ),
        (
            ["--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-verify", "require"],
            "--tls-verify require needs --tls-ca",
        ),
        (["--tls-ca", "{ca}"], "--tls-ca needs --tls-cert"),
        (["--amqp-port", "off"], "no AMQP listener"),
        (
            ["--tls-cert", "{cert}", "--tls-key", "{key}", "--amqp-port", "off", "--amqps-port", "off"],
            "no AMQP listener",
        ),
    ],
)
def test_cli_refuses_bad_tls_options_in_one_line(files: Files, args: list[str], message: str) -> None:
    subst = {"dir": files.cert.parent, "cert": files.cert, "key": files.key, "ca": files.ca}
    code, out = run_cli(*[a.format(**subst) for a in args], timeout=10)
    assert code != 0 and message in out, out
    assert "Traceback" not in out
