"""The package's layout: subpackages in layers, imports running one way, no import circle.

Every import statement counts, those inside functions included: a lazy import still ties two modules together.
Only imports under `if TYPE_CHECKING:` are left out: they never run, so they cannot close a circle at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "revlib"
# lowest first: a subpackage may import its own modules and those of the layers below it, never one above
LAYERS = ["core", "tasks", "params", "modeling", "data", "evaluation", "stages", "lab"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str) -> set[str]:
    """The revlib modules `name` imports anywhere in its file."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for t in targets:
            while t and t not in MODULES and "." in t:
                t = t.rpartition(".")[0]
            if t in MODULES and t != name:
                found.add(t)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}
# old import paths kept for one release, each warning with the new one
DEPRECATED = {"revlib.records"}


def subpackage(module: str) -> str | None:
    if module in DEPRECATED:  # a shim at the top re-exporting a lower layer: outside the layers on purpose
        return None
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_lives_in_a_layer():
    loose = [m for m in MODULES if m != "revlib" and m not in DEPRECATED and subpackage(m) not in LAYERS]
    assert not loose, f"modules outside the layers {LAYERS}: {loose}"


def test_no_import_circle_between_modules():
    assert cycles(GRAPH) == []


def test_no_import_circle_between_subpackages():
    packages = {p: set() for p in LAYERS}
    for m, targets in GRAPH.items():
        for t in targets:
            a, b = subpackage(m), subpackage(t)
            if a and b and a != b:
                packages[a].add(b)
    assert cycles(packages) == []


def test_imports_run_down_the_layers():
    upward = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
                    if subpackage(m) and subpackage(t) and LAYERS.index(subpackage(t)) > LAYERS.index(subpackage(m)))
    assert upward == []


def test_nothing_reaches_modules_through_sys_modules():
    offenders = [name for name, path in MODULES.items() if "sys.modules" in path.read_text(encoding="utf-8")]
    assert offenders == []


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_circle_finder_finds_circles(graph, expected):
    assert cycles(graph) == expected
