"""Cell fingerprints: a hash of everything a cell's result depends on (its code, its params, its upstream
results), kept in parts so a stale cell can say what changed."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from revlib.core import io
from revlib.core.io import REPO_ROOT
from revlib.lab.manifest import read_manifest
from revlib.lab.plan import Cell
from revlib.params import Experiment
from revlib.params.stages import BY_NAME


def fingerprint(exp: Experiment, cell: Cell) -> str:
    """Hash of everything the cell's result depends on: its code, its params, its upstream results."""
    return fingerprint_hash(fingerprint_parts(exp, cell))


def fingerprint_hash(parts: dict[str, Any]) -> str:
    return io.sha256_text(json.dumps(parts, sort_keys=True, default=str))


def fingerprint_parts(exp: Experiment, cell: Cell) -> dict[str, Any]:
    """The fingerprint's parts, kept apart in the manifest so a stale cell can say what changed.

    code: the notebook and every revlib source it runs (path -> sha256); params: the sections, seed,
    cell values and model it reads; upstream: the fingerprints its upstream cells finished with.
    """
    data = exp.model_dump(mode="json")
    params: dict[str, Any] = {
        "seed": exp.seed,
        "cell": cell.values,
        "sections": _own_variant({s: data.get(s) for s in BY_NAME[cell.stage].reads}, cell),
    }
    if "model" in cell.values:
        params["model"] = exp.model(cell.values["model"]).model_dump(mode="json")
    if cell.stage == "00_base_model":  # the embedded model is pretrained on the experiment's task knobs
        from revlib.stages.base_model import task_knobs

        params["task_knobs"] = task_knobs(exp, exp.model(cell.values["model"]))
    upstream = {}
    for stage, name in cell.deps:
        manifest = read_manifest(exp.run_root / stage / name)
        upstream[f"{stage}/{name}"] = manifest.get("fingerprint") if manifest else None
    return {"code": code_hashes(cell.notebook), "params": io.sha256_text(json.dumps(params, sort_keys=True, default=str)),
            "upstream": upstream}


def _own_variant(sections: dict[str, Any], cell: Cell) -> dict[str, Any]:
    """A 03 cell depends on the dpo section and its own entry of dpo.variants, never on the others: adding the
    authors' variant to a replica re-runs no finished directional DPO."""
    dpo = sections.get("dpo")
    if cell.stage != "03_dpo" or not dpo:
        return sections
    own = {k: v for k, v in (dpo.get("variants") or {}).items() if k == cell.values.get("variant")}
    return {**sections, "dpo": {**{k: v for k, v in dpo.items() if k != "variants"}, **({"variants": own} if own else {})}}


def stale_reasons(exp: Experiment, cell: Cell) -> list[str]:
    """Why a finished cell no longer matches its inputs: "code changed: <files>", "params changed",
    "upstream changed: <cells>" (an upstream cell that itself is stale is named too). Empty when it matches."""
    manifest = read_manifest(cell.run_dir) or {}
    before, now_parts = manifest.get("fingerprint_parts"), fingerprint_parts(exp, cell)
    if manifest.get("fingerprint") == fingerprint_hash(now_parts):
        return []
    if not isinstance(before, dict):
        return ["inputs changed (recorded before fingerprints had parts)"]
    reasons = []
    old_code, new_code = before.get("code") or {}, now_parts["code"]
    changed = sorted(k for k in set(old_code) | set(new_code) if old_code.get(k) != new_code.get(k))
    if changed:
        reasons.append("code changed: " + ", ".join(changed))
    if before.get("params") != now_parts["params"]:
        reasons.append("params changed")
    old_up = before.get("upstream") or {}
    moved = sorted(k for k, v in now_parts["upstream"].items() if old_up.get(k) != v)
    if moved:
        reasons.append("upstream changed: " + ", ".join(moved))
    return reasons or ["inputs changed"]


# Modules that present or orchestrate results but never change them: editing a report's layout must not
# re-run an 8-hour training. Everything else a notebook imports, directly or through other modules, counts.
NOT_RESULTS = {"revlib.lab", "revlib.core.report", "revlib.core.io", "revlib.core.provenance"}


