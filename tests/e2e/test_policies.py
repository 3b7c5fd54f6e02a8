"""Policies and operator policies (RabbitMQ 3.10, reference 6.4) seen by pika clients: each key on
classic and quorum queues, priorities, keys a queue type does not support, how policy values and x-
arguments combine, operator policy merging, re-application to queues that already hold messages; and
the HTTP API's validation texts, listings and authorisation.

The behaviour tests (those using ``ch`` and ``policies``) also run against RabbitMQ 3.10 with
bench/conformance_vs_rabbitmq.py, which names a rabbitmqctl for its node in LEVERET_E2E_RABBITMQCTL;
against Leveret they set policies in the model of the ``broker`` fixture (the HTTP API is tested below).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

from tests.helpers import ThreadBroker, wait_for
from tests.security.test_access_api import Api, make_api

BlockingChannel = pika.adapters.blocking_connection.BlockingChannel
RABBITMQCTL = os.environ.get("LEVERET_E2E_RABBITMQCTL")


class Policies:
    """Set and clear policies on the broker under test; every one set is cleared at the end."""

    def __init__(self, broker: ThreadBroker | None) -> None:
        self.broker = broker
        self.made: set[tuple[str, bool]] = set()

    def set(self, name: str, pattern: str, definition: dict[str, Any], priority: int = 0, apply_to: str = "all",
            *, operator: bool = False) -> None:  # fmt: skip
        self.made.add((name, operator))
        if self.broker is None:
            kind = "set_operator_policy" if operator else "set_policy"
            self._ctl(
                kind,
                "--priority",
                str(priority),
                "--apply-to",
                apply_to,
                name,
                pattern,
                json.dumps(definition),
            )
            return
        b = self.broker.app.broker
        assert b is not None
        self.broker.call(
            lambda: b.set_policy("/", name, pattern, definition, priority, apply_to, operator=operator)
        )

    def clear(self, name: str, *, operator: bool = False) -> None:
        self.made.discard((name, operator))
        if self.broker is None:
            self._ctl("clear_operator_policy" if operator else "clear_policy", name)
            return
        b = self.broker.app.broker
        assert b is not None
        self.broker.call(lambda: b.clear_policy("/", name, operator=operator))

    def of(self, queue: str) -> str:
        """The name of the policy applied to ``queue`` ("" for none)."""
        if self.broker is None:
            out = self._ctl("list_queues", "-q", "--no-table-headers", "name", "policy")
            rows = dict((line.split("\t") + [""])[:2] for line in out.splitlines() if line.strip())
            return rows[queue].strip()
        b = self.broker.app.broker
        assert b is not None
        q = self.broker.call(lambda: b.vhosts["/"].queues[queue])
        return "" if q.policy is None else str(q.policy.name)

    def _ctl(self, *args: str) -> str:
        assert RABBITMQCTL is not None
        done = subprocess.run([RABBITMQCTL, *args], capture_output=True, text=True, timeout=60, check=True)
        return done.stdout


@pytest.fixture
def policies(request: pytest.FixtureRequest, ch: BlockingChannel) -> Iterator[Policies]:
    """After ``ch``: against RabbitMQ the node is emptied (queues, exchanges) before the test. ``ch`` is
    put in confirm mode, so a publish has reached its queues when it returns (a quorum queue's too)."""
    ch.confirm_delivery()
    p = Policies(None if RABBITMQCTL else request.getfixturevalue("broker"))
    yield p
    for name, operator in list(p.made):
        p.clear(name, operator=operator)


@pytest.fixture
def api() -> Iterator[Api]:
    """A Leveret with its HTTP API (these tests do not run against RabbitMQ's node)."""
    if os.environ.get("LEVERET_E2E_AMQP_PORT"):
        pytest.skip("HTTP API tests run against Leveret only")
    a = make_api()
    yield a
    a.broker.stop()


def policy(api: Api, name: str, pattern: str, definition: dict[str, Any], priority: int = 0,
           apply_to: str = "all", *, operator: bool = False, status: int = 201) -> None:  # fmt: skip
    base = "/api/operator-policies" if operator else "/api/policies"
    body = {"pattern": pattern, "definition": definition, "priority": priority, "apply-to": apply_to}
    api.ok("PUT", f"{base}/%2F/{name}", body, status)


def declare(ch: BlockingChannel, name: str, qtype: str = "classic", **args: Any) -> None:
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": qtype, **args})


def publish(ch: BlockingChannel, queue: str, *bodies: str) -> None:
    """Publish each body (on a confirm channel, a body refused by x-overflow reject-publish is skipped)."""
    for b in bodies:
        try:
            ch.basic_publish("", queue, b.encode())
        except pika.exceptions.NackError:
            pass


def count(ch: BlockingChannel, queue: str) -> int:
    return int(ch.queue_declare(queue, passive=True).method.message_count)


def bodies(ch: BlockingChannel, queue: str) -> list[str]:
    out = []
    while True:
        _, _, body = ch.basic_get(queue, auto_ack=True)
        if body is None:
            return out
        out.append(body.decode())


def exists(conn: pika.BlockingConnection, queue: str) -> bool:
    """Whether ``queue`` exists (a passive declare on a channel of its own, which a 404 closes)."""
    try:
        conn.channel().queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return False
    return True


@pytest.fixture
def api_ch(api: Api) -> Iterator[BlockingChannel]:
    conn = api.connect("guest", "guest")
    yield conn.channel()
    if conn.is_open:
        conn.close()


def queue_json(api: Api, name: str) -> Any:
    return api.get(f"/api/queues/%2F/{name}")


TYPES = ("classic", "quorum")


@pytest.mark.parametrize("qtype", TYPES)
def test_max_length_and_bytes_and_overflow(ch: BlockingChannel, policies: Policies, qtype: str) -> None:
    policies.set("len", "^len", {"max-length": 2})
    policies.set("bytes", "^bytes", {"max-length-bytes": 10})
    policies.set("rej", "^rej", {"max-length": 1, "overflow": "reject-publish"})
    for q in ("len", "bytes", "rej"):
        declare(ch, q, qtype)
    publish(ch, "len", "1", "2", "3", "4")
    publish(ch, "bytes", "aaaa", "bbbb", "cccc")
    ch.confirm_delivery()
    ch.basic_publish("", "rej", b"first")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "rej", b"second")
    assert bodies(ch, "len") == ["3", "4"]
    assert bodies(ch, "bytes") == ["bbbb", "cccc"]
    assert bodies(ch, "rej") == ["first"]
    assert policies.of("len") == "len"


