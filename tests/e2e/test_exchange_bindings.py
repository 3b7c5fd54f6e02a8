"""Exchange-to-exchange bindings and headers exchanges with pika over TCP.

Each expectation was first observed on RabbitMQ 3.10.8 with the same client calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from tests.e2e.conftest import drain, params
from tests.helpers import ThreadBroker, wait_for

pytestmark = pytest.mark.timeout(30)


def closed_by_broker(fn: Any, *args: Any, **kw: Any) -> tuple[int, str]:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        fn(*args, **kw)
    return exc.value.reply_code, exc.value.reply_text


def bodies(ch: Any, queue: str) -> list[bytes]:
    out = []
    while True:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)


def test_capability_advertised(conn: pika.BlockingConnection) -> None:
    caps = conn._impl.server_properties["capabilities"]
    assert caps["exchange_exchange_bindings"] is True


def test_exchange_bind_unbind_and_a_cycle(ch: Any) -> None:
    ch.exchange_declare("a", "topic")
    ch.exchange_declare("b", "direct")
    ch.exchange_declare("c", "fanout")
    for q in ("qa", "qb", "qc"):
        ch.queue_declare(q)
    assert isinstance(ch.exchange_bind("b", "a", "k.#").method, pika.spec.Exchange.BindOk)
    ch.exchange_bind("c", "b", "k.x")
    ch.exchange_bind("a", "c", "")  # a -> b -> c -> a
    ch.exchange_bind("a", "a", "#")
    ch.queue_bind("qa", "a", "k.*")
    ch.queue_bind("qb", "b", "k.x")
    ch.queue_bind("qc", "c", "")
    ch.queue_bind("qc", "b", "k.x")  # qc is reached twice
    ch.confirm_delivery()
    ch.basic_publish("a", "k.x", b"m1", mandatory=True)
    ch.basic_publish("c", "zz", b"m2", mandatory=True)
    assert bodies(ch, "qa") == [b"m1"]
    assert bodies(ch, "qb") == [b"m1"]
    assert bodies(ch, "qc") == [b"m1", b"m2"]
    method, _, _ = ch.basic_get("qa")  # nothing left; the exchange of a delivery is the one published to
    assert method is None
    ch.basic_publish("a", "k.x", b"m3")
    method, _, _ = ch.basic_get("qb", auto_ack=True)
    assert (method.exchange, method.routing_key) == ("a", "k.x")

    assert isinstance(ch.exchange_unbind("b", "a", "k.#").method, pika.spec.Exchange.UnbindOk)
    ch.basic_publish("a", "k.x", b"m4")
    assert bodies(ch, "qb") == []
    assert bodies(ch, "qa") == [b"m3", b"m4"]
    # Unbinding what is not there succeeds, as in RabbitMQ.
    ch.exchange_unbind("b", "a", "k.#")
    ch.exchange_unbind("nope", "a", "k.#")
    ch.queue_unbind("qa", "nope", "k")


def test_exchange_bind_nowait(conn: pika.BlockingConnection, ch: Any) -> None:
    ch.exchange_declare("src", "fanout")
    ch.exchange_declare("dst", "fanout")
    ch.queue_declare("q")
    ch.queue_bind("q", "dst")
    ch._impl.exchange_bind("dst", "src", "", callback=None)  # no callback: pika sends nowait=true
    ch.basic_publish("src", "", b"after bind")
    wait_for(lambda: ch.queue_declare("q", passive=True).method.message_count == 1)
    ch._impl.exchange_unbind("dst", "src", "", callback=None)
    ch.basic_publish("src", "", b"after unbind")
    drain(conn, 0.1)
    assert bodies(ch, "q") == [b"after bind"]


def test_bind_errors(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.exchange_declare("x", "topic")
    assert closed_by_broker(ch.exchange_bind, "nope-dst", "x", "k") == (
        404,
        "NOT_FOUND - no exchange 'nope-dst' in vhost '/'",
    )
    ch = conn.channel()
    assert closed_by_broker(ch.exchange_bind, "x", "nope-src", "k") == (
        404,
        "NOT_FOUND - no exchange 'nope-src' in vhost '/'",
    )
    ch = conn.channel()
    assert closed_by_broker(ch.exchange_bind, "x", "", "k") == (
        403,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    )
    ch = conn.channel()
    assert closed_by_broker(ch.exchange_unbind, "", "x", "k")[0] == 403
    ch = conn.channel()
    ch.exchange_declare("h", "headers")
    assert closed_by_broker(ch.exchange_bind, "x", "h", "", arguments={"x-match": "foo"}) == (
        406,
        'PRECONDITION_FAILED - Invalid x-match field value <<"foo">>; expected all, any, all-with-x, or any-with-x',
    )


def test_internal_exchange_behind_e2e(ch: Any) -> None:
    ch.exchange_declare("front", "direct")
    ch.exchange_declare("inner", "fanout", internal=True)
    ch.queue_declare("q")
    ch.queue_bind("q", "inner")
    ch.exchange_bind("inner", "front", "i")
    ch.basic_publish("front", "i", b"via inner")
    assert wait_for(lambda: bodies(ch, "q")) == [b"via inner"]


def test_headers_exchange_any_and_all(ch: Any) -> None:
    ch.exchange_declare("h", "headers")
    for q in ("all", "any", "reports"):
        ch.queue_declare(q)
    ch.queue_bind("all", "h", arguments={"x-match": "all", "format": "pdf", "type": "report"})
    ch.queue_bind("any", "h", arguments={"x-match": "any", "format": "pdf", "type": "report"})
    ch.exchange_declare("fan", "fanout")
    ch.queue_bind("reports", "fan")
    ch.exchange_bind("fan", "h", arguments={"type": "report"})
    ch.confirm_delivery()
    for body, headers in (
        (b"pdf report", {"format": "pdf", "type": "report"}),
        (b"pdf log", {"format": "pdf", "type": "log"}),
        (b"zip report", {"format": "zip", "type": "report", "x-other": 1}),
        (b"nothing", None),
    ):
        ch.basic_publish("h", "ignored", body, pika.BasicProperties(headers=headers, content_type="text/plain"))
    assert bodies(ch, "all") == [b"pdf report"]
    assert bodies(ch, "any") == [b"pdf report", b"pdf log", b"zip report"]
    assert bodies(ch, "reports") == [b"pdf report", b"zip report"]
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("amq.match", "", b"x", pika.BasicProperties(headers={"a": 1}), mandatory=True)


def test_auto_delete_exchange(ch: Any) -> None:
    def exists(name: str) -> bool:
        c = ch.connection.channel()
        try:
            c.exchange_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return False
        c.close()
        return True

    ch.exchange_declare("ad", "direct", auto_delete=True)
    ch.exchange_declare("dst", "direct")
    ch.exchange_bind("dst", "ad", "a")
    assert exists("ad")
    ch.exchange_unbind("dst", "ad", "a")
    assert not exists("ad")


def test_durable_e2e_bindings_survive_restart(tmp_path: Path) -> None:
    b = ThreadBroker(storage="sqlite", data_dir=tmp_path).start()
    try:
        with pika.BlockingConnection(params(b.port)) as conn:
            ch = conn.channel()
            ch.exchange_declare("celery.delayed", "topic", durable=True)
            ch.exchange_declare("celery.route", "headers", durable=True)
            ch.exchange_declare("scratch", "fanout", durable=False)
            ch.queue_declare("work", durable=True)
            ch.exchange_bind("celery.route", "celery.delayed", "#.work")
            ch.exchange_bind("celery.delayed", "amq.topic", "delayed.#")
            ch.exchange_bind("scratch", "celery.delayed", "#")  # to a transient exchange: not kept
            ch.queue_bind("work", "celery.route", arguments={"x-match": "any", "queue": "work"})
    finally:
        b.stop()
    b = ThreadBroker(storage="sqlite", data_dir=tmp_path).start()
    try:
        with pika.BlockingConnection(params(b.port)) as conn:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish(
                "amq.topic", "delayed.1.work", b"eta", pika.BasicProperties(headers={"queue": "work"}, delivery_mode=2)
            )
            assert bodies(ch, "work") == [b"eta"]
            assert closed_by_broker(ch.exchange_declare, "scratch", passive=True)[0] == 404
            ch = conn.channel()
            ch.exchange_unbind("celery.route", "celery.delayed", "#.work")
    finally:
        b.stop()
    b = ThreadBroker(storage="sqlite", data_dir=tmp_path).start()
    try:
        with pika.BlockingConnection(params(b.port)) as conn:
            ch = conn.channel()
            ch.confirm_delivery()
            with pytest.raises(pika.exceptions.UnroutableError):
                ch.basic_publish(
                    "amq.topic", "delayed.1.work", b"eta", pika.BasicProperties(headers={"queue": "work"}), mandatory=True
                )
    finally:
        b.stop()
