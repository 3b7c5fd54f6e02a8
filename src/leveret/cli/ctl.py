"""``leveretctl``: the rabbitmqctl of Leveret, over the management HTTP API.

Output follows rabbitmqctl's table formatter: a banner (``Timeout: 60.0 seconds ...``
and ``Listing queues for vhost / ...``, dropped by ``-q``), a header row (dropped by
``--no-table-headers``) and tab-separated rows; ``--formatter json`` prints a JSON
array instead. Exit codes follow rabbitmqctl (sysexits): 0 ok, 64 usage error
(unknown column, bad arguments), 65 object not found, 67 no such user, 69 broker
unreachable, 70 other broker error, 75 timeout, 77 authentication refused. Users, vhosts and
permissions: :mod:`leveret.cli.ctl_access`.

Options may be given before or after the command name
(``leveretctl -q list_queues`` and ``leveretctl list_queues -q`` both work).
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from leveret.cli import ctl_access, ctl_limits, ctl_move, ctl_policy
from leveret.cli import ctl_format as fmt
from leveret.cli.ctl_client import ApiClient, CtlError

F = TypeVar("F", bound=Callable[..., Any])

EPILOG = """\b
Examples:
  leveretctl list_queues name messages_ready messages_unacknowledged
  leveretctl list_queues -q --no-table-headers name messages
  leveretctl --formatter json list_consumers
  leveretctl -p /prod list_exchanges name type durable
  leveretctl purge_queue task_queue
  leveretctl delete_queue task_queue --if-empty
  leveretctl close_connection "127.0.0.1:50000 -> 127.0.0.1:5672" "go away"
  leveretctl export_definitions defs.json      (or - for stdout)
  leveretctl import_definitions defs.json
  leveretctl move_messages --to amqp://admin:s3cret@rabbit-1/%2F
  leveretctl add_user alice < password-file      (or no file: a prompt)
  leveretctl add_vhost orders
  leveretctl -p orders set_permissions alice "^alice-.*" ".*" ".*"
  leveretctl list_users
  LEVERET_URL=http://broker:15672 leveretctl -u admin --password s3cret status
