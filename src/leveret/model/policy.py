"""Policies and operator policies (RabbitMQ 3.10's rabbit_policy, rabbit_policies).

A policy names a regular expression (matched unanchored against a queue's or exchange's name),
a definition (settings such as ``max-length``), a priority and what it applies to (``queues``,
``exchanges`` or ``all``). At most one policy and one operator policy apply to an object: the
matching one of highest priority whose keys the queue's type all supports (rabbit_queue_type
``is_policy_applicable``). Definitions of two policies are never merged, except the policy with
the operator policy: each numeric key takes the lower value (``merge_operator_definitions``).

How a setting combines with the queue's own ``x-`` argument depends on the key and the queue
type (:func:`effective_arguments`, after rabbit_amqqueue_process and rabbit_quorum_queue):
classic queues take the smaller of the two numbers and the argument for the rest; quorum queues
take the smaller number too but the policy's ``overflow`` and ``expires``. An exchange's
``alternate-exchange`` argument beats the policy's.

:class:`Policies` keeps every vhost's policies, persists them through a callback and applies
them to queues and exchanges (at declare, and to all of a vhost's objects on any change).
Validation errors are :class:`PolicyError` whose text is RabbitMQ's, without the
"Validation failed" heading the caller adds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from leveret.model import patterns
from leveret.model.patterns import BoundedPattern

if TYPE_CHECKING:
    from leveret.model.exchange import Exchange
    from leveret.model.queue import Queue

K_POLICY, K_OPERATOR_POLICY = "policy", "operator_policy"  # store definition kinds
APPLY_TO = ("queues", "exchanges", "all")

COMMON = ("message-ttl", "expires", "max-length", "max-length-bytes", "overflow", "dead-letter-exchange",
          "dead-letter-routing-key")  # fmt: skip
CLASSIC_ONLY = ("queue-mode", "queue-version", "ha-mode", "ha-params", "ha-sync-mode", "ha-sync-batch-size",
                "ha-promote-on-shutdown", "ha-promote-on-failure", "queue-master-locator")  # fmt: skip
QUORUM_ONLY = ("delivery-limit", "dead-letter-strategy", "max-in-memory-length", "max-in-memory-bytes")
QUORUM_STREAM = ("queue-leader-locator", "initial-cluster-size")
STREAM_ONLY = ("max-age", "stream-max-segment-size-bytes")
OTHER = ("alternate-exchange", "consumer-timeout", "federation-upstream", "federation-upstream-set",
         "federation-upstream-pattern", "shards-per-node", "routing-key")  # fmt: skip
KNOWN = frozenset(COMMON + CLASSIC_ONLY + QUORUM_ONLY + QUORUM_STREAM + STREAM_ONLY + OTHER)
OPERATOR_KEYS = frozenset(("expires", "message-ttl", "max-length", "max-length-bytes", "max-in-memory-length",
                           "max-in-memory-bytes", "delivery-limit"))  # fmt: skip
# Keys a queue type refuses: a policy holding one does not match that queue (unsupported_policies).
UNSUPPORTED = {
    "classic": frozenset(QUORUM_ONLY + QUORUM_STREAM + STREAM_ONLY),
    "quorum": frozenset(CLASSIC_ONLY + STREAM_ONLY),
    "stream": frozenset(
        CLASSIC_ONLY + QUORUM_ONLY + ("overflow", "dead-letter-exchange", "dead-letter-routing-key")
    ),
}

# Per key: how a policy value and the queue's x- argument combine (classic, quorum).
MIN, ARG, POLICY = "min", "arg", "policy"
CLASSIC_RULE = {"expires": MIN, "message-ttl": MIN, "max-length": MIN, "max-length-bytes": MIN,
                "dead-letter-exchange": ARG, "dead-letter-routing-key": ARG, "overflow": ARG,
                "consumer-timeout": ARG}  # fmt: skip
QUORUM_RULE = {"max-length": MIN, "max-length-bytes": MIN, "delivery-limit": MIN, "message-ttl": MIN,
               "overflow": POLICY, "expires": POLICY, "dead-letter-exchange": ARG, "dead-letter-routing-key": ARG,
               "consumer-timeout": ARG}  # fmt: skip


class PolicyError(ValueError):
    """A policy RabbitMQ would refuse; ``str()`` is its validation text."""


def erl(v: Any) -> str:
    """``v`` (decoded JSON) as Erlang's ``~p`` prints the term RabbitMQ decodes it to."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, str):
        return "<<" + json.dumps(v, ensure_ascii=False) + ">>"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ",".join(erl(x) for x in v) + "]"
    if isinstance(v, dict):
        return "#{" + ",".join(f"{erl(k)} => {erl(x)}" for k, x in v.items()) + "}"
    return repr(v)


