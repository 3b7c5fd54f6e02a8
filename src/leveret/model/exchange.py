"""Exchanges match a message's routing key (and headers) against their bindings.

A binding is (destination type, destination name, routing key, arguments); all four
are its identity, as in RabbitMQ, so one queue may be bound twice with the same key
and different arguments. A destination is a queue (``"queue"``) or another exchange
(``"exchange"``, an exchange-to-exchange binding).

Each type keeps its bindings in an index, one for queue destinations and one for exchange
destinations, updated binding by binding (so binding N keys costs N updates, not N rebuilds), and
matches a routing key against an index. :meth:`Exchange.route` gives the queue names,
:meth:`Exchange.route_exchanges` the exchange names; following exchange-to-exchange bindings is the
virtual host's job (:meth:`VHost.route`). Adding a type means adding a subclass to ``TYPES``.

Topic bindings live in a trie of words, as RabbitMQ's; matching walks it once per (node, word
position) pair, so a binding key of many ``#`` (which a backtracking regex takes exponential time
over: ``#.#.#.#.#.a`` against a long key stopped the broker) costs at most nodes x words steps.
"""

from __future__ import annotations

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
        self._by_dest: dict[tuple[str, str], dict[BindingKey, None]] = {}  # (type, name) -> its bindings
        self._queues: Any = self._new_index()
        self._exchanges: Any = self._new_index()
        self._to_exchanges = 0  # bindings whose destination is an exchange
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
        self._by_dest.setdefault((dest_type, dest), {})[key] = None
        if dest_type == QUEUE:
            self._add(self._queues, dest, routing_key, arguments, key[3])
        else:
            self._add(self._exchanges, dest, routing_key, arguments, key[3])
            self._to_exchanges += 1
        self._changed()
        return True

    def has_binding(self, dest_type: str, dest: str, routing_key: str, arguments: dict[str, Any]) -> bool:
        return (dest_type, dest, routing_key, arguments_key(arguments)) in self.bindings

    def unbind(self, dest_type: str, dest: str, routing_key: str, arguments: dict[str, Any]) -> bool:
        """Returns False if there was no such binding."""
        key = (dest_type, dest, routing_key, arguments_key(arguments))
        if key not in self.bindings:
            return False
        self._forget(key)
        self._changed()
        return True

    def unbind_destination(self, dest_type: str, dest: str) -> bool:
        """Remove every binding to ``dest``; returns True if there was any."""
        keys = list(self._by_dest.get((dest_type, dest), ()))
        for k in keys:
            self._forget(k)
        if keys:
            self._changed()
        return bool(keys)

    def _forget(self, key: BindingKey) -> None:
        dest_type, dest, routing_key, akey = key
        arguments = self.bindings.pop(key)
        mine = self._by_dest[dest_type, dest]
        del mine[key]
        if not mine:
            del self._by_dest[dest_type, dest]
        if dest_type == QUEUE:
            self._remove(self._queues, dest, routing_key, arguments, akey)
        else:
            self._remove(self._exchanges, dest, routing_key, arguments, akey)
            self._to_exchanges -= 1

    def _changed(self) -> None:
        self.simple = not self.needs_headers and not self._to_exchanges and self.alternate is None

    # ---- routing -------------------------------------------------------------------------------

    def _new_index(self) -> Any:
        """An empty index of this type."""
        raise NotImplementedError

    def _add(self, index: Any, dest: str, routing_key: str, arguments: dict[str, Any], akey: str) -> None:
        """Add one binding to ``index`` (``akey``: its arguments' identity)."""
        raise NotImplementedError

    def _remove(self, index: Any, dest: str, routing_key: str, arguments: dict[str, Any], akey: str) -> None:
        """Remove one binding that :meth:`_add` added."""
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

    def _new_index(self) -> Any:
        return None

    def _add(self, index: Any, dest: str, routing_key: str, arguments: dict[str, Any], akey: str) -> None:
        pass

    def _remove(self, index: Any, dest: str, routing_key: str, arguments: dict[str, Any], akey: str) -> None:
        pass

    def route(self, routing_key: str, headers: dict[str, Any] | None = None) -> list[str]:
        return [routing_key]

    def route_exchanges(self, routing_key: str, headers: dict[str, Any] | None = None) -> list[str]:
        return _NONE


class _Counted:
    """Destinations with how many bindings lead to each (one destination may be bound by several keys
    or arguments), and their names as a list that is replaced, never changed, so a result handed out
    by route() stays valid."""

    __slots__ = ("counts", "names")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.names: list[str] = _NONE

    def add(self, dest: str) -> None:
        n = self.counts.get(dest, 0)
        self.counts[dest] = n + 1
        if not n:
            self.names = [*self.names, dest]

    def remove(self, dest: str) -> bool:
        """True when nothing is left."""
        n = self.counts[dest] - 1
        if n:
            self.counts[dest] = n
        else:
            del self.counts[dest]
            self.names = [d for d in self.names if d != dest]
        return not self.counts


