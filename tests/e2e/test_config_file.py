"""`leveret server --config FILE` (TOML) and `--print-config` (issue 13): precedence command line >
environment > file > defaults, errors naming the key, the example file packaging/leveret.toml."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pika
import pytest

from leveret.config import Settings
from tests.e2e.cli_settings import invoke_server, secret_file, settings_from, tls_files
from tests.helpers import ProcessBroker

EXAMPLE = Path(__file__).resolve().parents[2] / "packaging" / "leveret.toml"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_file_values_sit_below_the_environment_and_the_command_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = write(tmp_path / "leveret.toml", (
        'amqp-port = 5001\nheartbeat = 7\nframe_max = 8192\nvhost = ["f1", "f2"]\nconsumer-timeout = "off"\n'
        'max_connections = 10\n'
    ))  # fmt: skip
    s = settings_from(monkeypatch, ["--config", str(config), "--frame-max", "16384"],
                      {"LEVERET_HEARTBEAT": "8", "LEVERET_VHOST": "e"})  # fmt: skip
    got = (s.amqp_port, s.heartbeat, s.frame_max, s.vhosts, s.consumer_timeout, s.max_connections)
    assert got == (5001, 8, 16384, ("e",), None, 10)  # file, env, argv, env (replaces the list), file, file
    # LEVERET_CONFIG names the file; --config on the command line wins over it.
    other = write(tmp_path / "other.toml", "heartbeat = 9\n")
    assert settings_from(monkeypatch, [], {"LEVERET_CONFIG": str(config)}).heartbeat == 7
    assert (
        settings_from(monkeypatch, ["--config", str(other)], {"LEVERET_CONFIG": str(config)}).heartbeat == 9
    )
    assert settings_from(monkeypatch, [], {}) == Settings(), "without a file: the defaults"


def test_users_vhosts_and_limits_in_the_file_reach_a_running_broker(tmp_path: Path) -> None:
    """A real broker started with --config: a user as NAME:PASSWORD and one as a table with a password
    file and tags, a vhost and a limit; relative paths are relative to the file."""
    secret_file(tmp_path / "app.password", "app-secret-1")
    config = write(tmp_path / "leveret.toml", (
        'vhost = ["orders"]\nmax-connections = 2\nstorage = "memory"\n'
        'user = ["ops:ops-secret-2", { name = "app", password_file = "app.password", tags = ["management"] }]\n'
    ))  # fmt: skip
    b = ProcessBroker(tmp_path / "data", extra=["--config", str(config)]).start()
    try:
        app = pika.BlockingConnection(
            pika.URLParameters(f"amqp://app:app-secret-1@127.0.0.1:{b.port}/orders")
        )
        ops = pika.BlockingConnection(
            pika.URLParameters(f"amqp://ops:ops-secret-2@127.0.0.1:{b.port}/orders")
        )
        with pytest.raises(pika.exceptions.AMQPConnectionError):  # max-connections = 2
            pika.BlockingConnection(pika.URLParameters(b.url))
        app.close()
        ops.close()
        assert b.terminate() == 0
    finally:
        b.kill()
    log = "".join(b.log)
    assert "app-secret-1" not in log and "ops-secret-2" not in log


def run_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEVERET_")}
    return subprocess.run([sys.executable, "-m", "leveret", "server", *args], capture_output=True, text=True,
                          timeout=30, env={**clean, **(env or {})})  # fmt: skip


def printed(out: str) -> dict[str, tuple[str, str]]:
    """--print-config's lines: key -> (value, source); unset ones as ("", source)."""
    rows: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        if m := re.match(r"^(\w+) = (.*?)\s+# (.*)$", line):
            rows[m[1]] = (m[2], m[3])
        elif m := re.match(r"^# (\w+) =\s+# (.*): not set$", line):
            rows[m[1]] = ("", m[2])
    return rows


