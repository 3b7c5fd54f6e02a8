"""`leveret backup DEST`: a consistent copy of a data directory, taken while the broker runs.

The store is one SQLite database in WAL mode (``leveret.db``); copying its files while the broker
writes can catch the database and its WAL at different moments. This uses SQLite's online backup
API instead: one read transaction gives a snapshot of everything committed (every confirmed message,
every declare-ok'd queue) at that instant, while the broker goes on writing (in WAL mode readers do
not block the writer). DEST is then a data directory ``leveret server --data-dir DEST`` starts from;
it holds no clean-stop marker, so its messages come back flagged redelivered, as after a crash.

Large bodies live in segment files beside the database (``leveret.db.segments/``). After the snapshot,
the part of each segment the snapshot references is copied (segments are append-only, so those bytes do
not change). A segment the broker deleted in between (every message in it was acked after the snapshot)
is reported; the copy then sets those messages aside when it starts.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

import click

from leveret.config import default_data_dir


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The broker's data directory. [default: the platform's user data directory]")  # fmt: skip
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
def backup(data_dir: Path | None, dest: Path) -> None:
    """Copy the data directory's store to DEST consistently, while the broker runs (or not).

    \b
    Example:
      leveret backup --data-dir /var/lib/leveret /backup/leveret-$(date +%F)
      leveret server --data-dir /backup/leveret-2026-12-01   # restore: start from the copy
    """
    src = (data_dir or default_data_dir()) / "leveret.db"
    if not src.is_file():
        click.echo(f"leveret backup: no store at {src} (give the broker's --data-dir)", err=True)
        sys.exit(1)
    target = dest / "leveret.db"
    if target.exists():
        click.echo(f"leveret backup: {target} exists; give a new or empty directory", err=True)
        sys.exit(1)
    dest.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    partial = target.with_suffix(".db.partial")
    try:
        source = sqlite3.connect(src, timeout=30)
        try:
            copy = sqlite3.connect(partial)
            try:
                source.backup(copy)  # one step: one read snapshot, never restarted by the broker's writes
                ok = copy.execute("PRAGMA quick_check").fetchone()[0]
                copy.execute("PRAGMA journal_mode = DELETE")  # a single file: the broker re-enables WAL
            finally:
                copy.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        click.echo(f"leveret backup: cannot copy {src}: {exc}", err=True)
        sys.exit(1)
    if ok != "ok":
        partial.unlink(missing_ok=True)
        click.echo(f"leveret backup: the copy failed its integrity check: {ok}", err=True)
        sys.exit(1)
    missing = _copy_segments(partial, src, target)
    partial.rename(target)
    if missing:
        click.echo(
            f"leveret backup: {len(missing)} segment file(s) were deleted by the broker during the copy"
            f" (their messages were acked meanwhile): {', '.join(map(str, missing))}",
            err=True,
        )
    size = target.stat().st_size + sum(p.stat().st_size for p in Path(f"{target}.segments").glob("*.seg"))
    click.echo(f"backed up {src} to {target}: {size / 1e6:.1f} MB in {time.monotonic() - t0:.2f} s")


def _copy_segments(copy: Path, src: Path, target: Path) -> list[int]:
    """Copy the bytes of each segment file the database copy references; return the ids that were gone."""
    conn = sqlite3.connect(copy)
    try:
        ranges = conn.execute(
            "SELECT seg, MAX(seg_off + seg_len) FROM messages WHERE seg IS NOT NULL GROUP BY seg"
        ).fetchall()
    except sqlite3.OperationalError:  # a schema before segments
        ranges = []
    finally:
        conn.close()
    missing: list[int] = []
    if not ranges:
        return missing
    src_dir, dst_dir = Path(f"{src}.segments"), Path(f"{target}.segments")
    dst_dir.mkdir(exist_ok=True)
    for seg, end in ranges:
        name = f"{seg:08d}.seg"
        try:
            with open(src_dir / name, "rb") as fin, open(dst_dir / name, "wb") as fout:
                left = end
                while left > 0:
                    chunk = fin.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    fout.write(chunk)
                    left -= len(chunk)
                fout.flush()
                os.fsync(fout.fileno())
        except FileNotFoundError:
            missing.append(seg)
    return missing
