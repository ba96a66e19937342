"""The package's shape, measured on its source with `ast` (issue 21): no import cycle between packages or files
(function-level imports count), every package-internal import resolves to a module that exists."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
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


# -- size and shape (issue 21: measured on the source) ------------------------------------------------------------
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _code_lines(path: Path, node: ast.AST) -> int:
    """Lines of code of a function body: docstring, comments and blank lines excluded (the signature too)."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return 0
    lines = path.read_text().splitlines()[body[0].lineno - 1: node.end_lineno]
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def test_no_call_over_80_lines_of_code():
    sizes = {}
    for name, tree in TREES.items():
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for fn in cls.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == "__call__":
                    sizes[f"{name}.{cls.name}"] = _code_lines(MODULES[name], fn)
    assert {k for k in sizes if ".pipelines." in k} >= {
        "diffusers_ltx2.pipelines.pipeline_ltx2.LTX2AudioVideoPipeline",
        "diffusers_ltx2.pipelines.two_stage.LTX2TwoStagePipeline",
        "diffusers_ltx2.pipelines.pipeline_ltx2_ic_lora.LTX2ICLoRAPipeline",
        "diffusers_ltx2.pipelines.ic_lora_two_stage.LTX2ICLoRATwoStagePipeline",
    }
    assert {k: v for k, v in sizes.items() if v > 80} == {}, sizes


def _lines(name: str) -> int:
    return len(MODULES[name].read_text().splitlines())


def test_file_sizes():
    assert _lines("diffusers_ltx2.pipelines.two_stage") <= 200
    assert _lines("diffusers_ltx2.pipelines.pipeline_ltx2_ic_lora") <= 150
    condition_modules = [name for name, tree in TREES.items() if name.startswith("diffusers_ltx2.conditioning.")
                         and any(isinstance(n, ast.ClassDef) and any(getattr(b, "id", None) == "Condition"
                                                                     for b in n.bases) for n in ast.walk(tree))]
    assert len(condition_modules) >= 5  # video, audio, frozen video, temporal region, reference
    assert {n: _lines(n) for n in condition_modules if _lines(n) > 120} == {}
    assert {n: _lines(n) for n in MODULES if _lines(n) > 600} == {}


def test_one_caller_of_the_denoising_step():
    """One place advances latents by a denoising step: the loop's `sampler.step(...)`. (`.step()` without arguments
    is an optimizer / learning-rate scheduler step of the trainer.) The Euler step itself is `euler_step`, used by
    the Euler sampler and by `LTX2Scheduler.step` (diffusers' scheduler protocol) only."""
    steps, euler = [], []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "step" \
                    and node.args:
                steps.append((name, ast.unparse(node.func)))
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "euler_step":
                euler.append(name)
    assert steps == [("diffusers_ltx2.pipelines.denoising", "sampler.step")]
    assert sorted(euler) == ["diffusers_ltx2.schedulers.samplers", "diffusers_ltx2.schedulers.scheduling_ltx2"]