@pytest.mark.parametrize("qtype", TYPES)
def test_message_ttl_expires_and_dead_lettering(ch: BlockingChannel, policies: Policies, qtype: str) -> None:
    declare(ch, "dlq")
    ch.exchange_declare("dlx", "fanout")
    ch.queue_bind("dlq", "dlx")
    policies.set(
        "ttl",
        "^ttl$",
        {"message-ttl": 50, "dead-letter-exchange": "dlx", "dead-letter-routing-key": "rk"},
    )
    policies.set("lease", "^lease$", {"expires": 200})
    declare(ch, "ttl", qtype)
    declare(ch, "lease", qtype)
    publish(ch, "ttl", "old")
    assert wait_for(lambda: count(ch, "dlq") == 1)
    method, _, body = ch.basic_get("dlq", auto_ack=True)
    assert body == b"old" and method.routing_key == "rk"
    assert wait_for(lambda: not exists(ch.connection, "lease"))


def test_delivery_limit_on_quorum_queue(ch: BlockingChannel, policies: Policies) -> None:
    declare(ch, "dlq")
    policies.set(
        "dl",
        "^work$",
        {"delivery-limit": 1, "dead-letter-exchange": "", "dead-letter-routing-key": "dlq"},
    )
    declare(ch, "work", "quorum")
    assert policies.of("work") == "dl"
    publish(ch, "work", "m")
    for _ in range(2):
        method, _, _ = ch.basic_get("work")
        ch.basic_nack(method.delivery_tag, requeue=True)
    assert wait_for(lambda: count(ch, "dlq") == 1)
    assert count(ch, "work") == 0


def test_alternate_exchange_policy_and_argument_precedence(ch: BlockingChannel, policies: Policies) -> None:
    for q in ("ae-policy", "ae-arg"):
        declare(ch, q)
        ch.exchange_declare(q, "fanout")
        ch.queue_bind(q, q)
    policies.set("ae", "^x", {"alternate-exchange": "ae-policy"}, apply_to="exchanges")
    ch.exchange_declare("x1", "direct")
    ch.exchange_declare("x2", "direct", arguments={"alternate-exchange": "ae-arg"})
    ch.basic_publish("x1", "nowhere", b"1")
    ch.basic_publish("x2", "nowhere", b"2")
    assert bodies(ch, "ae-policy") == ["1"] and bodies(ch, "ae-arg") == ["2"]


def test_highest_priority_wins_and_unsupported_keys_skip(ch: BlockingChannel, policies: Policies) -> None:
    """6.4's probe: {"max-length":1,"delivery-limit":5} at priority 10 skips a classic queue."""
    policies.set("low", "^q", {"max-length": 3})
    policies.set("high", "^q", {"max-length": 1, "delivery-limit": 5}, priority=10)
    declare(ch, "qc", "classic")
    declare(ch, "qq", "quorum")
    assert policies.of("qc") == "low"
    assert policies.of("qq") == "high"
    publish(ch, "qc", "1", "2", "3", "4")
    publish(ch, "qq", "1", "2", "3", "4")
    assert (count(ch, "qc"), count(ch, "qq")) == (3, 1)
    policies.set("top", "^qc", {"max-length": 2}, priority=20)
    assert policies.of("qc") == "top"
    assert wait_for(lambda: count(ch, "qc") == 2)  # RabbitMQ re-applies a policy asynchronously
    policies.clear("top")
    assert policies.of("qc") == "low"


