"""Reading a SQLite WAL file the way recovery does, for tests that damage one on purpose."""

from __future__ import annotations

from pathlib import Path


def wal_end(wal: Path) -> int:
    """Offset just past the last frame of the WAL's current generation.

    The store keeps its WAL preallocated (zeros past the frames), so the file's size
    is not where the frames end: walk the frames whose salts match the header's
    (https://www.sqlite.org/fileformat2.html#walformat).
    """
    data = wal.read_bytes()
    page_size = int.from_bytes(data[8:12], "big")
    salts = data[16:24]
    end = 32
    while end + 24 + page_size <= len(data) and data[end + 8 : end + 16] == salts:
        end += 24 + page_size
    return end
