"""leveretctl's policy commands, with rabbitmqctl 3.10's names, options, banners, list columns and
exit codes, over the HTTP API's ``/api/policies`` and ``/api/operator-policies``:
``set_policy [-p VHOST] [--priority N] [--apply-to queues|exchanges|all] NAME PATTERN DEFINITION``,
``clear_policy NAME``, ``list_policies``, and ``set_operator_policy`` / ``clear_operator_policy`` /
``list_operator_policies`` likewise. A definition the broker refuses exits 69 with RabbitMQ's
"Validation failed" text; DEFINITION that is not JSON is refused before any request
("JSON decoding error. Reason: badarg", as rabbitmqctl says)."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any

import click

from leveret.cli import ctl_format as fmt
from leveret.cli.ctl_client import ApiClient, CtlError

EX_DATAERR, EX_UNAVAILABLE = 65, 69
COLUMNS = ("vhost", "name", "pattern", "apply-to", "definition", "priority")

Action = Callable[[ApiClient], None]
Common = Callable[[Callable[..., Any]], Callable[..., Any]]
SettingsOf = Callable[[click.Context, dict[str, Any]], fmt.Settings]
Run = Callable[[fmt.Settings, Action], None]
Command = Callable[[str, str], Callable[[Callable[..., Any]], Any]]


def add_commands(cli: click.Group, common: Common, settings_of: SettingsOf, run: Run) -> None:
    """Register the commands on ``cli`` (as :func:`leveret.cli.ctl_access.add_commands`)."""

    def command(name: str, help: str) -> Callable[[Callable[..., Any]], Any]:
        def wrap(f: Callable[..., Any]) -> Any:
            return cli.command(name, help=help)(common(click.pass_context(f)))

        return wrap

    for operator in (False, True):
        _add(command, settings_of, run, operator)


def _add(command: Command, settings_of: SettingsOf, run: Run, operator: bool) -> None:
    what = "operator policy" if operator else "policy"
    suffix = "operator_policy" if operator else "policy"
    api = "/api/operator-policies" if operator else "/api/policies"

    @command(f"set_{suffix}", f"Set {what} NAME in the vhost (-p): objects whose name PATTERN (a regular expression, "
             "unanchored) matches take the settings of DEFINITION (a JSON object), the highest --priority winning."
             + (" Operator policies may set only expires, message-ttl, max-length, max-length-bytes, "
                "max-in-memory-length, max-in-memory-bytes and delivery-limit; the lower value of theirs and the "
                "policy's wins." if operator else ""))  # fmt: skip
    @click.option("--priority", type=int, default=0, show_default=True, help="Higher wins.")
    @click.option(
        "--apply-to", "apply_to", default="all", show_default=True, help="queues, exchanges or all."
    )
    @click.argument("name")
    @click.argument("pattern")
    @click.argument("definition")
    def set_(
        ctx: click.Context, /, name: str, pattern: str, definition: str, priority: int, apply_to: str, **opts: Any
    ) -> None:  # fmt: skip
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            label = "operator policy override" if operator else "policy"
            fmt.banner(s, f'Setting {label} "{name}" for pattern "{pattern}" to "{definition}" with priority '
                          f'"{priority}" for vhost "{s.vhost}" ...')  # fmt: skip
            try:
                parsed = json.loads(definition)
            except ValueError:
                raise CtlError("JSON decoding error. Reason: badarg", EX_UNAVAILABLE) from None
            body = {"pattern": pattern, "definition": parsed, "priority": priority, "apply-to": apply_to}
            try:
                client.request("PUT", f"{api}/{fmt.q(s.vhost)}/{fmt.q(name)}", body=body)
            except CtlError as e:
                raise _refused(e, s.vhost) from None

        run(s, action)

    @command(f"clear_{suffix}", f"Remove {what} NAME from the vhost (-p).")
    @click.argument("name")
    def clear(ctx: click.Context, /, name: str, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            fmt.banner(s, f'Clearing {what} "{name}" on vhost "{s.vhost}" ...')
            try:
                client.request("DELETE", f"{api}/{fmt.q(s.vhost)}/{fmt.q(name)}")
            except CtlError as e:
                if e.status == 404:
                    raise CtlError("Parameter does not exist", EX_DATAERR, 404) from None
                raise

        run(s, action)

    @command(f"list_{suffix.replace('policy', 'policies')}",
             f"List the {what.replace('policy', 'policies')} of the vhost (-p).\n\nColumns: " + " ".join(COLUMNS))  # fmt: skip
    def list_(ctx: click.Context, /, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            try:
                items = client.get_json(f"{api}/{fmt.q(s.vhost)}")
            except CtlError as e:
                if e.status == 404:
                    raise CtlError(f"Virtual host {s.vhost} does not exist", EX_DATAERR, 404) from None
                raise
            rows = [[p["vhost"], p["name"], p["pattern"], p["apply-to"],
                     json.dumps(p["definition"], separators=(",", ":")), p["priority"]] for p in items]  # fmt: skip
            title = "Listing operator policy overrides" if operator else "Listing policies"
            fmt.print_rows(s, f'{title} for vhost "{s.vhost}" ...', list(COLUMNS), rows, timeout_banner=False)

        run(s, action)


def _refused(e: CtlError, vhost: str) -> CtlError:
    """The API's refusal as rabbitmqctl reports it."""
    if e.status == 400:
        text = html.unescape(e.reason).rstrip("\n")
        return CtlError(text, EX_UNAVAILABLE, 400, e.reason)
    if e.status == 404:
        return CtlError(f"Virtual host {vhost} does not exist", EX_DATAERR, 404)
    return e