@pytest.mark.parametrize("qtype", TYPES)
def test_minimum_of_argument_and_policy(ch: BlockingChannel, policies: Policies, qtype: str) -> None:
    policies.set("p", "^m", {"max-length": 3})
    declare(ch, "m-arg-lower", qtype, **{"x-max-length": 1})
    declare(ch, "m-policy-lower", qtype, **{"x-max-length": 5})
    for q in ("m-arg-lower", "m-policy-lower"):
        publish(ch, q, *"123456")
    assert count(ch, "m-arg-lower") == 1 and count(ch, "m-policy-lower") == 3


def test_overflow_argument_wins_on_classic_policy_wins_on_quorum(
    ch: BlockingChannel, policies: Policies
) -> None:
    policies.set("p", "^o", {"max-length": 1, "overflow": "reject-publish"})
    declare(ch, "oc", "classic", **{"x-overflow": "drop-head"})
    declare(ch, "oq", "quorum", **{"x-overflow": "drop-head"})
    publish(ch, "oc", "1", "2")
    publish(ch, "oq", "1", "2")
    assert bodies(ch, "oc") == ["2"]  # the argument (drop-head) wins
    assert bodies(ch, "oq") == ["1"]  # the policy (reject-publish) wins


def test_dead_letter_argument_beats_policy(ch: BlockingChannel, policies: Policies) -> None:
    for q in ("by-arg", "by-policy"):
        declare(ch, q)
    policies.set(
        "p", "^d$", {"dead-letter-exchange": "", "dead-letter-routing-key": "by-policy", "max-length": 1}
    )
    declare(ch, "d", "classic", **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "by-arg"})
    publish(ch, "d", "1", "2")
    assert bodies(ch, "by-arg") == ["1"] and count(ch, "by-policy") == 0


@pytest.mark.parametrize("qtype", TYPES)
def test_lowering_max_length_drops_the_oldest_at_once(
    ch: BlockingChannel, policies: Policies, qtype: str
) -> None:
    policies.set("cap", "^cap", {"max-length": 10})
    declare(ch, "cap", qtype)
    publish(ch, "cap", *"12345678")
    assert count(ch, "cap") == 8
    policies.set("cap", "^cap", {"max-length": 3})
    if RABBITMQCTL is None:
        assert count(ch, "cap") == 3  # Leveret applies a policy before set_policy returns
    assert wait_for(lambda: count(ch, "cap") == 3)  # Leveret: at once; RabbitMQ: a moment later
    assert bodies(ch, "cap") == ["6", "7", "8"]


def test_lowering_max_length_dead_letters_the_excess(ch: BlockingChannel, policies: Policies) -> None:
    declare(ch, "dropped")
    declare(ch, "full")
    publish(ch, "full", *"1234")
    policies.set(
        "cap",
        "^full$",
        {"max-length": 1, "dead-letter-exchange": "", "dead-letter-routing-key": "dropped"},
    )
    assert wait_for(lambda: count(ch, "dropped") == 3)
    assert bodies(ch, "dropped") == ["1", "2", "3"] and bodies(ch, "full") == ["4"]


def test_reject_publish_policy_drops_nothing_queued(ch: BlockingChannel, policies: Policies) -> None:
    declare(ch, "keep")
    publish(ch, "keep", *"1234")
    policies.set("cap", "^keep$", {"max-length": 1, "overflow": "reject-publish"})
    assert count(ch, "keep") == 4


def test_later_message_ttl_does_not_expire_queued_messages(ch: BlockingChannel, policies: Policies) -> None:
    declare(ch, "held")
    declare(ch, "fresh")
    publish(ch, "held", "old")
    policies.set("ttl", "^(held|fresh)$", {"message-ttl": 50})
    publish(ch, "fresh", "new")
    assert wait_for(lambda: count(ch, "fresh") == 0)  # the TTL is in force for new messages
    assert bodies(ch, "held") == ["old"]


