"""`leveret server`'s users without passwords on the command line: --users-file, LEVERET_USERS,
--default-user with --default-pass-file or LEVERET_DEFAULT_PASS; the default user, vhost and tags
apply on a node's first start only (as RabbitMQ); --loopback-users; users and permissions kept in a
SQLite data dir across a restart and a kill -9.

A password on the command line is readable by every user of the machine (``ps``,
/proc/PID/cmdline); each test that gives one another way checks it is not there.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from click.testing import CliRunner

from leveret.config import Settings
from leveret.model.access import AccessControl, LoginRefused
from tests.helpers import ProcessBroker, ThreadBroker


def cmdline(b: ProcessBroker) -> str:
    assert b.proc is not None
    return Path(f"/proc/{b.proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def connect(port: int, user: str, password: str, vhost: str = "/") -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            "127.0.0.1",
            port,
            vhost,
            pika.PlainCredentials(user, password),
            connection_attempts=1,
            socket_timeout=5,
        )
    )


def logs_in(port: int, user: str, password: str, vhost: str = "/") -> bool:
    """True if ``user`` logs in and opens ``vhost`` (and a channel in it); False if the login is refused."""
    try:
        conn = connect(port, user, password, vhost)
    except pika.exceptions.ProbableAuthenticationError:
        return False
    conn.channel().queue_declare("", exclusive=True)
    conn.close()
    return True


def whoami(b: ProcessBroker, user: str, password: str) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{b.http_port}/api/whoami")
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def started() -> Any:
    made: list[ProcessBroker] = []

    def start(data: Path, *args: str) -> ProcessBroker:
        b = ProcessBroker(data, list(args)).start()
        made.append(b)
        return b

    yield start
    for b in made:
        b.kill()


# ---- passwords off the command line ------------------------------------------------------------


def test_users_file(tmp_path: Path, started: Any) -> None:
    users = secret_file(
        tmp_path / "users.txt",
        "# team users\n\nalice:Al1ce-pw\nbob:B0b-pw:monitoring\ncarol:pa:ss:\n",
    )
    b = started(tmp_path / "data", "--users-file", str(users))
    for pw in ("Al1ce-pw", "B0b-pw", "pa:ss"):
        assert pw not in cmdline(b)
    assert logs_in(b.port, "alice", "Al1ce-pw")
    assert logs_in(b.port, "bob", "B0b-pw")
    assert logs_in(b.port, "carol", "pa:ss")
    assert not logs_in(b.port, "alice", "wrong")
    assert whoami(b, "alice", "Al1ce-pw")["tags"] == ["administrator"]  # no tags field: administrator
    assert whoami(b, "bob", "B0b-pw")["tags"] == ["monitoring"]
    assert not any("readable by every user" in line for line in b.log)


def test_a_world_readable_users_file_is_warned_about(tmp_path: Path, started: Any) -> None:
    users = secret_file(tmp_path / "users.txt", "alice:Al1ce-pw\n", mode=0o644)
    b = started(tmp_path / "data", "--users-file", str(users))
    assert any(
        f"users file {users} is readable by every user of this machine (mode 0644)" in x for x in b.log
    )
    assert logs_in(b.port, "alice", "Al1ce-pw")


def test_users_from_the_environment(tmp_path: Path, started: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEVERET_USERS", "dave:D4ve-pw erin:Er1n-pw")
    b = started(tmp_path / "data")
    assert "D4ve-pw" not in cmdline(b) and "Er1n-pw" not in cmdline(b)
    assert logs_in(b.port, "dave", "D4ve-pw") and logs_in(b.port, "erin", "Er1n-pw")


def test_the_user_option_says_it_shows_in_ps_and_names_the_alternatives() -> None:
    from leveret.cli.main import main

    text = " ".join(CliRunner().invoke(main, ["server", "--help"], terminal_width=400).output.split())
    assert "The password shows in `ps`" in text
    assert "--users-file FILE" in text and "LEVERET_USERS" in text


# ---- the default user and vhost: the first start only ------------------------------------------


def test_default_user_from_a_password_file_replaces_guest_and_survives_kill_9_and_restart(
    tmp_path: Path, started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    pw = secret_file(tmp_path / "admin.pw", "Adm1n-pw\n")
    b = started(data, "--default-user", "admin", "--default-pass-file", str(pw))
    assert "Adm1n-pw" not in cmdline(b)
    assert logs_in(b.port, "admin", "Adm1n-pw")
    assert not logs_in(b.port, "guest", "guest")  # no guest on a node started with another default user
    assert whoami(b, "admin", "Adm1n-pw")["tags"] == ["administrator"]
    b.kill()  # kill -9 right after the first start: the user was on disk before the listener opened

    # Started again without the options: admin and its permission on "/" come from the store.
    b = started(data)
    assert logs_in(b.port, "admin", "Adm1n-pw")
    assert not logs_in(b.port, "guest", "guest")  # guest is a first-start default: not created now
    assert b.terminate() == 0

    # Another default user given on a later start is not created (first start only).
    monkeypatch.setenv("LEVERET_DEFAULT_PASS", "0ther-pw")
    b = started(data, "--default-user", "other")
    assert logs_in(b.port, "admin", "Adm1n-pw")
    assert not logs_in(b.port, "other", "0ther-pw")


def test_default_user_from_the_environment_with_vhost_and_tags(
    tmp_path: Path, started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEVERET_DEFAULT_PASS", "0ps-pw")
    b = started(
        tmp_path / "data",
        "--default-user",
        "ops",
        "--default-vhost",
        "prod",
        "--default-user-tags",
        "monitoring",
    )
    assert "0ps-pw" not in cmdline(b)
    assert logs_in(b.port, "ops", "0ps-pw", "prod")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError, match="vhost / not found"):
        connect(b.port, "ops", "0ps-pw", "/")  # the default vhost is prod: "/" was not created
    assert whoami(b, "ops", "0ps-pw")["tags"] == ["monitoring"]


def test_a_default_user_without_a_password_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from leveret.cli.main import main

    monkeypatch.delenv("LEVERET_DEFAULT_PASS", raising=False)
    result = CliRunner().invoke(main, ["server", "--default-user", "admin", "--storage", "memory"])
    assert result.exit_code == 2
    assert "--default-user admin needs a password: --default-pass-file FILE or the environment variable" in (
        " ".join(result.output.split())
    )


# ---- loopback users ------------------------------------------------------------------------------


def settings_from(args: list[str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings `leveret server ARGS` would run with (leveret.app.run replaced)."""
    import leveret.app
    from leveret.cli.main import main

    got: list[Settings] = []
    monkeypatch.setattr(leveret.app, "run", got.append)
    result = CliRunner().invoke(main, ["server", *args])
    assert result.exit_code == 0, result.output
    return got[0]


