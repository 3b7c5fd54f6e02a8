"""`leveret`: run the broker (`leveret server`) or measure one (`leveret perf`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from leveret import __version__, logs
from leveret.cli import configfile
from leveret.cli.backup import backup
from leveret.cli.perf import perf
from leveret.cli.users import UserParamType, UserSpec, parse_tags, read_secret_file, read_users_file
from leveret.config import Settings, default_data_dir
from leveret.storage.lock import DataDirLocked


def _users(ctx: click.Context, param: click.Parameter, values: tuple[UserSpec, ...]) -> dict[str, UserSpec]:
    return {u.name: u for u in values}


def _default_pass(user: str, path: Path | None) -> str:
    """--default-user's password: from --default-pass-file, else LEVERET_DEFAULT_PASS; guest's is guest."""
    if path is not None:
        return read_secret_file(path, "--default-pass-file")
    env = os.environ.get("LEVERET_DEFAULT_PASS")
    if env:
        return env
    if user == "guest":
        return "guest"
    raise click.UsageError(
        f"--default-user {user} needs a password: --default-pass-file FILE or the environment variable "
        "LEVERET_DEFAULT_PASS (it is used on the node's first start only)"
    )


def _port(value: str | None) -> int | None:
    if value is None or str(value).lower() in ("off", "none", "-1"):
        return None
    return int(value)


def _timeout(value: str) -> int | None:
    if str(value).lower() in ("off", "0", "none", "false"):
        return None
    try:
        ms = int(value)
    except ValueError:
        ms = -1
    if ms < 0:
        raise click.BadParameter(f"{value!r} is not a number of milliseconds (>= 0) or 'off'")
    return ms


def _check_port(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A port option's value, checked now (the option keeps its text: 'off', '0', '5672')."""
    try:
        port = _port(value)
    except ValueError:
        port = -1
    if port is not None and not 0 <= port <= 65535:
        raise click.BadParameter(f"{value!r} is not a port number (0-65535), 0 (a free port) or 'off'")
    return value


def _check_timeout(ctx: click.Context, param: click.Parameter, value: str) -> str:
    _timeout(value)
    return value


def _default_pass_source(path: Path | None) -> str:
    if path is not None:
        return f"--default-pass-file {path}"
    return "env LEVERET_DEFAULT_PASS" if os.environ.get("LEVERET_DEFAULT_PASS") else "default"


def _tls_options(
    ctx: click.Context, cert: Path | None, key: Path | None, ca: Path | None, verify: str | None, amqps_port: str,
    https_port: str, handshake_timeout: float, login_from: str,
) -> dict[str, Any]:
    """The TLS settings, checked now (files readable, key matching) so a mistake stops the start with
    one line."""
    plain_off = _port(ctx.params["amqp_port"]) is None
    if cert is None:
        given = [f"--{n}" for n, v in (("tls-key", key), ("tls-ca", ca), ("tls-verify", verify)) if v is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} needs --tls-cert")
        if plain_off:
            raise click.UsageError("--amqp-port off leaves no AMQP listener without --tls-cert")
        return {}
    if plain_off and _port(amqps_port) is None:
        raise click.UsageError("--amqp-port off and --amqps-port off leave no AMQP listener")
    from leveret.server.tls import TLSConfigError, TLSFiles, build_context

    try:
        build_context(TLSFiles(cert, key, ca, verify))
    except TLSConfigError as exc:
        raise click.UsageError(str(exc)) from None
    return {
        "tls_cert": cert, "tls_key": key, "tls_ca": ca, "tls_verify": verify, "amqps_port": _port(amqps_port),
        "https_port": _port(https_port), "tls_handshake_timeout": handshake_timeout, "tls_login_from": login_from,
    }  # fmt: skip


def _http_port(value: str, tls_cert: Path | None) -> int | None:
    # RabbitMQ with only management.ssl.* configured serves HTTPS alone: basic-auth passwords in every
    # request should not also go out in clear unless the operator asks for it.
    if tls_cert is not None and click.get_current_context().get_parameter_source("http_port") is ParameterSource.DEFAULT:
        return None
    return _port(value)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "LEVERET"})
