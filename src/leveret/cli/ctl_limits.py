"""leveretctl's limit commands, with rabbitmqctl 3.10's names, options, banners, output and exit codes
(probed on 3.10.8), over the HTTP API's ``/api/user-limits`` and ``/api/vhost-limits``:

``set_user_limits USER JSON``, ``clear_user_limits USER NAME|all``, ``list_user_limits [--user U]
[--global]``, ``set_vhost_limits [-p VHOST] JSON``, ``clear_vhost_limits [-p VHOST]``,
``list_vhost_limits [-p VHOST] [--global]``.

JSON is checked before any request (RabbitMQ's texts: "JSON decoding error. Reason: badarg", an
unknown key, a value that is not a number), so a refused set changes nothing.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any

import click

from leveret.cli import ctl_format as fmt
from leveret.cli.ctl_client import ApiClient, CtlError
from leveret.model import limits as L

EX_DATAERR, EX_UNAVAILABLE = 65, 69

Action = Callable[[ApiClient], None]
Common = Callable[[Callable[..., Any]], Callable[..., Any]]
SettingsOf = Callable[[click.Context, dict[str, Any]], fmt.Settings]
Run = Callable[[fmt.Settings, Action], None]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _parse(text: str, keys: tuple[str, ...], where: str, *, validation_failed: bool) -> dict[str, int]:
    try:
        value = json.loads(text)
    except ValueError:
        raise CtlError("JSON decoding error. Reason: badarg", EX_UNAVAILABLE) from None
    try:
        return L.validate(value, keys, where)
    except ValueError as exc:
        msg = f"Validation failed\n\n{exc}\n" if validation_failed else str(exc)
        raise CtlError(msg, EX_UNAVAILABLE) from None


def _no_user(name: str) -> CtlError:
    return CtlError(f'{{:no_such_user, "{name}"}}', EX_UNAVAILABLE, 404)


def _no_vhost(name: str) -> CtlError:
    return CtlError(f"Virtual host '{name}' does not exist", EX_DATAERR, 404)


def _call(client: ApiClient, method: str, path: str, body: Any, missing: CtlError) -> None:
    try:
        client.request(method, path, body=body)
    except CtlError as e:
        if e.status == 404 or (e.status == 400 and "no_such_user" in e.reason):
            raise missing from None
        if e.status == 400:
            raise CtlError(html.unescape(e.reason).rstrip("\n"), EX_UNAVAILABLE, 400, e.reason) from None
        raise


def _get(client: ApiClient, path: str, missing: CtlError) -> Any:
    try:
        return client.get_json(path)
    except CtlError as e:
        raise missing if e.status == 404 else e from None


def add_commands(cli: click.Group, common: Common, settings_of: SettingsOf, run: Run) -> None:
    """Register the commands on ``cli`` (as :func:`leveret.cli.ctl_access.add_commands`)."""

    def command(name: str, help: str) -> Callable[[Callable[..., Any]], Any]:
        def wrap(f: Callable[..., Any]) -> Any:
            return cli.command(name, help=help)(common(click.pass_context(f)))

        return wrap

    @command("set_user_limits", "Set limits of USERNAME from a JSON object: max-connections (open at once) "
             "and max-channels (over all its connections); -1 for none, 0 refuses every one. Keys not given "
             "keep their value.\n\nExample: leveretctl set_user_limits alice "
             "'{\"max-connections\": 10, \"max-channels\": 100}'")  # fmt: skip
    @click.argument("username")
    @click.argument("definition")
    def set_user_limits(ctx: click.Context, /, username: str, definition: str, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            fmt.banner(s, f'Setting user limits to "{definition}" for user "{username}" ...')
            for key, value in _parse(definition, L.USER_KEYS, "user-limits", validation_failed=False).items():
                _call(client, "PUT", f"/api/user-limits/{fmt.q(username)}/{fmt.q(key)}", {"value": value},
                      _no_user(username))  # fmt: skip

        run(s, action)

    @command("clear_user_limits", "Remove limit NAME (max-connections, max-channels) of USERNAME, or every "
             "one with 'all'.")  # fmt: skip
    @click.argument("username")
    @click.argument("limit_name", metavar="NAME")
    def clear_user_limits(ctx: click.Context, /, username: str, limit_name: str, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            if limit_name == "all":
                fmt.banner(s, f'Clearing all limits for user "{username}" ...')
            else:
                fmt.banner(s, f'Clearing "{limit_name}" limit for user "{username}" ...')
            keys = L.USER_KEYS if limit_name == "all" else (limit_name,)
            for key in keys:
                _call(client, "DELETE", f"/api/user-limits/{fmt.q(username)}/{fmt.q(key)}", None, _no_user(username))

        run(s, action)

    @command("list_user_limits", "Show the limits of a user (--user, guest by default) as JSON, or of every "
             "user that has some (--global).")  # fmt: skip
    @click.option("--user", "user", default="guest", show_default=True, help="The user.")
    @click.option("--global", "everyone", is_flag=True, help="Every user with limits.")
    def list_user_limits(ctx: click.Context, /, user: str, everyone: bool, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            if everyone:
                rows = _get(client, "/api/user-limits", _no_user(user))
                fmt.print_rows(s, "Listing limits for all users ...", ["user", "limits"],
                               [[r["user"], _compact(r["value"])] for r in rows], timeout_banner=False)  # fmt: skip
                return
            fmt.banner(s, f'Listing limits for user "{user}" ...')
            rows = _get(client, f"/api/user-limits/{fmt.q(user)}", _no_user(user))
            click.echo(_compact(rows[0]["value"] if rows else {}))

        run(s, action)

    @command("set_vhost_limits", "Set limits of the vhost (-p) from a JSON object: max-connections and "
             "max-queues; -1 for none, 0 refuses every one. Keys not given keep their value.\n\nExample: "
             "leveretctl set_vhost_limits -p tenant-a '{\"max-queues\": 1000}'")  # fmt: skip
    @click.argument("definition")
    def set_vhost_limits(ctx: click.Context, /, definition: str, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            fmt.banner(s, f'Setting vhost limits to "{definition}" for vhost "{s.vhost}" ...')
            for key, value in _parse(definition, L.VHOST_KEYS, "limits", validation_failed=True).items():
                _call(client, "PUT", f"/api/vhost-limits/{fmt.q(s.vhost)}/{fmt.q(key)}", {"value": value},
                      _no_vhost(s.vhost))  # fmt: skip

        run(s, action)

    @command("clear_vhost_limits", "Remove every limit of the vhost (-p).")
    def clear_vhost_limits(ctx: click.Context, /, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            fmt.banner(s, f'Clearing vhost "{s.vhost}" limits ...')
            _call(client, "DELETE", f"/api/vhost-limits/{fmt.q(s.vhost)}/all", None, _no_vhost(s.vhost))

        run(s, action)

    @command("list_vhost_limits", "Show the limits of the vhost (-p) as JSON, or of every vhost that has some "
             "(--global).")  # fmt: skip
    @click.option("--global", "everyone", is_flag=True, help="Every vhost with limits.")
    def list_vhost_limits(ctx: click.Context, /, everyone: bool, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            if everyone:
                rows = _get(client, "/api/vhost-limits", _no_vhost(s.vhost))
                fmt.print_rows(s, "Listing limits for all vhosts ...", ["vhost", "limits"],
                               [[r["vhost"], _compact(r["value"])] for r in rows], timeout_banner=False)  # fmt: skip
                return
            fmt.banner(s, f'Listing limits for vhost "{s.vhost}" ...')
            rows = _get(client, f"/api/vhost-limits/{fmt.q(s.vhost)}", _no_vhost(s.vhost))
            click.echo(_compact(rows[0]["value"]) if rows else "")

        run(s, action)