def test_operator_policy_merge(api: Api, api_ch: BlockingChannel) -> None:
    """6.4's probe: the lower value of each numeric key."""
    policy(api, "user", "^op", {"max-length": 3, "message-ttl": 600000})
    policy(api, "ops", "^op", {"max-length": 2, "message-ttl": 900000}, operator=True)
    declare(api_ch, "op", "classic")
    q = queue_json(api, "op")
    assert q["policy"] == "user" and q["operator_policy"] == "ops"
    assert q["effective_policy_definition"] == {"max-length": 2, "message-ttl": 600000}
    publish(api_ch, "op", "1", "2", "3")
    assert count(api_ch, "op") == 2
    declare(api_ch, "plain")
    assert queue_json(api, "plain")["effective_policy_definition"] == {}
    policy(api, "ae", "^x", {"alternate-exchange": "un"}, apply_to="exchanges")
    api_ch.exchange_declare("x1", "direct")
    assert api.get("/api/exchanges/%2F/x1")["policy"] == "ae"
    assert api.get("/api/operator-policies/%2F/ops")["definition"] == {"max-length": 2, "message-ttl": 900000}


@pytest.mark.parametrize(
    ("definition", "text"),
    [
        ({"max-length": "abc"}, '<<"abc">> is not a valid maximum length'),
        ({"max-length": -1}, "-1 is not a valid maximum length"),
        ({"foo-bar": 1}, '[{<<"foo-bar">>,1}] are not recognised policy settings'),
        ({}, "no policy provided"),
    ],
)
def test_validation_texts(api: Api, definition: dict[str, Any], text: str) -> None:
    status, body = api.request("PUT", "/api/policies/%2F/bad", {"pattern": ".*", "definition": definition})
    escaped = text.replace("<", "&lt;").replace(">", "&gt;")
    assert (status, body) == (400, {"error": "bad_request", "reason": f"Validation failed\n\n{escaped}\n"})


def test_validation_of_pattern_apply_to_and_operator_keys(api: Api) -> None:
    def reason(path: str, body: dict[str, Any]) -> str:
        status, reply = api.request("PUT", path, body)
        assert status == 400, reply
        return str(reply["reason"])

    assert reason("/api/policies/%2F/b", {"pattern": "(abc", "definition": {"max-length": 1}}) == (
        'Validation failed\n\npattern should be regular expression but is invalid: {"missing )",4}\n'
    )
    assert reason(
        "/api/policies/%2F/b", {"pattern": "a", "definition": {"max-length": 1}, "apply-to": "queuesx"}
    ) == ("Validation failed\n\napply-to 'queuesx' unrecognised; should be 'queues', 'exchanges' or 'all'\n")
    assert reason(
        "/api/operator-policies/%2F/b", {"pattern": "a", "definition": {"overflow": "drop-head"}}
    ) == (
        'Validation failed\n\n[{&lt;&lt;"overflow"&gt;&gt;,&lt;&lt;"drop-head"&gt;&gt;}] are not recognised '
        "policy settings\n"
    )
    assert api.get("/api/policies") == []


def test_listing_and_not_found(api: Api) -> None:
    policy(api, "b", "^b", {"max-length": 1}, priority=2, apply_to="queues")
    policy(api, "a", "^a", {"alternate-exchange": "x"}, apply_to="exchanges")
    shape = {"vhost": "/", "name": "b", "pattern": "^b", "apply-to": "queues", "definition": {"max-length": 1},
             "priority": 2}  # fmt: skip
    assert api.get("/api/policies/%2F/b") == shape
    assert [p["name"] for p in api.get("/api/policies")] == ["a", "b"]
    assert [p["name"] for p in api.get("/api/policies/%2F")] == ["a", "b"]
    assert api.get("/api/operator-policies") == []
    assert api.request("GET", "/api/policies/%2F/nope")[0] == 404
    assert api.request("DELETE", "/api/policies/%2F/nope")[0] == 404
    assert api.request("GET", "/api/policies/nohost")[0] == 404
    api.ok("DELETE", "/api/policies/%2F/b")
    assert [p["name"] for p in api.get("/api/policies")] == ["a"]


def test_authorisation(api: Api) -> None:
    api.ok("PUT", "/api/users/pm", {"password": "pw", "tags": "policymaker"}, 201)
    api.ok("PUT", "/api/users/mg", {"password": "pw", "tags": "management"}, 201)
    body = {"pattern": ".*", "definition": {"max-length": 1}}
    # a policymaker needs access to the vhost
    assert api.request("PUT", "/api/policies/%2F/p", body, ("pm", "pw"))[0] == 401
    api.ok("PUT", "/api/permissions/%2F/pm", {"configure": "", "write": "", "read": ""}, 201)
    assert api.request("PUT", "/api/policies/%2F/p", body, ("pm", "pw"))[0] == 201
    assert (
        api.request("PUT", "/api/policies/%2F/p", body, ("mg", "pw"))[1]["reason"] == "Not policymaker user"
    )
    status, reply = api.request("PUT", "/api/operator-policies/%2F/p", body, ("pm", "pw"))
    assert (status, reply["reason"]) == (401, "Not administrator user")
