"""Restart-safety as a property (issue 11): for random sequences of accepted operations, a clean
restart (SIGTERM) and a kill -9 reproduce the same durable state.

Each example runs a real ``leveret server`` (SQLite data dir, its own) and drives it over a real
socket (:mod:`tests.durability.amqp_ops`, tables encoded by hand so every wire type goes out):
declares of durable and transient queues and exchanges with random arguments of any accepted
shape, binds and unbinds (queue and exchange-to-exchange), persistent and transient publishes
with random properties and headers (every one confirmed), gets settled by ack, reject and nack
(requeued or dead-lettered), TTL expiry and max-length, purges and deletes. Whatever the broker
refuses is simply not part of the state.

Then:

1. the state settles (short TTLs run out) and is read: ``/api/definitions`` and every message of
   every queue by basic.get, put back by closing the channel; read again until two readings
   agree. This is S1.
2. one more durable queue and a persistent message into it (never delivered); SIGTERM; start.
   The state read now must be the durable part of S1 -- durable queues and exchanges, bindings
   between durable ends, and in durable queues the persistent messages, same bodies, same
   property bytes, same order -- plus the new queue. Messages read in step 1 come back
   redelivered=true, the new one redelivered=false.
3. a durable exchange, a queue bound to it and a message published through it; kill -9 as soon
   as the confirm is in; start. The state must be that of step 2 plus these (after a kill -9
   every recovered message is flagged redelivered, as documented).

The state model (:class:`Model`) knows what was declared durable and which message bodies were
published persistent; it decides what must survive.

Bounded for CI: ``LEVERET_RESTART_EXAMPLES`` examples (default 15; each starts the broker three
times; about 4 s each here). Run it longer with e.g.
``LEVERET_RESTART_EXAMPLES=500 pytest tests/durability/test_restart_property.py --timeout 0``
(pytest-timeout stops any test after 120 s by default; ``LEVERET_RESTART_SHRINK=0`` skips the
minutes-long shrinking of a failure).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from tests.durability.amqp_ops import INT_RANGES, Got, Ops, Refused, Typed, encode_properties
from tests.helpers import ProcessBroker
from tests.http_client import http_request

EXAMPLES = int(os.environ.get("LEVERET_RESTART_EXAMPLES", "15"))
SHORT_TTLS = (0, 1, 5, 20)  # ms: run out before the state is read
LONG_TTL = 3_600_000  # ms: never runs out during a test
SETTLE = 0.1  # s: longer than every short TTL

# ---- strategies ----------------------------------------------------------------------------------


def _fits(v: int) -> list[str]:
    return [k for k, (lo, hi) in INT_RANGES.items() if lo <= v <= hi]


@st.composite
def typed_int(draw: st.DrawFn, values: st.SearchStrategy[int]) -> Typed:
    """An integer sent as any wire type that holds it (b B s u I i l)."""
    v = draw(values)
    return draw(st.sampled_from(_fits(v))), v


keys = st.one_of(
    st.sampled_from(["a", "b", "key", "x-custom", "$bytes", "$dict"]), st.text(min_size=1, max_size=12)
)
text_values = st.one_of(st.text(max_size=20), st.text(min_size=200, max_size=2000))
leaves: st.SearchStrategy[Typed] = st.one_of(
    st.booleans().map(lambda v: ("t", v)),
    *(st.integers(lo, hi).map(lambda v, k=k: (k, v)) for k, (lo, hi) in INT_RANGES.items()),
    st.floats(width=32, allow_nan=False).map(lambda v: ("f", v)),
    st.floats(allow_nan=False).map(lambda v: ("d", v)),
    st.tuples(st.integers(0, 9), st.integers(0, 2**32 - 1)).map(lambda v: ("D", v)),
    text_values.map(lambda v: ("S", v)),
    st.binary(max_size=20).map(lambda v: ("S", v)),  # a longstr that is not UTF-8
    st.binary(max_size=40).map(lambda v: ("x", v)),
    st.integers(0, 2**40).map(lambda v: ("T", v)),
    st.just(("V", None)),
)


def _table(inner: st.SearchStrategy[Typed], max_size: int = 3) -> st.SearchStrategy[list[tuple[str, Typed]]]:
    return st.lists(st.tuples(keys, inner), max_size=max_size, unique_by=lambda kv: kv[0])


values: st.SearchStrategy[Typed] = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda v: ("A", v)), _table(inner).map(lambda v: ("F", v))
    ),
    max_leaves=8,
)
custom_tables = _table(values, max_size=4)


def _name_ok(name: str) -> bool:
    return 0 < len(name.encode()) <= 255 and not name.startswith(("amq.", "final-"))


names = st.one_of(
    st.from_regex(r"[a-z][a-z0-9._-]{0,10}", fullmatch=True),
    st.text(min_size=1, max_size=40),
    st.text(alphabet="aé€😀", min_size=64, max_size=255).map(
        lambda s: s.encode()[:255].decode("utf-8", "ignore")
    ),
).filter(_name_ok)


@dataclass
class Scenario:
    queues: list[str]
    exchanges: list[str]
    setup: list[tuple[Any, ...]]
    ops: list[tuple[Any, ...]]


@st.composite
def queue_args(
    draw: st.DrawFn, exchanges: list[str], queues: list[str], anchor: bool = False
) -> list[tuple[str, Typed]]:
    """Arguments of a queue; an ``anchor`` queue keeps its messages (no short TTL, no max-length)."""
    args: list[tuple[str, Typed]] = []
    if draw(st.integers(0, 3)) == 0:
        ttls = [LONG_TTL] if anchor else [*SHORT_TTLS, LONG_TTL]
        args.append(("x-message-ttl", draw(typed_int(st.sampled_from(ttls)))))
    if not anchor and draw(st.integers(0, 3)) == 0:
        args.append(("x-max-length", draw(typed_int(st.integers(0, 4)))))
        if draw(st.booleans()):
            overflow = draw(st.sampled_from(["drop-head", "reject-publish", "reject-publish-dlx"]))
            args.append(("x-overflow", ("S", overflow)))
    if draw(st.integers(0, 2)) == 0:
        args.append(("x-dead-letter-exchange", ("S", draw(st.sampled_from(["", *exchanges])))))
        if draw(st.booleans()):
            args.append(("x-dead-letter-routing-key", ("S", draw(st.sampled_from(["dl", *queues])))))
    if draw(st.integers(0, 5)) == 0:
        args.append(("x-max-priority", draw(typed_int(st.integers(1, 9)))))
    if draw(st.integers(0, 5)) == 0:
        args.append(("x-queue-mode", ("S", "lazy")))
    taken = {k for k, _ in args}
    return args + [(k, v) for k, v in draw(custom_tables) if k not in taken]


@st.composite
def binding_args(draw: st.DrawFn) -> list[tuple[str, Typed]]:
    if draw(st.integers(0, 2)):
        return []
    args = draw(custom_tables)
    if draw(st.booleans()):
        match = draw(st.sampled_from(["all", "any", "all-with-x", "any-with-x"]))
        args = [("x-match", ("S", match)), *((k, v) for k, v in args if k != "x-match")]
    return args


@st.composite
def properties(draw: st.DrawFn) -> dict[str, Any]:
    props: dict[str, Any] = {"delivery_mode": draw(st.sampled_from([1, 2]))}
    optional = {
        "content_type": st.sampled_from(["text/plain", "application/json"]),
        "headers": custom_tables,
        "priority": st.integers(0, 9),
        "correlation_id": st.text(max_size=20).filter(lambda s: len(s.encode()) < 256),
        "expiration": st.sampled_from([*map(str, SHORT_TTLS), str(LONG_TTL)]),
        "message_id": st.text(max_size=30).filter(lambda s: len(s.encode()) < 256),
        "timestamp": st.integers(0, 2**33),
        "user_id": st.just("guest"),
        "app_id": st.just("restart-property"),
    }
    for name, strategy in optional.items():
        if draw(st.integers(0, 2)) == 0:
            props[name] = draw(strategy)
    return props


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    queues = draw(st.lists(names, min_size=2, max_size=4, unique=True))
    exchanges = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    setup: list[tuple[Any, ...]] = [
        (
            "declare_queue",
            q,
            i == 0 or draw(st.booleans()),
            draw(queue_args(exchanges, queues, anchor=i == 0)),
        )
        for i, q in enumerate(queues)
    ]
    for x in exchanges:
        xargs = draw(custom_tables) if draw(st.booleans()) else []
        if draw(st.integers(0, 3)) == 0:
            xargs = [("alternate-exchange", ("S", draw(st.sampled_from(exchanges)))), *xargs]
        kind = draw(st.sampled_from(["direct", "fanout", "topic", "headers"]))
        setup.append(("declare_exchange", x, kind, draw(st.booleans()), xargs))
    routing_keys = st.one_of(st.sampled_from(queues), st.sampled_from(["", "a", "a.b", "dl", "#"]))
    q, x = st.sampled_from(queues), st.sampled_from(exchanges)
    doomed = st.sampled_from(queues[1:])  # the first queue (durable, an anchor) is never purged or deleted
    sizes = st.sampled_from([0, 0, 0, 10, 300, 140_000])  # 140 kB: more than one body frame
    setup += [
        (
            "publish",
            "",
            name,
            {**draw(properties()), "delivery_mode": 2, "expiration": str(LONG_TTL)},
            draw(st.integers(1, 5)),
            draw(sizes),
        )
        for name in queues
    ]
    publish = st.tuples(
        st.just("publish"), st.one_of(st.just(""), x), routing_keys, properties(), st.integers(1, 4), sizes
    )
    bind = st.tuples(st.just("bind"), q, x, routing_keys, binding_args())
    settle = st.sampled_from(["ack", "reject-requeue", "reject-drop", "nack-requeue", "nack-drop"])
    op = st.one_of(
        publish, publish, publish,
        bind, bind, bind,
        st.tuples(st.just("bind_x"), x, x, routing_keys, binding_args()),
        st.tuples(st.just("bind_x"), x, x, routing_keys, binding_args()),
        st.tuples(st.just("unbind"), st.integers(0, 10)),
        st.tuples(st.just("unbind_x"), st.integers(0, 10)),
        st.tuples(st.just("get"), q, settle),
        st.tuples(st.just("get"), q, settle),
        st.tuples(st.just("purge"), doomed),
        st.tuples(st.just("delete_queue"), doomed),
        st.tuples(st.just("delete_exchange"), x),
        st.tuples(st.just("declare_queue"), q, st.booleans(), queue_args(exchanges, queues)),
        st.tuples(st.just("declare_exchange"), x, st.sampled_from(["direct", "fanout", "topic", "headers"]),
                  st.booleans(), custom_tables),
    )  # fmt: skip
    ops = draw(st.lists(op, min_size=5, max_size=25))
    return Scenario(queues, exchanges, setup, ops)


# ---- the state model -----------------------------------------------------------------------------


@dataclass
class Model:
    """What the broker accepted: enough to decide what must survive a restart."""

    queues: dict[str, bool] = field(default_factory=dict)  # name -> durable
    exchanges: dict[str, bool] = field(default_factory=dict)
    bindings: list[tuple[str, str, str, list[tuple[str, Typed]]]] = field(default_factory=list)  # queue
    xbindings: list[tuple[str, str, str, list[tuple[str, Typed]]]] = field(default_factory=list)
    persistent: dict[bytes, bool] = field(default_factory=dict)  # body -> published persistent
    refused: int = 0
    counter: int = 0

    def apply(self, ops: Ops, op: tuple[Any, ...]) -> None:
        kind = op[0]
        try:
            if kind == "declare_queue":
                _, name, durable, args = op
                ops.declare_queue(name, durable, args)
                self.queues.setdefault(name, durable)
            elif kind == "declare_exchange":
                _, name, type_, durable, args = op
                ops.declare_exchange(name, type_, durable, args)
                self.exchanges.setdefault(name, durable)
            elif kind == "bind":
                _, q, x, key, args = op
                ops.bind(q, x, key, args)
                self.bindings.append((q, x, key, args))
            elif kind == "unbind" and self.bindings:
                q, x, key, args = self.bindings.pop(op[1] % len(self.bindings))
                ops.unbind(q, x, key, args)
            elif kind == "bind_x":
                _, dest, source, key, args = op
                ops.bind_exchange(dest, source, key, args)
                self.xbindings.append((dest, source, key, args))
            elif kind == "unbind_x" and self.xbindings:
                dest, source, key, args = self.xbindings.pop(op[1] % len(self.xbindings))
                ops.bind_exchange(dest, source, key, args, unbind=True)
            elif kind == "publish":
                _, exchange, key, props, count, size = op
                raw = encode_properties(props)
                for _ in range(count):
                    self.counter += 1
                    body = b"m%d:" % self.counter + bytes(range(256)) * (size // 256) + bytes(size % 256)
                    self.persistent[body] = props["delivery_mode"] == 2
                    ops.publish(exchange, key, raw, body)
            elif kind == "get":
                _, q, how = op
                got = ops.get(q)
                if got is not None:
                    ops.settle(got[0], how)
                    ops.barrier()
            elif kind == "purge":
                ops.purge(op[1])
            elif kind == "delete_queue":
                ops.delete_queue(op[1])
                self.queues.pop(op[1], None)
            elif kind == "delete_exchange":
                ops.delete_exchange(op[1])
                self.exchanges.pop(op[1], None)
        except Refused:
            self.refused += 1


# ---- reading the state ---------------------------------------------------------------------------


@dataclass
class State:
    queues: list[dict[str, Any]]
    exchanges: list[dict[str, Any]]
    bindings: list[dict[str, Any]]
    messages: dict[str, list[Got]]

    def content(self) -> tuple[Any, ...]:
        """Everything but the redelivered flags."""
        msgs = {
            q: [(m.exchange, m.routing_key, m.properties, m.body) for m in ms]
            for q, ms in self.messages.items()
        }
        return self.queues, self.exchanges, self.bindings, msgs


def read_state(b: ProcessBroker) -> State:
    status, defs, _ = http_request(f"http://127.0.0.1:{b.http_port}/api/definitions", "GET")
    assert status == 200, (status, defs)
    # Sorted by canonical text: the order of keys in an arguments table means nothing.
    order = lambda d: sorted(d, key=lambda item: json.dumps(item, sort_keys=True))  # noqa: E731
    queues = order(defs["queues"])
    ops = Ops(b.port)
    try:
        messages = {q["name"]: ops.read_all(q["name"]) for q in queues}
    finally:
        ops.close()
    return State(queues, order(defs["exchanges"]), order(defs["bindings"]), messages)


def read_settled(b: ProcessBroker) -> State:
    """Read until two readings agree: reading drops expired messages (and dead-letters them)."""
    time.sleep(SETTLE)
    state = read_state(b)
    for _ in range(5):
        again = read_state(b)
        if again.content() == state.content():
            return again
        state = again
    raise AssertionError("the state does not settle")


def durable_part(state: State, model: Model) -> tuple[Any, ...]:
    """What must survive a restart, by the model: durable queues and exchanges, bindings whose two
    ends are durable, persistent messages in durable queues (in order, with their property bytes).

    ``state`` is read before the restart; the broker must hold what the model says it accepted.
    """
    assert {q["name"]: q["durable"] for q in state.queues} == model.queues
    assert {x["name"]: x["durable"] for x in state.exchanges} == model.exchanges
    durable_q = {name for name, durable in model.queues.items() if durable}

    def durable_x(name: str) -> bool:
        return name.startswith("amq.") or model.exchanges.get(name, False)

    bindings = [
        bd
        for bd in state.bindings
        if durable_x(bd["source"])
        and (
            bd["destination"] in durable_q
            if bd["destination_type"] == "queue"
            else durable_x(bd["destination"])
        )
    ]
    messages = {
        q: [(m.exchange, m.routing_key, m.properties, m.body) for m in ms if model.persistent[m.body]]
        for q, ms in state.messages.items()
        if q in durable_q
    }
    return (
        [q for q in state.queues if q["durable"]],
        [x for x in state.exchanges if x["durable"]],
        bindings,
        messages,
    )


# ---- the property --------------------------------------------------------------------------------

FINAL_PROPS = encode_properties({"delivery_mode": 2, "headers": [("n", ("l", 2**40)), ("s", ("S", "é"))]})


@pytest.fixture
def data_dirs(tmp_path: Path) -> Iterator[Iterator[Path]]:
    yield (tmp_path / f"example-{i}" for i in range(10**6))


@pytest.fixture
def brokers() -> Iterator[list[ProcessBroker]]:
    made: list[ProcessBroker] = []
    yield made
    for b in made:
        b.kill()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    # Each example starts the broker three times: shrinking a failure takes minutes (skip it with
    # LEVERET_RESTART_SHRINK=0 while debugging).
    phases=[p for p in Phase if p != Phase.shrink or os.environ.get("LEVERET_RESTART_SHRINK", "1") != "0"],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(scenario=scenarios())
def test_restart_and_kill_reproduce_the_durable_state(
    scenario: Scenario, data_dirs: Iterator[Path], brokers: list[ProcessBroker]
) -> None:
    data_dir = next(data_dirs)

    def start() -> ProcessBroker:
        b = ProcessBroker(data_dir).start()
        brokers.append(b)
        return b

    b = start()
    model = Model()
    ops = Ops(b.port)
    for op in scenario.setup + scenario.ops:
        model.apply(ops, op)
    s1 = read_settled(b)
    expected = durable_part(s1, model)
    # What the examples exercise (pytest --hypothesis-show-statistics).
    kept = sum(map(len, expected[3].values()))
    event(f"operations refused: {min(model.refused, 5)}{'+' if model.refused >= 5 else ''}")
    event(f"durable queues / bindings kept: {len(expected[0])} / {len(expected[2])}")
    event(f"persistent messages kept: {kept if kept < 3 else '3-9' if kept < 10 else '10+'}")

    # 2. A message never delivered, then a clean restart.
    ops.declare_queue("final-a", True, [])
    assert ops.publish("", "final-a", FINAL_PROPS, b"final-a")
    ops.close()
    assert b.terminate() == 0
    b = start()
    s2 = read_state(b)
    assert [(m.routing_key, m.properties, m.body, m.redelivered) for m in s2.messages["final-a"]] == [
        ("final-a", FINAL_PROPS, b"final-a", False)
    ]
    assert_same(without(s2, queues={"final-a"}).content(), expected, "after SIGTERM")
    assert all(m.redelivered for q, ms in s2.messages.items() if q != "final-a" for m in ms), (
        "read before: redelivered"
    )

    # 3. Metadata and a message confirmed just before a kill -9.
    ops = Ops(b.port)
    ops.declare_exchange("final-x", "fanout", True, [])
    ops.declare_queue("final-b", True, [])
    ops.bind("final-b", "final-x", "", [])
    assert ops.publish("final-x", "", FINAL_PROPS, b"final-b")
    b.kill()
    ops.close()
    b = start()
    s3 = read_state(b)
    assert [(m.exchange, m.body) for m in s3.messages["final-b"]] == [("final-x", b"final-b")]
    assert [(m.routing_key, m.body) for m in s3.messages["final-a"]] == [("final-a", b"final-a")]
    assert [(bd["source"], bd["destination"]) for bd in s3.bindings if bd["source"] == "final-x"] == [
        ("final-x", "final-b")
    ]
    assert_same(
        without(s3, queues={"final-a", "final-b"}, exchanges={"final-x"}).content(), expected, "after kill -9"
    )
    assert all(m.redelivered for ms in s3.messages.values() for m in ms), "after a kill -9: all redelivered"
    b.kill()


def assert_same(actual: tuple[Any, ...], expected: tuple[Any, ...], when: str) -> None:
    """Equal, or an AssertionError that says what differs, briefly (names can be 255 bytes)."""
    if actual == expected:
        return
    problems = []
    for what, a, e in zip(("queues", "exchanges", "bindings"), actual[:3], expected[:3], strict=True):
        problems += [f"{what}: missing {_short(x)}" for x in e if x not in a]
        problems += [f"{what}: unexpected {_short(x)}" for x in a if x not in e]
    msgs_a, msgs_e = actual[3], expected[3]
    for q in sorted(set(msgs_a) | set(msgs_e)):
        a, e = msgs_a.get(q), msgs_e.get(q)
        if a != e:
            problems.append(f"messages of {_short(q)}: {_short(a)} != expected {_short(e)}")
    raise AssertionError(f"{when}: " + "\n".join(problems or ["order differs"]))


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) < 400 else text[:400] + "..."


def without(
    state: State,
    *,
    queues: frozenset[str] | set[str] = frozenset(),
    exchanges: frozenset[str] | set[str] = frozenset(),
) -> State:
    """``state`` without the named queues and exchanges (and the bindings from or to them)."""
    return State(
        [q for q in state.queues if q["name"] not in queues],
        [x for x in state.exchanges if x["name"] not in exchanges],
        [
            bd
            for bd in state.bindings
            if bd["source"] not in exchanges
            and bd["destination"] not in (queues if bd["destination_type"] == "queue" else exchanges)
        ],
        {q: ms for q, ms in state.messages.items() if q not in queues},
    )
