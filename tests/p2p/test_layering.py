"""The p2p package's import rules, checked by reading its source.

``p2p`` may take only wire primitives from ``consensus`` (codec, crypto,
types); only ``transport`` and ``guard`` (the socket-level connection guard,
which the RPC server uses too) touch aiohttp; only the runtime modules
(``transport``, ``tasks``, ``link``, ``requests``, ``serving``, ``network``,
``guard``, ``logbound``, ``admission``)
may use asyncio or logging, and the sans-I/O modules import nothing that
reads a clock, draws randomness or does I/O. Nothing in the package imports
the ``network`` facade: its parts are given callbacks instead. Every module
must also import on its own, which catches import cycles.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

P2P = Path(__file__).resolve().parents[2] / "p2p"
MODULES = sorted(p.stem for p in P2P.glob("*.py") if p.stem != "__init__")
ALLOWED_CONSENSUS = {"consensus.codec", "consensus.crypto", "consensus.types"}
IO_MODULES = {"transport", "tasks", "link", "requests", "serving", "network", "guard", "logbound", "admission"}
SANS_IO_MODULES = {"messages", "session", "gossip", "peers", "settings", "handler"}
FORBIDDEN_IN_PURE = {"asyncio", "aiohttp", "socket", "time", "random", "os", "logging", "threading"}


def imports_of(module: str) -> set[str]:
    tree = ast.parse((P2P / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_package_has_the_expected_modules() -> None:
    assert set(MODULES) == IO_MODULES | SANS_IO_MODULES


def test_every_module_says_what_it_must_never_do() -> None:
    for module in MODULES:
        doc = ast.get_docstring(ast.parse((P2P / f"{module}.py").read_text())) or ""
        assert "must never" in doc, f"p2p.{module} has no 'must never' in its docstring"


@pytest.mark.parametrize("module", MODULES)
def test_only_wire_primitives_from_consensus(module: str) -> None:
    ours = {name for name in imports_of(module) if name == "consensus" or name.startswith("consensus.")}
    assert ours <= ALLOWED_CONSENSUS, ours - ALLOWED_CONSENSUS
    assert not any(name.startswith("tdml_node") for name in imports_of(module))


@pytest.mark.parametrize("module", sorted(SANS_IO_MODULES))
def test_sans_io_modules_do_no_io(module: str) -> None:
    roots = {name.split(".")[0] for name in imports_of(module)}
    assert not roots & FORBIDDEN_IN_PURE, roots & FORBIDDEN_IN_PURE


def test_only_the_transport_touches_aiohttp() -> None:
    users = {m for m in MODULES if any(n.split(".")[0] == "aiohttp" for n in imports_of(m))}
    assert users == {"transport", "guard"}


def test_nothing_in_the_package_imports_the_network_facade() -> None:
    users = {m for m in MODULES if "p2p.network" in imports_of(m)}
    assert users == set()


def test_every_module_imports_alone() -> None:
    for module in MODULES:
        result = subprocess.run(
            [sys.executable, "-c", f"import p2p.{module}"],
            cwd=P2P.parent,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"p2p.{module}: {result.stderr}"