def test_loopback_users_option_reaches_access_control(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from([], monkeypatch).loopback_users == ("guest",)
    assert settings_from(["--loopback-users", "none"], monkeypatch).loopback_users == ()
    s = settings_from(["--loopback-users", "alice, bob"], monkeypatch)
    assert s.loopback_users == ("alice", "bob")
    b = ThreadBroker(loopback_users=s.loopback_users, users={"alice": "apw"}).start()
    try:
        assert b.app.broker is not None
        assert b.app.broker.access.loopback_users == {"alice", "bob"}
        assert logs_in(b.port, "alice", "apw")  # from loopback
    finally:
        b.stop()


@pytest.mark.parametrize(
    ("loopback", "user", "peer", "refused"),
    [
        (("guest",), "guest", "192.0.2.7", True),  # RabbitMQ's default
        (("guest",), "guest", "127.0.0.2", False),
        (("guest",), "guest", "::1", False),
        (("guest",), "alice", "192.0.2.7", False),
        (("alice",), "alice", "192.0.2.7", True),
        (("alice",), "guest", "192.0.2.7", False),
        ((), "guest", "192.0.2.7", False),  # --loopback-users none
    ],
)
def test_loopback_users_are_refused_from_other_addresses(
    loopback: tuple[str, ...], user: str, peer: str, refused: bool
) -> None:
    access = AccessControl(loopback_users=loopback)
    access.add_user(user, "pw", ())
    if refused:
        with pytest.raises(LoginRefused, match=f"user '{user}' can only connect via localhost"):
            access.authenticate(user, "pw", peer)
    else:
        assert access.authenticate(user, "pw", peer).name == user


# ---- kept in the store ---------------------------------------------------------------------------


def test_users_and_permissions_survive_a_restart_of_a_sqlite_data_dir(tmp_path: Path) -> None:
    def on(b: ThreadBroker) -> AccessControl:
        assert b.app.broker is not None
        return b.app.broker.access

    b = ThreadBroker(storage="sqlite", data_dir=tmp_path / "data", vhosts=("v",)).start()
    b.call(lambda: on(b).add_user("u", "upw", ("monitoring",)))
    b.call(lambda: on(b).set_permissions("u", "v", "^u-", "^amq\\.topic$", "^u-"))
    b.call(lambda: on(b).set_topic_permissions("u", "v", "amq.topic", "^{username}\\.", ".*"))
    b.stop()

    b = ThreadBroker(storage="sqlite", data_dir=tmp_path / "data").start()
    try:
        access = on(b)
        assert access.users["u"].tags == ("monitoring",)
        p = access.permissions["u", "v"]
        assert (p.configure, p.write, p.read) == ("^u-", "^amq\\.topic$", "^u-")
        t = access.topic_permissions["u", "v", "amq.topic"]
        assert (t.write, t.read) == ("^{username}\\.", ".*")
        conn = connect(b.port, "u", "upw", "v")
        ch = conn.channel()
        ch.queue_declare("u-q")
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", "u.a", b"mine")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="access to topic 'x.a'"):
            ch.basic_publish("amq.topic", "x.a", b"not mine")
        conn.close()
    finally:
        b.stop()


def test_the_new_options_read_their_environment_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = secret_file(tmp_path / "users.txt", "fay:F4y-pw:management\n")
    for name, value in {
        "LEVERET_USERS_FILE": str(users), "LEVERET_DEFAULT_USER": "root", "LEVERET_DEFAULT_PASS": "R00t-pw",
        "LEVERET_DEFAULT_VHOST": "main", "LEVERET_DEFAULT_USER_TAGS": "monitoring,policymaker",
        "LEVERET_LOOPBACK_USERS": "root",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    s = settings_from([], monkeypatch)
    assert (s.users, s.user_tags) == ({"fay": "F4y-pw"}, {"fay": ("management",)})
    assert (s.default_user, s.default_pass, s.default_vhost) == ("root", "R00t-pw", "main")
    assert (s.default_user_tags, s.loopback_users) == (("monitoring", "policymaker"), ("root",))
