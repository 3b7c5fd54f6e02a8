"""Routing in the model: exchange-to-exchange bindings, headers exchanges, auto-delete, recovery.

Expected behaviour was checked against RabbitMQ 3.10.8 (the same operations over pika).
"""

from __future__ import annotations

from typing import Any

import pytest
from pamqp import commands as C
from pamqp.header import ContentHeader

from leveret.errors import ChannelError, ReplyCode
from leveret.model import stats
from leveret.model.broker import Broker
from leveret.model.headers import Matcher, headers_table
from leveret.model.vhost import VHost
from leveret.storage.base import BindingRecord
from leveret.storage.memory import MemoryStore

from .conftest import World


def raw_props(headers: dict[str, Any] | None = None, **kw: Any) -> bytes:
    """The raw property section a publisher sends, as pamqp writes it."""
    frame = ContentHeader(0, 5, C.Basic.Properties(headers=headers, **kw)).marshal()
    return frame[12:]  # class id (2), weight (2), body size (8): the rest is the property section


@pytest.fixture
def vh(world: World) -> VHost:
    return world.broker.vhosts["/"]


def routed(vh: VHost, exchange: str, rk: str = "", headers: dict[str, Any] | None = None) -> list[str]:
    return [q.name for q in vh.route(exchange, rk, raw_props(headers))]


def declare(vh: VHost, *queues: str, durable: bool = False) -> None:
    for q in queues:
        vh.declare_queue(None, q, durable=durable)


def err(fn: Any, *args: Any) -> tuple[int, str]:
    with pytest.raises(ChannelError) as e:
        fn(*args)
    return e.value.code, e.value.detail


# ---- headers table decoding ---------------------------------------------------------------------


def test_headers_table_from_raw_properties() -> None:
    h = {"a": 1, "b": "x", "t": {"k": True}}
    assert headers_table(raw_props(h, content_type="text/plain", content_encoding="gzip", delivery_mode=2)) == h
    assert headers_table(raw_props(h)) == h
    assert headers_table(raw_props(None, content_type="text/plain")) == {}
    assert headers_table(b"\x00\x00") == {}
    assert headers_table(b"") == {}
    assert headers_table(b"\x20\x00\x00\x00\x00\x09") == {}  # truncated table: no headers, no exception


# ---- exchange-to-exchange -----------------------------------------------------------------------


def test_e2e_chain_with_cycle_delivers_each_queue_once(vh: VHost) -> None:
    for name, type_ in (("a", "topic"), ("b", "direct"), ("c", "fanout")):
        vh.declare_exchange(name, type_)
    declare(vh, "qa", "qb", "qc")
    vh.bind_exchange("b", "a", "k.#", {})
    vh.bind_exchange("c", "b", "k.x", {})
    vh.bind_exchange("a", "c", "", {})  # the cycle a -> b -> c -> a
    vh.bind_exchange("a", "a", "#", {})  # and a self-loop
    vh.bind_exchange("b", "a", "#", {})  # a second path a -> b
    vh.bind(None, "qa", "a", "k.*", {})
    vh.bind(None, "qb", "b", "k.x", {})
    vh.bind(None, "qc", "c", "", {})
    vh.bind(None, "qc", "b", "k.x", {})  # qc reachable twice
    assert sorted(routed(vh, "a", "k.x")) == ["qa", "qb", "qc"]
    assert sorted(routed(vh, "b", "k.x")) == ["qa", "qb", "qc"]
    assert sorted(routed(vh, "c", "zz")) == ["qc"]
    assert routed(vh, "a", "other") == []


def test_publish_through_e2e_keeps_original_exchange(world: World, vh: VHost) -> None:
    vh.declare_exchange("src", "fanout")
    vh.declare_exchange("dst", "direct")
    declare(vh, "q")
    vh.bind_exchange("dst", "src", "", {})
    vh.bind(None, "q", "dst", "rk", {})
    assert world.broker.publish("/", "src", "rk", b"\x00\x00", b"m", False)[0]
    assert not world.broker.publish("/", "src", "nope", b"\x00\x00", b"m", False)[0]
    (m,) = vh.queues["q"].ready
    assert (m.exchange, m.routing_key, m.body) == ("src", "rk", b"m")


