"""Exchanges route a message's routing key to the queues bound to them.

Each type implements :meth:`Exchange.route`; bindings are (destination queue name,
routing key, arguments). Adding a type means adding a subclass to ``TYPES``.
"""

from __future__ import annotations

import re
from typing import Any


class Exchange:
    type = ""

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
        # (queue name, routing key) -> arguments
        self.bindings: dict[tuple[str, str], dict[str, Any]] = {}

    def bind(self, queue: str, routing_key: str, arguments: dict[str, Any]) -> bool:
        """Returns False if the binding already existed."""
        key = (queue, routing_key)
        if key in self.bindings:
            return False
        self.bindings[key] = arguments
        self._changed()
        return True

    def unbind(self, queue: str, routing_key: str) -> bool:
        if self.bindings.pop((queue, routing_key), None) is None:
            return False
        self._changed()
        return True

    def unbind_queue(self, queue: str) -> None:
        for key in [k for k in self.bindings if k[0] == queue]:
            del self.bindings[key]
        self._changed()

    def _changed(self) -> None:
        pass

    def route(self, routing_key: str) -> list[str]:
        raise NotImplementedError


class DefaultExchange(Exchange):
    """The nameless direct exchange every queue is bound to by its own name."""

    type = "direct"

    def route(self, routing_key: str) -> list[str]:
        return [routing_key]


class DirectExchange(Exchange):
    type = "direct"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._by_key: dict[str, list[str]] = {}
        super().__init__(*args, **kwargs)

    def _changed(self) -> None:
        by_key: dict[str, list[str]] = {}
        for q, rk in self.bindings:
            by_key.setdefault(rk, []).append(q)
        self._by_key = by_key

    def route(self, routing_key: str) -> list[str]:
        return self._by_key.get(routing_key, [])


class FanoutExchange(Exchange):
    type = "fanout"

    def route(self, routing_key: str) -> list[str]:
        return list(dict.fromkeys(q for q, _ in self.bindings))


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        super().__init__(*args, **kwargs)

    def _changed(self) -> None:
        self._patterns = [(_topic_regex(rk), q) for q, rk in self.bindings]

    def route(self, routing_key: str) -> list[str]:
        key = "." + routing_key
        return list(dict.fromkeys(q for rx, q in self._patterns if rx.match(key)))


TYPES: dict[str, type[Exchange]] = {"direct": DirectExchange, "fanout": FanoutExchange, "topic": TopicExchange}