def _int(v: Any, least: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def _text(v: Any) -> bool:
    return isinstance(v, str)


# key -> (valid?, error format) after rabbit_policies:validate_policy0.
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "alternate-exchange": (_text, "{} is not a valid alternate exchange name"),
    "dead-letter-exchange": (_text, "{} is not a valid dead letter exchange name"),
    "dead-letter-routing-key": (_text, "{} is not a valid dead letter routing key"),
    "message-ttl": (lambda v: _int(v, 0), "{} is not a valid message TTL"),
    "expires": (lambda v: _int(v, 1), "{} is not a valid queue expiry"),
    "max-length": (lambda v: _int(v, 0), "{} is not a valid maximum length"),
    "max-length-bytes": (lambda v: _int(v, 0), "{} is not a valid maximum length in bytes"),
    "max-in-memory-length": (lambda v: _int(v, 0), "{} is not a valid maximum memory in bytes"),
    "max-in-memory-bytes": (lambda v: _int(v, 0), "{} is not a valid maximum memory in bytes"),
    "delivery-limit": (lambda v: _int(v, 0), "{} is not a valid delivery limit"),
    "consumer-timeout": (lambda v: _int(v, 1), "{} is not a valid consumer timeout"),
    "overflow": (lambda v: v in ("drop-head", "reject-publish", "reject-publish-dlx"), "{} is not a valid overflow value"),
    "queue-mode": (lambda v: v in ("default", "lazy"), "{} is not a valid queue-mode value"),
    "queue-version": (lambda v: v in (1, 2) and not isinstance(v, bool), "{} is not a valid queue-version value"),
    "dead-letter-strategy": (lambda v: v in ("at-most-once", "at-least-once"), "{} is not a valid dead letter strategy"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Policy:
    vhost: str
    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int = 0
    apply_to: str = "all"
    regex: BoundedPattern | None = field(default=None, compare=False, repr=False)

    def record(self) -> dict[str, Any]:
        """RabbitMQ's shape (definitions, GET /api/policies)."""
        return {"vhost": self.vhost, "name": self.name, "pattern": self.pattern, "apply-to": self.apply_to,
                "definition": dict(self.definition), "priority": self.priority}  # fmt: skip

    def matches(self, kind: str, name: str, queue_type: str | None = None) -> bool:
        """``kind`` is "queues" or "exchanges"; a queue's type must support every key."""
        if self.apply_to != "all" and self.apply_to != kind:
            return False
        if queue_type is not None and not UNSUPPORTED.get(queue_type, frozenset()).isdisjoint(
            self.definition
        ):
            return False
        rx = self.regex if self.regex is not None else patterns.cached(self.pattern, "policy pattern")
        return rx.search(name)


def make_policy(
    vhost: str, name: str, pattern: Any, definition: Any, priority: Any = 0, apply_to: Any = "all", *,
    operator: bool = False,
) -> Policy:  # fmt: skip
    """A validated policy, or :class:`PolicyError` with RabbitMQ's text (rabbit_policy:validate)."""
    if not isinstance(pattern, str):
        raise PolicyError(f"pattern should be regular expression but is {erl(pattern)}")
    try:
        rx = BoundedPattern(pattern, f"policy {name!r} pattern")
    except re.error as exc:
        msg = str(exc.msg)
        if msg.startswith("missing )"):
            raise PolicyError(
                f'pattern should be regular expression but is invalid: {{"missing )",{len(pattern)}}}'
            ) from None
        raise PolicyError(
            f'pattern should be regular expression but is invalid: {{"{msg}",{exc.pos or 0}}}'
        ) from None
    if not isinstance(definition, dict):
        raise PolicyError(f"definition should be a list, actually was {erl(definition)}")
    if not definition:
        raise PolicyError("no policy provided")
    allowed = OPERATOR_KEYS if operator else KNOWN
    unknown = [(k, v) for k, v in definition.items() if k not in allowed]
    if unknown:
        raise PolicyError(
            "["
            + ",".join(f"{{{erl(k)},{erl(v)}}}" for k, v in unknown)
            + "] are not recognised policy settings"
        )
    for k, v in definition.items():
        check = CHECKS.get(k)
        if check is not None and not check[0](v):
            raise PolicyError(check[1].format(erl(v)))
    if priority is None:
        priority = 0
    if not isinstance(priority, int | float) or isinstance(priority, bool):
        raise PolicyError(f"priority should be a number, actually was {erl(priority)}")
    if apply_to is None:
        apply_to = "all"
    if apply_to not in APPLY_TO:
        shown = apply_to if isinstance(apply_to, str) else erl(apply_to)
        raise PolicyError(f"apply-to '{shown}' unrecognised; should be 'queues', 'exchanges' or 'all'")
    return Policy(vhost, name, pattern, dict(definition), int(priority), apply_to, rx)


def merge_operator(policy: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    """merge_operator_definitions: keys of both; where both set a key, numbers take the lower value,
    booleans the operator's, anything else the operator's."""
    out = dict(policy)
    for k, v in op.items():
        mine = out.get(k)
        if k in out and _num(mine) and _num(v):
            out[k] = min(mine, v)
        else:
            out[k] = v
    return dict(sorted(out.items()))


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def effective_arguments(
    queue_type: str, arguments: dict[str, Any], definition: dict[str, Any]
) -> dict[str, Any]:
    """The queue's arguments with the policy's settings folded in as ``x-`` keys, per key and type."""
    if not definition:
        return arguments
    rules = QUORUM_RULE if queue_type == "quorum" else CLASSIC_RULE
    out = dict(arguments)
    for k, v in definition.items():
        rule = rules.get(k)
        if rule is None:
            continue
        xk = "x-" + k
        arg = arguments.get(xk)
        if arg is None or rule == POLICY:
            out[xk] = v
        elif rule == MIN and _num(arg) and _num(v):
            out[xk] = min(arg, v)
    return out


def _pick(policies: Iterable[Policy], kind: str, name: str, queue_type: str | None) -> Policy | None:
    best: Policy | None = None
    for p in policies:
        if (best is None or p.priority > best.priority) and p.matches(kind, name, queue_type):
            best = p
    return best


class Policies:
    """Every vhost's policies and operator policies; applies them to queues and exchanges.

    ``persist(kind, key, record or None)`` keeps them (kinds :data:`K_POLICY` and
    :data:`K_OPERATOR_POLICY`, key the JSON of ``[vhost, name]``).
    """

    def __init__(self, persist: Callable[[str, str, dict[str, Any] | None], None] | None = None) -> None:
        self.persist = persist or (lambda kind, key, value: None)
        self.user: dict[str, dict[str, Policy]] = {}  # vhost -> name -> policy
        self.operator: dict[str, dict[str, Policy]] = {}

    def table(self, operator: bool) -> dict[str, dict[str, Policy]]:
        return self.operator if operator else self.user

    def all(self, vhost: str | None = None, *, operator: bool = False) -> list[Policy]:
        t = self.table(operator)
        return [p for vh in sorted(t) if vhost is None or vh == vhost for _, p in sorted(t[vh].items())]

    def get(self, vhost: str, name: str, *, operator: bool = False) -> Policy | None:
        return self.table(operator).get(vhost, {}).get(name)

    def put(self, p: Policy, *, operator: bool = False) -> bool:
        """Add or replace; returns True if it is new. The caller re-applies the vhost."""
        t = self.table(operator).setdefault(p.vhost, {})
        new = p.name not in t
        t[p.name] = p
        self.persist(K_OPERATOR_POLICY if operator else K_POLICY, json.dumps([p.vhost, p.name]), p.record())
        return new

    def remove(self, vhost: str, name: str, *, operator: bool = False) -> bool:
        t = self.table(operator).get(vhost, {})
        if t.pop(name, None) is None:
            return False
        self.persist(K_OPERATOR_POLICY if operator else K_POLICY, json.dumps([vhost, name]), None)
        return True

    def forget_vhost(self, vhost: str) -> None:
        for operator in (False, True):
            for name in list(self.table(operator).get(vhost, {})):
                self.remove(vhost, name, operator=operator)

    def load(self, definitions: dict[str, dict[str, str]]) -> list[str]:
        """Read back what ``persist`` wrote; returns the keys that could not be read."""
        bad = []
        for kind, operator in ((K_POLICY, False), (K_OPERATOR_POLICY, True)):
            for key, text in definitions.get(kind, {}).items():
                try:
                    v = json.loads(text)
                    p = make_policy(v["vhost"], v["name"], v["pattern"], v["definition"], v.get("priority", 0),
                                    v.get("apply-to", "all"), operator=operator)  # fmt: skip
                except Exception:
                    bad.append(f"{kind} {key}")
                    continue
                self.table(operator).setdefault(p.vhost, {})[p.name] = p
        return bad

    # ---- matching ------------------------------------------------------------------------------

    def for_queue(self, q: Queue) -> tuple[Policy | None, Policy | None]:
        return (
            _pick(self.user.get(q.vhost, {}).values(), "queues", q.name, q.type),
            _pick(self.operator.get(q.vhost, {}).values(), "queues", q.name, q.type),
        )

    def apply_queue(self, q: Queue) -> None:
        """Give ``q`` its policy and operator policy and re-derive its limits (drops any excess)."""
        p, op = self.for_queue(q)
        q.set_policy(p, op, merge_operator(p.definition if p else {}, op.definition if op else {}))

    def apply_exchange(self, x: Exchange) -> None:
        if x.name == "":
            return
        p = _pick(self.user.get(x.vhost, {}).values(), "exchanges", x.name, None)
        x.set_policy(p)
