"""`leveret server` options are also LEVERET_<OPTION> environment variables, as README and --help say."""

from __future__ import annotations

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
