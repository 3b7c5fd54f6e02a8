"""Exchanges match a message's routing key (and headers) against their bindings.

A binding is (destination type, destination name, routing key, arguments); all four
are its identity, as in RabbitMQ, so one queue may be bound twice with the same key
and different arguments. A destination is a queue (``"queue"``) or another exchange
(``"exchange"``, an exchange-to-exchange binding).

Each type compiles its bindings into an index, one for queue destinations and one for
exchange destinations, and matches a routing key against an index. :meth:`Exchange.route`
gives the queue names, :meth:`Exchange.route_exchanges` the exchange names; following
exchange-to-exchange bindings is the virtual host's job (:meth:`VHost.route`).
Adding a type means adding a subclass to ``TYPES``.
"""

from __future__ import annotations

import re
from typing import Any

from leveret.model import headers as H
from leveret.storage.codec import encode_arguments

QUEUE = "queue"
EXCHANGE = "exchange"

# (destination type, destination name, routing key, arguments key)
BindingKey = tuple[str, str, str, str]

_NONE: list[str] = []  # shared empty result: callers must not mutate what route() returns


def arguments_key(arguments: dict[str, Any]) -> str:
    """A binding's arguments as part of its identity: canonical text, equal tables give equal keys."""
    return encode_arguments(arguments) if arguments else ""


