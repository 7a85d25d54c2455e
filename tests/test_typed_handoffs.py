"""Stages hand typed results on, and notebooks are reports: checks over the source, no model needed."""

from __future__ import annotations

import ast
import importlib
import json
import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TYPED = sorted((ROOT / "revlib" / "stages").glob("*.py")) + [ROOT / "revlib" / "lab" / "findings.py"]


def _loose(annotation: ast.expr | None) -> bool:
    """A bare dict, dict[str, Any], or a list (or Optional) of them."""
    if annotation is None:
        return False
    text = ast.unparse(annotation).replace(" ", "")
    return bool(re.search(r"(?<![\w.])dict(?![\w\[])|dict\[str,Any\]", text))


def loose_annotations(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            args += [a for a in (node.args.vararg, node.args.kwarg) if a is not None]
            found += [f"{path.name}:{node.lineno} {node.name}({a.arg}: {ast.unparse(a.annotation)})"
                      for a in args if _loose(a.annotation)]
            if _loose(node.returns):
                found.append(f"{path.name}:{node.lineno} {node.name} -> {ast.unparse(node.returns)}")
    return found


def test_no_stage_hands_on_a_loose_dict():
    offenders = [hit for path in TYPED for hit in loose_annotations(path)]
    assert offenders == [], "\n".join(offenders)


@pytest.mark.parametrize("source, expected", [
    ("def f(a: dict) -> int: ...", 1), ("def f(a) -> dict[str, Any]: ...", 1), ("def f(a: list[dict[str, Any]]): ...", 1),
    ("def f(a: dict[str, Any] | None): ...", 1), ("def f(a: dict[str, float]) -> Metrics: ...", 0),
    ("def f(a: predict) -> dict_like: ...", 0)])
def test_the_annotation_check_finds_loose_dicts(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert len(loose_annotations(path)) == expected


def _code_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", [])]


def wide_calls(notebook: Path) -> list[str]:
    """Calls with more than two arguments, the call that opens the stage aside."""
    found = []
    for source in _code_cells(notebook):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and len(node.args) + len(node.keywords) > 2:
                name = ast.unparse(node.func)
                if name != "context.open_stage":
                    found.append(f"{notebook.name}: {ast.unparse(node)[:100]}")
    return found


@pytest.mark.parametrize("name", ["04_probe_dynamics", "05_benchmarks", "06_negative_data", "07_star_graph"])
def test_notebooks_04_to_07_are_reports(name):
    assert wide_calls(ROOT / "notebooks" / f"{name}.ipynb") == []


def test_the_call_check_finds_wide_calls(tmp_path):
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": ["ctx = context.open_stage('04', a, b, c)\n",
                                                                      "f(a, b, key=c)\nreport.table(x, 'y')"]}]}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb))
    assert wide_calls(path) == ["n.ipynb: f(a, b, key=c)"]


DOTTED = re.compile(r"(?<![\w/.-])revlib(?:\.[A-Za-z_]\w*)+(?![\w-])")
NOT_NAMES = {"revlib.log"}  # the launcher's log-line prefix, not a module
DEPRECATED = {"revlib.records"}  # still importable for a release, but nothing of ours may name it
SOURCES = [p for pattern in ("revlib/**/*.py", "revlib/**/*.yaml", "tests/**/*.py", "params/**/*.yaml", "docs/*.md",
                             "benchmarks/*.py", "scripts/*.py", "README.md", "configs/*.yaml", "notebooks/*.ipynb")
           for p in ROOT.glob(pattern) if ".venv" not in p.parts and p.name not in ("records.py", "test_typed_handoffs.py", "test_layout.py")]


def resolves(dotted: str) -> bool:
    """A module, or a name inside one (revlib.core.render.THINK), or a file beside the package (revlib.tasks entry
    point group name is a module too)."""
    if any(dotted == d or dotted.startswith(d + ".") for d in DEPRECATED):
        return False
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                obj = importlib.import_module(module)
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_dotted_revlib_name_resolves():
    stale = sorted({f"{p.relative_to(ROOT)}: {m}" for p in SOURCES
                    for m in DOTTED.findall(p.read_text(encoding="utf-8", errors="replace"))
                    if m not in NOT_NAMES and not resolves(m)})
    assert stale == [], "\n".join(stale)


def test_a_plugin_written_against_the_old_layout_loads_with_a_warning(tmp_path, monkeypatch):
    pkg = tmp_path / "old_style_task"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from revlib.records import Record\nfrom revlib.tasks import TaskFamily\n\n"
        "class Old(TaskFamily):\n    name = 'old_style'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import sys

    sys.modules.pop("revlib.records", None)
    with pytest.warns(DeprecationWarning, match="import Record from revlib.tasks"):
        module = importlib.import_module("old_style_task")
    from revlib.tasks import Record

    assert module.Record is Record and issubclass(module.Old, importlib.import_module("revlib.tasks").TaskFamily)
