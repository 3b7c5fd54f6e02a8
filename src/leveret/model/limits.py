"""User and virtual host limits, as RabbitMQ 3.10 takes and enforces them.

* user limits (``rabbitmqctl set_user_limits``, ``/api/user-limits``): ``max-connections`` (checked at
  connection.open) and ``max-channels`` (at channel.open, over all the user's connections);
* vhost limits (``rabbitmqctl set_vhost_limits``, ``/api/vhost-limits``): ``max-connections`` (at
  connection.open, before the user's) and ``max-queues`` (when a new queue would be declared, by any
  path: AMQP, HTTP, definitions).

A negative value means no limit (RabbitMQ writes -1); 0 refuses every one. Setting merges key by key;
clearing removes one key or, with ``all``, every one. The texts are RabbitMQ's (probed on 3.10.8).
"""

from __future__ import annotations

from typing import Any

from leveret.model.policy import erl

MAX_CONNECTIONS, MAX_CHANNELS, MAX_QUEUES = "max-connections", "max-channels", "max-queues"
USER_KEYS = (MAX_CONNECTIONS, MAX_CHANNELS)
VHOST_KEYS = (MAX_CONNECTIONS, MAX_QUEUES)


def validate(limits: Any, keys: tuple[str, ...], where: str) -> dict[str, int]:
    """``limits`` checked: ValueError with RabbitMQ's text (``where``: "user-limits" or "limits")."""
    if not isinstance(limits, dict):
        raise ValueError(f"Could not parse JSON document: {erl(limits)}")
    unknown = [(k, v) for k, v in limits.items() if k not in keys]
    if unknown:
        raise ValueError("Unrecognised terms [" + ",".join(f"{{{erl(k)},{erl(v)}}}" for k, v in unknown)
                         + f"] in {where}")  # fmt: skip
    for k, v in limits.items():
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"{k} should be a number, actually was {erl(v)}")
    return dict(limits)


def merged(old: dict[str, Any], new: Any, keys: tuple[str, ...], where: str) -> dict[str, int]:
    return {**old, **validate(new, keys, where)}


def cleared(old: dict[str, Any], key: str) -> dict[str, Any]:
    return {} if key == "all" else {k: v for k, v in old.items() if k != key}


def value(limits: dict[str, Any] | None, key: str) -> int | None:
    """The limit in force, None when there is none (absent or negative)."""
    v = limits.get(key) if limits else None
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def smallest(*values: int | None) -> int | None:
    """The tightest of several limits (None: no limit)."""
    vs = [v for v in values if v is not None]
    return min(vs) if vs else None