class Exchange:
    type = ""
    needs_headers = False  # route() looks at the message's headers table

    def __init__(
        self,
        vhost: str,
        name: str,
        *,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = arguments or {}
        # The "alternate-exchange" argument: where messages this exchange routes nowhere go.
        ae = self.arguments.get("alternate-exchange")
        self.alternate: str | None = ae.decode("utf-8", "replace") if isinstance(ae, bytes) else ae if isinstance(ae, str) else None
        self.bindings: dict[BindingKey, dict[str, Any]] = {}
        self._queues: Any = self._index([])
        self._exchanges: Any = self._index([])
        # True while routing needs no headers and reaches no exchange: VHost.route's fast path.
        self.simple = not self.needs_headers and self.alternate is None
        self.policy: Any = None  # the policy applied (leveret.model.policy)

    def set_policy(self, policy: Any) -> None:
        """Apply a policy (or none): its alternate-exchange counts unless the argument names one."""
        self.policy = policy
        ae = self.arguments.get("alternate-exchange")
        if not isinstance(ae, str | bytes) and policy is not None:
            ae = policy.definition.get("alternate-exchange")
        self.alternate = ae.decode("utf-8", "replace") if isinstance(ae, bytes) else ae if isinstance(ae, str) else None
        self._changed()

    # ---- bindings ------------------------------------------------------------------------------

    def validate_binding(self, arguments: dict[str, Any]) -> None:
        """Raise a 406 ChannelError for arguments this type refuses (RabbitMQ's validate_binding)."""

    def bind(self, dest_type: str, dest: str, routing_key: str, arguments: dict[str, Any]) -> bool:
        """Returns False if the binding already existed."""
        key = (dest_type, dest, routing_key, arguments_key(arguments))
        if key in self.bindings:
            return False
        self.bindings[key] = arguments
        self._changed()
        return True

    def has_binding(self, dest_type: str, dest: str, routing_key: str, arguments: dict[str, Any]) -> bool:
        return (dest_type, dest, routing_key, arguments_key(arguments)) in self.bindings

    def unbind(self, dest_type: str, dest: str, routing_key: str, arguments: dict[str, Any]) -> bool:
        """Returns False if there was no such binding."""
        if self.bindings.pop((dest_type, dest, routing_key, arguments_key(arguments)), None) is None:
            return False
        self._changed()
        return True

    def unbind_destination(self, dest_type: str, dest: str) -> bool:
        """Remove every binding to ``dest``; returns True if there was any."""
        keys = [k for k in self.bindings if k[1] == dest and k[0] == dest_type]
        for k in keys:
            del self.bindings[k]
        if keys:
            self._changed()
        return bool(keys)

    def _changed(self) -> None:
        qs = [(d, rk, args) for (t, d, rk, _), args in self.bindings.items() if t == QUEUE]
        xs = [(d, rk, args) for (t, d, rk, _), args in self.bindings.items() if t == EXCHANGE]
        self._queues = self._index(qs)
        self._exchanges = self._index(xs)
        self.simple = not self.needs_headers and not xs and self.alternate is None

    # ---- routing -------------------------------------------------------------------------------

    def _index(self, bindings: list[tuple[str, str, dict[str, Any]]]) -> Any:
        """Compile (destination, routing key, arguments) triples into what :meth:`_match` reads."""
        raise NotImplementedError

    def _match(self, index: Any, routing_key: str, headers: dict[str, Any] | None) -> list[str]:
        """Destination names of ``index`` matching, each once."""
        raise NotImplementedError

    def route(self, routing_key: str, headers: dict[str, Any] | None = None) -> list[str]:
        """Names of the queues bound here that match, each once (read only: may be shared).

        ``headers`` (the message's headers table) is needed only when ``needs_headers``.
        """
        return self._match(self._queues, routing_key, headers)

    def route_exchanges(self, routing_key: str, headers: dict[str, Any] | None = None) -> list[str]:
        """Names of the exchanges bound here that match, each once (read only: may be shared)."""
        return self._match(self._exchanges, routing_key, headers)


class DefaultExchange(Exchange):
    """The nameless direct exchange every queue is bound to by its own name.

    Its bindings are only listed (RabbitMQ shows them); it routes by name, and nothing
    can be bound to or from it.
    """

    type = "direct"

    def _changed(self) -> None:
        pass

    def _index(self, bindings: list[tuple[str, str, dict[str, Any]]]) -> Any:
        return None

    def route(self, routing_key: str, headers: dict[str, Any] | None = None) -> list[str]:
        return [routing_key]

    def route_exchanges(self, routing_key: str, headers: dict[str, Any] | None = None) -> list[str]:
        return _NONE


class DirectExchange(Exchange):
    type = "direct"

    def _index(self, bindings: list[tuple[str, str, dict[str, Any]]]) -> dict[str, list[str]]:
        by_key: dict[str, dict[str, None]] = {}
        for d, rk, _ in bindings:
            by_key.setdefault(rk, {})[d] = None
        return {rk: list(ds) for rk, ds in by_key.items()}

    def _match(self, index: dict[str, list[str]], routing_key: str, headers: dict[str, Any] | None) -> list[str]:
        return index.get(routing_key, _NONE)

    def route(self, routing_key: str, headers: dict[str, Any] | None = None) -> list[str]:
        return self._queues.get(routing_key, _NONE)  # type: ignore[no-any-return]  # the hot path


class FanoutExchange(Exchange):
    type = "fanout"

    def _index(self, bindings: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
        return list(dict.fromkeys(d for d, _, _ in bindings))

    def _match(self, index: list[str], routing_key: str, headers: dict[str, Any] | None) -> list[str]:
        return index


def _topic_regex(pattern: str) -> re.Pattern[str]:
    """AMQP topic pattern: words split by '.', '*' is one word, '#' is zero or more.

    The regex is matched against ``"." + routing_key`` so every word, the first
    included, is preceded by a dot and '#' needs no special case at the ends.
    """
    rx = "".join(
        r"(?:\.[^.]*)*" if w == "#" else r"\.[^.]*" if w == "*" else r"\." + re.escape(w) for w in pattern.split(".")
    )
    return re.compile(rx + r"\Z", re.DOTALL)


class TopicExchange(Exchange):
    type = "topic"

    def _index(self, bindings: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[re.Pattern[str], str]]:
        return [(_topic_regex(rk), d) for d, rk, _ in bindings]

    def _match(
        self, index: list[tuple[re.Pattern[str], str]], routing_key: str, headers: dict[str, Any] | None
    ) -> list[str]:
        key = "." + routing_key
        return list(dict.fromkeys(d for rx, d in index if rx.match(key)))


class HeadersExchange(Exchange):
    """Matches the message's headers table against each binding's arguments (see :mod:`.headers`)."""

    type = "headers"
    needs_headers = True

    def validate_binding(self, arguments: dict[str, Any]) -> None:
        H.validate(arguments)

    def _index(self, bindings: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[H.Matcher, str]]:
        return [(H.Matcher(args), d) for d, _, args in bindings]

    def _match(
        self, index: list[tuple[H.Matcher, str]], routing_key: str, headers: dict[str, Any] | None
    ) -> list[str]:
        h = headers or {}
        return list(dict.fromkeys(d for m, d in index if m.matches(h)))


TYPES: dict[str, type[Exchange]] = {
    "direct": DirectExchange, "fanout": FanoutExchange, "topic": TopicExchange, "headers": HeadersExchange,
}  # fmt: skip
