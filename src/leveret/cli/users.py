"""`leveret server`'s users, from places other than the command line: a users file, environment
variables, a password file. A password given as an argument shows in ``ps`` and in /proc/PID/cmdline
to every user of the machine; a file (mode 600) or the server's environment does not.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import click

log = logging.getLogger("leveret.cli")

#: Tags of a user from --user, LEVERET_USERS or a users-file line without tags.
DEFAULT_TAGS = ("administrator",)


def parse_tags(text: str) -> tuple[str, ...]:
    """'a, b,,c' -> ('a', 'b', 'c'); 'none' or '' -> ()."""
    if text.strip().lower() == "none":
        return ()
    out: list[str] = []
    for t in text.split(","):
        t = t.strip()
        if t and t not in out:
            out.append(t)
    return tuple(out)


def warn_if_world_readable(path: Path, what: str) -> None:
    """Passwords in a file others can read are not secret: say so (the start goes on)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & stat.S_IROTH:
        log.warning(
            "%s %s is readable by every user of this machine (mode %04o): chmod 600 it",
            what, path, stat.S_IMODE(mode),
        )  # fmt: skip


def read_users_file(path: Path) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """Users from ``path``: one per line, ``NAME:PASSWORD`` or ``NAME:PASSWORD:TAG,TAG``; blank lines
    and lines starting with '#' are skipped. The name ends at the first colon; with two or more colons
    the tags follow the last one, so a password containing ':' is written with a tags field, possibly
    empty (``app:pa:ss:`` is password ``pa:ss``, no tags). Returns (name -> password, name -> tags)
    with tags only for lines that have a tags field. Raises click.BadParameter naming the line."""
    warn_if_world_readable(path, "users file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--users-file") from None
    users: dict[str, str] = {}
    tags: dict[str, tuple[str, ...]] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, rest = line.partition(":")
        if not sep or not name or not rest:
            raise click.BadParameter(
                f"{path}:{n}: expected NAME:PASSWORD[:TAG,TAG]", param_hint="--users-file"
            )
        password, has_tags, tag_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
        if not password:
            raise click.BadParameter(
                f"{path}:{n}: user '{name}' has an empty password", param_hint="--users-file"
            )
        users[name] = password
        if has_tags:
            tags[name] = parse_tags(tag_text) if tag_text.strip() else ()
    return users, tags


def read_secret_file(path: Path, option: str) -> str:
    """The first line of ``path`` (without its line end): a password kept out of the command line."""
    warn_if_world_readable(path, "password file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint=option) from None
    if not lines or not lines[0]:
        raise click.BadParameter(f"{path}: the first line (the password) is empty", param_hint=option)
    return lines[0]


class UserSpec(NamedTuple):
    """One ``--user`` value: tags None means "administrator if new, else unchanged"."""

    name: str
    password: str
    tags: tuple[str, ...] | None = None


if TYPE_CHECKING:  # generic from click 8.2 on; pyproject allows 8.1
    _UserParamBase = click.ParamType[UserSpec]
else:
    _UserParamBase = click.ParamType


class UserParamType(_UserParamBase):
    """``--user``'s type: ``NAME:PASSWORD`` (command line, LEVERET_USERS), or from a configuration
    file a table ``{name = "app", password = "..." | password_file = "...", tags = ["management"]}``.
    Error messages never repeat the value: it may hold a password."""

    name = "user"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> UserSpec:
        if isinstance(value, UserSpec):
            return value
        if isinstance(value, dict):
            return self._table(value, param, ctx)
        name, sep, password = str(value).partition(":")
        if not sep or not name:
            self.fail(
                "expected NAME:PASSWORD (the value is not repeated: it may hold a password)", param, ctx
            )
        return UserSpec(name, password)

    def _table(
        self, table: dict[str, Any], param: click.Parameter | None, ctx: click.Context | None
    ) -> UserSpec:
        unknown = sorted(set(table) - {"name", "password", "password_file", "password-file", "tags"})
        if unknown:
            self.fail(
                f"unknown key {unknown[0]!r} in a user (keys: name, password or password_file, tags)",
                param,
                ctx,
            )
        name = table.get("name")
        if not isinstance(name, str) or not name or ":" in name:
            self.fail("a user needs a name (a string without ':')", param, ctx)
        password = table.get("password")
        password_file = table.get("password_file", table.get("password-file"))
        if (password is None) == (password_file is None):
            self.fail(f"user '{name}' needs one of password or password_file", param, ctx)
        if password_file is not None:
            password = read_secret_file(Path(str(password_file)), f"user '{name}' password_file")
        if not isinstance(password, str) or not password:
            self.fail(f"user '{name}': the password must be a non-empty string", param, ctx)
        tags = table.get("tags")
        if tags is None:
            return UserSpec(name, password)
        if isinstance(tags, str):
            return UserSpec(name, password, parse_tags(tags))
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            self.fail(f"user '{name}': tags must be a list of strings", param, ctx)
        return UserSpec(name, password, parse_tags(",".join(tags)))
