"""Regular expressions that an operator writes and the broker matches on its event loop.

Permission regexes (configure / write / read, topic permissions) and policy patterns are matched
against resource names while the event loop waits. Python's ``re`` has no time limit, so one
pattern with catastrophic backtracking (``(a+)+$`` against ``aaaa…!``) would stop the broker
for hours, and, because permissions and policies are kept on disk, again at every start. Patterns
arrive from every management entry point (HTTP API, ``leveretctl``, definitions files), so the
bound is here, where every match goes through.

:class:`BoundedPattern` validates with ``re`` (the error texts users see stay those of the
standard library) and matches with the ``regex`` module, whose matcher takes a timeout. A pattern
that runs out of time once is *broken*: it is logged as an error and never matches again, so it
costs at most one timeout in all; a broken permission refuses, a broken policy applies to nothing.
Each is the safe reading: access is denied rather than granted, and a policy's limits are the
operator's to fix. Setting the permission or policy again (a new object) clears the state.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

import regex  # type: ignore[import-untyped]

log = logging.getLogger("leveret.patterns")

#: Seconds one match may take before the pattern is declared broken. Names are at most 255
#: characters, so a reasonable pattern needs microseconds.
MATCH_TIMEOUT = 0.05


class BoundedPattern:
    """A compiled regex whose :meth:`search` gives up after :data:`MATCH_TIMEOUT` seconds."""

    __slots__ = ("pattern", "what", "broken", "_rx")

    def __init__(self, pattern: str, what: str = "regular expression") -> None:
        re.compile(pattern)  # raises re.error with the standard library's text
        self.pattern = pattern
        self.what = what
        self.broken = False
        try:
            self._rx = regex.compile(pattern, regex.VERSION0)
        except (regex.error, RecursionError, OverflowError, ValueError) as exc:  # pragma: no cover
            raise re.error(str(exc)) from None

    def search(self, name: str) -> bool:
        """True if the pattern matches somewhere in ``name``; False once the pattern is broken."""
        if self.broken:
            return False
        try:
            return self._rx.search(name, timeout=MATCH_TIMEOUT) is not None
        except TimeoutError:
            self.broken = True
            log.error(
                "%s %r took more than %d ms to match %r; it will not match anything until it is set "
                "again with a simpler pattern", self.what, self.pattern, int(MATCH_TIMEOUT * 1000), name[:80],
            )  # fmt: skip
            return False

    def __repr__(self) -> str:
        return f"BoundedPattern({self.pattern!r}{', broken' if self.broken else ''})"


@lru_cache(maxsize=1024)
def cached(pattern: str, what: str) -> BoundedPattern:
    """A shared :class:`BoundedPattern` for patterns built at match time (expanded topic regexes)."""
    return BoundedPattern(pattern, what)
