"""Which message rows keep their body in a segment file, and where (issue 17).

The SQLite store asks this index to place a batch's large bodies (:meth:`SegmentBodies.place`: appended
to the current segment, the rows rewritten to point there), tells it which rows a batch deletes
(:meth:`removed`, :meth:`forget_queue`: the segments' reference counts go down), and, when a batch rolls
back, to undo all of that (:meth:`rollback`). It also remembers where the last ``written_max`` large
bodies went, so that a deep queue's page-in reads them straight from the files on the calling thread
(:meth:`read_written`) instead of waiting behind the writer's batch and its ``fdatasync``.

Like :mod:`leveret.storage.segments`, which it drives, it knows nothing of SQL: rows are the store's
tuples, of which it reads the body (index 5) and rewrites the segment columns (8, 9, 10). Only the writer
thread changes it; :meth:`read_written` may run on any thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from leveret.storage.segments import Segments

# How many written large bodies read_written remembers: a page-in looks for bodies written recently.
WRITTEN_MAX = 4096

Key = tuple[int, int]  # (queue id, msg_id)


class SegmentBodies:
    """The segment references of a store's live rows, their undo log, and the recently written places."""

    __slots__ = ("_gen", "_max", "_refs", "_undo", "_written", "segments", "threshold")

    def __init__(self, segments: Segments, threshold: int, *, written_max: int = WRITTEN_MAX) -> None:
        self.segments = segments
        self.threshold = threshold  # bodies of at least this many bytes go to a segment
        # queue id -> msg_id -> segment, for every live row whose body is in a segment.
        self._refs: dict[int, dict[int, int]] = {}
        # (queue id, msg_id, segment it referenced before; None: none) per change the current batch made.
        self._undo: list[tuple[int, int, int | None]] = []
        # (queue id, msg_id) -> (segment, offset, length) of the last written_max large bodies written.
        # A rollback clears it and bumps _gen first, so a read that overlapped a rollback is thrown away.
        self._written: dict[Key, tuple[int, int, int]] = {}
        self._gen = 0
        self._max = written_max

    def start(self, refs: dict[int, dict[int, int]], highest_seen: int) -> None:
        """At open: the references the rows hold (from the store's recovery read)."""
        self._refs = refs
        counts: dict[int, int] = {}
        for by_id in refs.values():
            for seg in by_id.values():
                counts[seg] = counts.get(seg, 0) + 1
        self.segments.start(counts, max(highest_seen, *counts, 0))

    def begin(self) -> dict[int, int]:
        """A batch starts: what :meth:`rollback` needs to put the segments back."""
        self._undo.clear()
        return self.segments.snapshot()

    def place(self, rows: dict[Key, Any]) -> None:
        """Append the large bodies among ``rows`` to the current segment and point their rows there (body
        column emptied; expires_at kept; segment, offset and length set: 11 values)."""
        threshold = self.threshold
        large = [key for key, row in rows.items() if len(row[5]) >= threshold]
        if not large:
            return
        segments = self.segments
        places = segments.append([rows[key][5] for key in large])
        refs_by_queue, undo, written = self._refs, self._undo, self._written
        for key, (seg, off) in zip(large, places, strict=True):
            row = rows[key]
            size = len(row[5])
            rows[key] = (*row[:5], b"", row[6], row[7] if len(row) > 7 else None, seg, off, size)
            written[key] = (seg, off, size)
            refs = refs_by_queue.get(key[0])
            if refs is None:
                refs = refs_by_queue[key[0]] = {}
            undo.append((key[0], key[1], refs.get(key[1])))
            refs[key[1]] = seg
            segments.add(seg)
        while len(written) > self._max:
            del written[next(iter(written))]

    def removed(self, keys: Iterable[Key]) -> None:
        """These rows are deleted in the current batch."""
        refs_by_queue = self._refs
        if not refs_by_queue:
            return
        gone: list[int] = []
        undo, written = self._undo, self._written
        for qid, msg_id in keys:
            written.pop((qid, msg_id), None)
            refs = refs_by_queue.get(qid)
            if refs is not None and msg_id in refs:
                seg = refs.pop(msg_id)
                undo.append((qid, msg_id, seg))
                gone.append(seg)
        if gone:
            self.segments.drop(gone)

    def forget_queue(self, qid: int) -> None:
        """Every row of queue ``qid`` is deleted in the current batch."""
        refs = self._refs.pop(qid, None)
        if refs:
            self._undo.extend((qid, msg_id, seg) for msg_id, seg in refs.items())
            self.segments.drop(refs.values())
        stale = [key for key in self._written if key[0] == qid]
        for key in stale:
            del self._written[key]

    def committed(self) -> None:
        """The batch committed: drained segments may go."""
        self._undo.clear()
        self.segments.committed()

    def rollback(self, counts: dict[int, int]) -> None:
        """The batch rolled back: its references and appends are forgotten (``counts`` from :meth:`begin`)."""
        self._gen += 1  # before the segment is cut back: see read_written
        self._written.clear()
        refs_by_queue = self._refs
        for qid, msg_id, seg in reversed(self._undo):
            refs = refs_by_queue.setdefault(qid, {})
            if seg is None:
                refs.pop(msg_id, None)
            else:
                refs[msg_id] = seg
        self._undo.clear()
        self.segments.rollback(counts)

    def read_written(self, qid: int, msg_ids: list[int]) -> dict[int, bytes | bytearray]:
        """Bodies among ``msg_ids`` of queue ``qid`` known to be in a segment file already, read on the
        calling thread without waiting for the writer; {} when a rollback overlapped the read."""
        written = self._written
        if not written:
            return {}
        gen = self._gen
        places = {}
        for i in msg_ids:
            place = written.get((qid, i))
            if place is not None:
                places[i] = place
        if not places:
            return {}
        found = self.segments.read_unshared(places)
        if gen != self._gen:  # a batch rolled back meanwhile: its bytes may have been cut or rewritten
            return {}
        return found
