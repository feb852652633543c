"""The package's structure (issue 17): no import cycle between the modules of
``src/labelflip``, no import of another package's private module, and no
module over 600 lines. Imports are read with ``ast`` (function-level imports
count too: a cycle through a lazy import is still a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "labelflip"
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The module ``name`` refers to (a name imported from a module is that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(mod: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            if name.startswith("labelflip"):
                target = _resolve(name)
                if target is not None and target != mod:
                    out.add(target)
    return out


GRAPH = {mod: _imports(mod, path) for mod, path in MODULES.items()}


def _stage(mod: str) -> str:
    """The top-level package (stage) a module belongs to."""
    parts = mod.split(".")
    return ".".join(parts[:2])


def test_no_import_cycle():
    # A package's __init__ re-exports its modules: edges into an __init__ from
    # its own package's modules are not part of the stage-to-stage graph.
    def edges(mod: str) -> set[str]:
        return {t for t in GRAPH[mod] if not (t == _stage(mod) and mod.startswith(t + "."))}

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(mod: str) -> None:
        state[mod] = 1
        stack.append(mod)
        for t in sorted(edges(mod)):
            if state.get(t) == 1:
                cycle = stack[stack.index(t) :] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[mod] = 2

    for mod in sorted(GRAPH):
        if mod not in state:
            visit(mod)


def test_no_import_of_another_packages_private_module():
    bad = []
    for mod, targets in GRAPH.items():
        for t in targets:
            last = t.rpartition(".")[2]
            owner = t.rpartition(".")[0]
            if last.startswith("_") and owner != "labelflip" and not mod.startswith(owner + "."):
                if mod != owner:  # a package's __init__ may import its own private modules
                    bad.append(f"{mod} -> {t}")
    assert not bad, bad


def test_no_module_over_600_lines():
    long = {
        mod: n
        for mod, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_the_graph_sees_the_imports():
    # guard against a walker that finds nothing: the runner imports the store
    assert "labelflip.store" in GRAPH["labelflip.run.step"]
    assert "labelflip.attacks._registry" in GRAPH["labelflip.attacks.pgd"]
