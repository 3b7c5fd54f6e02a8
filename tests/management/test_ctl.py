"""leveretctl against the live test server: real subprocesses for the headline cases,
click's CliRunner (still real HTTP) for the rest."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from leveret.cli.ctl import cli
from tests.helpers import ThreadBroker

from .conftest import Served

CONN = "127.0.0.1:50000 -> 127.0.0.1:5672"


def run_ctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "leveret.cli.ctl", *args], env=env, capture_output=True,
                          text=True, timeout=30)  # fmt: skip


def ctl(api: Served, *args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--url", api.url, *args], input=input, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_list_queues_subprocess_like_rabbitmqctl(api: Served, ctl_env: dict[str, str]) -> None:
    p = run_ctl(ctl_env, "list_queues", "name", "messages_ready", "messages_unacknowledged")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "Timeout: 60.0 seconds ...",
        "Listing queues for vhost / ...",
        "name\tmessages_ready\tmessages_unacknowledged",
        "task_queue\t3\t2",
        "hello\t1\t0",
    ]
    assert p.stderr == ""


def test_list_queues_default_columns_quiet_and_no_headers(api: Served, ctl_env: dict[str, str]) -> None:
    p = run_ctl(ctl_env, "list_queues", "-q", "--no-table-headers")
    assert p.returncode == 0 and p.stdout.splitlines() == ["task_queue\t5", "hello\t1"]
    p = run_ctl(ctl_env, "-q", "-p", "other", "list_queues")
    assert p.stdout.splitlines() == ["name\tmessages", "elsewhere\t7"]


def test_url_at_the_amqp_port_says_so_in_one_line(ctl_env: dict[str, str]) -> None:
    """An AMQP listener answers an HTTP request with its protocol header: one line, exit 69 (it was a
    BadStatusLine traceback)."""
    b = ThreadBroker().start()
    try:
        p = run_ctl(dict(ctl_env, LEVERET_URL=f"http://127.0.0.1:{b.port}"), "list_queues")
    finally:
        b.stop()
    assert p.returncode == 69 and "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "did not answer in HTTP" in lines[0] and "not the AMQP port" in lines[0], lines


def test_broker_not_running_exit_69(ctl_env: dict[str, str]) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(ctl_env, LEVERET_URL=f"http://127.0.0.1:{port}")
    p = run_ctl(env, "list_queues")
    assert p.returncode == 69
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: unable to connect") and "Traceback" not in p.stderr


def test_unknown_column_exit_64_lists_valid(api: Served) -> None:
    code, out, err = ctl(api, "list_queues", "name", "bogus")
    assert code == 64 and out == ""
    assert "bogus" in err and "messages_unacknowledged" in err and "consumer_timeout" in err


def test_all_queue_columns(api: Served) -> None:
    cols = ["name", "durable", "auto_delete", "exclusive", "arguments", "messages", "messages_ready",
            "messages_unacknowledged", "consumers", "message_bytes", "memory", "state", "type", "consumer_timeout"]  # fmt: skip
    code, out, _ = ctl(api, "-q", "list_queues", *cols)
    assert code == 0
    header, first = out.splitlines()[:2]
    assert header.split("\t") == cols
    row = dict(zip(cols, first.split("\t"), strict=True))
    assert row["name"] == "task_queue" and row["durable"] == "true" and row["exclusive"] == "false"
    assert row["arguments"] == '[{"x-queue-type","classic"}]'
    assert row["state"] == "running" and row["type"] == "classic" and row["consumer_timeout"] == "1800000"
    assert int(row["memory"]) > int(row["message_bytes"]) > 0


def test_json_formatter(api: Served) -> None:
    code, out, _ = ctl(api, "--formatter", "json", "list_queues", "name", "messages", "durable")
    assert code == 0
    assert json.loads(out) == [{"name": "task_queue", "messages": 5, "durable": True},
                               {"name": "hello", "messages": 1, "durable": True}]  # fmt: skip


def test_other_listings(api: Served) -> None:
    code, out, _ = ctl(api, "list_connections")
    assert code == 0 and out.splitlines()[2:] == [
        "user\tpeer_host\tpeer_port\tstate",
        "guest\t127.0.0.1\t50000\trunning",
    ]
    code, out, _ = ctl(api, "-q", "list_channels")
    assert out.splitlines() == [
        "pid\tuser\tconsumer_count\tmessages_unacknowledged",
        f"{CONN} (1)\tguest\t0\t0",
    ]
    code, out, _ = ctl(api, "-q", "list_consumers")
    assert out.splitlines()[1] == f"task_queue\t{CONN} (1)\tctag-1\ttrue\t1\ttrue\tup\t[]"
    code, out, _ = ctl(api, "list_exchanges", "name", "type", "durable")
    assert out.splitlines()[1] == "Listing exchanges for vhost / ..." and "amq.topic\ttopic\ttrue" in out
    code, out, _ = ctl(api, "-q", "list_bindings")
    assert "\texchange\thello\tqueue\thello\t[]" in out
    code, out, _ = ctl(api, "-q", "list_connections", "name", "client_properties")
    assert f'{CONN}\t[{{"product","pika"}},{{"capabilities",[{{"basic.nack",true}}]}}]' in out


def test_purge_delete_close(api: Served) -> None:
    code, out, _ = ctl(api, "purge_queue", "task_queue")
    assert code == 0 and out == "Purging queue 'task_queue' in vhost '/' ...\n"
    assert api.backend.qs[("/", "task_queue")].ready == []
    code, _, err = ctl(api, "delete_queue", "task_queue", "--if-empty")
    assert code == 64 and "not empty" in err
    code, out, _ = ctl(api, "delete_queue", "hello")
    assert code == 0 and out.splitlines() == ["Deleting queue 'hello' on vhost '/' ...",
                                              "Queue was successfully deleted with 1 ready messages"]  # fmt: skip
    code, _, err = ctl(api, "delete_queue", "hello")
    assert code == 65 and "not found" in err
    code, out, _ = ctl(api, "close_connection", CONN, "go away")
    assert code == 0 and api.backend.closed == [(CONN, "go away")]
    assert ctl(api, "close_connection", CONN, "again")[0] == 65


def test_status(api: Served) -> None:
    code, out, _ = ctl(api, "status")
    assert code == 0
    assert "Status of node leveret@testhost ..." in out and "OS PID: 4242" in out
    assert "Queue count: 3" in out and "Messages: 13 (ready 11, unacknowledged 2)" in out
    assert "Interface: 127.0.0.1, port: 5672, protocol: amqp" in out
    code, out, _ = ctl(api, "--formatter", "json", "status")
    assert json.loads(out)["node"]["name"] == "leveret@testhost"


def test_definitions_export_import(api: Served, tmp_path: Path) -> None:
    path = tmp_path / "defs.json"
    code, out, _ = ctl(api, "export_definitions", str(path))
    assert code == 0 and "Exporting definitions in JSON to a file at" in out
    doc = json.loads(path.read_text())
    assert {q["name"] for q in doc["queues"]} == {"task_queue", "hello", "elsewhere"}
    code, out, _ = ctl(api, "export_definitions", "-")
    assert json.loads(out)["rabbit_version"]
    doc["queues"].append(
        {"name": "from_file", "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}
    )
    path.write_text(json.dumps(doc))
    code, out, _ = ctl(api, "import_definitions", str(path))
    assert code == 0 and ("/", "from_file") in api.backend.qs
    code, _, err = ctl(api, "import_definitions", str(tmp_path / "missing.json"))
    assert code == 66 and "cannot read" in err


def test_auth_failure_exit_77(api: Served) -> None:
    code, _, err = ctl(api, "--password", "wrong", "list_queues")
    assert code == 77 and "authentication failed" in err


def test_options_after_command_and_env(api: Served) -> None:
    code, out, _ = ctl(api, "list_queues", "-q", "--no-table-headers", "-p", "other", "name")
    assert out == "elsewhere\n"
    result = CliRunner().invoke(cli, ["-q", "list_queues"], env={"LEVERET_URL": api.url})
    assert result.exit_code == 0 and result.stdout.startswith("name\tmessages\n")


def test_help_lists_commands_with_examples() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for cmd in ("list_queues", "list_connections", "list_channels", "list_consumers", "list_exchanges",
                "list_bindings", "purge_queue", "delete_queue", "close_connection", "status",
                "export_definitions", "import_definitions"):  # fmt: skip
        assert cmd in result.output
    assert "leveretctl list_queues name messages_ready messages_unacknowledged" in result.output
    sub = CliRunner().invoke(cli, ["list_queues", "--help"])
    assert "messages_unacknowledged" in sub.output


def test_module_entry_point_help(ctl_env: dict[str, str]) -> None:
    p = run_ctl(ctl_env, "--help")
    assert p.returncode == 0 and "Usage: leveretctl" in p.stdout