def test_internal_exchange_routes_through_e2e_but_refuses_publish(world: World, vh: VHost) -> None:
    vh.declare_exchange("front", "direct")
    vh.declare_exchange("inner", "fanout", internal=True)
    declare(vh, "q")
    vh.bind(None, "q", "inner", "", {})
    vh.bind_exchange("inner", "front", "i", {})
    assert world.broker.publish("/", "front", "i", b"\x00\x00", b"m", False)[0]
    with pytest.raises(ChannelError) as e:
        world.broker.publish("/", "inner", "i", b"\x00\x00", b"m", False)
    assert e.value.code == ReplyCode.ACCESS_REFUSED
    assert e.value.detail == "cannot publish to internal exchange 'inner' in vhost '/'"


def test_bind_errors_as_rabbitmq(vh: VHost) -> None:
    vh.declare_exchange("x", "topic")
    default = (ReplyCode.ACCESS_REFUSED, "operation not permitted on the default exchange")
    assert err(vh.bind_exchange, "nope-dst", "x", "k", {}) == (404, "no exchange 'nope-dst' in vhost '/'")
    assert err(vh.bind_exchange, "x", "nope-src", "k", {}) == (404, "no exchange 'nope-src' in vhost '/'")
    assert err(vh.bind_exchange, "nope-dst", "nope-src", "k", {}) == (404, "no exchange 'nope-src' in vhost '/'")
    assert err(vh.bind_exchange, "x", "", "k", {}) == default
    assert err(vh.bind_exchange, "", "x", "k", {}) == default
    assert err(vh.bind_exchange, "", "nope", "k", {}) == default
    assert err(vh.unbind_exchange, "x", "", "k", {}) == default
    assert err(vh.bind, None, "nope-q", "nope-x", "k", {}) == (404, "no exchange 'nope-x' in vhost '/'")
    assert err(vh.bind, None, "nope-q", "", "k", {}) == default
    # Unbinding what is not there (binding, exchange or queue) succeeds.
    vh.unbind_exchange("x", "x", "zzz", {})
    vh.unbind_exchange("nope-dst", "x", "zzz", {})
    vh.unbind_exchange("x", "nope-src", "zzz", {})
    declare(vh, "q")
    vh.unbind(None, "q", "x", "zzz", {})
    vh.unbind(None, "q", "nope", "zzz", {})
    vh.unbind(None, "nope", "x", "zzz", {})


def test_binding_identity_includes_arguments(vh: VHost) -> None:
    vh.declare_exchange("d", "direct")
    declare(vh, "q")
    vh.bind(None, "q", "d", "k", {"a": 1})
    vh.bind(None, "q", "d", "k", {"a": 2})
    vh.bind(None, "q", "d", "k", {"a": 2})  # the same binding again: no-op
    assert routed(vh, "d", "k") == ["q"]  # bound twice, delivered once
    assert len(vh.exchanges["d"].bindings) == 2
    vh.unbind(None, "q", "d", "k", {"a": 1})
    vh.unbind(None, "q", "d", "k", {})  # no such binding: the {"a": 2} one stays
    assert routed(vh, "d", "k") == ["q"]
    vh.unbind(None, "q", "d", "k", {"a": 2})
    assert routed(vh, "d", "k") == []


def test_delete_exchange_removes_bindings_from_and_to_it(vh: VHost) -> None:
    vh.declare_exchange("a", "fanout")
    vh.declare_exchange("c", "fanout")
    declare(vh, "q")
    vh.bind_exchange("c", "a", "", {})
    vh.bind(None, "q", "c", "", {})
    vh.delete_exchange("c", if_unused=False)
    assert vh.exchanges["a"].bindings == {}
    vh.declare_exchange("c", "fanout")
    vh.bind(None, "q", "c", "", {})
    assert routed(vh, "a") == []  # the old a -> c binding did not come back


