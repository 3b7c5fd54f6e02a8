"""The mailer on a real broker with a real Dramatiq worker (threads in this process, real acks)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import dramatiq
import pytest

from dramatiq_app.mailer import Mailer, make_app


@pytest.fixture
def app(amqp_url: str) -> Iterator[Mailer]:
    app = make_app(amqp_url)
    app.broker.flush_all()  # a shared broker may hold a previous run's messages
    yield app
    app.broker.flush_all()
    app.broker.close()


@pytest.fixture
def worker(app: Mailer) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(app.broker, worker_threads=4, worker_timeout=100)
    worker.start()
    yield worker
    worker.stop()


def test_mail_is_sent(app: Mailer, worker: dramatiq.Worker) -> None:
    for n in range(10):
        app.send.send(f"user{n}@example.com", "welcome")
    app.broker.join("mail", timeout=10_000)
    assert sorted(app.sent) == sorted(f"user{n}@example.com: welcome" for n in range(10))


def test_a_flaky_smtp_server_is_retried(app: Mailer, worker: dramatiq.Worker) -> None:
    app.send.send("bob@example.com", "invoice", fail_times=2)
    app.broker.join("mail", timeout=10_000)
    assert app.sent == ["bob@example.com: invoice"]
    assert app.attempts["bob@example.com"] == 3


def test_mail_that_never_goes_is_dead_lettered(
    app: Mailer, worker: dramatiq.Worker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="dramatiq")  # the retries' tracebacks are expected
    app.send.send("nobody@example.invalid", "lost", fail_times=99)
    app.broker.join("mail", timeout=10_000)
    assert app.sent == [] and app.attempts["nobody@example.invalid"] == 4  # the first try and 3 retries
    ready, delayed, dead = app.broker.get_queue_message_counts("mail")
    assert (ready, delayed, dead) == (0, 0, 1)


def test_messages_sent_before_the_worker_starts_wait_for_it(app: Mailer) -> None:
    for n in range(3):
        app.send.send(f"early{n}@example.com", "hello")
    assert app.broker.get_queue_message_counts("mail")[0] == 3
    worker = dramatiq.Worker(app.broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        app.broker.join("mail", timeout=10_000)
    finally:
        worker.stop()
    assert len(app.sent) == 3