@click.version_option(__version__, prog_name="leveret")
def main() -> None:
    """Leveret: a work-queue message broker that speaks AMQP 0-9-1 like RabbitMQ.

    Start it with `leveret server`, then point any RabbitMQ client (pika, aio-pika,
    kombu/Celery, Dramatiq, amqp091-go, ...) at amqp://guest:guest@localhost:5672/.
    Every option of `leveret server` can also be set as an environment variable
    LEVERET_<OPTION> (for example LEVERET_AMQP_PORT=5673) or in a --config file.
    """


# The server's own prefix: its options read LEVERET_<OPTION> as documented (the group's would give
# LEVERET_SERVER_<OPTION>).
@main.command(context_settings={"auto_envvar_prefix": "LEVERET"})
@click.option(
    "--config", type=click.Path(dir_okay=False, path_type=Path), is_eager=True, expose_value=False,
    callback=configfile.load, metavar="FILE",
    help="TOML file with any of these options under the same names (amqp-port = 5673); the command line "
    "and LEVERET_<OPTION> variables override it (packaging/leveret.toml lists every key).",
)  # fmt: skip
@click.option(
    "--print-config", is_flag=True, allow_from_autoenv=False,
    help="Print the effective configuration, with where each value came from, and exit (passwords masked).",
)  # fmt: skip
@click.option("--host", default="127.0.0.1,::1", show_default=True, help="Addresses to listen on (AMQP and HTTP), comma-separated; the default is the loopback of both IPv4 and IPv6 (::1 is skipped where IPv6 is off); 0.0.0.0,:: for every interface.")
@click.option("--amqp-port", default="5672", callback=_check_port, show_default=True, help="AMQP port; 0 picks a free port (logged), 'off' disables (AMQPS only).")
@click.option("--http-port", default="15672", callback=_check_port, show_default=True, help="Management HTTP API and dashboard port; 0 picks a free port, 'off' disables.")
@click.option("--prometheus-port", default="15692", callback=_check_port, show_default=True, help="Prometheus /metrics port; 0 picks a free port, 'off' disables.")
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help=f"Where durable queues and persistent messages are kept. [default: {default_data_dir()}]",
)  # fmt: skip
@click.option("--storage", type=click.Choice(["sqlite", "memory"]), default="sqlite", show_default=True, help="'memory' keeps nothing across restarts.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False), default="info", show_default=True)
@click.option(
    "--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Append the log to this file instead of stderr; reopened when moved away (logrotate) and on SIGHUP.",
)  # fmt: skip
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True, help="'json': one object a line with time, level, logger, message and fields such as connection, user, vhost, queue.")
@click.option(
    "--consumer-timeout", default="1800000", show_default=True, callback=_check_timeout,
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
@click.option(
    "--max-message-size", default=128 * 1024 * 1024, show_default=True, type=click.IntRange(1, 512 * 1024 * 1024),
    help="Largest message body in bytes, as RabbitMQ's max_message_size: its 3.x default (128 MiB; RabbitMQ 4 "
    "lowered it to 16 MiB), at most its hard limit of 512 MiB. A bigger body closes its channel with 406.",
)  # fmt: skip
@click.option(
    "--max-incomplete-content", default=64 * 1024 * 1024, show_default=True, type=click.IntRange(min=0),
    help="Body bytes the unfinished publishes of one connection may announce, all its channels together "
    "(never less than --max-message-size); a content header over it closes its channel with 406 before "
    "any of its body is buffered.",
)  # fmt: skip
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
@click.option(
    "--user", "users", multiple=True, metavar="NAME:PASSWORD", type=UserParamType(), callback=_users, envvar=["LEVERET_USERS", "LEVERET_USER"],
    help="Add an administrator (repeatable), set at every start. The password shows in `ps` to every user of "
    "the machine: prefer --users-file FILE or the environment variable LEVERET_USERS='a:pw b:pw'.",
)  # fmt: skip
@click.option(
    "--users-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="Users set at every start, one a line: NAME:PASSWORD or NAME:PASSWORD:TAG,TAG ('#' comments; "
    "without tags, administrator). With a ':' in the password, end the line with a tags field "
    "(app:pa:ss:). Keep it chmod 600 (a warning says if others can read it).",
)  # fmt: skip
@click.option("--vhost", "vhosts", multiple=True, metavar="NAME", envvar="LEVERET_VHOST", help="Create a virtual host besides the default one (repeatable; env LEVERET_VHOST='a b'). --user and --users-file users get full permissions on it.")
@click.option(
    "--default-user", default="guest", show_default=True, metavar="NAME",
    help="The user created on the node's first start (empty data dir), with --default-user-tags and full "
    "permissions on --default-vhost, as RabbitMQ's default_user. Its password: --default-pass-file FILE or "
    "the environment variable LEVERET_DEFAULT_PASS (needed unless the user is guest, whose password is guest).",
)  # fmt: skip
@click.option(
    "--default-pass-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="File whose first line is --default-user's password (kept off the command line).",
)  # fmt: skip
@click.option("--default-vhost", default="/", show_default=True, metavar="NAME", help="The vhost created on the node's first start.")
@click.option("--default-user-tags", default="administrator", show_default=True, metavar="TAG,TAG", help="Tags of --default-user ('none': no tags).")
@click.option(
    "--loopback-users", default="guest", show_default=True, metavar="NAME,NAME",
    help="Users who may log in only from a loopback address (RabbitMQ's loopback_users); 'none' for nobody.",
)  # fmt: skip
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), default=None, help="PEM server certificate (chain): enables AMQPS and HTTPS management. SIGHUP reloads it.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), default=None, help="PEM private key of --tls-cert (unencrypted). [default: in the --tls-cert file]")
@click.option("--tls-ca", type=click.Path(dir_okay=False, path_type=Path), default=None, help="PEM CA certificate(s) that sign client certificates.")
@click.option(
    "--tls-verify", type=click.Choice(["none", "peer", "require"]), default=None,
    help="Client certificates: 'none' (not asked for), 'peer' (checked against --tls-ca if sent; EXTERNAL "
    "login offered), 'require' (handshake refused without one). [default: peer with --tls-ca, else none]",
)  # fmt: skip
@click.option("--amqps-port", default="5671", callback=_check_port, show_default=True, help="AMQPS (AMQP over TLS) port, with --tls-cert; 0 picks a free port, 'off' disables.")
@click.option(
    "--https-port", default="15671", show_default=True, callback=_check_port,
    help="HTTPS management port, with --tls-cert; 0 picks a free port, 'off' disables. With --tls-cert the plain "
    "--http-port is off unless given explicitly (as RabbitMQ with only management.ssl.port).",
)  # fmt: skip
@click.option("--tls-handshake-timeout", default=5.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Seconds a client has to complete the TLS handshake.")
@click.option("--tls-login-from", type=click.Choice(["common_name", "subject_alternative_name"]), default="common_name", show_default=True, help="Which certificate name the EXTERNAL mechanism logs in as (subject CN, or first DNS SAN).")
def server(
    print_config: bool, host: str, amqp_port: str, http_port: str, prometheus_port: str, data_dir: Path | None,
    storage: str, log_level: str, log_file: Path | None, log_format: str, consumer_timeout: str, consumer_timeout_action: str, frame_max: int, heartbeat: int,
    max_message_size: int, max_incomplete_content: int, queue_ram_limit: int, channel_max: int, handshake_timeout: float, max_connections: int | None,
    max_consumers_per_channel: int | None, disk_free_limit: int, memory_high_watermark: float,
    store_backlog_limit: int, max_queues: int | None, users: dict[str, UserSpec], users_file: Path | None,
    vhosts: tuple[str, ...], default_user: str, default_pass_file: Path | None, default_vhost: str,
    default_user_tags: str, loopback_users: str,
    tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None, tls_verify: str | None, amqps_port: str,
    https_port: str, tls_handshake_timeout: float, tls_login_from: str,
) -> None:  # fmt: skip
    """Run the broker until Ctrl-C or SIGTERM.

    Every option is also an environment variable LEVERET_<OPTION> (--amqp-port:
    LEVERET_AMQP_PORT) and a key of the --config file (amqp-port = 5673).
    Precedence: command line, then environment, then file, then defaults.

    \b
    Examples:
      leveret server                          # AMQP on localhost:5672 (127.0.0.1 and ::1), HTTP on :15672
      leveret server --amqp-port 0            # pick a free port (printed in the log)
      leveret server --data-dir ./data --consumer-timeout 60000
      leveret server --host 0.0.0.0 --users-file users.txt --vhost app   # lines like app:s3cret
      LEVERET_DEFAULT_PASS=... leveret server --default-user admin  # no guest on a fresh node
      leveret server --tls-cert server.pem --tls-key server.key    # + amqps://host:5671, https://host:15671
      leveret server --config /etc/leveret/leveret.toml --print-config   # what it would run with
    """
    if not print_config:
        try:
            logs.setup(log_level, log_file, log_format)
        except OSError as exc:
            click.echo(f"leveret: cannot start: cannot open the log file {log_file}: {exc.strerror or exc}", err=True)
            sys.exit(1)
    all_users = {u.name: u.password for u in users.values()}
    user_tags = {u.name: u.tags for u in users.values() if u.tags is not None}
    if users_file is not None:
        from_file, file_tags = read_users_file(users_file)
        all_users.update(from_file)
        user_tags.update(file_tags)
    settings = Settings(
        host=host,
        amqp_port=_port(amqp_port),
        http_port=_http_port(http_port, tls_cert),
        prometheus_port=_port(prometheus_port),
        data_dir=data_dir or default_data_dir(),
        storage=storage,
        log_level=log_level,
        log_file=log_file,
        log_format=log_format,
        consumer_timeout=_timeout(consumer_timeout),
        consumer_timeout_action=consumer_timeout_action,
        frame_max=frame_max,
        heartbeat=heartbeat,
        max_message_size=max_message_size,
        max_incomplete_content=max_incomplete_content,
        queue_ram_limit=queue_ram_limit or None,
        channel_max=channel_max,
        handshake_timeout=handshake_timeout,
        max_connections=max_connections,
        max_consumers_per_channel=max_consumers_per_channel,
        max_queues=max_queues,
        disk_free_limit=disk_free_limit,
        memory_high_watermark=memory_high_watermark,
        store_backlog_limit=store_backlog_limit,
        users=all_users,
        user_tags=user_tags,
        vhosts=tuple(vhosts),
        default_user=default_user,
        default_pass=_default_pass(default_user, default_pass_file),
        default_vhost=default_vhost,
        default_user_tags=parse_tags(default_user_tags),
        loopback_users=parse_tags(loopback_users),
        **_tls_options(
            click.get_current_context(), tls_cert, tls_key, tls_ca, tls_verify, amqps_port, https_port,
            tls_handshake_timeout, tls_login_from,
        ),  # fmt: skip
    )
    if print_config:
        effective = {"data_dir": settings.data_dir, "http_port": "off" if settings.http_port is None else http_port}
        click.echo(configfile.render(click.get_current_context(), effective, _default_pass_source(default_pass_file)))
        return
    from leveret.app import CannotStart, run

    try:
        run(settings)
    except KeyboardInterrupt:
        pass
    except (CannotStart, OSError, DataDirLocked) as exc:
        click.echo(f"leveret: cannot start: {exc}", err=True)
        sys.exit(1)


main.add_command(perf)
main.add_command(backup)
