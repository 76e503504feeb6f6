"""The shape of the package: imports point one way, private names stay home, modules stay readable.

Every facelib module is parsed with ``ast`` (nothing is imported), so these checks are fast and
see function-local imports as well as module-level ones.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGE = REPO / "facelib"
MODULES = {p.stem: p for p in sorted(PACKAGE.glob("*.py"))}
MAX_LINES = 1000  # none over this
AIM_LINES = 800   # the aim; listed when a module is too long


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level(tree: ast.Module) -> list[ast.ImportFrom | ast.Import]:
    """Import statements that run when the module is imported (not inside functions or classes)."""
    out: list[ast.ImportFrom | ast.Import] = []
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            stack += node.body + node.orelse
        elif isinstance(node, ast.Try):
            stack += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
        elif isinstance(node, ast.With):
            stack += node.body
    return out


def _targets(node: ast.ImportFrom | ast.Import) -> list[tuple[str, list[str]]]:
    """(facelib module, imported names) pairs of one import statement; other packages are left out."""
    if isinstance(node, ast.Import):
        return [(a.name.split(".")[1], []) for a in node.names
                if a.name.startswith("facelib.") and a.name.split(".")[1] in MODULES]
    if node.level == 1 or (node.level == 0 and (node.module or "").split(".")[0] == "facelib"):
        parts = (node.module or "").split(".")
        module = parts[0] if node.level == 1 else (parts[1] if len(parts) > 1 else "")
        if module:
            return [(module, [a.name for a in node.names])] if module in MODULES else []
        # ``from . import x``: each name that is a module is an import of it
        return [(a.name, []) for a in node.names if a.name in MODULES]
    return []


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges = graph.setdefault(name, set())
        for node in _module_level(_parse(path)):
            edges.update(m for m, _ in _targets(node) if m != name and m != "__init__")
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
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
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_the_checks_see_a_cycle_and_a_private_import():
    """The helpers themselves: a two-module cycle is found, a chain is not."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    tree = ast.parse("from .weights import _hidden, shown\nimport facelib.align\n"
                     "def f():\n    from .data import locate\n")
    found = [t for node in _module_level(tree) for t in _targets(node)]
    assert sorted(found) == [("align", []), ("weights", ["_hidden", "shown"])]  # the local import is not module-level


def test_no_import_cycles_among_module_level_imports():
    graph = _graph()
    assert set(graph) == set(MODULES)
    assert _cycles(graph) == []


def test_no_private_names_imported_across_modules():
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(_parse(path)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for module, names in _targets(node):
                    found += [f"{name}.py:{node.lineno}: from .{module} import {n}" for n in names
                              if n.startswith("_") and not n.startswith("__") and module != name]
    assert found == []


def test_no_module_over_a_thousand_lines():
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()}
    long = {f"{n}.py": k for n, k in sorted(lengths.items(), key=lambda kv: -kv[1]) if k > AIM_LINES}
    assert max(lengths.values()) <= MAX_LINES, f"modules over {AIM_LINES} lines: {long}"
