"""leveretctl's user, vhost and permission commands, with rabbitmqctl 3.10's names, arguments,
banners (``Adding user "alice" ...``), messages, list columns and exit codes (65 no such vhost or
bad data, 67 no such user, 70 user exists or no password given), over the HTTP API's
``/api/users``, ``/api/vhosts``, ``/api/permissions`` and ``/api/topic-permissions``.

A password is never needed on the command line: left out, it is read from standard input (one
line) when that is not a terminal, or prompted for (twice, without echo) when it is.

Unlike rabbitmqctl, which runs on the node as the node itself, leveretctl acts as its HTTP user:
``add_vhost`` gives that user full permissions on the new vhost, as RabbitMQ's HTTP API does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from leveret.cli import ctl_format as fmt
from leveret.cli.ctl_client import ApiClient, CtlError

EX_DATAERR, EX_NOUSER, EX_SOFTWARE = 65, 67, 70

Action = Callable[[ApiClient], None]
Common = Callable[[Callable[..., Any]], Callable[..., Any]]
SettingsOf = Callable[[click.Context, dict[str, Any]], fmt.Settings]
Run = Callable[[fmt.Settings, Action], None]

PASSWORD_HELP = (
    "If PASSWORD is left out it is read from standard input (one line, e.g. `leveretctl {cmd} {user} < file`) "
    "when that is not a terminal, or prompted for without echo when it is. A password given as an "
    "argument is visible to other users of this machine (ps, shell history)."
)
ADD_USER_DONE = (
    "Done. Don't forget to grant the user permissions to some virtual hosts! "
    "See 'leveretctl set_permissions --help' to learn more."
)


def q(segment: str) -> str:
    return fmt.q(segment)


def read_password(given: str | None, *, confirm: bool, missing_code: int) -> str:
    """The password argument, or one line of stdin (not a terminal), or a prompt without echo.
    An empty line or end of input is rabbitmqctl's "Password is not provided via argument or stdin"."""
    if given is not None:
        return given
    stdin = click.get_text_stream("stdin")
    if stdin.isatty():
        password: str = click.prompt("Password", hide_input=True, confirmation_prompt=confirm, err=True)
        return password
    line = stdin.readline()
    line = line[:-1] if line.endswith("\n") else line
    line = line[:-1] if line.endswith("\r") else line
    if not line:
        raise CtlError("Password is not provided via argument or stdin", missing_code)
    return line


def no_user(name: str) -> CtlError:
    return CtlError(f'User "{name}" does not exist', EX_NOUSER)


def no_vhost(name: str) -> CtlError:
    return CtlError(f"Virtual host {name} does not exist", EX_DATAERR)


def get_or_none(client: ApiClient, path: str) -> Any:
    """The JSON at ``path``, or None if it is 404."""
    try:
        return client.get_json(path)
    except CtlError as e:
        if e.status == 404:
            return None
        raise


def get_user(client: ApiClient, name: str) -> dict[str, Any]:
    user = get_or_none(client, f"/api/users/{q(name)}")
    if user is None:
        raise no_user(name)
    result: dict[str, Any] = user
    return result


def which_is_missing(client: ApiClient, user: str, vhost: str) -> CtlError | None:
    """rabbitmqctl's no-such-user or no-such-vhost error, whichever applies (None if both exist)."""
    if get_or_none(client, f"/api/users/{q(user)}") is None:
        return no_user(user)
    if get_or_none(client, f"/api/vhosts/{q(vhost)}") is None:
        return no_vhost(vhost)
    return None


def done(
    s: fmt.Settings,
    client: ApiClient,
    message: str | None = None,
    value: str | None = None,
    key: str = "result",
) -> None:
    """rabbitmqctl's output of a command that succeeded: ``message`` (unless -q), or in
    ``--formatter json`` ``{"result": "ok", "node": ...}`` (with the message or value; add_user says ``"status"``)."""
    if s.formatter == "json":
        out: dict[str, Any] = {key: "ok", "node": client.get_json("/api/overview").get("node")}
        if message is not None:
            out["message"] = message
        if value is not None:
            out["value"] = value
        click.echo(json.dumps(out))
    elif (message or value) and not s.quiet:
        click.echo(message or value)


