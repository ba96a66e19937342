"""The package's shape, measured on its source with `ast` (issue 21): no import cycle between packages or files
(function-level imports count), every package-internal import resolves to a module that exists."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "diffusers_ltx2"


def _modules() -> dict[str, Path]:
    """dotted module name -> file, for every module of the package (`pkg.__init__` named `pkg`)."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imported(name: str, node: ast.AST) -> list[str]:
    """The package-internal names an import statement of module `name` asks for (before resolution)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
    if node.level == 0:
        base = node.module or ""
    else:
        parts = name.split(".") if _is_package(name) else name.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    if base.split(".")[0] != PACKAGE:
        return []
    # `from pkg import sub` imports the module `pkg.sub` when it exists, else a name defined in `pkg`
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _imports() -> dict[str, list[tuple[str, int]]]:
    """module -> [(imported module, line)], every import statement anywhere in the file (module or function level)."""
    out = defaultdict(list)
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out[name] += [(target, node.lineno) for target in _imported(name, node)]
    return out


IMPORTS = _imports()


def _edges() -> dict[str, set[str]]:
    """Importing `a.b.c` runs `a/__init__` and `a/b/__init__` too: a module depends on the module it names and on
    every package above it (except its own ancestors, which are always imported first)."""
    graph = defaultdict(set)
    for name, targets in IMPORTS.items():
        for target, _ in targets:
            parts = target.split(".")
            for i in range(2, len(parts) + 1):
                dep = ".".join(parts[:i])
                if dep in MODULES and dep != name and not name.startswith(dep + "."):
                    graph[name].add(dep)
    return graph


def _cycles(graph: dict[str, set[str]], nodes) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return found


def test_every_internal_import_resolves():
    missing = [(name, target, line) for name, targets in IMPORTS.items() for target, line in targets
               if target not in MODULES]
    assert not missing, f"imports of modules that do not exist: {missing}"


def test_no_import_cycle_between_files():
    cycles = _cycles(_edges(), MODULES)
    assert not cycles, f"import cycles between modules (function-level imports included): {cycles}"


def test_no_import_cycle_between_packages():
    def package(name):
        return name if _is_package(name) else name.rpartition(".")[0]

    graph = defaultdict(set)
    for name, deps in _edges().items():
        for dep in deps:
            a, b = package(name), package(dep)
            if a != b and not a.startswith(b + "."):
                graph[a].add(b)
    cycles = _cycles(graph, {package(n) for n in MODULES})
    assert not cycles, f"import cycles between packages: {cycles}"


@pytest.mark.parametrize("cycle", [("a", "b"), ("a", "b", "c")])
def test_the_cycle_finder_finds_cycles(cycle):
    """The check itself can fail: a two- and a three-module ring are reported, a chain is not."""
    ring = {cycle[i]: {cycle[(i + 1) % len(cycle)]} for i in range(len(cycle))}
    assert _cycles(ring, cycle) == [sorted(cycle)]
    chain = {cycle[i]: {cycle[i + 1]} for i in range(len(cycle) - 1)}
    assert _cycles(chain, cycle) == []
