"""The layering of ``consensus.tendermint``, checked on its imports.

Each module's docstring says what it must never do; the part of that which
shows in imports is checked here: nothing but the standard library's pure
parts and ``consensus`` itself, no module above its layer, and every module
importable alone (a cycle shows only then).
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(importlib.util.find_spec("consensus.tendermint").origin).parent  # type: ignore[union-attr, arg-type]
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
STDLIB_ALLOWED = {"__future__", "collections", "dataclasses", "enum", "typing"}

# Which sibling modules each may import: types at the bottom, the driver on top.
SIBLINGS = {
    "types": set(),
    "state": {"types"},
    "votekeeper": set(),
    "checks": {"types"},
    "machine": {"state", "types", "votekeeper"},  # only the keeper's threshold values
    "driver": {"checks", "machine", "state", "types", "votekeeper"},
}


def _imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
            if node.module == "consensus.tendermint":
                found.update(f"consensus.tendermint.{alias.name}" for alias in node.names)
    return found


def test_every_module_has_its_layer() -> None:
    assert set(MODULES) == set(SIBLINGS)


@pytest.mark.parametrize("module", MODULES)
def test_imports_stay_in_the_layer(module: str) -> None:
    imports = _imports(module)
    outside = {m for m in imports if not m.startswith("consensus") and m.split(".")[0] not in STDLIB_ALLOWED}
    assert not outside, f"{module} imports {outside}"
    siblings = {m.rsplit(".", 1)[1] for m in imports if m.startswith("consensus.tendermint.")}
    assert siblings <= SIBLINGS[module], f"{module} imports {siblings - SIBLINGS[module]} from above its layer"


@pytest.mark.parametrize("module", MODULES)
def test_imports_alone(module: str) -> None:
    name = f"consensus.tendermint.{module}"
    done = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
