"""``leveretctl move_messages``: the command around :mod:`leveret.cli.move` (queue selection from the
source's management API, the target check, a rich progress bar, the summary).

Exit codes: 0 every queue moved; 65 the target lacks queues (and ``--create-missing`` was not
given), or no queue matched; 64 a bad URL or pattern; 69 the source's API unreachable; 70 a queue's
move stopped (its summary line says why; what was not moved is still on the source).
"""

from __future__ import annotations

import asyncio
import re
import sys
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from leveret.cli import ctl_format as fmt
from leveret.cli import move
from leveret.cli.ctl_client import ApiClient
from leveret.cli.perf_client import URL, AMQPError

Action = Callable[[ApiClient], None]
Common = Callable[[Callable[..., Any]], Callable[..., Any]]
SettingsOf = Callable[[click.Context, dict[str, Any]], fmt.Settings]
Run = Callable[[fmt.Settings, Action], None]

HELP = """Move the messages of queues to another broker (e.g. a RabbitMQ cluster), with publisher
confirms: a message is removed here only after the target confirmed it.

\b
The queues are those of the source vhost (-p) listed by the management API (--url), all of them or
those whose whole name matches one of the --queue regular expressions; exclusive and auto-delete
queues are skipped. Each goes to the queue of the same name on the target (through its default
exchange), properties and headers unchanged, in order. The target must have the queues, unless
--create-missing (then they are declared with the source's durability, arguments and type).

\b
Faults (a dropped connection, either broker killed) lose nothing: the move reconnects and resumes.
At most --window messages per queue per fault may arrive twice (those in flight at the fault); a
killed source also gives back the acks it had taken but not yet written. See docs/migrating.md.

\b
Examples:
  leveretctl move_messages --to amqp://admin:s3cret@rabbit-1:5672/%2F
  leveretctl -p orders move_messages --to amqp://u:p@rabbit/orders --queue 'invoice\\..*' --create-missing
  leveretctl --url http://rabbit:15672 move_messages --from amqp://u:p@rabbit/%2F --to amqp://guest:guest@localhost/%2F
"""


def _source_url(s: fmt.Settings, given: str | None) -> str:
    if given:
        return given
    host = urllib.parse.urlsplit(s.url).hostname or "127.0.0.1"
    user, password = urllib.parse.quote(s.username, safe=""), urllib.parse.quote(s.password, safe="")
    return f"amqp://{user}:{password}@{host}:5672/{urllib.parse.quote(s.vhost, safe='')}"


def _loop_run(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro_fn())
        return
    uvloop.run(coro_fn())


def _summary(q: move.QueueMove) -> str:
    line = f"{q.name}: moved {q.moved:,} messages in {q.busy_s:.1f} s ({q.rate:,.0f} msg/s)"
    if q.faults:
        line += (f"; {q.faults} fault(s) survived, {q.in_doubt:,} message(s) in flight at them may arrive twice"
                 " (after a kill of the source, also the acks it had not yet written)")  # fmt: skip
    if q.left:
        line += f"; {q.left:,} left on the source (arrived after the move; run again)"
    if q.error:
        line += f"; STOPPED: {q.error}"
    return line


