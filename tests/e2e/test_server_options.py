"""`leveret server` options are also LEVERET_<OPTION> environment variables, as README and --help say."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli_settings import (
    ctl_settings_from,
    help_text,
    invoke_server,
    secret_file,
    settings_from,
    tls_files,
)


def test_environment_variables_set_server_options(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "LEVERET_AMQP_PORT": "5999", "LEVERET_MAX_INCOMPLETE_CONTENT": "123456789", "LEVERET_USER": "a:b c:d",
        "LEVERET_VHOST": "v1 v2", "LEVERET_DISK_FREE_LIMIT": "7",
    }  # fmt: skip
    s = settings_from(monkeypatch, [], env)
    got: dict[str, Any] = {
        "amqp_port": s.amqp_port, "max_incomplete_content": s.max_incomplete_content, "users": s.users,
        "vhosts": s.vhosts, "disk_free_limit": s.disk_free_limit,
    }  # fmt: skip
    assert got == {
        "amqp_port": 5999, "max_incomplete_content": 123456789, "users": {"a": "b", "c": "d"},
        "vhosts": ("v1", "v2"), "disk_free_limit": 7,
    }  # fmt: skip


def test_max_incomplete_content_option(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from(monkeypatch, [], {}).max_incomplete_content == 64 * 1024 * 1024
    assert settings_from(monkeypatch, ["--max-incomplete-content", "1000"], {}).max_incomplete_content == 1000


def test_a_taken_port_stops_the_start_before_the_data_dir_is_touched(tmp_path: Path) -> None:
    """One line naming the option to change, and no data directory, WAL or recovery first (issue 13)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = tmp_path / "data"
        for option, extra in (("--amqp-port", ["--amqp-port", str(port)]),
                              ("--http-port", ["--amqp-port", "0", "--http-port", str(port)])):  # fmt: skip
            proc = subprocess.run(
                [sys.executable, "-m", "leveret", "server", "--data-dir", str(data), "--prometheus-port", "off",
                 *(["--http-port", "off"] if option == "--amqp-port" else []), *extra],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert proc.returncode == 1, proc.stderr
            lines = [line for line in proc.stderr.splitlines() if "cannot start" in line]
            assert len(lines) == 1 and f"port {port}" in lines[0] and option in lines[0], proc.stderr
            assert "Traceback" not in proc.stderr
            assert not data.exists(), "the data directory was created before the port was checked"


REPO = Path(__file__).resolve().parents[2]
#: Settings of `leveret server`, not actions: --config is tested with the file, --print-config prints.
ACTIONS = {"--help", "--config", "--print-config"}


def server_options() -> list[str]:
    from leveret.cli.main import main

    return re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)", help_text(main, ["server"]), re.M)


def option_values(tmp_path: Path, tls: dict[str, Path]) -> dict[str, str]:
    """A valid value, not the default, for each option of `leveret server --help` (multi-valued ones
    as their environment variable spells them: space-separated)."""
    users = secret_file(tmp_path / "users.txt", "f:pw-f:management")
    return {
        "--host": "127.0.0.2", "--amqp-port": "5999", "--http-port": "15999", "--prometheus-port": "off",
        "--data-dir": str(tmp_path / "data"), "--storage": "memory", "--log-level": "debug",
        "--log-file": str(tmp_path / "leveret.log"), "--log-format": "json", "--consumer-timeout": "60000",
        "--consumer-timeout-action": "cancel", "--frame-max": "8192", "--heartbeat": "5",
        "--queue-ram-limit": "1000", "--max-message-size": "1000", "--max-incomplete-content": "2000",
        "--channel-max": "10", "--handshake-timeout": "2.5", "--max-connections": "3",
        "--max-consumers-per-channel": "4", "--disk-free-limit": "7", "--memory-high-watermark": "0.5",
        "--store-backlog-limit": "9", "--max-queues": "5", "--user": "a:b c:d", "--users-file": str(users),
        "--vhost": "v1 v2", "--default-user": "admin",
        "--default-pass-file": str(secret_file(tmp_path / "admin.pw", "from-file")), "--default-vhost": "/v",
        "--default-user-tags": "management", "--loopback-users": "none", "--tls-cert": str(tls["both.pem"]),
        "--tls-key": str(tls["copy.key"]), "--tls-ca": str(tls["ca.pem"]), "--tls-verify": "none",
        "--amqps-port": "5998", "--https-port": "15998", "--tls-handshake-timeout": "2.0",
        "--tls-login-from": "subject_alternative_name",
    }  # fmt: skip


