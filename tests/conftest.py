from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ProcessBroker, ThreadBroker

# tests/plugin runs generated suites through pytest's own plugin-testing fixture.
pytest_plugins = ["pytester"]


@pytest.fixture
def broker() -> Iterator[ThreadBroker]:
    """A fresh in-memory broker on an ephemeral port, in a background thread."""
    b = ThreadBroker().start()
    yield b
    b.stop()


@pytest.fixture
def broker_factory() -> Iterator[object]:
    made: list[ThreadBroker] = []

    def make(**overrides: object) -> ThreadBroker:
        b = ThreadBroker(**overrides).start()
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def process_broker(tmp_path: Path) -> Iterator[ProcessBroker]:
    b = ProcessBroker(tmp_path / "data").start()
    yield b
    b.kill()
