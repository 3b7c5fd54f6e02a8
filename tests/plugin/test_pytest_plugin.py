"""The pytest plugin, tested as its users meet it: generated test files run by a fresh pytest process
(``pytester``) that finds the plugin through its entry point, with nothing configured."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.plugin.conftest import Run

CLIENTS = '''
import asyncio

import aio_pika
import kombu
import pika
import pytest


def test_pika(leveret_url, leveret_broker):
    conn = pika.BlockingConnection(pika.URLParameters(leveret_url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("jobs", durable=True)
    ch.basic_publish("", "jobs", b"one", pika.BasicProperties(delivery_mode=2))
    assert leveret_broker.wait_for_queue("jobs", ready=1).messages == 1
    method, _, body = ch.basic_get("jobs")
    assert body == b"one" and leveret_broker.wait_for_queue("jobs", unacked=1)
    ch.basic_ack(method.delivery_tag)
    leveret_broker.wait_for_queue("jobs", messages=0)
    conn.close()


@pytest.mark.asyncio
async def test_aio_pika(leveret_url, leveret_broker):
    conn = await aio_pika.connect_robust(leveret_url)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue("async-jobs")
        await ch.default_exchange.publish(aio_pika.Message(b"two"), routing_key="async-jobs")
        await leveret_broker.wait_for_queue_async("async-jobs", ready=1)
        async with q.iterator() as it:
            async for message in it:
                async with message.process():
                    assert message.body == b"two"
                break
        await leveret_broker.wait_for_queue_async("async-jobs", messages=0)


@pytest.mark.anyio
async def test_anyio(leveret_url, leveret_broker):
    conn = await aio_pika.connect(leveret_url)
    async with conn:
        ch = await conn.channel()
        await ch.declare_queue("anyio-jobs")
        await ch.default_exchange.publish(aio_pika.Message(b"three"), routing_key="anyio-jobs")
        await leveret_broker.wait_for_queue_async("anyio-jobs", ready=1)


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_anyio_on_trio_waits_without_blocking(leveret_url, leveret_broker):
    import threading, time

    def publish_later():
        time.sleep(0.3)
        conn = pika.BlockingConnection(pika.URLParameters(leveret_url))
        conn.channel().basic_publish("", "trio-jobs", b"late")
        conn.close()

    ch = pika.BlockingConnection(pika.URLParameters(leveret_url)).channel()
    ch.queue_declare("trio-jobs")
    threading.Thread(target=publish_later).start()
    assert (await leveret_broker.wait_for_queue_async("trio-jobs", ready=1)).messages == 1


def test_kombu(leveret_url, leveret_broker):
    with kombu.Connection(leveret_url, transport_options={"confirm_publish": True}) as conn:
        q = conn.SimpleQueue("kombu-jobs")
        q.put({"n": 4})
        message = q.get(timeout=5)
        assert message.payload == {"n": 4}
        message.ack()
        q.close()
    leveret_broker.wait_for_queue("kombu-jobs", messages=0)
'''


def test_pika_aio_pika_kombu_and_anyio_pass_with_nothing_configured(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(test_clients=CLIENTS)
    # anyio: asyncio unless a test asks for trio.
    pytester.makeconftest("import pytest\n\n@pytest.fixture\ndef anyio_backend():\n    return 'asyncio'\n")
    result = run("-W", "error::pytest.PytestUnraisableExceptionWarning")
    result.assert_outcomes(passed=5)


def test_two_tests_do_not_see_each_others_queues(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(
        test_isolation='''
        import pika
        import pytest

        URLS = []

        def test_first(leveret_url, leveret_broker):
            URLS.append(leveret_url)
            ch = pika.BlockingConnection(pika.URLParameters(leveret_url)).channel()
            ch.queue_declare("same-name", durable=True)
            ch.basic_publish("", "same-name", b"left behind")
            leveret_broker.wait_for_queue("same-name", ready=1)
            # the connection is left open: the vhost's deletion closes it

        def test_second(leveret_url, leveret_broker):
            URLS.append(leveret_url)
            assert URLS[0] != URLS[1]
            assert leveret_broker.queues() == []
            ch = pika.BlockingConnection(pika.URLParameters(leveret_url)).channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                ch.queue_declare("same-name", passive=True)
            assert e.value.reply_code == 404
        '''
    )
    run("-p", "no:randomly").assert_outcomes(passed=2)


def test_xdist_gives_each_worker_its_own_broker(pytester: pytest.Pytester, run: Run, tmp_path: Path) -> None:
    out = tmp_path / "seen"
    out.mkdir()
    pytester.makepyfile(
        test_workers=f'''
        import os, pathlib, time
        import pika
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_one(n, leveret_url, leveret_broker):
            ch = pika.BlockingConnection(pika.URLParameters(leveret_url)).channel()
            ch.queue_declare("q")
            time.sleep(0.2)  # long enough for both workers to take tests
            worker = os.environ["PYTEST_XDIST_WORKER"]
            pathlib.Path({str(out)!r}, f"{{n}}").write_text(f"{{worker}} {{leveret_broker.port}}")
        '''
    )
    run("-n", "2").assert_outcomes(passed=6)
    seen = {tuple(p.read_text().split()) for p in out.iterdir()}
    workers = {w for w, _ in seen}
    ports = {p for _, p in seen}
    assert workers == {"gw0", "gw1"} and len(ports) == 2, seen


def test_kill_brings_unacked_messages_back_redelivered(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(
        test_kill='''
        import pika
        import pytest

        @pytest.mark.leveret
        def test_crash(leveret_broker):
            url = leveret_broker.url
            conn = pika.BlockingConnection(pika.URLParameters(url))
            ch = conn.channel()
            ch.confirm_delivery()
            ch.queue_declare("work", durable=True)
            for body in (b"a", b"b"):
                ch.basic_publish("", "work", body, pika.BasicProperties(delivery_mode=2))
            ch.basic_qos(prefetch_count=10)
            got = []
            ch.basic_consume("work", lambda c, m, p, b: got.append((m.redelivered, b)))
            while len(got) < 2:
                conn.process_data_events(time_limit=0.1)
            assert got == [(False, b"a"), (False, b"b")]
            leveret_broker.wait_for_queue("work", unacked=2)

            leveret_broker.kill()

            with pytest.raises(pika.exceptions.AMQPConnectionError):
                conn.process_data_events(time_limit=1)  # the socket was dropped, no connection.close
            assert leveret_broker.url == url  # same port after the restart
            ch = pika.BlockingConnection(pika.URLParameters(url)).channel()
            again = [ch.basic_get("work", auto_ack=True) for _ in range(2)]
            assert [(m.redelivered, body) for m, _, body in again] == [(True, b"a"), (True, b"b")]

        @pytest.mark.leveret(storage="memory")
        def test_crash_in_memory_keeps_nothing(leveret_broker):
            ch = pika.BlockingConnection(pika.URLParameters(leveret_broker.url)).channel()
            ch.queue_declare("work", durable=True)
            leveret_broker.kill()
            assert leveret_broker.queues() == []

        def test_the_shared_broker_cannot_be_killed(leveret_broker):
            with pytest.raises(RuntimeError, match="pytest.mark.leveret"):
                leveret_broker.kill()
        '''
    )
    run().assert_outcomes(passed=3)


def test_marker_options_reach_the_broker(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(
        test_timeout='''
        import time
        import pika
        import pytest

        @pytest.mark.leveret(consumer_timeout=300)
        def test_consumer_timeout(leveret_broker):
            assert leveret_broker.settings.consumer_timeout == 300
            conn = pika.BlockingConnection(pika.URLParameters(leveret_broker.url))
            ch = conn.channel()
            ch.queue_declare("slow")
            ch.basic_publish("", "slow", b"x")
            ch.basic_consume("slow", lambda *a: None)
            deadline = time.monotonic() + 10
            while ch.is_open and time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.1)
            assert ch.is_closed
            assert any("Timeout used: 300 ms" in line for line in leveret_broker.log.lines)

        @pytest.mark.leveret(max_queues=1)
        def test_max_queues(leveret_broker):
            ch = pika.BlockingConnection(pika.URLParameters(leveret_broker.url)).channel()
            ch.queue_declare("one")
            with pytest.raises(pika.exceptions.ChannelClosedByBroker):
                ch.queue_declare("two")
        '''
    )
    run().assert_outcomes(passed=2)


LEAK_CONFTEST = '''
import json, os, threading

def fds():
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return out

def pytest_sessionstart(session):
    import uvloop
    # libuv makes one pipe per process with its first loop and keeps it; it is no broker's.
    uvloop.new_event_loop().close()
    session.config._before = (fds(), {t.ident for t in threading.enumerate()})

def pytest_sessionfinish(session):
    before_fds, before_threads = session.config._before
    after = fds()
    with open(os.environ["LEAK_REPORT"], "w") as f:
        json.dump({
            "fds": {fd: path for fd, path in after.items() if before_fds.get(fd) != path},
            "threads": [t.name for t in threading.enumerate() if t.ident not in before_threads],
        }, f)
'''

LEAK_TESTS = '''
import pathlib, os
import pika
import pytest

DIRS = pathlib.Path(os.environ["LEAK_REPORT"]).with_suffix(".dirs")

def note(broker):
    with DIRS.open("a") as f:
        f.write(str(broker.data_dir) + "\\n")

def test_shared(leveret_broker):
    note(leveret_broker)
    conn = pika.BlockingConnection(pika.URLParameters(leveret_broker.url))
    conn.channel().queue_declare("q")
    conn.close()

def test_left_open(leveret_url):
    pika.BlockingConnection(pika.URLParameters(leveret_url)).channel().queue_declare("q")

@pytest.mark.leveret
def test_own(leveret_broker):
    note(leveret_broker)
    leveret_broker.restart()
    leveret_broker.kill()
'''


@pytest.mark.parametrize("keep", [False, True], ids=["default", "keep-data"])
def test_nothing_is_left_behind(
    pytester: pytest.Pytester, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool
) -> None:
    report = tmp_path / "leaks.json"
    monkeypatch.setenv("LEAK_REPORT", str(report))
    pytester.makeconftest(LEAK_CONFTEST)
    pytester.makepyfile(test_leaks=LEAK_TESTS)
    result = run(*(["--leveret-keep-data"] if keep else []))
    result.assert_outcomes(passed=3)
    leaks = json.loads(report.read_text())
    # The pika connection test_left_open did not close is garbage by then; its socket is the test's.
    sockets = {fd: p for fd, p in leaks["fds"].items() if p.startswith("socket:")}
    assert leaks["threads"] == [] and len(sockets) <= 1, leaks
    assert {fd: p for fd, p in leaks["fds"].items() if fd not in sockets} == {}, leaks
    dirs = report.with_suffix(".dirs").read_text().split()
    assert len(dirs) == 2
    assert [Path(d).exists() for d in dirs] == [keep, keep]
    if keep:
        result.stdout.fnmatch_lines(["leveret: data directories kept (--leveret-keep-data):", *[f"  {d}" for d in dirs]])
        for d in dirs:
            shutil.rmtree(d)


def test_a_failing_test_shows_the_broker_log(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(
        test_fails='''
        import pika
        import pytest

        def test_fails(leveret_url):
            pika.BlockingConnection(pika.URLParameters(leveret_url)).close()
            assert False, "the test's own failure"

        def test_passes(leveret_url):
            pika.BlockingConnection(pika.URLParameters(leveret_url)).close()

        @pytest.mark.leveret
        def test_fails_after_kill(leveret_broker):
            leveret_broker.kill(restart=False)
            assert False
        '''
    )
    result = run()
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    assert out.count("leveret broker log") == 2  # the passing test gets no section
    result.stdout.fnmatch_lines(
        [
            "*leveret broker log (call, amqp://guest:guest@127.0.0.1:*/test-0001-test_fails)*",
            "* INFO *leveret.connection: accepting AMQP connection*",
            "*the broker is NOT running*",
            "*WARNING*simulated kill -9*",
        ]
    )


def test_log_level_option_filters_the_report(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(
        test_fails='''
        import pika

        def test_fails(leveret_url):
            pika.BlockingConnection(pika.URLParameters(leveret_url)).close()
            assert False
        '''
    )
    result = run("--leveret-log-level", "warning")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*leveret broker log*", "(nothing logged during the test)"])
    assert "accepting AMQP connection" not in result.stdout.str()


def test_no_broker_starts_unless_a_test_asks(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(
        test_plain='''
        import sys, threading

        def test_plain():
            assert "leveret.embedded" not in sys.modules
            assert [t.name for t in threading.enumerate() if t.name.startswith("leveret")] == []
        '''
    )
    result = run("-v")
    result.assert_outcomes(passed=1)
    # the plugin is there all the same: its options are known
    run("--leveret-log-level", "debug").assert_outcomes(passed=1)


def test_the_marker_is_registered(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(test_marked="import pytest\n\n@pytest.mark.leveret\ndef test_x():\n    pass\n")
    run("--strict-markers").assert_outcomes(passed=1)
    result = run("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.leveret(**options):*"])


def test_pyproject_declares_the_entry_point() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["pytest11"] == {"leveret": "leveret.pytest_plugin"}


def test_the_shared_broker_may_keep_its_data_in_memory(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(
        test_memory='''
        def test_memory(leveret_broker):
            assert leveret_broker.settings.storage == "memory" and leveret_broker.data_dir is None
        '''
    )
    run("--leveret-storage", "memory").assert_outcomes(passed=1)


def test_the_example_suites_pass_on_the_fixture(pytester: pytest.Pytester, run: Run) -> None:
    """examples/testing (docs/testing.md): Celery and Dramatiq with real workers, as a user runs them."""
    examples = Path(__file__).resolve().parents[2] / "examples" / "testing"
    shutil.copytree(examples, pytester.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    run("celery_app", "dramatiq_app", timeout=300).assert_outcomes(passed=8)


def test_a_broker_that_cannot_start_says_why(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(
        test_bad='''
        import pytest

        @pytest.mark.leveret(tls_cert="missing.pem")
        def test_bad_option(leveret_broker):
            pass

        @pytest.mark.leveret(storage="disk")
        def test_bad_value(leveret_broker):
            pass
        '''
    )
    result = run()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*BrokerDidNotStart: Leveret could not start: *missing.pem*", "*its last log lines:*"])
    result.stdout.fnmatch_lines(["*ValueError: storage='disk': one of 'sqlite', 'memory'*"])