def test_if_unused_counts_only_bindings_from_the_exchange(vh: VHost) -> None:
    vh.declare_exchange("a", "fanout")
    vh.declare_exchange("dst", "fanout")
    vh.bind_exchange("dst", "a", "zz", {})
    vh.delete_exchange("dst", if_unused=True)  # only a destination: not "in use"
    assert "dst" not in vh.exchanges
    vh.declare_exchange("src", "fanout")
    vh.bind_exchange("a", "src", "zz", {})
    assert err(vh.delete_exchange, "src", True) == (406, "exchange 'src' in vhost '/' in use")


def test_stats_list_exchange_destinations(world: World, vh: VHost) -> None:
    vh.declare_exchange("a", "topic")
    vh.declare_exchange("b", "headers")
    vh.bind_exchange("b", "a", "k.#", {"x": 1})
    snaps = [s for s in stats.bindings(world.broker, "/") if s.source == "a"]
    assert [(s.destination, s.destination_type, s.routing_key, s.arguments) for s in snaps] == [
        ("b", "exchange", "k.#", {"x": 1})
    ]


# ---- auto-delete --------------------------------------------------------------------------------


def test_auto_delete_exchange_goes_with_its_last_binding(world: World, vh: VHost) -> None:
    vh.declare_exchange("ad", "direct", auto_delete=True)
    declare(vh, "q")
    vh.bind(None, "q", "ad", "a", {})
    vh.bind(None, "q", "ad", "b", {})
    vh.unbind(None, "q", "ad", "a", {})
    assert "ad" in vh.exchanges
    vh.unbind(None, "q", "ad", "b", {})
    assert "ad" not in vh.exchanges

    vh.declare_exchange("ad", "direct", auto_delete=True)  # never bound: stays
    vh.unbind(None, "q", "ad", "zz", {})  # removing nothing does not delete it
    assert "ad" in vh.exchanges
    vh.bind(None, "q", "ad", "a", {})
    ch, _ = world.channel()
    world.broker.delete_queue("/", "q", if_unused=False, if_empty=False, conn=None)
    assert "ad" not in vh.exchanges  # the queue's deletion removed its last binding

    vh.declare_exchange("ad", "direct", auto_delete=True)
    vh.declare_exchange("b", "direct")
    vh.bind_exchange("b", "ad", "a", {})
    vh.unbind_exchange("b", "ad", "a", {})
    assert "ad" not in vh.exchanges

    vh.declare_exchange("ad", "direct", auto_delete=True)
    vh.declare_exchange("gone", "direct")
    vh.bind_exchange("gone", "ad", "a", {})
    vh.delete_exchange("gone", if_unused=False)
    assert "ad" not in vh.exchanges  # its destination's deletion removed its last binding

    vh.declare_exchange("ad", "direct", auto_delete=True)
    vh.bind_exchange("ad", "b", "a", {})
    vh.unbind_exchange("ad", "b", "a", {})
    assert "ad" in vh.exchanges  # bindings *to* it do not count


def test_auto_delete_cascades_along_a_chain(vh: VHost) -> None:
    vh.declare_exchange("x1", "fanout", auto_delete=True)
    vh.declare_exchange("x2", "fanout", auto_delete=True)
    declare(vh, "q")
    vh.bind_exchange("x2", "x1", "", {})
    vh.bind(None, "q", "x2", "", {})
    vh.unbind(None, "q", "x2", "", {})  # x2 loses its last binding, goes, and so x1 loses its own
    assert "x1" not in vh.exchanges and "x2" not in vh.exchanges


# ---- headers exchange ---------------------------------------------------------------------------

