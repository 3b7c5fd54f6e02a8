"""Who may do what: users, password hashes, tags, permissions and topic permissions, as RabbitMQ's
internal auth backend has them (rabbit_auth_backend_internal, rabbit_access_control).

Every entry point asks this one object: the AMQP server when a client logs in, opens a vhost and
declares, binds, publishes, consumes, gets or purges; the HTTP API for the same operations and for
which vhosts and objects a user may see. The rules (reference section 6.1-6.2):

- a password is stored as RabbitMQ's salted hash: base64(salt(4) ++ H(salt ++ password)), H from
  the user's ``hashing_algorithm`` (sha256 by default, sha512 and the legacy md5 accepted on import);
  a blank password never logs in;
- each (user, vhost) has configure / write / read regexes, matched unanchored against the resource
  name (the default exchange is checked as ``amq.default``; an empty regex matches nothing but the
  empty name); with no row for the vhost, every check fails and so does ``connection.open``;
- topic permissions (user, vhost, exchange) restrict routing keys of publishes (write) and binding
  keys (read) on topic exchanges only; ``{username}`` and ``{vhost}`` are expanded in their regexes;
  a topic exchange without an entry is unrestricted.

Unlike RabbitMQ's per-channel cache, a change applies from the next operation on every connection.
Successful checks are remembered (bounded) until any change, so the publish path pays one dict lookup.

Durable: every change is handed to ``persist`` (the broker writes it to the store's definitions
table); :meth:`AccessControl.load` reads it back at start.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from leveret.errors import ChannelError, ConnectionError_, ReplyCode
from leveret.model import limits as L
from leveret.model import patterns
from leveret.model.patterns import BoundedPattern

log = logging.getLogger("leveret.access")

SHA256 = "rabbit_password_hashing_sha256"
SHA512 = "rabbit_password_hashing_sha512"
MD5 = "rabbit_password_hashing_md5"
HASHES: dict[str, Callable[[bytes], Any]] = {SHA256: hashlib.sha256, SHA512: hashlib.sha512, MD5: hashlib.md5}

#: Tags with a meaning (others are kept and ignored, as RabbitMQ does).
ADMINISTRATOR, MONITORING, POLICYMAKER, MANAGEMENT, IMPERSONATOR = (
    "administrator", "monitoring", "policymaker", "management", "impersonator",
)  # fmt: skip
MANAGEMENT_TAGS = frozenset((ADMINISTRATOR, MONITORING, POLICYMAKER, MANAGEMENT))

CONFIGURE, WRITE, READ = "configure", "write", "read"
QUEUE, EXCHANGE, TOPIC = "queue", "exchange", "topic"

#: Remembered successful checks before the memo is cleared.
MEMO_MAX = 10_000
#: Longest permission regex accepted (they are matched on every uncached operation).
MAX_REGEX = 4096

# Kinds of records in the store's definitions table.
K_USER, K_VHOST, K_PERMISSION, K_TOPIC = "user", "vhost", "permission", "topic_permission"
K_VHOST_LIMITS = "vhost_limits"
K_GLOBAL = "global_parameter"  # RabbitMQ's global runtime parameters (cluster_name, ...)
K_NODE, NODE_INITIALISED = "node", "initialised"  # written once the first start created the defaults


def hash_password(password: str, algorithm: str = SHA256, salt: bytes | None = None) -> str:
    """RabbitMQ's stored form: base64(salt ++ H(salt ++ utf8(password))), a random 4-byte salt."""
    h = HASHES[algorithm]
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + h(salt + password.encode("utf-8")).digest()).decode("ascii")


def check_password(password: str, password_hash: str, algorithm: str) -> bool:
    """True if ``password`` matches; a blank password or an unusable hash never does."""
    if not password or not password_hash or algorithm not in HASHES:
        return False
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except ValueError:
        return False
    if len(raw) <= 4:
        return False
    expected = hash_password(password, algorithm, raw[:4])
    return hmac.compare_digest(expected.encode("ascii"), password_hash.encode("ascii", "replace"))


def parse_tags(tags: str | Iterable[str] | None) -> tuple[str, ...]:
    """Tags as RabbitMQ takes them: a list or a comma-separated string; blanks dropped, order kept."""
    if tags is None:
        return ()
    items = tags.split(",") if isinstance(tags, str) else list(tags)
    out: list[str] = []
    for t in items:
        t = str(t).strip()
        if t and t not in out:
            out.append(t)
    return tuple(out)