def add_commands(cli: click.Group, common: Common, settings_of: SettingsOf, run: Run) -> None:
    """Register ``move_messages`` on ``cli`` (as :func:`leveret.cli.ctl_access.add_commands`)."""

    @cli.command("move_messages", help=HELP)
    @click.option("--to", "to_url", required=True, help="Target AMQP URL: amqp[s]://user:password@host:port/vhost.")
    @click.option("--from", "from_url", default=None,
                  help="Source AMQP URL (default: the --url host, port 5672, the API user, the -p vhost).")  # fmt: skip
    @click.option("--queue", "patterns", multiple=True, metavar="PATTERN",
                  help="Only queues whose whole name matches this regular expression (repeatable).")  # fmt: skip
    @click.option("--create-missing", is_flag=True, help="Declare the queues the target lacks, from the source's definitions.")
    @click.option("--window", type=click.IntRange(1, 65535), default=1000, show_default=True,
                  help="Messages in flight per queue (source prefetch); also the duplicates bound per fault.")  # fmt: skip
    @click.option("--idle", "idle_s", type=float, default=2.0, show_default=True,
                  help="A queue is done when empty and nothing arrived for this many seconds.")  # fmt: skip
    @click.option("--retry-for", type=float, default=300.0, show_default=True,
                  help="Seconds to keep reconnecting after a fault before giving a queue up.")  # fmt: skip
    @click.option("--stall-timeout", "stall_s", type=float, default=60.0, show_default=True,
                  help="Reconnect when the target confirms nothing for this many seconds while messages wait.")  # fmt: skip
    @click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a terminal).")
    @common
    @click.pass_context
    def move_messages(ctx: click.Context, /, to_url: str, from_url: str | None, patterns: tuple[str, ...],
                      create_missing: bool, window: int, idle_s: float, retry_for: float, stall_s: float,
                      progress: bool | None, **opts: Any) -> None:  # fmt: skip
        s = settings_of(ctx, opts)
        try:
            target = URL.parse(to_url)
            source = URL.parse(_source_url(s, from_url))
            for p in patterns:
                re.compile(p)
        except (ValueError, re.error) as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(64)
        listed: list[dict[str, Any]] = []

        def action(client: ApiClient) -> None:
            listed.extend(client.get_json(f"/api/queues/{fmt.q(source.vhost)}"))

        run(s, action)
        queues, skipped = move.select_queues(listed, patterns)
        for note in skipped:
            click.echo(f"Skipping queue {note}", err=True)
        if not queues:
            click.echo(f"Error: no queue to move in vhost '{source.vhost}'"
                       + (f" matching {', '.join(patterns)}" if patterns else ""), err=True)  # fmt: skip
            sys.exit(65)
        console = Console(stderr=True)
        show = console.is_terminal if progress is None else progress
        outcome: dict[str, Any] = {}

        async def main() -> None:
            try:
                missing = await move.missing_queues(target, queues)
            except (OSError, TimeoutError, AMQPError, move.MoveError) as e:
                outcome["fatal"] = (f"cannot check the target {target.host}:{target.port}: {e}", 69)
                return
            if missing and not create_missing:
                outcome["fatal"] = (f"the target (vhost '{target.vhost}') has no queue {', '.join(map(repr, missing))}; "
                                    "import the definitions first (leveretctl export_definitions, rabbitmqctl "
                                    "import_definitions) or pass --create-missing", 65)  # fmt: skip
                return
            if missing:
                try:
                    await move.create_queues(target, queues, missing)
                except (OSError, TimeoutError, AMQPError, move.MoveError) as e:
                    outcome["fatal"] = (str(e), 70)
                    return
                for name in missing:
                    click.echo(f"Created queue '{name}' on the target", err=True)
            fmt.banner(s, f"Moving messages of {len(queues)} queue(s) from {source.host}:{source.port} vhost "
                          f"'{source.vhost}' to {target.host}:{target.port} vhost '{target.vhost}' ...")  # fmt: skip
            bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]:>7,.0f} msg/s"), TimeElapsedColumn(),
                            TextColumn("{task.fields[note]}"), console=console, disable=not show)  # fmt: skip
            tasks = {q.name: bars.add_task(q.name, total=q.backlog or None, rate=0.0, note="") for q in queues}

            def tick() -> None:
                for q in queues:
                    note = f"{q.faults} fault(s)" if q.faults else ""
                    bars.update(tasks[q.name], completed=q.moved, total=max(q.moved + q.backlog, 1),
                                rate=q.rate, note=note)  # fmt: skip

            with bars:
                await move.move_all(queues, source, target, window=window, idle_s=idle_s, retry_for=retry_for,
                                    on_tick=tick, stall_s=stall_s)  # fmt: skip
                tick()

        _loop_run(main)
        if "fatal" in outcome:
            text, code = outcome["fatal"]
            click.echo(f"Error: {text}", err=True)
            sys.exit(code)
        for q in queues:
            click.echo(_summary(q))
        total = sum(q.moved for q in queues)
        took = max((q.last_moved for q in queues), default=0) - min((q.started for q in queues), default=0)
        click.echo(f"Total: {total:,} messages in {took:.1f} s ({total / took if took > 0 else 0:,.0f} msg/s), "
                   f"window {window} per queue")  # fmt: skip
        if any(q.error for q in queues):
            click.echo("Error: the move of some queues stopped (see above); what was not moved is still on the source",
                       err=True)  # fmt: skip
            sys.exit(70)