SPECS: dict[str, dict[str, Any]] = {
    "all": {"x-match": "all", "a": 1, "b": "x"},
    "any": {"x-match": "any", "a": 1, "b": "x"},
    "none": {"a": 1, "b": "x"},
    "empty": {},
    "emptyany": {"x-match": "any"},
    "allx": {"x-match": "all-with-x", "x-k": "v", "a": 1},
    "anyx": {"x-match": "any-with-x", "x-k": "v"},
    "allxk": {"x-match": "all", "x-k": "v", "a": 1},
    "anyxk": {"x-match": "any", "x-k": "v"},
    "void": {"x-match": "all", "a": None},
    "bool": {"a": True},
    "str": {"b": "x"},
    "nested": {"t": {"k": 1}},
    "arr": {"l": [1, 2]},
}
MESSAGES: dict[str, dict[str, Any] | None] = {
    "a1b": {"a": 1, "b": "x"},
    "a1": {"a": 1},
    "b": {"b": "x"},
    "a2": {"a": 2},
    "none": None,
    "emptyh": {},
    "xk": {"x-k": "v", "a": 1},
    "xk-only": {"x-k": "v"},
    "atrue": {"a": True},
    "bbytes": {"b": b"x"},
    "nested": {"t": {"k": 1}},
    "arr": {"l": [1, 2]},
    "extra": {"a": 1, "b": "x", "c": 3},
    "along": {"a": 2**40},
}
# What RabbitMQ 3.10.8 routed, binding by binding.
EXPECTED = {
    "all": ["a1b", "extra"],
    "any": ["a1", "a1b", "b", "bbytes", "extra", "xk"],
    "none": ["a1b", "extra"],
    "empty": sorted(MESSAGES),
    "emptyany": [],
    "allx": ["xk"],
    "anyx": ["xk", "xk-only"],
    "allxk": ["a1", "a1b", "extra", "xk"],
    "anyxk": [],
    "void": ["a1", "a1b", "a2", "along", "atrue", "extra", "xk"],
    "bool": ["atrue"],
    "str": ["a1b", "b", "bbytes", "extra"],
    "nested": ["nested"],
    "arr": ["arr"],
}


def test_headers_matching_as_rabbitmq() -> None:
    got = {
        spec: sorted(m for m, h in MESSAGES.items() if Matcher(args).matches(h or {})) for spec, args in SPECS.items()
    }
    assert got == EXPECTED


def test_headers_numbers_and_decimals() -> None:
    from decimal import Decimal

    assert Matcher({"a": 1}).matches({"a": 1.0})
    assert not Matcher({"a": 1}).matches({"a": True})
    assert not Matcher({"a": 1.5}).matches({"a": Decimal("1.5")})
    assert Matcher({"a": Decimal("1.5")}).matches({"a": Decimal("1.5")})


def test_headers_exchange_routes_queues_and_exchanges(vh: VHost) -> None:
    vh.declare_exchange("h", "headers")
    vh.declare_exchange("f", "fanout")
    declare(vh, "q1", "q2", "q3")
    vh.bind(None, "q1", "h", "", {"x-match": "any", "format": "pdf", "type": "report"})
    vh.bind(None, "q2", "h", "", {"format": "pdf", "type": "log"})
    vh.bind(None, "q2", "h", "", {"x-match": "any", "urgent": None})  # a second binding, other arguments
    vh.bind_exchange("f", "h", "", {"type": "report"})
    vh.bind(None, "q3", "f", "", {})
    assert sorted(routed(vh, "h", "", {"format": "pdf", "type": "report"})) == ["q1", "q3"]
    assert sorted(routed(vh, "h", "", {"format": "pdf", "type": "log"})) == ["q1", "q2"]
    assert routed(vh, "h", "", {"urgent": False}) == ["q2"]
    assert routed(vh, "h", "", None) == []
    assert sorted(routed(vh, "amq.match", "")) == []
    vh.bind(None, "q1", "amq.headers", "", {})
    assert routed(vh, "amq.headers", "anything") == ["q1"]  # no arguments: all of nothing matches


