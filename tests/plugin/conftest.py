"""Run generated test suites in a fresh pytest process, with the leveret plugin loaded as an installed
user would have it: through its ``pytest11`` entry point and nothing else."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

Run = Callable[..., pytest.RunResult]


def entry_point_installed() -> bool:
    return any(ep.value == "leveret.pytest_plugin" for ep in importlib.metadata.entry_points(group="pytest11"))


@pytest.fixture
def run(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Run:
    """``run(*args)``: pytest in a subprocess on the files made with ``pytester``.

    The installed leveret may predate the entry point (an editable install is not re-read): then a
    distribution that declares nothing but the same entry point goes on the path, so the plugin is
    found exactly as pip would register it, and never with ``-p``."""
    path = [str(SRC)]
    if not entry_point_installed():
        site = tmp_path_factory.mktemp("site")
        info = site / "leveret_entry_point-0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: leveret-entry-point\nVersion: 0\n")
        (info / "entry_points.txt").write_text("[pytest11]\nleveret = leveret.pytest_plugin\n")
        path.append(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))

    def run(*args: str, timeout: float = 120) -> pytest.RunResult:
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=timeout)

    return run
