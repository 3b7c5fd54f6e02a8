"""`leveret`: run the broker (`leveret server`) or measure one (`leveret perf`)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from leveret import __version__
from leveret.cli.perf import perf
from leveret.config import Settings, default_data_dir
from leveret.storage.lock import DataDirLocked


def _users(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    users: dict[str, str] = {}
    for v in values:
        name, sep, password = v.partition(":")
        if not sep or not name:
            raise click.BadParameter(f"{v!r}: expected NAME:PASSWORD")
        users[name] = password
    return users


def _port(value: str | None) -> int | None:
    if value is None or str(value).lower() in ("off", "none", "-1"):
        return None
    return int(value)


def _timeout(value: str) -> int | None:
    if str(value).lower() in ("off", "0", "none", "false"):
        return None
    ms = int(value)
    if ms < 0:
        raise click.BadParameter("must be a non-negative number of milliseconds, or 'off'")
    return ms


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "LEVERET"})
@click.version_option(__version__, prog_name="leveret")
def main() -> None:
    """Leveret: a work-queue message broker that speaks AMQP 0-9-1 like RabbitMQ.

    Start it with `leveret server`, then point any RabbitMQ client (pika, aio-pika,
    kombu/Celery, Dramatiq, amqp091-go, ...) at amqp://guest:guest@localhost:5672/.
    Every option can also be set as an environment variable LEVERET_<OPTION>
    (for example LEVERET_AMQP_PORT=5673).
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (AMQP and HTTP).")
@click.option("--amqp-port", default=5672, show_default=True, type=int, help="AMQP port; 0 picks a free port (logged).")
@click.option("--http-port", default="15672", show_default=True, help="Management HTTP API and dashboard port; 0 picks a free port, 'off' disables.")
@click.option("--prometheus-port", default="15692", show_default=True, help="Prometheus /metrics port; 0 picks a free port, 'off' disables.")
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help=f"Where durable queues and persistent messages are kept. [default: {default_data_dir()}]",
)  # fmt: skip
@click.option("--storage", type=click.Choice(["sqlite", "memory"]), default="sqlite", show_default=True, help="'memory' keeps nothing across restarts.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False), default="info", show_default=True)
@click.option(
    "--consumer-timeout", default="1800000", show_default=True,
    help="Delivery acknowledgement timeout in ms (RabbitMQ's consumer_timeout); 0 or 'off' disables it.",
)  # fmt: skip
@click.option(
    "--consumer-timeout-action", type=click.Choice(["close", "cancel"]), default="close", show_default=True,
    help="On timeout: close the channel with 406 (RabbitMQ), or cancel only the stuck consumer "
    "(clients that support consumer_cancel_notify) and keep the channel open.",
)  # fmt: skip
@click.option("--frame-max", default=131072, show_default=True, type=int, help="Largest frame the broker accepts.")
@click.option("--heartbeat", default=60, show_default=True, type=int, help="Heartbeat interval proposed to clients (s).")
@click.option(
    "--queue-ram-limit", default=64 * 1024 * 1024, show_default=True, type=int,
    help="Ready message bytes a durable queue keeps in RAM; past it, persistent message bodies are read "
    "back from disk as they near the head (0: keep everything in RAM).",
)  # fmt: skip
@click.option("--max-message-size", default=16 * 1024 * 1024, show_default=True, type=int, help="Largest message body in bytes.")
@click.option("--channel-max", default=2047, show_default=True, type=click.IntRange(0, 65535), help="Most channels a connection may open (negotiated with the client); over it: 530.")
@click.option("--handshake-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Seconds a client has to complete the AMQP handshake before its socket is closed.")
@click.option("--max-connections", default=None, type=click.IntRange(min=0), help="Most client connections; over it connection.open gets 530. [default: unlimited]")
@click.option("--max-consumers-per-channel", default=None, type=click.IntRange(min=0), help="Most consumers on one channel; over it: 530. [default: unlimited]")
@click.option(
    "--disk-free-limit", default=50_000_000, show_default=True, type=click.IntRange(min=0), envvar="LEVERET_DISK_FREE_LIMIT",
    help="Free bytes on the data dir's disk below which publishers are blocked (connection.blocked); 0 disables.",
)  # fmt: skip
@click.option("--memory-high-watermark", default=0.4, show_default=True, type=click.FloatRange(min=0), help="Block publishers above this much resident memory: a fraction of RAM if <= 1, else bytes; 0 disables.")
@click.option("--store-backlog-limit", default=100_000, show_default=True, type=click.IntRange(min=0), help="Pause reading publishers while the store's writer lags by more operations than this; 0 disables.")
@click.option("--max-queues", default=None, type=click.IntRange(min=0), help="Most queues in a vhost; over it queue.declare gets 406. [default: unlimited]")
@click.option("--user", "users", multiple=True, metavar="NAME:PASSWORD", callback=_users, help="Add a user (repeatable; env LEVERET_USER='a:pw b:pw'). guest/guest stays, for loopback clients only.")
@click.option("--vhost", "vhosts", multiple=True, metavar="NAME", help="Create a virtual host besides '/' (repeatable; env LEVERET_VHOST='a b'). Every user may use every vhost.")
def server(
    host: str, amqp_port: int, http_port: str, prometheus_port: str, data_dir: Path | None, storage: str,
    log_level: str, consumer_timeout: str, consumer_timeout_action: str, frame_max: int, heartbeat: int,
    max_message_size: int, queue_ram_limit: int, channel_max: int, handshake_timeout: float, max_connections: int | None,
    max_consumers_per_channel: int | None, disk_free_limit: int, memory_high_watermark: float,
    store_backlog_limit: int, max_queues: int | None, users: dict[str, str], vhosts: tuple[str, ...],
) -> None:  # fmt: skip
    """Run the broker until Ctrl-C or SIGTERM.

    \b
    Examples:
      leveret server                          # AMQP on 127.0.0.1:5672, HTTP on :15672
      leveret server --amqp-port 0            # pick a free port (printed in the log)
      leveret server --data-dir ./data --consumer-timeout 60000
      leveret server --host 0.0.0.0 --user app:s3cret --vhost app   # amqp://app:s3cret@host/app
    """
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = Settings(
        host=host,
        amqp_port=amqp_port,
        http_port=_port(http_port),
        prometheus_port=_port(prometheus_port),
        data_dir=data_dir or default_data_dir(),
        storage=storage,
        log_level=log_level,
        consumer_timeout=_timeout(consumer_timeout),
        consumer_timeout_action=consumer_timeout_action,
        frame_max=frame_max,
        heartbeat=heartbeat,
        max_message_size=max_message_size,
        queue_ram_limit=queue_ram_limit or None,
        channel_max=channel_max,
        handshake_timeout=handshake_timeout,
        max_connections=max_connections,
        max_consumers_per_channel=max_consumers_per_channel,
        max_queues=max_queues,
        disk_free_limit=disk_free_limit,
        memory_high_watermark=memory_high_watermark,
        store_backlog_limit=store_backlog_limit,
        users={"guest": "guest", **users},
        vhosts=tuple(vhosts),
    )
    from leveret.app import CannotStart, run

    try:
        run(settings)
    except KeyboardInterrupt:
        pass
    except (CannotStart, OSError, DataDirLocked) as exc:
        click.echo(f"leveret: cannot start: {exc}", err=True)
        sys.exit(1)


main.add_command(perf)
