"""One process per data directory: DataDirLock across real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import leveret
from leveret.storage.lock import LOCK_FILE, DataDirLock, DataDirLocked

SRC = str(Path(leveret.__file__).resolve().parents[1])

# Takes the lock (exit 3 with the error on stdout if it cannot), says so, then waits.
HOLDER = """
import sys, time
from pathlib import Path
from leveret.storage.lock import DataDirLock, DataDirLocked
try:
    DataDirLock(Path(sys.argv[1])).acquire()
except DataDirLocked as e:
    print(f"locked-out {e.pid} {e}", flush=True)
    sys.exit(3)
print("holding", flush=True)
time.sleep(60)
"""


def spawn(data_dir: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir)], stdout=subprocess.PIPE, text=True, env=env
    )


def test_second_process_is_refused_and_told_our_pid(tmp_path: Path) -> None:
    with DataDirLock(tmp_path / "data") as lock:
        assert lock.locked
        assert (tmp_path / "data" / LOCK_FILE).read_text().strip() == str(os.getpid())
        proc = spawn(tmp_path / "data")
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 3
        assert out.startswith(f"locked-out {os.getpid()} ")
        assert f"process {os.getpid()}" in out
    # Released: now another process gets it.
    proc = spawn(tmp_path / "data")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "holding"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)


def test_lock_held_by_a_killed_process_is_free_again(tmp_path: Path) -> None:
    proc = spawn(tmp_path)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "holding"
    with pytest.raises(DataDirLocked) as refused:
        DataDirLock(tmp_path).acquire()
    assert refused.value.pid == proc.pid
    assert str(proc.pid) in str(refused.value) and str(tmp_path) in str(refused.value)

    os.kill(proc.pid, signal.SIGKILL)  # no clean-up code runs; the kernel drops the lock
    proc.communicate(timeout=10)
    with DataDirLock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_second_lock_in_the_same_process_is_refused_too(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(DataDirLocked):
            DataDirLock(tmp_path).acquire()
        with pytest.raises(RuntimeError):
            first.acquire()
    finally:
        first.release()
        first.release()  # idempotent
    assert not first.locked
    assert (tmp_path / LOCK_FILE).read_text() == ""