def _compile(pattern: str, what: str) -> BoundedPattern:
    if not isinstance(pattern, str):
        raise ValueError(f"{what} must be a string")
    if len(pattern) > MAX_REGEX:
        raise ValueError(f"{what} is longer than {MAX_REGEX} characters")
    try:
        return BoundedPattern("^$" if pattern == "" else pattern, f"permission {what}")
    except re.error as exc:
        raise ValueError(f"{what} '{pattern}' is not a valid regular expression: {exc}") from None


@dataclass(slots=True)
class User:
    name: str
    password_hash: str
    hashing_algorithm: str = SHA256
    tags: tuple[str, ...] = ()
    limits: dict[str, Any] = field(default_factory=dict)

    @property
    def is_administrator(self) -> bool:
        return ADMINISTRATOR in self.tags

    @property
    def is_monitor(self) -> bool:
        return ADMINISTRATOR in self.tags or MONITORING in self.tags

    @property
    def is_policymaker(self) -> bool:
        return ADMINISTRATOR in self.tags or POLICYMAKER in self.tags

    @property
    def is_management(self) -> bool:
        return not MANAGEMENT_TAGS.isdisjoint(self.tags)

    def record(self) -> dict[str, Any]:
        """The definitions-file entry (RabbitMQ's five keys)."""
        return {
            "name": self.name,
            "password_hash": self.password_hash,
            "hashing_algorithm": self.hashing_algorithm,
            "tags": list(self.tags),
            "limits": dict(self.limits),
        }


@dataclass(slots=True)
class Permission:
    user: str
    vhost: str
    configure: str
    write: str
    read: str
    _res: tuple[BoundedPattern, BoundedPattern, BoundedPattern] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._res = (
            _compile(self.configure, "configure regex"),
            _compile(self.write, "write regex"),
            _compile(self.read, "read regex"),
        )

    def allows(self, what: str, name: str) -> bool:
        rx = self._res[0] if what == CONFIGURE else self._res[1] if what == WRITE else self._res[2]
        return rx.search(name)

    def record(self) -> dict[str, Any]:
        return {"user": self.user, "vhost": self.vhost, "configure": self.configure, "write": self.write,
                "read": self.read}  # fmt: skip


@dataclass(slots=True)
class TopicPermission:
    user: str
    vhost: str
    exchange: str
    write: str
    read: str

    def __post_init__(self) -> None:
        # Checked now so a bad one is refused when set (expansion only substitutes names).
        _compile(self.write, "write regex")
        _compile(self.read, "read regex")

    def allows(self, what: str, routing_key: str) -> bool:
        pattern = self.write if what == WRITE else self.read
        pattern = pattern.replace("{username}", self.user).replace("{vhost}", self.vhost)
        if len(pattern) > MAX_REGEX:
            return False
        try:
            return patterns.cached("^$" if pattern == "" else pattern, "topic permission regex").search(routing_key)
        except re.error:
            return False  # an expansion made it invalid: refuse

    def record(self) -> dict[str, Any]:
        return {"user": self.user, "vhost": self.vhost, "exchange": self.exchange, "write": self.write,
                "read": self.read}  # fmt: skip


