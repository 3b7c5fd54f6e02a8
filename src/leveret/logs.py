"""Where the broker's log goes and in which form: stderr or a file, text or JSON lines.

``setup`` configures the root logger once per process (like ``logging.basicConfig``, it leaves a
logger that already has handlers alone: a test runner's, say). A log file is opened in append mode
with a watched-file handler (logging.handlers.WatchedFileHandler), so when logrotate moves it away
(its default "create" mode) the next line goes to a new file at the same path; ``reopen`` (SIGHUP)
reopens it at once. "copytruncate" needs nothing: lines are appended (O_APPEND).

JSON: one object a line with ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, then the
fields a log site passes with ``extra=`` (``connection``, ``user``, ``vhost``, ``queue``, ...) and
``exception`` with a traceback.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# A LogRecord's own attributes; anything else on a record came in through ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

_files: list[logging.handlers.WatchedFileHandler] = []


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


def setup(level: str, file: Path | None = None, fmt: str = "text") -> None:
    """Send the root logger's records at ``level`` and above to ``file`` (appended) or stderr, as
    ``fmt`` ("text" or "json"). Raises OSError if the file cannot be opened."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler: logging.Handler
    if file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.handlers.WatchedFileHandler(file, mode="a", encoding="utf-8")
        _files.append(handler)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))


def reopen() -> bool:
    """SIGHUP: if the log file was moved away or deleted, open a new one at its path now (rather than
    at the next line); False when logging to stderr."""
    for handler in _files:
        handler.acquire()
        try:
            handler.reopenIfNeeded()
        finally:
            handler.release()
    return bool(_files)