def test_print_config_shows_values_and_sources_and_no_password(tmp_path: Path) -> None:
    secret_file(tmp_path / "app.password", "app-secret-1")
    config = write(tmp_path / "leveret.toml", (
        'heartbeat = 7\nframe-max = 8192\namqp_port = 5001\n'
        '[[user]]\nname = "app"\npassword_file = "app.password"\n'
    ))  # fmt: skip
    data = tmp_path / "data"
    p = run_cli(["--config", str(config), "--print-config", "--frame-max", "16384", "--data-dir", str(data)],
                {"LEVERET_HEARTBEAT": "8", "LEVERET_DEFAULT_PASS": "default-secret-3"})  # fmt: skip
    assert p.returncode == 0, p.stderr
    rows = printed(p.stdout)
    assert rows["amqp_port"] == ("5001", f"file {config}")
    assert rows["heartbeat"] == ("8", "env LEVERET_HEARTBEAT")
    assert rows["frame_max"] == ("16384", "command line")
    assert rows["host"] == ('"127.0.0.1,::1"', "default")
    assert rows["users"] == ('[{ name = "app", password = "********" }]', f"file {config}")
    assert rows["max_connections"] == ("", "default")
    assert "default user's password: ******** (from env LEVERET_DEFAULT_PASS" in p.stdout
    for secret in ("app-secret-1", "default-secret-3"):
        assert secret not in p.stdout + p.stderr
    assert not data.exists(), "--print-config started something"
    from leveret.cli.main import main

    options = [o for o in main.commands["server"].params if o.name not in ("config", "print_config", "help")]
    assert set(rows) == {o.name for o in options}, "every option is printed"
    # The output is a configuration file itself (passwords masked): it loads, and says the same.
    again = write(tmp_path / "printed.toml", p.stdout)
    tomllib.loads(again.read_text())
    q = run_cli(["--config", str(again), "--print-config"])
    assert q.returncode == 0, q.stderr
    assert {k: v for k, (v, _) in printed(q.stdout).items()} == {k: v for k, (v, _) in rows.items()}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amqp_prot = 1\n", "unknown key 'amqp_prot' (did you mean 'amqp_port'?)"),
        ("[server]\nhost = 'x'\n", "unknown key 'server'"),
        ("print-config = true\n", "unknown key 'print-config' (print-config is a command-line action"),
        ("frame-max = 'abc'\n", "frame-max: 'abc' is not a valid integer"),
        ("heartbeat = 1.5\n", "heartbeat: 1.5 is not a whole number"),
        ("amqp_port = 70000\n", "amqp_port: '70000' is not a port number"),
        ("consumer-timeout = -5\n", "consumer-timeout: '-5' is not a number of milliseconds"),
        ("storage = 'disk'\n", "storage: 'disk' is not one of 'sqlite', 'memory'"),
        ("host = ['a', 'b']\n", "host: expected one value, not a list"),
        ("max-queues = true\n", "max-queues: true is not a valid value"),
        ("channel-max = 70000\n", "channel-max: 70000 is not in the range 0<=x<=65535"),
        ("users-file = 'missing.txt'\n", "users-file: File "),
        ("user = ['no-colon-secret']\n", "user: expected NAME:PASSWORD"),
        ("[[user]]\nname = 'a'\n", "user: user 'a' needs one of password or password_file"),
        ("[[user]]\nname = 'a'\npassword = 'x'\nrole = 'admin'\n", "user: unknown key 'role' in a user"),
        ("heartbeat = 1\nheartbeat = 2\n", "not valid TOML: Cannot overwrite a value"),
        ("vhost = ['a']\nvhosts = ['b']\n", "'vhosts' and 'vhost' are the same option"),
    ],
)
def test_unknown_keys_and_bad_values_are_refused_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, expected: str
) -> None:
    config = write(tmp_path / "leveret.toml", text)
    r, got = invoke_server(monkeypatch, ["--config", str(config)], {})
    assert (r.exit_code, got) == (2, []), r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {config}: ") and expected in lines[0], r.output
    assert "no-colon-secret" not in r.output


def test_a_bad_file_stops_the_real_command_with_one_line_and_exit_2(tmp_path: Path) -> None:
    config = write(tmp_path / "leveret.toml", "amqp_prot = 5673\n")
    p = run_cli(["--config", str(config), "--data-dir", str(tmp_path / "data")])
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip() == f"Error: {config}: unknown key 'amqp_prot' (did you mean 'amqp_port'?)"
    missing = run_cli(["--config", str(tmp_path / "nope.toml")])
    assert missing.returncode == 2 and "cannot read it: No such file or directory" in missing.stderr
    assert not (tmp_path / "data").exists()


COMMENTED = re.compile(r"^# (\[\[\w+\]\]|[a-z][a-z0-9_-]* = .*)$")


def test_the_example_file_loads_and_every_key_in_it_takes_effect(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """packaging/leveret.toml as shipped (host and data-dir set, the rest commented out), then with every
    commented setting uncommented (paths pointed at files made here): each key then comes from the file,
    and the Settings are those the same values give on the command line."""
    from leveret.cli.main import main

    shipped = settings_from(monkeypatch, ["--config", str(EXAMPLE)], {})
    assert shipped == Settings(host="0.0.0.0,::", data_dir=Path("/var/lib/leveret"))
    tls = tls_files(tmp_path / "tls")
    paths = {
        "log-file": tmp_path / "leveret.log", "default-pass-file": secret_file(tmp_path / "admin.pw", "admin-pw"),
        "users-file": secret_file(tmp_path / "users.txt", "u:users-pw"), "tls-cert": tls["server.pem"],
        "tls-key": tls["server.key"], "tls-ca": tls["ca.pem"], "data-dir": tmp_path / "data",
        "password_file": secret_file(tmp_path / "app.pw", "app-pw"),
    }  # fmt: skip
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        line = m[1] if (m := COMMENTED.match(line)) else line
        key = line.split(" = ")[0]
        if key in paths:
            line = f'{key} = "{paths[key]}"'
        lines.append(line)
    full = write(tmp_path / "full.toml", "\n".join(lines) + "\n")
    doc = tomllib.loads(full.read_text())
    options = {
        o.opts[-1][2:]
        for o in main.commands["server"].params
        if o.name not in ("config", "print_config", "help")
    }
    assert set(doc) == options, "the example shows every option of leveret server --help"
    p = run_cli(["--config", str(full), "--print-config"])
    assert p.returncode == 0, p.stderr
    sources = {k: src for k, (_, src) in printed(p.stdout).items()}
    assert set(sources.values()) == {f"file {full}"}, sources
    argv: list[str] = []
    for key, value in doc.items():
        if key == "user":
            argv += ["--user", "app:app-pw"]
            continue
        for v in value if isinstance(value, list) else [value]:
            argv += [f"--{key}", str(v)]
    from_file = settings_from(monkeypatch, ["--config", str(full)], {})
    assert from_file.user_tags == {"app": ("management",)} and from_file.users["app"] == "app-pw"
    assert dataclasses.replace(from_file, user_tags={}) == settings_from(
        monkeypatch, argv, {}
    )  # no tags in argv