def test_headers_binding_validation(vh: VHost) -> None:
    vh.declare_exchange("h", "headers")
    declare(vh, "q")
    bad_value = (406, 'Invalid x-match field value <<"foo">>; expected all, any, all-with-x, or any-with-x')
    assert err(vh.bind, None, "q", "h", "", {"x-match": "foo"}) == bad_value
    assert err(vh.bind_exchange, "amq.fanout", "h", "", {"x-match": "foo"}) == bad_value
    assert err(vh.bind, None, "q", "h", "", {"x-match": True}) == (
        406,
        "Invalid x-match field type bool (value true); expected longstr",
    )
    vh.bind(None, "q", "amq.direct", "", {"x-match": "foo"})  # other types do not look at x-match


def test_route_decodes_headers_only_for_headers_exchanges(vh: VHost, monkeypatch: pytest.MonkeyPatch) -> None:
    import leveret.model.vhost as vhost_module

    calls: list[bytes] = []

    def spy(raw: bytes) -> dict[str, Any]:
        calls.append(raw)
        return headers_table(raw)

    monkeypatch.setattr(vhost_module, "headers_table", spy)
    vh.declare_exchange("t", "topic")
    vh.declare_exchange("h", "headers")
    declare(vh, "q")
    vh.bind(None, "q", "t", "#", {})
    vh.bind(None, "q", "h", "", {"a": 1})
    routed(vh, "t", "k", {"a": 1})
    vh.bind_exchange("amq.fanout", "t", "#", {})  # an e2e walk that meets no headers exchange
    routed(vh, "t", "k", {"a": 1})
    assert calls == []
    vh.bind_exchange("h", "t", "#", {})
    assert routed(vh, "t", "k", {"a": 1}) == ["q"]
    assert len(calls) == 1


def test_exchange_types_and_standard_exchanges(vh: VHost) -> None:
    assert {n: vh.exchanges[n].type for n in ("amq.headers", "amq.match")} == {
        "amq.headers": "headers",
        "amq.match": "headers",
    }
    vh.declare_exchange("amq.match", "headers", durable=True)  # equivalent redeclare is fine


# ---- durability ---------------------------------------------------------------------------------


def test_durable_e2e_bindings_are_stored_and_recovered() -> None:
    store = MemoryStore()
    b = Broker(store, clock=lambda: 0.0)
    vh = b.vhosts["/"]
    vh.declare_exchange("a", "topic", durable=True)
    vh.declare_exchange("h", "headers", durable=True)
    vh.declare_exchange("t", "fanout")  # transient
    vh.declare_queue(None, "q", durable=True)
    vh.bind_exchange("h", "a", "k.#", {})
    vh.bind_exchange("a", "amq.direct", "k.x", {})
    vh.bind_exchange("t", "a", "k.#", {})  # to a transient exchange: not stored
    vh.bind(None, "q", "h", "", {"x-match": "any", "a": 1})
    rec = store.open()
    assert sorted((r.source, r.destination, r.destination_type) for r in rec.bindings) == [
        ("a", "h", "exchange"), ("amq.direct", "a", "exchange"), ("h", "q", "queue"),
    ]  # fmt: skip

    b2 = Broker(store, clock=lambda: 0.0)
    b2.recover(rec)
    vh2 = b2.vhosts["/"]
    assert [q.name for q in vh2.route("amq.direct", "k.x", raw_props({"a": 1}))] == ["q"]
    assert vh2.route("amq.direct", "k.x", raw_props({"a": 2})) == []

    vh2.unbind(None, "q", "h", "", {"x-match": "any", "a": 1})  # arguments are part of the stored identity
    assert [r.destination for r in store.open().bindings] == ["h", "a"]
    vh2.bind(None, "q", "h", "", {"x-match": "any", "a": 1})
    vh2.unbind_exchange("h", "a", "k.#", {})
    vh2.delete_exchange("h", if_unused=False)  # takes the h -> q binding with it
    assert store.open().bindings == [BindingRecord("/", "amq.direct", "a", "exchange", "k.x", {})]
