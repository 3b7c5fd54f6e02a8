"""Imports flow one way: protocol and storage know nothing of the model; the model knows nothing of the wire."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "leveret"

# package -> leveret packages it must never import
FORBIDDEN = {
    "protocol": {"model", "storage", "server", "management", "cli", "app"},
    "storage": {"protocol", "model", "server", "management", "cli", "app"},
    "model": {"protocol", "server", "management", "cli", "app"},
    "server": {"management", "cli", "app"},
    "management": {"server", "protocol", "cli", "app"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if parts[0] == "leveret" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports(package: str) -> None:
    bad = [
        f"{f.relative_to(SRC)} imports leveret.{imported}"
        for f in sorted((SRC / package).rglob("*.py"))
        for imported in _imports(f) & FORBIDDEN[package]
    ]
    assert not bad, "\n".join(bad)