class DirectExchange(Exchange):
    type = "direct"

    def _new_index(self) -> dict[str, Any]:
        # routing key -> its destinations' names (read by route), and routing key -> _Counted
        return {"names": {}, "counted": {}}

    def _add(self, index: Any, dest: str, routing_key: str, arguments: dict[str, Any], akey: str) -> None:
        c = index["counted"].get(routing_key)
        if c is None:
            c = index["counted"][routing_key] = _Counted()
        c.add(dest)
        index["names"][routing_key] = c.names

    def _remove(self, index: Any, dest: str, routing_key: str, arguments: dict[str, Any], akey: str) -> None:
        c = index["counted"][routing_key]
        if c.remove(dest):
            del index["counted"][routing_key], index["names"][routing_key]
        else:
            index["names"][routing_key] = c.names

    def _match(self, index: Any, routing_key: str, headers: dict[str, Any] | None) -> list[str]:
        return index["names"].get(routing_key, _NONE)  # type: ignore[no-any-return]

    def route(self, routing_key: str, headers: dict[str, Any] | None = None) -> list[str]:
        return self._queues["names"].get(routing_key, _NONE)  # type: ignore[no-any-return]  # the hot path


class FanoutExchange(Exchange):
    type = "fanout"

    def _new_index(self) -> _Counted:
        return _Counted()

    def _add(self, index: Any, dest: str, routing_key: str, arguments: dict[str, Any], akey: str) -> None:
        index.add(dest)

    def _remove(self, index: Any, dest: str, routing_key: str, arguments: dict[str, Any], akey: str) -> None:
        index.remove(dest)

    def _match(self, index: Any, routing_key: str, headers: dict[str, Any] | None) -> list[str]:
        return index.names  # type: ignore[no-any-return]


class _TopicNode:
    __slots__ = ("children", "dests", "hash")

    def __init__(self, hash: bool = False) -> None:
        self.children: dict[str, _TopicNode] = {}
        self.dests: dict[str, int] = {}  # destination -> bindings ending here
        self.hash = hash  # reached by a '#' word: it may take more words and stay


class TopicTrie:
    """AMQP topic binding keys as a trie of words: ``*`` is exactly one word, ``#`` zero or more."""

    __slots__ = ("root",)

    def __init__(self) -> None:
        self.root = _TopicNode()

    def add(self, pattern: str, dest: str) -> None:
        node = self.root
        for w in pattern.split("."):
            child = node.children.get(w)
            if child is None:
                child = node.children[w] = _TopicNode(hash=w == "#")
            node = child
        node.dests[dest] = node.dests.get(dest, 0) + 1

    def remove(self, pattern: str, dest: str) -> None:
        words = pattern.split(".")
        path = [self.root]
        for w in words:
            path.append(path[-1].children[w])
        leaf = path[-1]
        n = leaf.dests[dest] - 1
        if n:
            leaf.dests[dest] = n
        else:
            del leaf.dests[dest]
        for i in range(len(words), 0, -1):  # prune the nodes nothing needs any more
            node = path[i]
            if node.children or node.dests:
                break
            del path[i - 1].children[words[i - 1]]

    def match(self, routing_key: str) -> list[str]:
        """Destinations whose key matches, each once. Every (node, position) is visited at most once
        and does constant work besides, so the cost is bounded by nodes x words whatever the keys."""
        root = self.root
        if not root.children:
            return _NONE
        words = routing_key.split(".")
        n = len(words)
        out: dict[str, None] = {}
        seen: set[tuple[int, int]] = set()
        stack: list[tuple[_TopicNode, int]] = [(root, 0)]
        while stack:
            node, i = stack.pop()
            k = (id(node), i)
            if k in seen:
                continue
            seen.add(k)
            children = node.children
            if i == n:
                if node.dests:
                    out.update(dict.fromkeys(node.dests))
            else:
                c = children.get(words[i])
                if c is not None:
                    stack.append((c, i + 1))
                c = children.get("*")
                if c is not None:
                    stack.append((c, i + 1))
                if node.hash:
                    stack.append((node, i + 1))  # '#' takes one more word
            c = children.get("#")
            if c is not None:
                stack.append((c, i))  # '#' takes no word (yet)
        return list(out) if out else _NONE


class TopicExchange(Exchange):
    type = "topic"

    def _new_index(self) -> TopicTrie:
        return TopicTrie()

    def _add(self, index: Any, dest: str, routing_key: str, arguments: dict[str, Any], akey: str) -> None:
        index.add(routing_key, dest)

    def _remove(self, index: Any, dest: str, routing_key: str, arguments: dict[str, Any], akey: str) -> None:
        index.remove(routing_key, dest)

    def _match(self, index: Any, routing_key: str, headers: dict[str, Any] | None) -> list[str]:
        return index.match(routing_key)  # type: ignore[no-any-return]


class HeadersExchange(Exchange):
    """Matches the message's headers table against each binding's arguments (see :mod:`.headers`)."""

    type = "headers"
    needs_headers = True

    def validate_binding(self, arguments: dict[str, Any]) -> None:
        H.validate(arguments)

    def _new_index(self) -> dict[tuple[str, str, str], tuple[H.Matcher, str]]:
        return {}  # (destination, routing key, arguments' identity) -> (matcher, destination)

    def _add(self, index: Any, dest: str, routing_key: str, arguments: dict[str, Any], akey: str) -> None:
        index[dest, routing_key, akey] = (H.Matcher(arguments), dest)

    def _remove(self, index: Any, dest: str, routing_key: str, arguments: dict[str, Any], akey: str) -> None:
        del index[dest, routing_key, akey]

    def _match(self, index: Any, routing_key: str, headers: dict[str, Any] | None) -> list[str]:
        h = headers or {}
        return list(dict.fromkeys(d for m, d in index.values() if m.matches(h)))


TYPES: dict[str, type[Exchange]] = {
    "direct": DirectExchange, "fanout": FanoutExchange, "topic": TopicExchange, "headers": HeadersExchange,
}  # fmt: skip
