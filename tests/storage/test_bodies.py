"""SegmentBodies: which rows keep their body in a segment file, undone when a batch rolls back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leveret.storage.bodies import SegmentBodies
from leveret.storage.segments import Segments


def row(qid: int, msg_id: int, body: bytes) -> tuple[Any, ...]:
    return (qid, msg_id, "", "q", b"", body, False, None, None, None, None)


def index(tmp_path: Path, written_max: int = 4096) -> SegmentBodies:
    bodies = SegmentBodies(Segments(tmp_path / "segs"), threshold=100, written_max=written_max)
    bodies.start({}, 0)
    return bodies


def place(bodies: SegmentBodies, rows: dict[tuple[int, int], tuple[Any, ...]]) -> None:
    counts = bodies.begin()
    try:
        bodies.place(rows)
        bodies.segments.sync()
    except BaseException:
        bodies.rollback(counts)
        raise
    bodies.committed()


def test_large_bodies_go_to_a_segment_and_their_rows_point_there(tmp_path: Path) -> None:
    bodies = index(tmp_path)
    rows = {(1, 1): row(1, 1, b"a" * 150), (1, 2): row(1, 2, b"small")}
    place(bodies, rows)
    seg, off, size = rows[1, 1][8:]
    assert rows[1, 1][5] == b"" and size == 150
    assert bodies.segments.read(seg, off, size) == b"a" * 150
    assert rows[1, 2] == row(1, 2, b"small")  # below the threshold: kept in its row
    assert bodies.read_written(1, [1, 2]) == {1: b"a" * 150}
    bodies.segments.close()


def test_a_rollback_forgets_the_batchs_references_and_reads(tmp_path: Path) -> None:
    bodies = index(tmp_path)
    place(bodies, {(1, 1): row(1, 1, b"a" * 150)})
    counts = bodies.begin()
    bodies.place({(1, 2): row(1, 2, b"b" * 150)})
    bodies.removed([(1, 1)])
    bodies.rollback(counts)
    assert bodies._refs == {1: {1: bodies._refs[1][1]}}  # 1 is back, 2 never was
    assert bodies.read_written(1, [1, 2]) == {}  # read through the store from now on
    bodies.segments.close()


def test_a_deleted_queue_leaves_no_written_places(tmp_path: Path) -> None:
    # Queue ids can come back (SQLite reuses the highest rowid once it is deleted): places remembered
    # for a deleted queue go with it, rather than stay for the next queue that gets its id.
    bodies = index(tmp_path)
    place(bodies, {(1, 1): row(1, 1, b"a" * 150), (2, 1): row(2, 1, b"c" * 150)})
    counts = bodies.begin()
    bodies.forget_queue(1)
    bodies.committed()
    assert bodies.read_written(1, [1]) == {}
    assert bodies.read_written(2, [1]) == {1: b"c" * 150}
    assert 1 not in bodies._refs and counts  # its references went with it
    bodies.segments.close()


def test_written_places_are_bounded(tmp_path: Path) -> None:
    bodies = index(tmp_path, written_max=10)
    place(bodies, {(1, i): row(1, i, bytes([i]) * 120) for i in range(1, 26)})
    assert len(bodies._written) == 10
    assert sorted(bodies.read_written(1, list(range(1, 26)))) == list(range(16, 26))  # the latest
    bodies.segments.close()
