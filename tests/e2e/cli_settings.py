"""What `leveret server` and `leveretctl` would run with, captured in-process: leveret.app.run and
leveretctl's request runner are replaced by a recorder, so no broker starts and nothing is sent."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner, Result

import leveret.app
from leveret.cli import ctl
from leveret.cli import ctl_format as fmt
from leveret.cli.main import main
from leveret.config import Settings


def invoke_server(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]
) -> tuple[Result, list[Settings]]:
    got: list[Settings] = []
    monkeypatch.setattr(leveret.app, "run", got.append)
    return CliRunner().invoke(main, ["server", *args], env=env, terminal_width=200), got


def settings_from(monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]) -> Settings:
    r, got = invoke_server(monkeypatch, args, env)
    assert r.exit_code == 0, r.output
    return got[0]


def ctl_settings_from(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]
) -> dict[str, Any]:
    got: list[fmt.Settings] = []
    monkeypatch.setattr(ctl, "_run", lambda settings, action: got.append(settings))
    r = CliRunner().invoke(ctl.cli, [*args, "list_queues"], env=env)
    assert r.exit_code == 0, r.output
    return dataclasses.asdict(got[0])


def help_text(command: Any, args: list[str]) -> str:
    r = CliRunner().invoke(command, [*args, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    return r.output


def tls_files(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate and key (also both in one file, and the key under a second name)."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    directory.mkdir(parents=True, exist_ok=True)
    out = {name: directory / name for name in ("ca.pem", "server.pem", "server.key", "both.pem", "copy.key")}
    out["ca.pem"].write_bytes(ca.cert_pem.bytes())
    chain = b"".join(p.bytes() for p in cert.cert_chain_pems)
    key = cert.private_key_pem.bytes()
    out["server.pem"].write_bytes(chain)
    out["server.key"].write_bytes(key)
    out["both.pem"].write_bytes(chain + key)
    out["copy.key"].write_bytes(key)
    return out


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path
