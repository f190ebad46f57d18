"""The project's import rules, checked by reading the source: dependencies point one way, and no circles.

- ``consensus`` imports only the standard library, msgpack, nacl and itself;
- ``tdml_node``'s parts stand on each other in the layers of ``ALLOWED``
  (``docs/architecture.md`` draws them), and nothing below imports anything above;
- the import graph of the three packages has no cycle, counting imports
  inside functions and under ``TYPE_CHECKING`` too;
- no module is over ``MAX_LINES`` lines, but the protocol's schema.

``tests/p2p/test_layering.py`` holds p2p's own rules.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("consensus", "p2p", "tdml_node")
MAX_LINES = 520
LONG_ALLOWED = {"consensus/types.py"}
"""The schema may stay whole: splitting it would scatter the wire format."""

BASE = {"tdml_node.logfmt", "tdml_node.config", "tdml_node.keys", "tdml_node.genesis", "tdml_node.jsonview", "tdml_node.metrics", "tdml_node.client"}
ALLOWED: dict[str, set[str]] = {
    "p2p": {"consensus"},
    **{base: {"consensus"} for base in BASE},
    # Named account keys are key files in a directory: the keystore stands on the key-file format.
    "tdml_node.keystore": {"consensus", "tdml_node.keys"},
    # The configuration accepts exactly the log levels and formats the formatter knows.
    "tdml_node.config": {"consensus", "tdml_node.logfmt"},
    # The chain's losses and ids read in /metrics exactly as tdml_getJob shows them.
    "tdml_node.metrics": {"consensus", "tdml_node.jsonview"},
    # A client built from a node home reads that home's config (RPC address, token, cookie path).
    "tdml_node.client": {"consensus", "tdml_node.config"},
    "tdml_node.storage": {"consensus"},
    "tdml_node.pools": {"consensus"},
    "tdml_node.work": {"consensus", "tdml_node.storage"},
    "tdml_node.runtime": {"consensus", "p2p", "tdml_node.storage", "tdml_node.pools", "tdml_node.metrics"},
    "tdml_node.duties": {"consensus", "tdml_node.runtime", "tdml_node.pools", "tdml_node.metrics"},
    "tdml_node.node": {
        "consensus", "p2p", "tdml_node.runtime", "tdml_node.duties", "tdml_node.pools", "tdml_node.storage",
        "tdml_node.work", "tdml_node.config", "tdml_node.metrics",
    },
    # The explorer page is static files; the RPC server serves them.
    "tdml_node.explorer": set(),
    # p2p for its connection guard, the socket-level limits both servers share.
    "tdml_node.rpc": {
        "consensus", "p2p", "tdml_node", "tdml_node.runtime", "tdml_node.pools", "tdml_node.storage", "tdml_node.jsonview",
        "tdml_node.explorer",
    },
    "tdml_node.devtools": {"consensus", "tdml_node.runtime", "tdml_node.work"},
    "tdml_node.app": {
        "consensus", "p2p", "tdml_node.node", "tdml_node.rpc", "tdml_node.devtools", "tdml_node.storage",
        "tdml_node.config", "tdml_node.logfmt",
    },
    "tdml_node.devnet": {
        "consensus", "tdml_node.client", "tdml_node.config", "tdml_node.genesis", "tdml_node.keys",
        "tdml_node.storage", "tdml_node.work", "tdml_node.sdk",
    },
    # The devnet's run, view and report stand on the devnet driver; the driver
    # stays light for the tests and benchmarks that only need its processes.
    "tdml_node.devnet_live": {"tdml_node.devnet", "tdml_node.client", "tdml_node.work"},
    # The Python client of your own job: it talks to a node (client), reads key
    # files (keys), and converts data, builds and exports models (work); the
    # executor it uses to compute the initial model root holds blobs in memory.
    "tdml_node.sdk": {"consensus", "tdml_node.client", "tdml_node.config", "tdml_node.keys", "tdml_node.work", "tdml_node.storage"},
    "tdml_node.cli": {
        "consensus", "tdml_node", "tdml_node.app", "tdml_node.devnet", "tdml_node.devnet_live", "tdml_node.devtools",
        "tdml_node.work", "tdml_node.keystore", "tdml_node.sdk", *BASE,
    },
    "tdml_node.__main__": {"tdml_node.cli"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module of ours this one imports, anywhere in it (functions and TYPE_CHECKING blocks too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            submodules = {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES}
            found.update(submodules)
            if len(submodules) < len(node.names):  # names from the package itself, not only its modules
                found.add(base)
    return found


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[0] if parts[0] != "tdml_node" or len(parts) == 1 else ".".join(parts[:2])


GRAPH = {name: {m for m in _imports(name, path) if m in MODULES} for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("consensus")))
def test_consensus_imports_only_the_standard_library_msgpack_and_nacl(module: str) -> None:
    roots = {m.split(".")[0] for m in _imports(module, MODULES[module])}
    foreign = roots - set(sys.stdlib_module_names) - {"msgpack", "nacl", "consensus", "__future__"}
    assert not foreign, f"{module} imports {sorted(foreign)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _group(m) in ALLOWED))
def test_the_shell_layers_point_one_way(module: str) -> None:
    group = _group(module)
    outside = {_group(m) for m in GRAPH[module]} - {group}
    assert outside <= ALLOWED[group], f"{module} ({group}) imports {sorted(outside - ALLOWED[group])}"


def test_every_part_of_the_shell_has_its_rule() -> None:
    groups = {_group(m) for m in MODULES if m.startswith("tdml_node.")}
    assert groups <= set(ALLOWED), sorted(groups - set(ALLOWED))


def test_the_import_graph_has_no_cycle() -> None:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(GRAPH[module]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, path)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_the_size_limit(module: str) -> None:
    path = MODULES[module]
    relative = str(path.relative_to(ROOT))
    lines = len(path.read_text().splitlines())
    assert relative in LONG_ALLOWED or lines <= MAX_LINES, f"{relative} has {lines} lines (limit {MAX_LINES})"