def _counts(name: str) -> bool:
    """Whether a module's code can change a cell's results (the lab's own modules run cells, they compute nothing)."""
    return not any(name == n or name.startswith(n + ".") for n in NOT_RESULTS)
PACKAGE_ROOT = REPO_ROOT / "revlib"
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def _sha(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = io.sha256_file(path)
    return _FILE_HASHES[key]


def code_hashes(notebook: Path) -> dict[str, str]:
    """sha256 of the notebook and of each revlib source file it runs, by path relative to the repository."""
    out = {f"notebooks/{notebook.name}": _sha(notebook) if notebook.exists() else None}
    if not notebook.exists():
        return out
    for path in revlib_sources(notebook):
        out[f"revlib/{path.relative_to(PACKAGE_ROOT).as_posix()}"] = _sha(path)
    return out


_SOURCES: dict[tuple, list[Path]] = {}
# `revlib run --jobs N` fingerprints cells from N threads; CPython 3.11's ast.parse is not thread-safe ("SystemError:
# AST constructor recursion depth mismatch", seen on the demo's seed sweep), so one thread walks the imports at a time
_SOURCES_LOCK = threading.Lock()


def revlib_sources(notebook: Path) -> list[Path]:
    """The revlib files a notebook's code reaches: its imports, followed through the package (lazy imports
    inside functions and `-m revlib.<module>` strings included), plus the data folders those modules read."""
    package = tuple((str(f), f.stat().st_mtime_ns) for f in sorted(PACKAGE_ROOT.rglob("*.py")))
    key = (str(notebook), Path(notebook).stat().st_mtime_ns, package)
    with _SOURCES_LOCK:
        if key not in _SOURCES:
            for stale in [k for k in _SOURCES if k[2] != package]:  # the package changed: every closure is redone
                del _SOURCES[stale]
            _SOURCES[key] = _revlib_sources(notebook)
        return _SOURCES[key]


def _revlib_sources(notebook: Path) -> list[Path]:
    import ast

    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    sources = ["\n".join(line for line in "".join(c["source"]).splitlines() if not line.lstrip().startswith(("%", "!")))
               for c in cells if c["cell_type"] == "code"]
    todo = [name for src in sources for name in _imported(ast.parse(src), "")]
    seen: set[str] = set()
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen or not _counts(name) or not (name == "revlib" or name.startswith("revlib.")):
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue
        files.add(path)
        text = path.read_text(encoding="utf-8")
        todo += _imported(ast.parse(text), name if path.name == "__init__.py" else name.rpartition(".")[0])
        todo += [m for m in _string_modules(text)]
        for folder in _data_folders(text, path.parent):
            files.update(f for f in folder.rglob("*") if f.is_file() and f.suffix not in (".pyc",))
        parent = name.rpartition(".")[0]
        if parent:
            todo.append(parent)  # a submodule import runs its package's __init__
    return sorted(files)


def _imported(tree, package: str) -> list[str]:
    import ast

    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.append(base)
            names += [f"{base}.{a.name}" for a in node.names]  # `from revlib import train` names a submodule
    return names


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    for candidate in (PACKAGE_ROOT / rel / "__init__.py", (PACKAGE_ROOT / rel).with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _string_modules(text: str) -> list[str]:
    import re

    return re.findall(r"[\"'](revlib(?:\.\w+)+)[\"']", text)


def _data_folders(text: str, folder: Path) -> list[Path]:
    """Folders beside a module that it reads: `Path(__file__).parent / "name"`, or a package it names for
    `importlib.resources` (its data files: the package's .py files are followed as modules)."""
    import re

    found = [folder / d for d in re.findall(r"parent\s*/\s*\"(\w+)\"", text) if (folder / d).is_dir()]
    for name in re.findall(r"resources\.files\(\s*[\"'](revlib(?:\.\w+)+)[\"']", text):
        package = PACKAGE_ROOT.joinpath(*name.split(".")[1:])
        if package.is_dir():
            found.append(package)
    return found