class LoginRefused(Exception):
    """A login failed; ``reason`` is for the log (never for the client), without the password."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_loopback(host: str) -> bool:
    return host.startswith("127.") or host in ("::1", "localhost") or host.startswith("::ffff:127.")


def refused(kind: str, name: str, vhost: str, user: str) -> ChannelError:
    return ChannelError(
        ReplyCode.ACCESS_REFUSED, f"access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'"
    )


Persist = Callable[[str, str, "dict[str, Any] | None"], None]


def _key(*parts: str) -> str:
    return json.dumps(list(parts), ensure_ascii=False)


class AccessControl:
    """Users, their tags and permissions; every access decision of the broker."""

    def __init__(self, *, loopback_users: Iterable[str] = ("guest",), persist: Persist | None = None) -> None:
        self.users: dict[str, User] = {}
        self.permissions: dict[tuple[str, str], Permission] = {}
        self.topic_permissions: dict[tuple[str, str, str], TopicPermission] = {}
        self.loopback_users = frozenset(loopback_users)
        self.persist: Persist = persist or (lambda kind, key, value: None)
        self._topics_for: dict[tuple[str, str], int] = {}  # (user, vhost) -> topic permissions held
        self._memo: OrderedDict[tuple[str, str, str, str, str], None] = OrderedDict()
        # The publish path's own memo: (user, vhost) -> exchanges it may write to. One 2-tuple and
        # a set lookup per publish; cleared, like _memo, by any change.
        self.writable: dict[tuple[str, str], set[str]] = {}
        #: Called with a user name when it is deleted or its password changes (to close its connections).
        self.on_user_removed: Callable[[str], None] = lambda name: None

    # ---- loading and saving --------------------------------------------------------------------

    def load(self, definitions: dict[str, dict[str, str]]) -> int:
        """Read back what ``persist`` wrote (kind -> key -> JSON text). Returns records skipped
        because they could not be read (each logged); the rest load."""
        skipped = 0
        for kind in (K_USER, K_PERMISSION, K_TOPIC):
            for key, text in definitions.get(kind, {}).items():
                try:
                    v = json.loads(text)
                    if kind == K_USER:
                        u = User(v["name"], v["password_hash"], v.get("hashing_algorithm") or MD5,
                                 parse_tags(v.get("tags")), dict(v.get("limits") or {}))  # fmt: skip
                        self.users[u.name] = u
                    elif kind == K_PERMISSION:
                        p = Permission(v["user"], v["vhost"], v["configure"], v["write"], v["read"])
                        self.permissions[p.user, p.vhost] = p
                    else:
                        t = TopicPermission(v["user"], v["vhost"], v["exchange"], v["write"], v["read"])
                        self._put_topic(t)
                except Exception as exc:
                    skipped += 1
                    log.error(
                        "stored %s %s cannot be read (%s: %s); it is ignored",
                        kind,
                        key,
                        type(exc).__name__,
                        exc,
                    )
        return skipped

    def _changed(self) -> None:
        self._memo.clear()
        self.writable.clear()

    # ---- users ---------------------------------------------------------------------------------

    def add_user(
        self, name: str, password: str | None = None, tags: str | Iterable[str] | None = (), *,
        password_hash: str | None = None, hashing_algorithm: str = SHA256, limits: dict[str, Any] | None = None,
    ) -> User:  # fmt: skip
        """Create or replace a user. With neither password nor hash the user cannot log in with a
        password (RabbitMQ's rule); a hash is taken as it is (definitions import)."""
        check_user_name(name)
        if password is not None and password_hash is not None:
            raise ValueError("both_password_and_password_hash_are_provided")
        if hashing_algorithm not in HASHES:
            raise ValueError(f"unsupported hashing algorithm '{hashing_algorithm}'")
        if password is not None:
            password_hash = hash_password(password, hashing_algorithm) if password else ""
        u = User(name, password_hash or "", hashing_algorithm, parse_tags(tags), dict(limits or {}))
        old = self.users.get(name)
        self.users[name] = u
        self._save_user(u)
        self._changed()
        if old is not None and old.password_hash != u.password_hash:
            self.on_user_removed(name)
        return u

    def _save_user(self, u: User) -> None:
        self.persist(K_USER, _key(u.name), u.record())

    def user(self, name: str) -> User:
        u = self.users.get(name)
        if u is None:
            raise KeyError(name)
        return u

    def delete_user(self, name: str) -> None:
        """Remove the user with its permissions; its connections are closed (on_user_removed)."""
        self.user(name)
        del self.users[name]
        self.persist(K_USER, _key(name), None)
        for key in [k for k in self.permissions if k[0] == name]:
            self.clear_permissions(*key)
        for user, vhost in [k for k in self._topics_for if k[0] == name]:
            self.clear_topic_permissions(user, vhost)
        self._changed()
        self.on_user_removed(name)

    def change_password(self, name: str, password: str) -> None:
        u = self.user(name)
        u.password_hash = hash_password(password, u.hashing_algorithm) if password else ""
        self._save_user(u)
        self._changed()

    def clear_password(self, name: str) -> None:
        u = self.user(name)
        u.password_hash = ""
        self._save_user(u)

    def set_tags(self, name: str, tags: str | Iterable[str] | None) -> None:
        u = self.user(name)
        u.tags = parse_tags(tags)
        self._save_user(u)
        self._changed()

    # ---- user limits (rabbitmqctl set_user_limits; rabbit_auth_backend_internal) ---------------

    def set_user_limits(self, name: str, limits: Any) -> None:
        """Merge ``limits`` into the user's (RabbitMQ's ``add``); :class:`ValueError` with RabbitMQ's
        text for an unknown key or a value that is not an integer, KeyError for an unknown user."""
        u = self.user(name)
        u.limits = L.merged(u.limits, limits, L.USER_KEYS, "user-limits")
        self._save_user(u)

    def clear_user_limits(self, name: str, key: str) -> None:
        """Remove one limit, or every limit with ``all``."""
        u = self.user(name)
        u.limits = L.cleared(u.limits, key)
        self._save_user(u)

    def user_limit(self, name: str, key: str) -> int | None:
        """The user's limit ``key`` (max-connections, max-channels), None when unlimited (absent or
        negative, as RabbitMQ reads -1)."""
        u = self.users.get(name)
        return None if u is None else L.value(u.limits, key)

    def check_user_connections(self, name: str, open_now: int) -> None:
        """connection.open: 530 when the user already has its ``max-connections`` open."""
        limit = self.user_limit(name, L.MAX_CONNECTIONS)
        if limit is not None and open_now >= limit:
            raise ConnectionError_(
                ReplyCode.NOT_ALLOWED, f"connection refused for user '{name}': user connection limit ({limit}) is reached"
            )

    def check_user_channels(self, name: str, open_now: int) -> None:
        """channel.open: 530 (the connection closes, as RabbitMQ's reader does) at ``max-channels``."""
        limit = self.user_limit(name, L.MAX_CHANNELS)
        if limit is not None and open_now >= limit:
            raise ConnectionError_(
                ReplyCode.NOT_ALLOWED,
                f"number of channels opened for user '{name}' has reached the maximum allowed user limit of ({limit})",
                20, 10,
            )  # fmt: skip

    def authenticate(self, name: str, password: str, peer_host: str | None = None) -> User:
        """The user, or :class:`LoginRefused` with the log's reason (RabbitMQ's wording)."""
        u = self.users.get(name)
        if u is None or not check_password(password, u.password_hash, u.hashing_algorithm):
            raise LoginRefused(f"user '{name}' - invalid credentials")
        self.check_loopback(name, peer_host)
        return u

    def check_loopback(self, name: str, peer_host: str | None) -> None:
        if name in self.loopback_users and not (peer_host and is_loopback(peer_host)):
            raise LoginRefused(f"user '{name}' can only connect via localhost")

    # ---- permissions ---------------------------------------------------------------------------

    def set_permissions(self, user: str, vhost: str, configure: str, write: str, read: str) -> Permission:
        """Raises KeyError for an unknown user, ValueError for a bad regex."""
        self.user(user)
        p = Permission(user, vhost, configure, write, read)
        self.permissions[user, vhost] = p
        self.persist(K_PERMISSION, _key(user, vhost), p.record())
        self._changed()
        return p

    def clear_permissions(self, user: str, vhost: str) -> bool:
        if self.permissions.pop((user, vhost), None) is None:
            return False
        self.persist(K_PERMISSION, _key(user, vhost), None)
        self._changed()
        return True

    def set_topic_permissions(
        self, user: str, vhost: str, exchange: str, write: str, read: str
    ) -> TopicPermission:
        self.user(user)
        t = TopicPermission(user, vhost, exchange, write, read)
        self._put_topic(t)
        self.persist(K_TOPIC, _key(user, vhost, exchange), t.record())
        self._changed()
        return t

    def _put_topic(self, t: TopicPermission) -> None:
        if (t.user, t.vhost, t.exchange) not in self.topic_permissions:
            self._topics_for[t.user, t.vhost] = self._topics_for.get((t.user, t.vhost), 0) + 1
        self.topic_permissions[t.user, t.vhost, t.exchange] = t

    def clear_topic_permissions(self, user: str, vhost: str, exchange: str | None = None) -> int:
        keys = [
            k for k in self.topic_permissions if k[0] == user and k[1] == vhost and exchange in (None, k[2])
        ]
        for k in keys:
            del self.topic_permissions[k]
            n = self._topics_for[user, vhost] - 1
            if n:
                self._topics_for[user, vhost] = n
            else:
                del self._topics_for[user, vhost]
            self.persist(K_TOPIC, _key(*k), None)
        if keys:
            self._changed()
        return len(keys)

    def forget_vhost(self, vhost: str) -> None:
        """A vhost was deleted: its permissions go with it."""
        for key in [k for k in self.permissions if k[1] == vhost]:
            self.clear_permissions(*key)
        for user, vh in [k for k in self._topics_for if k[1] == vhost]:
            self.clear_topic_permissions(user, vh)

    # ---- decisions -----------------------------------------------------------------------------

    def may_use_vhost(self, user: str, vhost: str) -> bool:
        """A permission row exists (administrators need one too over AMQP, as in RabbitMQ)."""
        return (user, vhost) in self.permissions

    def check_vhost(self, user: str, vhost: str) -> None:
        """connection.open: 530 NOT_ALLOWED without a permission row."""
        if (user, vhost) not in self.permissions:
            raise ConnectionError_(
                ReplyCode.NOT_ALLOWED, f"access to vhost '{vhost}' refused for user '{user}'"
            )

    def may(self, user: str, vhost: str, kind: str, name: str, what: str) -> bool:
        key = (user, vhost, kind, name, what)
        memo = self._memo
        if key in memo:
            return True
        p = self.permissions.get((user, vhost))
        if p is None or not p.allows(what, "amq.default" if kind == EXCHANGE and name == "" else name):
            return False
        if len(memo) >= MEMO_MAX:
            memo.popitem(last=False)
        memo[key] = None
        return True

    def check(self, user: str | None, vhost: str, kind: str, name: str, what: str) -> None:
        """403 ACCESS_REFUSED unless ``user`` has ``what`` (configure/write/read) on the resource.
        ``user`` None is the broker itself (recovery, operator tools on the node): always allowed."""
        if user is not None and not self.may(user, vhost, kind, name, what):
            raise refused(kind, "amq.default" if kind == EXCHANGE and name == "" else name, vhost, user)

    def check_write(self, user: str, vhost: str, exchange: str) -> None:
        """basic.publish: write on the exchange (403 otherwise); remembered in :attr:`writable`,
        which the broker's publish path tests first."""
        self.check(user, vhost, EXCHANGE, exchange, WRITE)
        ok = self.writable.setdefault((user, vhost), set())
        if len(ok) < MEMO_MAX:
            ok.add(exchange)

    def check_topic(self, user: str | None, vhost: str, exchange: str, routing_key: str, what: str) -> None:
        """Topic permission on a topic exchange; call only for exchanges of type topic."""
        if user is None or (user, vhost) not in self._topics_for:
            return
        t = self.topic_permissions.get((user, vhost, exchange))
        if t is not None and not t.allows(what, routing_key):
            raise ChannelError(
                ReplyCode.ACCESS_REFUSED,
                f"access to topic '{routing_key}' in exchange '{exchange}' in vhost '{vhost}' refused for user '{user}'",
            )

    def vhosts_of(self, user: str) -> set[str]:
        """The vhosts ``user`` has a permission row in."""
        return {vh for (u, vh) in self.permissions if u == user}


def check_user_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError("user name must be a non-empty string")
    if len(name.encode("utf-8")) > 255:
        raise ValueError("user name is longer than 255 bytes")


class LoginThrottle:
    """Exponential delay for a peer address after repeated failed logins, nothing for anyone else.

    After ``free`` failures within ``window`` seconds, each further attempt from that address is
    answered only after ``base * 2**(failures - free)`` seconds, at most ``cap``: with the defaults,
    5 free failures, then 0.1, 0.2, 0.4, ... s, 10 s from the 12th failure on (an attacker gets about
    one guess in 10 s; a user who mistyped five times waits 0.1 s). A held attempt is counted as a
    failure when it is held, and held attempts are answered one after another: attempts sent in
    parallel wait as long as the same attempts sent in sequence. A success forgets the address, so
    does ``window`` seconds without an attempt. At most ``max_peers`` addresses are remembered (the
    least recent forgotten first), so a flood of addresses costs bounded memory.

    Callers: ``delay(peer)`` before checking the credentials; if it is 0, check now and report
    ``failed`` or ``succeeded``; else answer after that many seconds and report only ``succeeded``
    (the failure was counted in advance).
    """

    def __init__(self, *, free: int = 5, base: float = 0.1, cap: float = 10.0, window: float = 300.0,
                 max_peers: int = 10_000, clock: Callable[[], float]) -> None:  # fmt: skip
        self.free, self.base, self.cap, self.window, self.max_peers = free, base, cap, window, max_peers
        self.clock = clock
        # peer -> (failures, time of the last attempt, when its last held attempt is answered)
        self._peers: OrderedDict[str, tuple[int, float, float]] = OrderedDict()

    def delay(self, peer: str) -> float:
        """Seconds to hold this attempt's answer (0: none; a held attempt is counted as failed now)."""
        entry = self._peers.get(peer)
        if entry is None:
            return 0.0
        failures, last, answered_at = entry
        now = self.clock()
        if now - last > self.window:
            del self._peers[peer]
            return 0.0
        if failures < self.free:
            return 0.0
        step = float(min(self.cap, self.base * 2 ** min(failures - self.free, 30)))
        at = max(now, answered_at) + step
        self._peers[peer] = (failures + 1, now, at)
        self._peers.move_to_end(peer)
        return at - now

    def failed(self, peer: str) -> None:
        failures, _, answered_at = self._peers.pop(peer, (0, 0.0, 0.0))
        self._peers[peer] = (failures + 1, self.clock(), answered_at)
        while len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)

    def succeeded(self, peer: str) -> None:
        self._peers.pop(peer, None)
