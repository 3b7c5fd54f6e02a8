"""leveretctl (a real subprocess) against a live broker that pika clients are using."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pika
import pytest

from tests.helpers import ProcessBroker, wait_for

from .conftest import Holder, Live, free_port, run_ctl

BANNER = ["Timeout: 60.0 seconds ...", "Listing queues for vhost / ..."]
TUTORIAL = ("list_queues", "name", "messages_ready", "messages_unacknowledged")


def publish(
    live: Live,
    queue: str,
    bodies: list[str],
    durable: bool = True,
    arguments: dict[str, object] | None = None,
) -> None:
    with live.connect() as conn:
        ch = conn.channel()
        ch.queue_declare(queue, durable=durable, arguments=arguments)
        for body in bodies:
            ch.basic_publish("", queue, body.encode(), pika.BasicProperties(delivery_mode=2))


def table(p: object) -> list[str]:
    out: str = p.stdout  # type: ignore[attr-defined]
    assert p.returncode == 0, (p.returncode, out, p.stderr)  # type: ignore[attr-defined]
    return out.splitlines()


def test_tutorial_list_queues_exact_counts(live: Live, holders: Callable[..., Holder]) -> None:
    publish(live, "task_queue", ["First message.", "Second message..", "Third message..."])
    assert table(live.ctl(*TUTORIAL)) == [*BANNER, "name\tmessages_ready\tmessages_unacknowledged",
                                          "task_queue\t3\t0"]  # fmt: skip

    # A worker that forgot basic_ack: as soon as it has the message, the count shows it.
    worker = holders(live.amqp, "task_queue", 1)
    assert worker.wait_for(1) == ["First message."]
    assert table(live.ctl(*TUTORIAL))[-1] == "task_queue\t2\t1"

    # It dies: the message is ready again, at once (no timeout, no polling of the count).
    conns = live.get("/api/connections")
    assert len(conns) == 1
    worker.kill()
    wait_for(lambda: live.get("/api/connections") == [], timeout=5)
    assert table(live.ctl(*TUTORIAL))[-1] == "task_queue\t3\t0"

    # A second worker gets it back, redelivered.
    worker2 = holders(live.amqp, "task_queue", 2)
    assert worker2.wait_for(2) == ["First message.", "Second message.."]
    assert table(live.ctl(*TUTORIAL))[-1] == "task_queue\t1\t2"
    assert live.queue("task_queue")["message_stats"]["redeliver"] == 1


def test_list_queues_options(live: Live) -> None:
    publish(live, "task_queue", ["a", "bb"])
    publish(live, "hello", ["x"], durable=False)

    # Default columns are name and messages; -q drops the banner, --no-table-headers the header.
    assert table(live.ctl("list_queues")) == [*BANNER, "name\tmessages", "task_queue\t2", "hello\t1"]
    assert table(live.ctl("-q", "list_queues")) == ["name\tmessages", "task_queue\t2", "hello\t1"]
    assert table(live.ctl("list_queues", "-q", "--no-table-headers")) == ["task_queue\t2", "hello\t1"]
    assert table(live.ctl("-q", "-p", "/", "list_queues", "name")) == ["name", "task_queue", "hello"]

    p = live.ctl("--formatter", "json", *TUTORIAL)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [
        {"name": "task_queue", "messages_ready": 2, "messages_unacknowledged": 0},
        {"name": "hello", "messages_ready": 1, "messages_unacknowledged": 0},
    ]

    cols = ["name", "durable", "auto_delete", "exclusive", "arguments", "messages", "messages_ready",
            "messages_unacknowledged", "consumers", "message_bytes", "memory", "state", "type"]  # fmt: skip
    rows = table(live.ctl("-q", "list_queues", *cols))
    assert rows[0].split("\t") == cols
    row = dict(zip(cols, rows[1].split("\t"), strict=True))
    assert row == {**row, "name": "task_queue", "durable": "true", "auto_delete": "false", "exclusive": "false",
                   "arguments": "[]", "messages": "2", "messages_ready": "2", "messages_unacknowledged": "0",
                   "consumers": "0", "message_bytes": "3", "state": "running", "type": "classic"}  # fmt: skip
    assert int(row["memory"]) > 0
    assert dict(zip(cols, rows[2].split("\t"), strict=True))["durable"] == "false"

    p = live.ctl("list_queues", "name", "colour")
    assert p.returncode == 64 and p.stdout == ""
    assert "colour" in p.stderr and "messages_unacknowledged" in p.stderr and "consumer_timeout" in p.stderr
    assert "Traceback" not in p.stderr

    # An unknown vhost is an error too, not an empty table.
    p = live.ctl("-p", "nope", "list_queues")
    assert p.returncode != 0 and "Traceback" not in p.stderr


def test_consumer_timeout_visible(live: Live, holders: Callable[..., Holder]) -> None:
    # Server default 30 min; the queue says 60 s; one consumer asks for 20 s for itself.
    publish(live, "slow_jobs", ["1", "2"], arguments={"x-consumer-timeout": 60_000})
    publish(live, "plain", [])
    rows = table(live.ctl("-q", "list_queues", "name", "consumer_timeout", "arguments"))
    assert rows[1:] == ['slow_jobs\t60000\t[{"x-consumer-timeout",60000}]', "plain\t1800000\t[]"]
    assert live.queue("slow_jobs")["consumer_timeout"] == 60_000
    assert live.queue("slow_jobs")["arguments"] == {"x-consumer-timeout": 60_000}
    assert live.queue("plain")["consumer_timeout"] == 1_800_000

    holders(live.amqp, "slow_jobs", 1).wait_for(1)
    holders(live.amqp, "slow_jobs", 1, "20000").wait_for(1)
    rows = table(
        live.ctl("-q", "list_consumers", "queue_name", "ack_required", "prefetch_count", "consumer_timeout")
    )
    assert sorted(rows[1:]) == ["slow_jobs\ttrue\t1\t20000", "slow_jobs\ttrue\t1\t60000"]
    consumers = live.get("/api/consumers")
    assert sorted(c["consumer_timeout"] for c in consumers) == [20_000, 60_000]


def test_connections_channels_consumers(live: Live) -> None:
    conn = live.connect()
    try:
        ch = conn.channel()
        ch.queue_declare("jobs")
        ch.basic_qos(prefetch_count=5)
        tag = ch.basic_consume("jobs", lambda *a: None)
        conn.channel()  # a second, idle channel
        [c] = live.get("/api/connections")

        rows = table(
            live.ctl("list_connections", "name", "user", "peer_host", "peer_port", "state", "channels")
        )
        assert rows[:2] == ["Timeout: 60.0 seconds ...", "Listing connections ..."]
        assert rows[2:] == ["name\tuser\tpeer_host\tpeer_port\tstate\tchannels",
                            f"{c['name']}\tguest\t127.0.0.1\t{c['peer_port']}\trunning\t2"]  # fmt: skip
        local_port = conn._impl._transport._sock.getsockname()[1]  # the socket pika really uses
        assert c["peer_port"] == local_port and c["port"] == live.broker.port
        assert table(live.ctl("-q", "list_connections"))[1:] == [f"guest\t127.0.0.1\t{local_port}\trunning"]

        rows = table(live.ctl("-q", "list_channels", "name", "number", "consumer_count", "prefetch_count"))
        assert sorted(rows[1:]) == [f"{c['name']} (1)\t1\t1\t5", f"{c['name']} (2)\t2\t0\t0"]

        rows = table(live.ctl("list_consumers", "queue_name", "consumer_tag", "ack_required", "prefetch_count",
                              "connection_name"))  # fmt: skip
        assert rows[1] == "Listing consumers in vhost / ..."
        assert rows[3:] == [f"jobs\t{tag}\ttrue\t5\t{c['name']}"]
    finally:
        conn.close()
    assert table(live.ctl("-q", "--no-table-headers", "list_connections")) == []
    assert table(live.ctl("-q", "--no-table-headers", "list_consumers")) == []


def test_exchanges_and_bindings(live: Live) -> None:
    with live.connect() as conn:
        ch = conn.channel()
        ch.exchange_declare("logs", "topic", durable=True)
        ch.queue_declare("errors", durable=True)
        ch.queue_bind("errors", "logs", "*.error")
        rows = table(live.ctl("-q", "list_exchanges", "name", "type", "durable"))
        assert rows[0] == "name\ttype\tdurable"
        assert set(rows[1:]) >= {"\tdirect\ttrue", "amq.direct\tdirect\ttrue", "amq.fanout\tfanout\ttrue",
                                 "amq.topic\ttopic\ttrue", "logs\ttopic\ttrue"}  # fmt: skip
        rows = table(live.ctl("list_bindings"))
        assert rows[1] == "Listing bindings for vhost /..."
        assert (
            rows[2] == "source_name\tsource_kind\tdestination_name\tdestination_kind\trouting_key\targuments"
        )
        assert sorted(rows[3:]) == [
            "\texchange\terrors\tqueue\terrors\t[]",
            "logs\texchange\terrors\tqueue\t*.error\t[]",
        ]


def test_purge_and_delete_queue(live: Live, holders: Callable[..., Holder]) -> None:
    publish(live, "task_queue", [str(i) for i in range(5)])
    holders(live.amqp, "task_queue", 1).wait_for(1)
    p = live.ctl("purge_queue", "task_queue")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["Purging queue 'task_queue' in vhost '/' ..."]
    # purge takes the ready messages; the one a consumer holds stays unacknowledged
    assert table(live.ctl("-q", *TUTORIAL))[1:] == ["task_queue\t0\t1"]

    publish(live, "other", ["a", "b"])
    p = live.ctl("delete_queue", "other", "--if-unused")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["Deleting queue 'other' on vhost '/' ...",
                                     "Queue was successfully deleted with 2 ready messages"]  # fmt: skip
    p = live.ctl("delete_queue", "task_queue", "--if-unused")
    assert p.returncode == 64 and "in use" in p.stderr  # it has a consumer
    p = live.ctl("-q", "delete_queue", "task_queue")
    assert p.returncode == 0, p.stderr
    assert table(live.ctl("-q", "--no-table-headers", "list_queues")) == []
    with live.connect() as conn, pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        conn.channel().queue_declare("other", passive=True)
    assert e.value.reply_code == 404


def test_close_connection(live: Live) -> None:
    conn = live.connect()
    conn.channel().queue_declare("q")
    [c] = live.get("/api/connections")
    p = live.ctl("close_connection", c["name"], "go away, please")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [f"Closing connection {c['name']}, reason: go away, please..."]
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        conn.process_data_events(time_limit=5)
    assert e.value.reply_code == 320
    assert e.value.reply_text == "CONNECTION_FORCED - go away, please"
    wait_for(lambda: live.get("/api/connections") == [])
    p = live.ctl("close_connection", c["name"], "again")
    assert p.returncode == 65 and "not found" in p.stderr


def test_status(live: Live) -> None:
    with live.connect() as conn:
        ch = conn.channel()
        ch.queue_declare("q")
        ch.basic_publish("", "q", b"x")
        p = live.ctl("status")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith("Status of node leveret@")
    assert f"port: {live.broker.port}, protocol: amqp" in out
    assert f"port: {live.broker.app.http_port}, protocol: http" in out
    assert "Connection count: 1" in out and "Queue count: 1" in out
    assert "Messages: 1 (ready 1, unacknowledged 0)" in out and "Published: 1 total" in out
    assert "Consumer timeout (ms): 1800000" in out
    assert "Sockets: 1" in out and re.search(r"Total: \d+, limit: \d+", out)


def test_nodes_show_file_descriptors_and_sockets(live: Live) -> None:
    import resource

    with live.connect(), live.connect():
        [node] = live.get("/api/nodes")
        open_now = len(os.listdir("/proc/self/fd"))  # the broker runs in this process (ThreadBroker)
    assert node["sockets_used"] == 2
    assert node["fd_total"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert 2 < node["fd_used"] <= open_now + 8
    wait_for(lambda: live.get("/api/nodes")[0]["sockets_used"] == 0)


def test_export_then_import_into_fresh_broker(live_factory: Callable[..., Live], tmp_path: Path) -> None:
    a = live_factory()
    with a.connect() as conn:
        ch = conn.channel()
        ch.exchange_declare("logs", "topic", durable=True)
        ch.exchange_declare("tasks", "direct", durable=True)
        ch.queue_declare("task_queue", durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_declare("errors", durable=True, arguments={"x-consumer-timeout": 60_000})
        ch.queue_declare("transient", auto_delete=False)
        ch.queue_declare("mine", exclusive=True)  # dies with the connection: not exported
        ch.queue_bind("errors", "logs", "*.error")
        ch.queue_bind("task_queue", "tasks", "work")
        path = tmp_path / "defs.json"
        p = a.ctl("export_definitions", str(path))
        assert p.returncode == 0, p.stderr
        assert p.stdout.splitlines() == [f'Exporting definitions in JSON to a file at "{path}" ...']
        p = a.ctl("export_definitions", "-")
        from_stdout, from_file = json.loads(p.stdout), json.loads(path.read_text())
        for doc in (from_stdout, from_file):  # password hashes are salted afresh each time
            for user in doc["users"]:
                assert user.pop("password_hash")
        assert from_stdout == from_file

    doc = json.loads(path.read_text())
    assert {q["name"] for q in doc["queues"]} == {"task_queue", "errors", "transient"}
    assert {x["name"] for x in doc["exchanges"]} == {"logs", "tasks"}
    assert {(b["source"], b["destination"], b["routing_key"]) for b in doc["bindings"]} == {
        ("logs", "errors", "*.error"), ("tasks", "task_queue", "work")}  # fmt: skip
    assert next(q for q in doc["queues"] if q["name"] == "task_queue")["type"] == "quorum"

    b = live_factory()
    p = b.ctl("import_definitions", str(path))
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == f'Importing definitions in JSON from a file at "{path}" ...'

    cols = ("name", "durable", "type", "arguments", "consumer_timeout")
    assert table(b.ctl("-q", "list_queues", *cols)) == [
        "\t".join(cols),
        'task_queue\ttrue\tquorum\t[{"x-queue-type","quorum"}]\t1800000',
        'errors\ttrue\tclassic\t[{"x-consumer-timeout",60000}]\t60000',
        "transient\tfalse\tclassic\t[]\t1800000",
    ]
    qa = {q["name"]: q for q in a.get("/api/queues") if not q["exclusive"]}
    qb = {q["name"]: q for q in b.get("/api/queues")}
    assert set(qb) == set(qa) == {"task_queue", "errors", "transient"}
    for name in qa:
        for key in ("durable", "auto_delete", "arguments", "type", "consumer_timeout"):
            assert qb[name][key] == qa[name][key], (name, key)
    xa = {(x["name"], x["type"], x["durable"]) for x in a.get("/api/exchanges")}
    xb = {(x["name"], x["type"], x["durable"]) for x in b.get("/api/exchanges")}
    assert xb == xa
    ba = {(x["source"], x["destination"], x["routing_key"]) for x in a.get("/api/bindings")}
    bb = {(x["source"], x["destination"], x["routing_key"]) for x in b.get("/api/bindings")}
    assert bb == ba

    # The imported topology routes: publish through the imported exchange, read it back over AMQP.
    with b.connect() as conn:
        ch = conn.channel()
        ch.basic_publish("logs", "disk.error", b"disk full")
        ch.basic_publish("logs", "disk.info", b"fine")
        method, _, body = ch.basic_get("errors", auto_ack=True)
        assert body == b"disk full" and method.message_count == 0

    # Importing the same file again is a no-op.
    assert b.ctl("-q", "import_definitions", str(path)).returncode == 0


def test_broker_not_running_exit_69() -> None:
    p = run_ctl("--url", f"http://127.0.0.1:{free_port()}", *TUTORIAL)
    assert p.returncode == 69
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "unable to connect" in lines[0] and "Traceback" not in p.stderr


def test_help_lists_commands() -> None:
    p = run_ctl("--help")
    assert p.returncode == 0
    for cmd in ("list_queues", "list_connections", "list_channels", "list_consumers", "list_exchanges",
                "list_bindings", "purge_queue", "delete_queue", "close_connection", "status",
                "export_definitions", "import_definitions"):  # fmt: skip
        assert cmd in p.stdout
    assert "leveretctl list_queues name messages_ready messages_unacknowledged" in p.stdout


def test_leveret_server_subprocess_tutorial_line(tmp_path: Path) -> None:
    """The whole wiring as a user runs it: ``leveret server`` (SQLite, --http-port 0), pika, leveretctl."""
    b = ProcessBroker(tmp_path / "data").start()
    try:
        assert b.http_port, "".join(b.log)
        url = f"http://127.0.0.1:{b.http_port}"
        with pika.BlockingConnection(pika.URLParameters(b.url)) as conn:
            ch = conn.channel()
            ch.queue_declare("task_queue", durable=True)
            for i in range(3):
                ch.basic_publish("", "task_queue", b"m%d" % i, pika.BasicProperties(delivery_mode=2))
            ch.basic_qos(prefetch_count=1)
            got = []
            ch.basic_consume("task_queue", lambda c, m, p, body: got.append(body))
            while not got:
                conn.process_data_events(time_limit=0.1)
            p = run_ctl("--url", url, *TUTORIAL)
            assert table(p) == [*BANNER, "name\tmessages_ready\tmessages_unacknowledged", "task_queue\t2\t1"]
        # the connection closed: its delivery is ready again
        wait_for(lambda: run_ctl("--url", url, "-q", "list_connections").stdout.count("\n") == 1)
        assert table(run_ctl("--url", url, "-q", *TUTORIAL))[1:] == ["task_queue\t3\t0"]
    finally:
        b.terminate()


def test_list_vhosts_and_queues_of_another_vhost(live_factory: Callable[..., Live]) -> None:
    live = live_factory(vhosts=("app",), users={"guest": "guest"})  # --user: full permissions on app too
    assert table(live.ctl("list_vhosts")) == ["Timeout: 60.0 seconds ...", "Listing vhosts ...", "name", "/", "app"]
    conn = pika.BlockingConnection(pika.URLParameters(f"{live.amqp.rsplit('/', 1)[0]}/app"))
    ch = conn.channel()
    ch.queue_declare("in-app")
    ch.basic_publish("", "in-app", b"x")
    wait_for(lambda: table(live.ctl("-p", "app", "list_queues"))[-1] == "in-app\t1", timeout=5)
    assert table(live.ctl("list_queues"))[-1] == "name\tmessages", "nothing of it in '/'"
    conn.close()


def test_a_transactional_channel_shows_what_it_holds(live: Live) -> None:
    conn = live.connect()
    ch = conn.channel()
    ch.queue_declare("txq")
    ch.basic_publish("", "txq", b"one")
    ch.tx_select()
    method, _, _ = ch.basic_get("txq")
    ch.basic_ack(method.delivery_tag)
    ch.basic_publish("", "txq", b"held")
    cols = ("list_channels", "transactional", "messages_uncommitted", "acks_uncommitted")
    wait_for(lambda: table(live.ctl(*cols))[-1] == "true\t1\t1", timeout=5)
    ch.tx_commit()
    wait_for(lambda: table(live.ctl(*cols))[-1] == "true\t0\t0", timeout=5)
    conn.close()


def test_export_definitions_of_one_vhost_or_without_users(live_factory: Callable[..., Live]) -> None:
    """RabbitMQ's per-vhost export with -p, and a whole export without the users (and their
    permissions) or the cluster name, which would overwrite a target RabbitMQ's (issue 13)."""
    live = live_factory(vhosts=("app",), users={"guest": "guest"})
    with pika.BlockingConnection(pika.URLParameters(f"{live.amqp.rsplit('/', 1)[0]}/app")) as conn:
        conn.channel().queue_declare("in-app", durable=True)
    with live.connect() as conn:
        conn.channel().queue_declare("in-root", durable=True)
    full = json.loads(live.ctl("export_definitions", "-").stdout)
    assert {"users", "permissions", "global_parameters", "vhosts"} <= set(full)
    assert {q["name"] for q in full["queues"]} == {"in-app", "in-root"}
    lean = json.loads(live.ctl("export_definitions", "--no-users", "--no-global-parameters", "-").stdout)
    assert not {"users", "permissions", "topic_permissions", "global_parameters"} & set(lean)
    assert lean["queues"] == full["queues"] and lean["vhosts"] == full["vhosts"]
    one = json.loads(live.ctl("export_definitions", "-p", "app", "-").stdout)
    assert [q["name"] for q in one["queues"]] == ["in-app"] and "users" not in one and "vhost" not in one["queues"][0]
    assert json.loads(live.ctl("-p", "app", "export_definitions", "-").stdout) == one  # the group's -p too
    assert live.ctl("--help").returncode == 0
    help_text = live.ctl("export_definitions", "--help").stdout
    assert "password hashes" in help_text and "cluster_name" in help_text
