"""A small Dramatiq app: sending mail, with retries for a flaky SMTP server and a dead-letter queue for
mail that can never go.

``make_app(url)`` builds the broker and the actors for a broker URL, as a project would from its
settings. Messages are acked after the actor returns; one that keeps failing is retried with a
backoff and then dead-lettered to ``mail.XQ`` (RabbitMQ's dead-lettering, x-dead-letter-* arguments).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker


class SmtpDown(Exception):
    pass


@dataclass
class Mailer:
    broker: RabbitmqBroker
    send: Any
    sent: list[str] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)


def make_app(url: str) -> Mailer:
    broker = RabbitmqBroker(url=url, confirm_delivery=True)
    lock = threading.Lock()
    app = Mailer(broker, None)

    @dramatiq.actor(broker=broker, queue_name="mail", max_retries=3, min_backoff=10, max_backoff=100)
    def send(to: str, subject: str, fail_times: int = 0) -> None:
        with lock:
            app.attempts[to] += 1
            attempt = app.attempts[to]
        if attempt <= fail_times:
            raise SmtpDown(f"421 try again later ({to}, attempt {attempt})")
        with lock:
            app.sent.append(f"{to}: {subject}")

    app.send = send
    return app
