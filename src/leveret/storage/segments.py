"""Append-only segment files for large message bodies, outside the SQLite pages.

A body of at least ``threshold`` bytes is not stored in its message row: the writer appends it to the
current segment file (``<dir>/<id>.seg``, ids increasing, never reused) and the row holds
``(segment, offset, length)``. Within one batch the writer appends every large body, calls
:meth:`Segments.sync` (``fdatasync``) and only then commits the SQLite transaction whose rows reference
them: a committed row always points at bytes that are on disk, and a torn tail after a crash can only
hold bytes that no committed row references.

A segment is rotated once it holds ``segment_max`` bytes. Live references are counted in memory
(rebuilt from the rows at open); a segment other than the current one is unlinked once its count is zero
*after* the commit that removed its last rows (:meth:`Segments.collect`). A crash between that commit and
the unlink leaves a file no row references, removed at the next open.

Writing raises :class:`OSError` as the OS does (ENOSPC included, which the hand-off treats as "no space,
retry"); :meth:`Segments.rollback` cuts the current segment back to where the failed batch began.

This module knows nothing of SQL, frames or asyncio; only the writer thread (or whoever holds the
hand-off's lock) calls it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("leveret.storage")

# Bodies at least this long go to a segment (see docs/benchmarks.md, "Session 6").
SEGMENT_THRESHOLD = 32 * 1024
# A segment is closed for appends (and a new one started) once it holds this many bytes.
SEGMENT_MAX = 128 << 20
# Most buffers one writev takes (IOV_MAX is 1024 on Linux).
_IOV_MAX = 1024

_NAME = re.compile(r"^(\d{1,18})\.seg$")


class Segments:
    """The segment files of one store: append, fdatasync, read back, count references, delete."""

    __slots__ = (
        "_begin",
        "_counts",
        "_current",
        "_dead",
        "_dir",
        "_dirty",
        "_fd",
        "_max",
        "_new_dir_entry",
        "_readers",
        "_size",
    )

    def __init__(self, directory: Path, *, segment_max: int = SEGMENT_MAX) -> None:
        self._dir = directory
        self._max = segment_max
        self._counts: dict[int, int] = {}  # segment id -> live rows referencing it
        self._current = 0  # the segment appends go to (0: none opened yet)
        self._fd = -1
        self._size = 0  # bytes in the current segment
        self._begin: tuple[int, int] | None = None  # (segment, size) when the batch began
        self._dirty = False  # appended since the last sync
        self._new_dir_entry = False  # a segment was created since the last sync: fsync the directory
        self._dead: set[int] = set()  # segments whose count fell to zero in this batch
        self._readers: dict[int, int] = {}  # segment id -> read-only fd

    @property
    def directory(self) -> Path:
        return self._dir

    def path(self, segment: int) -> Path:
        return self._dir / f"{segment:08d}.seg"

    # -- open -------------------------------------------------------------------------

    def on_disk(self) -> dict[int, int]:
        """Segment files present (id -> size in bytes)."""
        found: dict[int, int] = {}
        if not self._dir.is_dir():
            return found
        for entry in os.scandir(self._dir):
            m = _NAME.match(entry.name)
            if m is not None and entry.is_file():
                found[int(m.group(1))] = entry.stat().st_size
        return found

    def start(self, referenced: dict[int, int], highest_seen: int) -> None:
        """After recovery: ``referenced`` (segment -> live rows) becomes the counts; every other segment
        file is removed (no row points into it); appends go to a new segment after ``highest_seen``."""
        self._counts = dict(referenced)
        for segment in self.on_disk():
            highest_seen = max(highest_seen, segment)
            if segment not in referenced:
                self._unlink(segment, "no message references it")
        self._current = highest_seen  # the next append opens highest_seen + 1
        self._fd = -1
        self._size = self._max  # forces a new segment at the first append

    # -- the writer's batch ------------------------------------------------------------

    def append(self, bodies: list[bytes]) -> list[tuple[int, int]]:
        """Append ``bodies`` (in order) and return each one's (segment, offset); not yet durable."""
        if self._begin is None:
            self._begin = (self._current, self._size)
        out: list[tuple[int, int]] = []
        i = 0
        while i < len(bodies):
            if self._fd < 0 or (self._size > 0 and self._size + len(bodies[i]) > self._max):
                self._rotate()  # a body that does not fit starts a new segment (unless this one is empty)
            # As many bodies as fit in this segment (at least one), in one writev.
            room = self._max - self._size
            j, total = i, 0
            while j < len(bodies) and j - i < _IOV_MAX and (j == i or total + len(bodies[j]) <= room):
                out.append((self._current, self._size + total))
                total += len(bodies[j])
                j += 1
            chunk = bodies[i:j]
            done = 0
            while done < total:  # writev may write less than asked (signals, huge writes)
                if done == 0:
                    n = os.writev(self._fd, chunk)
                else:
                    rest = memoryview(b"".join(chunk))[done:]
                    n = os.write(self._fd, rest)
                done += n
            self._size += total
            self._dirty = True
            i = j
        return out

    def sync(self) -> None:
        """fdatasync what this batch appended (before the commit that references it)."""
        if self._dirty:
            os.fdatasync(self._fd)
            self._dirty = False
        if self._new_dir_entry:
            _fsync_dir(self._dir)  # the new file's name survives a power loss too
            self._new_dir_entry = False

    def add(self, segment: int) -> None:
        self._counts[segment] = self._counts.get(segment, 0) + 1

    def drop(self, segments: Iterable[int]) -> None:
        """Rows referencing these segments (one entry per row) are deleted in this batch."""
        counts = self._counts
        for segment in segments:
            left = counts.get(segment, 0) - 1
            if left <= 0:
                counts.pop(segment, None)
                self._dead.add(segment)
            else:
                counts[segment] = left

    def committed(self) -> None:
        """The batch's transaction committed: unlink the segments nothing references any more."""
        self._begin = None
        dead, self._dead = self._dead, set()
        for segment in dead:
            if segment in self._counts:
                continue
            if segment == self._current:
                # Every message in it is gone: give the space back now, start a new one next time.
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
                self._size = self._max
            self._unlink(segment, None)

    def rollback(self, counts: dict[int, int]) -> None:
        """The batch's transaction rolled back: restore ``counts``, cut the appends off."""
        self._counts = counts
        self._dead = set()
        begin, self._begin = self._begin, None
        self._dirty = False
        if begin is None:
            return
        segment, size = begin
        if segment != self._current:
            # Rotated during the batch: the new segment(s) hold nothing referenced. The one the
            # batch began in is not appended to again (its size on disk may differ from what a
            # fresh start assumed); the next append starts a new segment.
            if self._fd >= 0:
                os.close(self._fd)
            for s in range(segment + 1, self._current + 1):
                self._close_reader(s)
                self.path(s).unlink(missing_ok=True)
            self._current, self._fd, self._size = segment, -1, self._max
            return
        if self._fd >= 0:
            os.ftruncate(self._fd, size)
        self._size = size

    def snapshot(self) -> dict[int, int]:
        """The counts as they are, for :meth:`rollback`."""
        return dict(self._counts)

    # -- reading ----------------------------------------------------------------------

    def read(self, segment: int, offset: int, length: int) -> bytes | None:
        """The body at (segment, offset, length), or None if the file is missing or too short."""
        fd = self._readers.get(segment)
        if fd is None:
            try:
                fd = os.open(self.path(segment), os.O_RDONLY)
            except FileNotFoundError:
                return None
            self._readers[segment] = fd
        data = os.pread(fd, length, offset)
        while len(data) < length:
            more = os.pread(fd, length - len(data), offset + len(data))
            if not more:
                return None
            data += more
        return data

    def read_unshared(self, places: dict[int, tuple[int, int, int]]) -> dict[int, bytes | bytearray]:
        """``{key: body}`` for ``{key: (segment, offset, length)}``, leaving out what cannot be read whole.

        Safe on a thread other than the writer's: it opens each file itself (never one of the cached
        descriptors, which the writer may close and the OS may reuse) and closes it again."""
        by_segment: dict[int, list[tuple[int, int, int]]] = {}
        for key, (seg, off, length) in places.items():
            by_segment.setdefault(seg, []).append((key, off, length))
        found: dict[int, bytes | bytearray] = {}
        for seg, wanted in by_segment.items():
            try:
                fd = os.open(self.path(seg), os.O_RDONLY)
            except OSError:
                continue
            try:
                for key, off, length in wanted:
                    data = _pread_whole(fd, off, length)
                    if data is not None:
                        found[key] = data
            except OSError:
                continue
            finally:
                os.close(fd)
        return found

    # -- internals ---------------------------------------------------------------------

    def _rotate(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        previous = self._current
        self._current += 1
        if not self._dir.is_dir():  # created with the first large body
            self._dir.mkdir()
            _fsync_dir(self._dir.parent)
        self._fd = os.open(self.path(self._current), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = 0
        self._new_dir_entry = True
        if previous:
            # No longer appended to: unlinked after this batch's commit if nothing references it
            # (rows this batch adds to it are counted before then).
            self._dead.add(previous)

    def _close_reader(self, segment: int) -> None:
        fd = self._readers.pop(segment, None)
        if fd is not None:
            os.close(fd)

    def _unlink(self, segment: int, why: str | None) -> None:
        self._close_reader(segment)
        try:
            self.path(segment).unlink()
        except FileNotFoundError:
            return
        if why is not None:
            log.info("storage %s: removed segment %d (%s)", self._dir, segment, why)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()


def _pread_whole(fd: int, offset: int, length: int) -> bytearray | None:
    """``length`` bytes at ``offset`` read into one buffer (no join of pieces), or None if the file is
    shorter."""
    buf = bytearray(length)
    view = memoryview(buf)
    got = 0
    try:
        while got < length:
            if _preadv is not None:
                n = _preadv(fd, [view[got:]], offset + got)
            else:
                piece = os.pread(fd, length - got, offset + got)
                n = len(piece)
                view[got : got + n] = piece
            if n <= 0:
                return None
            got += n
    finally:
        view.release()
    return buf


_preadv = getattr(os, "preadv", None)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
