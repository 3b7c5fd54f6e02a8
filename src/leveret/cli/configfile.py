"""`leveret server --config FILE` (or LEVERET_CONFIG): the server's options from a TOML file, and
`--print-config`: the effective configuration with where each value came from.

The file holds the options of ``leveret server --help`` under their own names, with dashes or
underscores (``amqp-port = 5673`` or ``amqp_port = 5673``); the repeatable ones take a list
(``vhost = ["orders", "billing"]``), and a user may also be a table
(``[[user]]`` with ``name``, ``password`` or ``password_file``, ``tags``). Relative paths are relative
to the file's directory. packaging/leveret.toml shows every key.

Precedence: command line > environment (LEVERET_<OPTION>) > file > defaults. The file's values go in
click's ``default_map``, which click consults after the command line and the environment; a list option
given on the command line or in the environment replaces the file's list. The whole file is checked
when it is read, whether or not another source overrides a value: an unknown key or a bad value stops
the start with one line naming the file and the key, exit code 2 (a usage error).
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from leveret.cli.users import UserParamType, UserSpec

#: ctx.meta key: the configuration file in use, if any.
CONFIG_FILE = "leveret.config_file"
#: Options that are actions, not settings: never read from a file or the environment.
NOT_SETTINGS = frozenset({"config", "print_config", "help"})
MASK = "********"


class ConfigError(click.ClickException):
    """A configuration file that cannot be used: one line, exit code 2 like any usage error."""

    exit_code = 2


def settings_options(command: click.Command) -> dict[str, click.Option]:
    """Each key a file may use (the option's name and its long flags, dashes as underscores) -> option."""
    keys: dict[str, click.Option] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name is None or param.name in NOT_SETTINGS:
            continue
        keys[param.name] = param
        for flag in param.opts:
            if flag.startswith("--"):
                keys[flag[2:].replace("-", "_")] = param
    return keys


def load(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """The eager callback of ``--config``: read the file, check it, make it click's default_map."""
    if value is None:
        return None
    path = Path(value)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc.reason}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    ctx.default_map = {**(ctx.default_map or {}), **file_values(ctx, path, data)}
    ctx.meta[CONFIG_FILE] = path
    return path


def file_values(ctx: click.Context, path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a parsed file) as option name -> value, each checked by its option's own type,
    range, choices and callback, and converted by its type. Raises ConfigError naming the key."""
    options = settings_options(ctx.command)
    out: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for key, raw in data.items():
        norm = key.replace("-", "_")
        param = options.get(norm)
        if param is None:
            close = difflib.get_close_matches(norm, list(options), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            if norm in NOT_SETTINGS:
                hint = f" ({key} is a command-line action, not a setting)"
            raise ConfigError(f"{path}: unknown key '{key}'{hint}")
        assert param.name is not None
        if param.name in out:
            raise ConfigError(f"{path}: '{key}' and '{keys[param.name]}' are the same option")
        try:
            # Converted once (a user's password_file is read here, not again), checked by the callback.
            value = param.type_cast_value(ctx, _shape(path, key, param, raw))
            if param.callback is not None:
                param.callback(ctx, param, value)
        except click.BadParameter as exc:
            raise ConfigError(f"{path}: {key}: {exc.message}") from None
        out[param.name] = value
        keys[param.name] = key
    return out


_SCALARS = (str, int, float)


def _shape(path: Path, key: str, param: click.Option, raw: Any) -> Any:
    """The TOML value as click expects it: a list for a repeatable option, a scalar otherwise; relative
    paths made relative to the file's directory. Refuses what a type would silently mangle (a table
    or list where one value is expected, true/false, 1.5 for a whole number)."""
    if param.multiple:
        items = raw if isinstance(raw, list) else [raw]
        return [_item(path, key, param, v) for v in items]
    if isinstance(raw, dict | list):
        raise ConfigError(
            f"{path}: {key}: expected one value, not a {'table' if isinstance(raw, dict) else 'list'}"
        )
    return _item(path, key, param, raw)


def _item(path: Path, key: str, param: click.Option, v: Any) -> Any:
    if isinstance(v, dict) and isinstance(param.type, UserParamType):
        pw = v.get("password_file", v.get("password-file"))
        if isinstance(pw, str):
            v = {k: x for k, x in v.items() if k not in ("password_file", "password-file")}
            v["password_file"] = str(path.parent / pw)
        return v
    if isinstance(v, bool) or not isinstance(v, _SCALARS):
        raise ConfigError(f"{path}: {key}: {_toml(v)} is not a valid value (a string or a number)")
    if isinstance(v, float) and isinstance(param.type, click.types.IntParamType) and not v.is_integer():
        raise ConfigError(f"{path}: {key}: {v} is not a whole number")
    if isinstance(param.type, click.Path) and isinstance(v, str) and v:
        return str(path.parent / os.path.expanduser(v))
    return v


# -- --print-config ------------------------------------------------------------------------------


def source(ctx: click.Context, param: click.Option) -> str:
    """Where ``param``'s value came from: "default", "file PATH", "env NAME" or "command line"."""
    assert param.name is not None
    got = ctx.get_parameter_source(param.name)
    if got is ParameterSource.COMMANDLINE:
        return "command line"
    if got is ParameterSource.ENVIRONMENT:
        return f"env {_envvar(ctx, param)}"
    if got is ParameterSource.DEFAULT_MAP:
        return f"file {ctx.meta.get(CONFIG_FILE, '?')}"
    return "default"


def _envvar(ctx: click.Context, param: click.Option) -> str:
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
    if not names and ctx.auto_envvar_prefix and param.name:
        names = [f"{ctx.auto_envvar_prefix}_{param.name.upper()}"]
    return next((n for n in names if os.environ.get(n)), names[0] if names else "?")


def render(ctx: click.Context, effective: dict[str, Any], default_pass_source: str) -> str:
    """The effective configuration as a TOML file (loadable with --config, passwords masked), one
    option a line in --help's order, each followed by its source. ``effective``: values that differ
    from the option's own (the data directory's default, HTTP off under TLS)."""
    lines = ["# leveret server: the effective configuration; after '#', where each value came from"]
    config = ctx.meta.get(CONFIG_FILE)
    if config is not None:
        lines.append(f"# configuration file: {config}")
    rows: list[tuple[str, str]] = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None or param.name in NOT_SETTINGS:
            continue
        value = effective.get(param.name, ctx.params.get(param.name))
        src = source(ctx, param)
        if value is None or value == () or value == {}:
            rows.append((f"# {param.name} =", f"{src}: not set"))
        else:
            rows.append((f"{param.name} = {_toml(value)}", src))
    width = min(max(len(a) for a, _ in rows), 60)
    lines += [f"{a:<{width}}  # {b}" for a, b in rows]
    lines.append(
        f"# default user's password: {MASK} (from {default_pass_source}; used on a node's first start only)"
    )
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, UserSpec):
        tags = "" if value.tags is None else f", tags = {_toml(list(value.tags))}"
        return f'{{ name = {_toml(value.name)}, password = "{MASK}"{tags} }}'
    if isinstance(value, dict):
        if all(isinstance(v, UserSpec) for v in value.values()):
            return _toml(list(value.values()))
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str) and value.isdigit():
        return value  # ports given as strings ("5672") are numbers in the file
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string