"""


def _common(f: F) -> F:
    """Per-command copies of the global options; values given here override the group's."""
    opts = [
        click.option("--url", default=None, help="Management API base URL."),
        click.option("-u", "--username", default=None, help="API user (default guest)."),
        click.option("--password", default=None, help="API password (default guest)."),
        click.option("-q", "--quiet", is_flag=True, default=None, help="No banner."),
        click.option("--no-table-headers", is_flag=True, default=None, help="No header row."),
        click.option(
            "--formatter", type=click.Choice(["table", "json"]), default=None, help="Output format."
        ),
        click.option("-p", "--vhost", default=None, help="Virtual host (default /)."),
        click.option("-t", "--timeout", type=float, default=None, help="Seconds to wait (default 60)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _settings(ctx: click.Context, /, overrides: dict[str, Any]) -> fmt.Settings:
    base: fmt.Settings = ctx.ensure_object(fmt.Settings)
    for key, value in overrides.items():
        if value is not None and hasattr(base, key):
            setattr(base, key, value)
    return base


def _run(settings: fmt.Settings, action: Callable[[ApiClient], None]) -> None:
    client = ApiClient(settings.url, settings.username, settings.password, settings.timeout)
    try:
        action(client)
    except CtlError as e:
        click.echo(f"Error: {e.message}", err=True)
        sys.exit(e.exit_code)


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url", envvar="LEVERET_URL", show_envvar=True, default="http://127.0.0.1:15672", show_default=True,
    help="Management API base URL.",
)  # fmt: skip
@click.option(
    "-u", "--username", envvar="LEVERET_USERNAME", show_envvar=True, default="guest", show_default=True,
    help="API user.",
)  # fmt: skip
@click.option(
    "--password", envvar="LEVERET_PASSWORD", show_envvar=True, default="guest", show_default=True,
    help="API password (the environment keeps it out of `ps`).",
)  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="Suppress informational banners.")
@click.option("--no-table-headers", is_flag=True, help="Do not print the header row.")
@click.option("--formatter", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("-p", "--vhost", default="/", show_default=True, help="Virtual host.")
@click.option("-t", "--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait.")
@click.pass_context
def cli(ctx: click.Context, /, **opts: Any) -> None:
    """Inspect and manage a running Leveret broker (rabbitmqctl-compatible output)."""
    ctx.obj = fmt.Settings(**opts)  # fmt: skip


def _lister(kind: str) -> Callable[..., None]:
    spec = fmt.LISTINGS[kind]

    @click.argument("columns", nargs=-1)
    @_common
    @click.pass_context
    def command(ctx: click.Context, /, columns: tuple[str, ...], **opts: Any) -> None:
        s = _settings(ctx, opts)
        cols = list(columns) or list(spec.default)
        bad = [c for c in cols if c not in spec.columns]
        if bad:
            click.echo(f"Error: Invalid column(s): {', '.join(bad)}. Valid columns are: "
                       f"{', '.join(spec.columns)}", err=True)  # fmt: skip
            sys.exit(64)

        def action(client: ApiClient) -> None:
            items = client.get_json(spec.path(s.vhost))
            rows = [[spec.columns[c](item) for c in cols] for item in items if spec.keep(item, s.vhost)]
            fmt.print_rows(s, spec.banner(s.vhost), cols, rows)

        _run(s, action)

    command.__doc__ = (
        f"{spec.summary}\n\nColumns: {' '.join(spec.columns)}\n\nDefault: {' '.join(spec.default)}"
    )
    return command


for _kind in fmt.LISTINGS:
    cli.command(f"list_{_kind}")(_lister(_kind))


@cli.command("purge_queue")
@click.argument("name")
@_common
@click.pass_context
def purge_queue(ctx: click.Context, /, name: str, **opts: Any) -> None:
    """Remove every ready message from queue NAME."""
    s = _settings(ctx, opts)

    def action(client: ApiClient) -> None:
        fmt.banner(s, f"Purging queue '{name}' in vhost '{s.vhost}' ...")
        client.request("DELETE", f"/api/queues/{fmt.q(s.vhost)}/{fmt.q(name)}/contents")

    _run(s, action)


@cli.command("delete_queue")
@click.argument("name")
@click.option("--if-empty", is_flag=True, help="Only if the queue has no messages.")
@click.option("--if-unused", is_flag=True, help="Only if the queue has no consumers.")
@_common
@click.pass_context
def delete_queue(ctx: click.Context, /, name: str, if_empty: bool, if_unused: bool, **opts: Any) -> None:
    """Delete queue NAME (with its messages)."""
    s = _settings(ctx, opts)
    query = "&".join(p for p, on in (("if-empty=true", if_empty), ("if-unused=true", if_unused)) if on)

    def action(client: ApiClient) -> None:
        fmt.banner(s, f"Deleting queue '{name}' on vhost '{s.vhost}' ...")
        path = f"/api/queues/{fmt.q(s.vhost)}/{fmt.q(name)}" + (f"?{query}" if query else "")
        _, headers = client.request("DELETE", path)
        deleted = headers.get("X-Messages-Deleted")
        if deleted is not None:
            click.echo(f"Queue was successfully deleted with {deleted} ready messages")

    _run(s, action)


@cli.command("close_connection")
@click.argument("name")
@click.argument("reason")
@_common
@click.pass_context
def close_connection(ctx: click.Context, /, name: str, reason: str, **opts: Any) -> None:
    """Close connection NAME, telling the client REASON (AMQP 320 CONNECTION_FORCED)."""
    s = _settings(ctx, opts)

    def action(client: ApiClient) -> None:
        fmt.banner(s, f"Closing connection {name}, reason: {reason}...")
        client.request("DELETE", f"/api/connections/{fmt.q(name)}", headers={"X-Reason": reason})

    _run(s, action)


@cli.command("status")
@_common
@click.pass_context
def status(ctx: click.Context, /, **opts: Any) -> None:
    """Node status: versions, uptime, listeners, object and message totals, memory."""
    s = _settings(ctx, opts)

    def action(client: ApiClient) -> None:
        overview = client.get_json("/api/overview")
        nodes = client.get_json("/api/nodes")
        node = nodes[0] if nodes else {}
        if s.formatter == "json":
            click.echo(json.dumps({"overview": overview, "node": node}, indent=2))
            return
        fmt.banner(s, f"Status of node {overview.get('node')} ...")
        click.echo(fmt.status_text(overview, node))

    _run(s, action)


@cli.command("export_definitions")
@click.argument("path")
@click.option("--no-users", is_flag=True,
              help="Leave out users, permissions and topic permissions (e.g. to load into a RabbitMQ that has its own).")  # fmt: skip
@click.option("--no-global-parameters", is_flag=True,
              help="Leave out global parameters (cluster_name: importing it renames the target cluster).")  # fmt: skip
@_common
@click.pass_context
def export_definitions(
    ctx: click.Context, /, path: str, no_users: bool, no_global_parameters: bool, **opts: Any
) -> None:
    """Write RabbitMQ definitions JSON to PATH, or stdout for -.

    \b
    A full export (RabbitMQ's format, for rabbitmqctl import_definitions) holds: users (with their
    password hashes, so an import into RabbitMQ replaces users of the same name, guest included),
    vhosts, permissions, topic permissions, global parameters (cluster_name), policies, queues,
    exchanges and bindings. With -p VHOST: that vhost's policies, queues, exchanges and bindings
    only (GET /api/definitions/VHOST, RabbitMQ's per-vhost format).
    """
    vhost_given = opts.get("vhost") is not None or (
        ctx.parent is not None
        and ctx.parent.get_parameter_source("vhost") in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    )
    s = _settings(ctx, opts)

    def action(client: ApiClient) -> None:
        if vhost_given:
            doc = client.get_json(f"/api/definitions/{urllib.parse.quote(s.vhost, safe='')}")
        else:
            doc = client.get_json("/api/definitions")
        if no_users:
            for key in ("users", "permissions", "topic_permissions"):
                doc.pop(key, None)
        if no_global_parameters:
            doc.pop("global_parameters", None)
        text = json.dumps(doc, indent=2)
        if path == "-":
            click.echo(text)
            return
        fmt.banner(s, f'Exporting definitions in JSON to a file at "{path}" ...')
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        except OSError as e:
            raise CtlError(f"cannot write {path}: {e.strerror}", 73) from None

    _run(s, action)


@cli.command("import_definitions")
@click.argument("path")
@_common
@click.pass_context
def import_definitions(ctx: click.Context, /, path: str, **opts: Any) -> None:
    """Load RabbitMQ definitions JSON from PATH (or - for stdin) into the broker."""
    s = _settings(ctx, opts)

    def action(client: ApiClient) -> None:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
            doc = json.loads(text)
        except OSError as e:
            raise CtlError(f"cannot read {path}: {e.strerror}", 66) from None
        except json.JSONDecodeError as e:
            raise CtlError(f"{path} is not valid JSON: {e}", 65) from None
        fmt.banner(s, f'Importing definitions in JSON from a file at "{path}" ...')
        _, headers = client.request("POST", "/api/definitions", body=doc)
        ignored = headers.get("X-Leveret-Ignored")
        if ignored:
            click.echo(f"Not imported (kept as they are on this node): {ignored}", err=True)
        fmt.banner(
            s, "Successfully started definition import. This process is asynchronous and can take some time."
        )

    _run(s, action)


ctl_access.add_commands(cli, _common, _settings, _run)
ctl_policy.add_commands(cli, _common, _settings, _run)
ctl_limits.add_commands(cli, _common, _settings, _run)
ctl_move.add_commands(cli, _common, _settings, _run)


def main() -> None:
    """Console entry point (``leveretctl``)."""
    cli(prog_name="leveretctl")


if __name__ == "__main__":
    main()
