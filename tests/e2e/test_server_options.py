"""`leveret server` options are also LEVERET_<OPTION> environment variables, as README and --help say."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import leveret.app
from leveret.cli.main import main
from leveret.config import Settings


def settings_from(monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]) -> Settings:
    got: list[Settings] = []
    monkeypatch.setattr(leveret.app, "run", got.append)
    r = CliRunner().invoke(main, ["server", *args], env=env)
    assert r.exit_code == 0, r.output
    return got[0]


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
