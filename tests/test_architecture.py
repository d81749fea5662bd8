"""The package's import graph: arrows run one way and never in a circle.

cli → (api, integrations) → analyses (align, symmetry, ode, inspection) → runner → report →
inputs / linalg / config / stability / distributed → errors. Every import counts, also one
inside a function: a lazy import is still an arrow. Read from the source with ``ast``, so
nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "symtool"

LAYERS: list[tuple[str, ...]] = [
    ("symtool.errors", "symtool._version"),
    ("symtool.eigen", "symtool.triangles"),
    ("symtool.config", "symtool.activations", "symtool.linalg", "symtool.stability",
     "symtool.distributed", "symtool.inputs"),
    ("symtool.report",),
    ("symtool.runner",),
    ("symtool.align", "symtool.symmetry", "symtool.ode", "symtool.inspection"),
    ("symtool.api", "symtool.integrations"),
    ("symtool.cli",),
    ("symtool",),  # the package face: the public API
]
"""Lowest first; a module may import from its own layer or any layer below it."""

ANALYSES = ("symtool.align", "symtool.symmetry", "symtool.ode")
"""Analyses never import one another (inspection, which lists what each would analyse, may)."""


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every symtool module ``name`` imports (submodules resolved, packages kept)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "symtool"}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{node.module}" if node.module else pkg
            if base.split(".")[0] != "symtool":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in MODULES else base)
    return found - {name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    best, rank = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    if rank < 0:
        raise AssertionError(f"{module} is in no layer; add it to LAYERS")
    return rank


def _top(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        _layer(name)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_import(module: str) -> None:
    mine = _layer(module)
    upward = sorted(t for t in GRAPH[module] if _layer(t) > mine)
    assert not upward, f"{module} (layer {mine}) imports from higher layers: {upward}"


def test_analyses_do_not_import_each_other() -> None:
    bad = [
        (m, t)
        for m, targets in GRAPH.items()
        for t in targets
        if _top(m) in ANALYSES and _top(t) in ANALYSES and _top(t) != _top(m)
    ]
    assert not bad


def test_report_reads_data_not_analyses() -> None:
    bad = [(m, t) for m, ts in GRAPH.items() if _top(m) == "symtool.report" for t in ts
           if _top(t) in (*ANALYSES, "symtool.runner", "symtool.cli")]
    assert not bad


def test_no_import_circle() -> None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH.get(m, ())):
            if t not in GRAPH:
                continue
            if state.get(t) == 1:
                cycle = [*stack[stack.index(t) :], t]
                raise AssertionError("import circle: " + " → ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_no_module_over_600_lines() -> None:
    long = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert {n: k for n, k in long.items() if k > 600} == {}


def test_cli_holds_no_math() -> None:
    for name, path in MODULES.items():
        if _top(name) != "symtool.cli":
            continue
        text = path.read_text()
        for banned in ("torch.linalg", "import numpy", "import scipy", "eigh(", "svd("):
            assert banned not in text, f"{name} does math ({banned})"