def add_commands(cli: click.Group, common: Common, settings_of: SettingsOf, run: Run) -> None:
    """Register the commands on ``cli`` (``common``, ``settings_of``, ``run``: leveretctl's option
    copies, settings and error handling)."""

    def command(name: str, help: str) -> Callable[[Callable[..., Any]], Any]:
        def wrap(f: Callable[..., Any]) -> Any:
            return cli.command(name, help=help)(common(click.pass_context(f)))

        return wrap

    # ---- users ----------------------------------------------------------------------------------

    @command("add_user", "Create user USERNAME (no tags, no permissions).\n\n" + PASSWORD_HELP.format(
        cmd="add_user", user="alice") + " An empty PASSWORD makes a user who cannot log in with one.")  # fmt: skip
    @click.argument("username")
    @click.argument("password", required=False)
    def add_user(ctx: click.Context, /, username: str, password: str | None, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            if username == "":
                raise CtlError("user cannot be an empty string", EX_DATAERR)
            fmt.banner(s, f'Adding user "{username}" ...')
            if get_or_none(client, f"/api/users/{q(username)}") is not None:
                raise CtlError(f'User "{username}" already exists', EX_SOFTWARE)
            secret = read_password(password, confirm=True, missing_code=EX_DATAERR)
            client.request("PUT", f"/api/users/{q(username)}", body={"password": secret, "tags": ""})
            done(s, client, ADD_USER_DONE, key="status")

        run(s, action)

    @command("delete_user", "Delete user USERNAME with its permissions; its connections are closed.")
    @click.argument("username")
    def delete_user(ctx: click.Context, /, username: str, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            fmt.banner(s, f'Deleting user "{username}" ...')
            try:
                client.request("DELETE", f"/api/users/{q(username)}")
            except CtlError as e:
                raise no_user(username) if e.status == 404 else e from None
            done(s, client)

        run(s, action)

    @command("change_password", "Change the password of USERNAME (its connections are closed).\n\n"
             + PASSWORD_HELP.format(cmd="change_password", user="alice"))  # fmt: skip
    @click.argument("username")
    @click.argument("password", required=False)
    def change_password(ctx: click.Context, /, username: str, password: str | None, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            fmt.banner(s, f'Changing password for user "{username}" ...')
            user = get_user(client, username)
            secret = read_password(password, confirm=True, missing_code=EX_SOFTWARE)
            client.request(
                "PUT", f"/api/users/{q(username)}", body={"password": secret, "tags": user["tags"]}
            )
            done(s, client)

        run(s, action)

    @command("clear_password", "Remove the password of USERNAME: it can no longer log in with one.")
    @click.argument("username")
    def clear_password(ctx: click.Context, /, username: str, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            fmt.banner(s, f'Clearing password for user "{username}" ...')
            user = get_user(client, username)
            # RabbitMQ's PUT rule: an existing user given neither password nor hash loses its password.
            client.request("PUT", f"/api/users/{q(username)}", body={"tags": user["tags"]})
            done(s, client)

        run(s, action)

    @command("authenticate_user", "Check that USERNAME logs in with PASSWORD (exit 65 if not).\n\n"
             + PASSWORD_HELP.format(cmd="authenticate_user", user="alice"))  # fmt: skip
    @click.argument("username")
    @click.argument("password", required=False)
    def authenticate_user(ctx: click.Context, /, username: str, password: str | None, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            fmt.banner(s, f'Authenticating user "{username}" ...')
            secret = read_password(password, confirm=False, missing_code=EX_SOFTWARE)
            try:
                ApiClient(s.url, username, secret, s.timeout).get_json("/api/whoami")
            except CtlError as e:
                # A user without a management tag logged in, it just may not use the HTTP API.
                if e.status != 401 or e.reason != "Not management user":
                    reason = e.reason if e.status == 401 else e.message
                    code = EX_DATAERR if e.status == 401 else e.exit_code
                    raise CtlError(f'failed to authenticate user "{username}": {reason}', code) from None
            done(s, client, value="Success")

        run(s, action)

    @command("set_user_tags", "Set the tags of USERNAME (none given: no tags). Tags: administrator, "
             "monitoring, policymaker, management, impersonator; others are kept and ignored.")  # fmt: skip
    @click.argument("username")
    @click.argument("tags", nargs=-1)
    def set_user_tags(ctx: click.Context, /, username: str, tags: tuple[str, ...], **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            fmt.banner(s, f'Setting tags for user "{username}" to [{", ".join(tags)}] ...')
            user = get_user(client, username)
            body = {"password_hash": user["password_hash"], "hashing_algorithm": user["hashing_algorithm"],
                    "tags": list(tags)}  # fmt: skip
            client.request("PUT", f"/api/users/{q(username)}", body=body)
            done(s, client)

        run(s, action)

    @command("list_users", "List users and their tags.\n\nColumns: user tags")
    def list_users(ctx: click.Context, /, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            rows = [[u["name"], fmt.Atoms(u.get("tags") or [])] for u in client.get_json("/api/users")]
            fmt.print_rows(s, "Listing users ...", ["user", "tags"], rows, timeout_banner=False)

        run(s, action)

    # ---- vhosts ---------------------------------------------------------------------------------

    @command("add_vhost", "Create virtual host VHOST (nothing happens if it exists). The leveretctl "
             "user gets full permissions on it, as with RabbitMQ's HTTP API.")  # fmt: skip
    @click.argument("vhost_name", metavar="VHOST")
    @click.option("--description", "-d", default="", help="Virtual host description.")
    @click.option("--tags", default="", help='Comma-separated list of tags ("a,b").')
    def add_vhost(ctx: click.Context, /, vhost_name: str, description: str, tags: str, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            fmt.banner(s, f'Adding vhost "{vhost_name}" ...')
            if get_or_none(client, f"/api/vhosts/{q(vhost_name)}") is None:
                body = {"description": description, "tags": tags}
                client.request("PUT", f"/api/vhosts/{q(vhost_name)}", body=body)
            done(s, client)

        run(s, action)

    @command("delete_vhost", "Delete virtual host VHOST with all its queues, exchanges, bindings and "
             "permissions; its connections are closed.")  # fmt: skip
    @click.argument("vhost_name", metavar="VHOST")
    def delete_vhost(ctx: click.Context, /, vhost_name: str, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            fmt.banner(s, f'Deleting vhost "{vhost_name}" ...')
            try:
                client.request("DELETE", f"/api/vhosts/{q(vhost_name)}")
            except CtlError as e:
                raise no_vhost(vhost_name) if e.status == 404 else e from None
            done(s, client)

        run(s, action)

    # ---- permissions ----------------------------------------------------------------------------

    @command("set_permissions", "Set the configure, write and read regexes of USERNAME in the vhost (-p).")
    @click.argument("username")
    @click.argument("conf")
    @click.argument("write")
    @click.argument("read")
    def set_permissions(
        ctx: click.Context, /, username: str, conf: str, write: str, read: str, **opts: Any
    ) -> None:  # fmt: skip
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            fmt.banner(s, f'Setting permissions for user "{username}" in vhost "{s.vhost}" ...')
            body = {"configure": conf, "write": write, "read": read}
            put(client, f"/api/permissions/{q(s.vhost)}/{q(username)}", body, username, s.vhost)
            done(s, client)

        run(s, action)

    @command("clear_permissions", "Remove the permissions of USERNAME in the vhost (-p).")
    @click.argument("username")
    def clear_permissions(ctx: click.Context, /, username: str, **opts: Any) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            fmt.banner(s, f'Clearing permissions for user "{username}" in vhost "{s.vhost}" ...')
            delete(client, f"/api/permissions/{q(s.vhost)}/{q(username)}", username, s.vhost)
            done(s, client)

        run(s, action)

    @command(
        "list_permissions", "List the permissions in the vhost (-p).\n\nColumns: user configure write read"
    )
    def list_permissions(ctx: click.Context, /, **opts: Any) -> None:
        s = settings_of(ctx, opts)
        title = f'Listing permissions for vhost "{s.vhost}" ...'
        run(s, listing(s, title, f"/api/vhosts/{q(s.vhost)}/permissions", ("user", "configure", "write", "read"),
                       no_vhost(s.vhost)))  # fmt: skip

    @command("list_user_permissions", "List the permissions of USERNAME in every vhost.\n\n"
             "Columns: vhost configure write read")  # fmt: skip
    @click.argument("username")
    def list_user_permissions(ctx: click.Context, /, username: str, **opts: Any) -> None:
        s = settings_of(ctx, opts)
        title = f'Listing permissions for user "{username}" ...'
        run(s, listing(s, title, f"/api/users/{q(username)}/permissions", ("vhost", "configure", "write", "read"),
                       no_user(username)))  # fmt: skip

    @command("set_topic_permissions", "Set the write and read regexes (routing keys) of USERNAME on topic "
             "exchange EXCHANGE in the vhost (-p). {username} and {vhost} in them are expanded.")  # fmt: skip
    @click.argument("username")
    @click.argument("exchange")
    @click.argument("write")
    @click.argument("read")
    def set_topic_permissions(
        ctx: click.Context, /, username: str, exchange: str, write: str, read: str, **opts: Any
    ) -> None:  # fmt: skip
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            fmt.banner(
                s, f'Setting topic permissions on "{exchange}" for user "{username}" in vhost "{s.vhost}" ...'
            )
            body = {"exchange": exchange, "write": write, "read": read}
            put(client, f"/api/topic-permissions/{q(s.vhost)}/{q(username)}", body, username, s.vhost)
            done(s, client)

        run(s, action)

    @command("clear_topic_permissions", "Remove the topic permissions of USERNAME in the vhost (-p), or "
             "only those on EXCHANGE.")  # fmt: skip
    @click.argument("username")
    @click.argument("exchange", required=False)
    def clear_topic_permissions(
        ctx: click.Context, /, username: str, exchange: str | None, **opts: Any
    ) -> None:
        s = settings_of(ctx, opts)

        def action(client: ApiClient) -> None:
            path = f"/api/topic-permissions/{q(s.vhost)}/{q(username)}"
            if exchange is None:
                fmt.banner(s, f'Clearing topic permissions for user "{username}" in vhost "{s.vhost}" ...')
            else:
                fmt.banner(s, f'Clearing topic permissions on "{exchange}" for user "{username}" in vhost '
                              f'"{s.vhost}" ...')  # fmt: skip
                path += f"/{q(exchange)}"
            delete(client, path, username, s.vhost)
            done(s, client)

        run(s, action)

    @command("list_topic_permissions", "List the topic permissions in the vhost (-p).\n\n"
             "Columns: user exchange write read")  # fmt: skip
    def list_topic_permissions(ctx: click.Context, /, **opts: Any) -> None:
        s = settings_of(ctx, opts)
        title = f'Listing topic permissions for vhost "{s.vhost}" ...'
        run(s, listing(s, title, f"/api/vhosts/{q(s.vhost)}/topic-permissions",
                       ("user", "exchange", "write", "read"), no_vhost(s.vhost)))  # fmt: skip

    @command("list_user_topic_permissions", "List the topic permissions of USERNAME in every vhost "
             "(no header row, as rabbitmqctl).\n\nColumns: vhost exchange write read")  # fmt: skip
    @click.argument("username")
    def list_user_topic_permissions(ctx: click.Context, /, username: str, **opts: Any) -> None:
        s = settings_of(ctx, opts)
        title = f'Listing topic permissions for user "{username}" ...'
        run(s, listing(s, title, f"/api/users/{q(username)}/topic-permissions",
                       ("vhost", "exchange", "write", "read"), no_user(username), headers=False))  # fmt: skip


def listing(
    s: fmt.Settings, title: str, path: str, cols: tuple[str, ...], missing: CtlError, *, headers: bool = True
) -> Action:
    """An action printing the rows at ``path`` (``missing`` if it is 404)."""

    def action(client: ApiClient) -> None:
        items = get_or_none(client, path)
        if items is None:
            raise missing
        rows = [[item.get(c) for c in cols] for item in items]
        fmt.print_rows(s, title, list(cols), rows, timeout_banner=False, headers=headers)

    return action


def put(client: ApiClient, path: str, body: dict[str, Any], user: str, vhost: str) -> None:
    """PUT a permission; RabbitMQ's ``vhost_or_user_not_found`` becomes whichever is missing."""
    try:
        client.request("PUT", path, body=body)
    except CtlError as e:
        if e.status == 400 and e.reason == "vhost_or_user_not_found":
            raise which_is_missing(client, user, vhost) or e from None
        if e.status == 400:
            raise CtlError(e.reason, EX_DATAERR, 400, e.reason) from None
        raise


def delete(client: ApiClient, path: str, user: str, vhost: str) -> None:
    """DELETE a permission: nothing to clear is fine, an unknown user or vhost is an error."""
    try:
        client.request("DELETE", path)
    except CtlError as e:
        if e.status != 404:
            raise
        missing = which_is_missing(client, user, vhost)
        if missing is not None:
            raise missing from None
