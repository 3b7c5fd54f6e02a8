"""leveretctl's user, vhost and permission commands against a live broker: rabbitmqctl 3.10's
names, banners, messages, columns and exit codes; passwords from stdin or a prompt without echo,
never needed on the command line; what they set is what AMQP clients (pika) get."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest
from click.testing import CliRunner

from leveret.cli.ctl import cli

from .test_access_api import Api, make_api

ROOT = Path(__file__).resolve().parents[2]
DONE = (
    "Done. Don't forget to grant the user permissions to some virtual hosts! "
    "See 'leveretctl set_permissions --help' to learn more."
)


@pytest.fixture
def api() -> Iterator[Api]:
    a = make_api()
    yield a
    a.broker.stop()


def ctl(api: Api, *args: str, input: str | None = None) -> tuple[int, list[str], list[str]]:
    """leveretctl in this process (click's runner, real HTTP): (exit code, stdout lines, stderr lines)."""
    result = CliRunner().invoke(cli, ["--url", api.http, *args], input=input, catch_exceptions=False)
    return result.exit_code, result.stdout.splitlines(), result.stderr.splitlines()


def ok(api: Api, *args: str, input: str | None = None) -> list[str]:
    code, out, err = ctl(api, *args, input=input)
    assert code == 0, (args, code, out, err)
    return out


def fails(api: Api, *args: str, input: str | None = None) -> tuple[int, str]:
    """A failing command: its exit code and its one-line error."""
    code, _, err = ctl(api, *args, input=input)
    assert code != 0, args
    assert len(err) == 1 and err[0].startswith("Error: "), err
    return code, err[0]


def run_ctl(api: Api, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """leveretctl as a real subprocess (stdin a pipe)."""
    return subprocess.run([sys.executable, "-m", "leveret.cli.ctl", "--url", api.http, *args], input=input,
                          capture_output=True, text=True, timeout=30, cwd=ROOT)  # fmt: skip


def amqp_refusal(api: Api, user: str, password: str, vhost: str = "/") -> str:
    with pytest.raises(pika.exceptions.AMQPConnectionError) as e:
        api.connect(user, password, vhost)
    return str(e.value)


# ---- users ------------------------------------------------------------------------------------------


def test_add_user_reads_the_password_from_stdin(api: Api) -> None:
    p = run_ctl(api, "add_user", "alice", input="apw\n")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ['Adding user "alice" ...', DONE] and p.stderr == ""
    assert api.get("/api/users/alice")["tags"] == []
    # No permissions yet (530); granted, alice logs in with the password that came on stdin.
    assert "NOT_ALLOWED - access to vhost '/' refused for user 'alice'" in amqp_refusal(api, "alice", "apw")
    ok(api, "set_permissions", "alice", ".*", ".*", ".*")
    with api.connect("alice", "apw") as conn:
        conn.channel().queue_declare("from-alice")
    # The password on argv works too (rabbitmqctl's form), and -q drops the banner and the reminder.
    assert ok(api, "-q", "add_user", "bob", "bpw") == []
    assert ok(api, "authenticate_user", "bob", "bpw") == ['Authenticating user "bob" ...', "Success"]
    code, out, _ = ctl(api, "--formatter", "json", "add_user", "carl", input="cpw\n")
    node = api.get("/api/overview")["node"]
    assert (code, [json.loads(line) for line in out]) == (
        0,
        [{"status": "ok", "node": node, "message": DONE}],
    )


def test_add_user_refusals(api: Api) -> None:
    ok(api, "add_user", "alice", input="apw\n")
    assert fails(api, "add_user", "alice", input="other\n") == (70, 'Error: User "alice" already exists')
    assert fails(api, "add_user", "carol", input="") == (
        65,
        "Error: Password is not provided via argument or stdin",
    )
    assert fails(api, "add_user", "carol", input="\n") == (
        65, "Error: Password is not provided via argument or stdin")  # fmt: skip
    assert fails(api, "add_user", "", "x") == (65, "Error: user cannot be an empty string")
    assert [u["name"] for u in api.get("/api/users")] == ["alice", "guest"]


def _read(fd: int, seen: bytearray, until: bytes | None, timeout: float = 15.0) -> None:
    """Read the terminal into ``seen`` until ``until`` shows, or (None) until the child closes it."""
    deadline = time.monotonic() + timeout
    while until is None or until not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {until!r} in {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk and until is None:
                return
            assert chunk, f"terminal closed before {until!r}: {bytes(seen)!r}"
            seen += chunk


def test_add_user_on_a_terminal_prompts_twice_without_echo(api: Api) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: leveretctl with a terminal for stdin, stdout and stderr
        os.chdir(ROOT)
        os.execv(
            sys.executable, [sys.executable, "-m", "leveret.cli.ctl", "--url", api.http, "add_user", "tess"]
        )
    seen = bytearray()
    try:
        _read(fd, seen, b"Password: ")
        os.write(fd, b"t0p-secret\n")
        _read(fd, seen, b"Repeat for confirmation: ")
        os.write(fd, b"t0p-secret\n")
        _read(fd, seen, None)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, bytes(seen)
    assert b"Done. Don't forget" in seen
    assert b"t0p-secret" not in seen, "the password was echoed"
    assert ok(api, "authenticate_user", "tess", input="t0p-secret\n")[-1] == "Success"


def test_change_and_clear_password_and_authenticate_user(api: Api) -> None:
    ok(api, "add_user", "alice", input="old\n")
    ok(api, "set_user_tags", "alice", "management")
    assert ok(api, "change_password", "alice", input="new\n") == ['Changing password for user "alice" ...']
    assert api.get("/api/users/alice")["tags"] == ["management"], "tags kept"
    assert ok(api, "authenticate_user", "alice", input="new\n") == [
        'Authenticating user "alice" ...',
        "Success",
    ]
    code, out, err = ctl(api, "authenticate_user", "alice", input="old\n")
    assert (code, out, err) == (65, ['Authenticating user "alice" ...'],
                                ['Error: failed to authenticate user "alice": Login failed'])  # fmt: skip
    code, out, _ = ctl(api, "--formatter", "json", "authenticate_user", "alice", "new")
    assert code == 0 and json.loads(out[0]) == {"result": "ok", "node": api.get("/api/overview")["node"],
                                                "value": "Success"}  # fmt: skip
    # A user without a management tag authenticates too (it just may not use the HTTP API).
    ok(api, "add_user", "plain", input="ppw\n")
    assert ok(api, "authenticate_user", "plain", input="ppw\n")[-1] == "Success"

    assert ok(api, "clear_password", "alice") == ['Clearing password for user "alice" ...']
    assert fails(api, "authenticate_user", "alice", "new") == (
        65, 'Error: failed to authenticate user "alice": Login failed')  # fmt: skip
    assert api.get("/api/users/alice")["tags"] == ["management"]

    assert fails(api, "change_password", "nobody", input="x\n") == (67, 'Error: User "nobody" does not exist')
    assert fails(api, "clear_password", "nobody") == (67, 'Error: User "nobody" does not exist')
    assert fails(api, "change_password", "alice", input="") == (
        70, "Error: Password is not provided via argument or stdin")  # fmt: skip
    assert fails(api, "authenticate_user", "alice", input="") == (
        70, "Error: Password is not provided via argument or stdin")  # fmt: skip


def test_set_user_tags_and_list_users(api: Api) -> None:
    ok(api, "add_user", "alice", input="apw\n")
    out = ok(api, "set_user_tags", "alice", "administrator", "management")
    assert out == ['Setting tags for user "alice" to [administrator, management] ...']
    assert api.get("/api/whoami", ("alice", "apw")) == {
        "name": "alice",
        "tags": ["administrator", "management"],
    }
    assert ok(api, "list_users") == ["Listing users ...", "user\ttags", "alice\t[administrator, management]",
                                     "guest\t[administrator]"]  # fmt: skip
    assert ok(api, "-q", "--no-table-headers", "list_users") == ["alice\t[administrator, management]",
                                                                 "guest\t[administrator]"]  # fmt: skip
    code, out, _ = ctl(api, "--formatter", "json", "list_users")
    assert json.loads("\n".join(out)) == [{"user": "alice", "tags": ["administrator", "management"]},
                                          {"user": "guest", "tags": ["administrator"]}]  # fmt: skip
    # The leveretctl user itself may be alice now; the password is untouched by tag changes.
    assert ok(api, "-u", "alice", "--password", "apw", "set_user_tags", "alice")[0].endswith("to [] ...")
    assert ok(api, "-q", "list_users")[1] == "alice\t[]"
    assert ok(api, "authenticate_user", "alice", "apw")[-1] == "Success"
    assert fails(api, "set_user_tags", "nobody", "administrator") == (
        67,
        'Error: User "nobody" does not exist',
    )


def test_delete_user_closes_its_connection(api: Api) -> None:
    ok(api, "add_user", "alice", input="apw\n")
    ok(api, "set_permissions", "alice", ".*", ".*", ".*")
    conn = api.connect("alice", "apw")
    assert ok(api, "delete_user", "alice") == ['Deleting user "alice" ...']
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        conn.process_data_events(time_limit=5)
    assert e.value.reply_code == 320
    assert "Login was refused" in amqp_refusal(api, "alice", "apw")
    assert fails(api, "delete_user", "alice") == (67, 'Error: User "alice" does not exist')


def test_only_administrators(api: Api) -> None:
    ok(api, "add_user", "mon", input="mpw\n")
    ok(api, "set_user_tags", "mon", "monitoring")
    for args in (("list_users",), ("add_user", "x", "y"), ("delete_user", "guest"), ("add_vhost", "v"),
                 ("set_permissions", "mon", ".*", ".*", ".*"), ("list_permissions",)):  # fmt: skip
        code, line = fails(api, "-u", "mon", "--password", "mpw", *args)
        assert (code, line) == (77, "Error: authentication failed: Not administrator user"), args
    assert [u["name"] for u in api.get("/api/users")] == ["guest", "mon"]


def test_help_says_where_the_password_comes_from() -> None:
    for command in ("add_user", "change_password", "authenticate_user"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0
        text = " ".join(result.output.split())
        assert (
            "[PASSWORD]" in text
            and "read from standard input" in text
            and "prompted for without echo" in text
        )
    result = CliRunner().invoke(cli, ["--help"])
    for command in ("add_user", "delete_user", "change_password", "clear_password", "authenticate_user",
                    "set_user_tags", "list_users", "add_vhost", "delete_vhost", "list_vhosts", "set_permissions",
                    "clear_permissions", "list_permissions", "list_user_permissions", "set_topic_permissions",
                    "clear_topic_permissions", "list_topic_permissions", "list_user_topic_permissions"):  # fmt: skip
        assert command in result.output


# ---- vhosts -----------------------------------------------------------------------------------------


def test_add_list_and_delete_vhosts(api: Api) -> None:
    assert ok(api, "add_vhost", "va", "--description", "Team A", "--tags", "prod,eu") == [
        'Adding vhost "va" ...'
    ]
    assert ok(api, "add_vhost", "va") == ['Adding vhost "va" ...'], "an existing vhost is left as it is"
    out = ok(api, "list_vhosts", "name", "description", "tags", "tracing")
    assert out[-3:] == ["name\tdescription\ttags\ttracing", "/\t\t[]\tfalse", "va\tTeam A\t[prod, eu]\tfalse"]
    node = api.get("/api/overview")["node"]
    assert ok(api, "-q", "list_vhosts", "name", "cluster_state")[-1] == f"va\t[{{{node}, running}}]"
    code, out, _ = ctl(api, "--formatter", "json", "list_vhosts", "name", "tags")
    assert json.loads("\n".join(out)) == [{"name": "/", "tags": []}, {"name": "va", "tags": ["prod", "eu"]}]

    conn = api.connect("guest", "guest", "va")  # the leveretctl user may use the vhost it made
    conn.channel().queue_declare("jobs")
    assert ok(api, "delete_vhost", "va") == ['Deleting vhost "va" ...']
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        conn.process_data_events(time_limit=5)
    assert e.value.reply_code == 320
    assert "NOT_ALLOWED - vhost va not found" in amqp_refusal(api, "guest", "guest", "va")
    assert ok(api, "-q", "list_vhosts") == ["name", "/"]
    assert fails(api, "delete_vhost", "va") == (65, "Error: Virtual host va does not exist")
    code, line = fails(api, "add_vhost", "v" * 300)
    assert code == 64 and "vhost name" in line


# ---- permissions ------------------------------------------------------------------------------------


def test_permissions(api: Api) -> None:
    ok(api, "add_vhost", "va")
    ok(api, "add_user", "alice", input="apw\n")
    out = ok(api, "-p", "va", "set_permissions", "alice", "^alice-", ".*", ".*")
    assert out == ['Setting permissions for user "alice" in vhost "va" ...']
    with api.connect("alice", "apw", "va") as conn:
        ch = conn.channel()
        ch.queue_declare("alice-q")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare("other")
        assert (
            e.value.reply_text
            == "ACCESS_REFUSED - access to queue 'other' in vhost 'va' refused for user 'alice'"
        )

    assert ok(api, "list_permissions", "-p", "va") == [
        'Listing permissions for vhost "va" ...', "user\tconfigure\twrite\tread",
        "alice\t^alice-\t.*\t.*", "guest\t.*\t.*\t.*",
    ]  # fmt: skip
    assert ok(api, "list_permissions")[2:] == ["guest\t.*\t.*\t.*"]
    assert ok(api, "list_user_permissions", "alice") == [
        'Listing permissions for user "alice" ...', "vhost\tconfigure\twrite\tread", "va\t^alice-\t.*\t.*"]  # fmt: skip
    code, out, _ = ctl(api, "--formatter", "json", "-p", "va", "list_permissions")
    assert json.loads("\n".join(out))[0] == {
        "user": "alice",
        "configure": "^alice-",
        "write": ".*",
        "read": ".*",
    }

    # Empty patterns are RabbitMQ's "nothing": alice may still connect, not declare.
    ok(api, "-p", "va", "set_permissions", "alice", "", "", "")
    assert ok(api, "-q", "list_user_permissions", "alice")[1] == "va\t\t\t"

    assert ok(api, "-p", "va", "clear_permissions", "alice") == [
        'Clearing permissions for user "alice" in vhost "va" ...']  # fmt: skip
    assert "NOT_ALLOWED - access to vhost 'va' refused for user 'alice'" in amqp_refusal(
        api, "alice", "apw", "va"
    )
    assert ok(api, "-p", "va", "clear_permissions", "alice")[0].startswith("Clearing"), (
        "nothing to clear is fine"
    )
    assert ok(api, "-q", "list_user_permissions", "alice") == ["vhost\tconfigure\twrite\tread"]

    assert fails(api, "set_permissions", "nobody", ".*", ".*", ".*") == (
        67,
        'Error: User "nobody" does not exist',
    )
    assert fails(api, "-p", "nope", "set_permissions", "alice", ".*", ".*", ".*") == (
        65, "Error: Virtual host nope does not exist")  # fmt: skip
    assert fails(api, "-p", "nope", "clear_permissions", "alice") == (
        65,
        "Error: Virtual host nope does not exist",
    )
    assert fails(api, "clear_permissions", "nobody") == (67, 'Error: User "nobody" does not exist')
    code, line = fails(api, "set_permissions", "alice", "(", ".*", ".*")
    assert code == 65 and "configure regex '(' is not a valid regular expression" in line
    assert fails(api, "-p", "nope", "list_permissions") == (65, "Error: Virtual host nope does not exist")
    assert fails(api, "list_user_permissions", "nobody") == (67, 'Error: User "nobody" does not exist')


def test_topic_permissions(api: Api) -> None:
    ok(api, "add_vhost", "va")
    ok(api, "add_user", "alice", input="apw\n")
    ok(api, "-p", "va", "set_permissions", "alice", ".*", ".*", ".*")
    out = ok(api, "-p", "va", "set_topic_permissions", "alice", "amq.topic", "^{username}\\.", ".*")
    assert out == ['Setting topic permissions on "amq.topic" for user "alice" in vhost "va" ...']
    ok(api, "-p", "va", "set_topic_permissions", "alice", "logs", ".*", "^x")
    with api.connect("alice", "apw", "va") as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", "alice.news", b"ok")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.basic_publish("amq.topic", "bob.news", b"no")
        assert e.value.reply_code == 403 and "access to topic 'bob.news'" in e.value.reply_text

    assert ok(api, "-p", "va", "list_topic_permissions") == [
        'Listing topic permissions for vhost "va" ...', "user\texchange\twrite\tread",
        "alice\tamq.topic\t^{username}\\.\t.*", "alice\tlogs\t.*\t^x",
    ]  # fmt: skip
    # rabbitmqctl prints this one without a header row.
    assert ok(api, "list_user_topic_permissions", "alice") == [
        'Listing topic permissions for user "alice" ...', "va\tamq.topic\t^{username}\\.\t.*", "va\tlogs\t.*\t^x"]  # fmt: skip
    code, out, _ = ctl(api, "--formatter", "json", "list_user_topic_permissions", "alice")
    assert json.loads("\n".join(out))[1] == {"vhost": "va", "exchange": "logs", "write": ".*", "read": "^x"}

    assert ok(api, "-p", "va", "clear_topic_permissions", "alice", "logs") == [
        'Clearing topic permissions on "logs" for user "alice" in vhost "va" ...']  # fmt: skip
    assert ok(api, "-q", "list_user_topic_permissions", "alice") == ["va\tamq.topic\t^{username}\\.\t.*"]
    assert ok(api, "-p", "va", "clear_topic_permissions", "alice") == [
        'Clearing topic permissions for user "alice" in vhost "va" ...']  # fmt: skip
    assert ok(api, "-q", "-p", "va", "list_topic_permissions") == ["user\texchange\twrite\tread"]
    with api.connect("alice", "apw", "va") as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", "bob.news", b"allowed now")

    assert fails(api, "set_topic_permissions", "nobody", "amq.topic", ".*", ".*") == (
        67, 'Error: User "nobody" does not exist')  # fmt: skip
    assert fails(api, "-p", "nope", "clear_topic_permissions", "alice") == (
        65, "Error: Virtual host nope does not exist")  # fmt: skip
    assert fails(api, "list_user_topic_permissions", "nobody") == (67, 'Error: User "nobody" does not exist')


def test_import_a_rabbitmq_file_then_list_what_it_made(api: Api) -> None:
    data = Path(__file__).with_name("data") / "rabbitmq-3.10-definitions.json"
    ok(api, "import_definitions", str(data))
    assert ok(api, "-q", "list_users") == [
        "user\ttags", "billing\t[policymaker]", "guest\t[administrator]", "legacy-batch\t[]",
        "ops-admin\t[administrator]", "orders-app\t[management, monitoring]", "reporting\t[]",
    ]  # fmt: skip
    assert ok(api, "-q", "-p", "orders", "list_permissions") == [
        "user\tconfigure\twrite\tread", "billing\t^billing\\.\t^billing\\.\t^billing\\.",
        "ops-admin\t.*\t.*\t.*", "orders-app\t^orders\\.\t^(orders\\.|amq\\.topic$)\t^orders\\.",
        "reporting\t\t\t^orders\\.",
    ]  # fmt: skip
    assert ok(api, "-q", "list_user_topic_permissions", "orders-app") == [
        "orders\tamq.topic\t^orders\\.{username}\\.\t.*"]  # fmt: skip
    assert ok(api, "authenticate_user", "reporting", input="reporting-pw\n")[-1] == "Success"
    assert ok(api, "-q", "list_vhosts", "name", "description", "tags") == [
        "name\tdescription\ttags", "/\tDefault virtual host\t[]", "orders\tOrder pipeline\t[prod, eu-west]", "batch\t\t[]"]  # fmt: skip
