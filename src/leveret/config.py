"""The one settings object every layer reads. Defaults follow RabbitMQ's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


def listen_hosts(host: str) -> list[str | None]:
    """``Settings.host`` as a list of addresses ([None]: every interface)."""
    hosts: list[str | None] = [h.strip() for h in host.split(",") if h.strip()]
    return hosts or [None]


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("leveret", appauthor=False))


@dataclass(slots=True)
class Settings:
    # Addresses to listen on, comma-separated. The default is the loopback of both families: Node 17+
    # and others resolve "localhost" to ::1 first. "::1" is skipped (with a log line) on a machine
    # without IPv6; "" means every interface.
    host: str = "127.0.0.1,::1"
    amqp_port: int | None = 5672  # None: no plain AMQP listener (AMQPS only)
    http_port: int | None = 15672  # None: management HTTP off
    prometheus_port: int | None = 15692
    data_dir: Path = field(default_factory=default_data_dir)
    storage: str = "sqlite"  # "sqlite" (durable, on disk) or "memory"
    log_level: str = "info"
    log_file: Path | None = None  # None: stderr
    log_format: str = "text"  # "text" or "json" (one object a line)

    # Connection tuning (rabbit Makefile defaults)
    channel_max: int = 2047
    frame_max: int = 131072
    heartbeat: int = 60
    handshake_timeout: float = 10.0
    # RabbitMQ 3.x's default max_message_size (128 MiB; 4.0 lowered it to 16 MiB), at most its hard limit.
    max_message_size: int = 128 * 1024 * 1024
    # Body bytes the unfinished publishes of one connection may announce, all its channels together
    # (at least max_message_size); a content header over it gets 406 before its body is buffered.
    max_incomplete_content: int = 64 * 1024 * 1024

    # Limits; None means unlimited (RabbitMQ's defaults). Hitting one is a clear AMQP error with
    # RabbitMQ's code and text: 530 on connection.open, 530 on basic.consume, 406 on queue.declare.
    max_connections: int | None = None
    max_consumers_per_channel: int | None = None  # RabbitMQ's consumer_max_per_channel
    max_queues: int | None = None  # per vhost, like RabbitMQ's vhost max-queues limit

    # Backpressure. Above the memory high watermark (a fraction of RAM when <= 1, else bytes; 0: off)
    # publishers are blocked, as by the disk alarm; the same when the store's writer lags by more
    # than store_backlog_limit operations (0: off).
    memory_high_watermark: float = 0.4
    store_backlog_limit: int = 100_000

    # Users and vhosts live in the store (leveretctl add_user, set_permissions, ...). On a node's first
    # start (an empty store) the default user is created with default_user_tags and the default
    # permissions on the default vhost, as RabbitMQ does; default_user None creates no user.
    default_user: str | None = "guest"
    default_pass: str = "guest"
    default_vhost: str = "/"
    default_user_tags: tuple[str, ...] = ("administrator",)
    default_permissions: tuple[str, str, str] = (".*", ".*", ".*")
    # Users (name -> password) set at every start: created or given this password, with full
    # permissions on the default vhost and on every vhost of ``vhosts``. A new one is an administrator
    # unless ``user_tags`` names its tags; tags named there are set at every start.
    users: dict[str, str] = field(default_factory=dict)
    user_tags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Virtual hosts ensured at every start (besides those in the store).
    vhosts: tuple[str, ...] = ()
    # Users who may log in only from a loopback address (RabbitMQ's loopback_users; empty: none).
    loopback_users: tuple[str, ...] = ("guest",)

    # Consumer acknowledgement timeout in ms; None disables it.
    consumer_timeout: int | None = 1_800_000
    consumer_timeout_action: str = "close"  # "close" (RabbitMQ) or "cancel"

    # Storage
    disk_free_limit: int = 50_000_000
    # Ready message bytes a durable queue keeps in RAM; past it, bodies of new persistent
    # messages stay only in the store and are read back as they near the head.
    queue_ram_limit: int | None = 64 * 1024 * 1024
    shutdown_timeout: float = 5.0
    # Fill the SQLite WAL with zeros at start so commits overwrite allocated blocks (faster fsyncs);
    # embedded test brokers turn it off (64 MiB written per start, for runs of a few seconds).
    wal_preallocate: bool = True

    # TLS: with a certificate and key, AMQPS listens on amqps_port and the management API on https_port
    # (None: that TLS listener off). tls_verify: "none", "peer" (check a client certificate if one is
    # sent) or "require" (refuse the handshake without one); None means "peer" with a CA, else "none".
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_verify: str | None = None
    amqps_port: int | None = 5671
    https_port: int | None = 15671
    tls_handshake_timeout: float = 5.0  # RabbitMQ's ssl_handshake_timeout
    tls_login_from: str = "common_name"  # EXTERNAL's user: "common_name" or "subject_alternative_name" (DNS)