def test_every_option_in_help_is_an_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Issue 13: each option `leveret server --help` prints, set as LEVERET_<OPTION>, reaches the
    Settings exactly as the option on the command line does, and changes them. A TLS certificate and
    a default password are in the environment throughout, so the TLS options and --default-user count."""
    tls = tls_files(tmp_path / "tls")
    values = option_values(tmp_path, tls)
    options = [o for o in server_options() if o not in ACTIONS]
    assert sorted(options) == sorted(values), "an option without a test value (or a value for no option)"
    base = {"LEVERET_TLS_CERT": str(tls["server.pem"]), "LEVERET_TLS_KEY": str(tls["server.key"]),
            "LEVERET_DEFAULT_PASS": "pw"}  # fmt: skip
    before = settings_from(monkeypatch, [], base)
    for option in options:
        name = "LEVERET_" + option[2:].upper().replace("-", "_")
        value = values[option]
        argv = [a for v in value.split(" ") for a in (option, v)]
        from_env = settings_from(monkeypatch, [], {**base, name: value})
        from_argv = settings_from(monkeypatch, argv, base)
        assert from_env == from_argv, f"{name}={value} does not do what {option} {value} does"
        assert from_env != before, f"{name}={value} changes nothing"


def documented_names() -> set[str]:
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "packaging" / "leveret.service",
            REPO / "packaging" / "leveret.toml", REPO / "Dockerfile"]  # fmt: skip
    return {n for p in docs for n in re.findall(r"\bLEVERET_[A-Z][A-Z0-9_]*", p.read_text())}


def test_every_documented_environment_variable_does_something(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The LEVERET_* names README.md, docs/*.md and packaging/ print: server options (above), leveretctl's
    (the names its --help shows), and the few others, each checked here."""
    from leveret.cli import ctl

    server = {"LEVERET_" + o[2:].upper().replace("-", "_") for o in server_options() if o not in ACTIONS}
    ctl_names = set(re.findall(r"env var:\s+(LEVERET_[A-Z_]+)", help_text(ctl.cli, [])))
    assert ctl_names == {"LEVERET_URL", "LEVERET_USERNAME", "LEVERET_PASSWORD"}
    for name, option, value in (("LEVERET_URL", "--url", "http://h:1"), ("LEVERET_USERNAME", "-u", "ops"),
                                ("LEVERET_PASSWORD", "--password", "pw")):  # fmt: skip
        from_env = ctl_settings_from(monkeypatch, [], {name: value})
        assert (
            from_env
            == ctl_settings_from(monkeypatch, [option, value], {})
            != ctl_settings_from(monkeypatch, [], {})
        )
    # The others: LEVERET_USERS (--user's plural), LEVERET_DEFAULT_PASS, LEVERET_CONFIG (test_config_file.py
    # too), LEVERET_HEALTH_URL (the container health check: test_packaging.py).
    assert settings_from(monkeypatch, [], {"LEVERET_USERS": "a:b c:d"}).users == {"a": "b", "c": "d"}
    s = settings_from(monkeypatch, ["--default-user", "admin"], {"LEVERET_DEFAULT_PASS": "s3cret"})
    assert (s.default_user, s.default_pass) == ("admin", "s3cret")
    config = tmp_path / "leveret.toml"
    config.write_text("heartbeat = 7\n")
    assert settings_from(monkeypatch, [], {"LEVERET_CONFIG": str(config)}).heartbeat == 7
    others = {"LEVERET_USERS", "LEVERET_DEFAULT_PASS", "LEVERET_CONFIG", "LEVERET_HEALTH_URL"}
    documented = documented_names()
    assert documented - server - ctl_names - others == set(), "documented but not tested here"
    assert {"LEVERET_AMQP_PORT", "LEVERET_DATA_DIR", "LEVERET_USERS", "LEVERET_VHOST"} <= documented


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--amqp-port", "abc"], "Invalid value for '--amqp-port': 'abc' is not a port number"),
        (["--https-port", "70000"], "Invalid value for '--https-port': '70000' is not a port number"),
        (
            ["--consumer-timeout", "soon"],
            "Invalid value for '--consumer-timeout': 'soon' is not a number of milliseconds",
        ),
    ],
)
def test_bad_port_and_timeout_values_are_usage_errors(
    monkeypatch: pytest.MonkeyPatch, args: list[str], expected: str
) -> None:
    """Checked by click, naming the option (they used to end in a ValueError traceback at start)."""
    r, got = invoke_server(monkeypatch, args, {})
    assert (r.exit_code, got) == (2, []) and expected in r.output, r.output
