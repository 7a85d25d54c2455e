"""Run directories: the plan of matrix cells, manifests, fingerprints, and the notebook-side context.

`outputs/<experiment>/<stage>/<cell>/` holds the resolved params.yaml, manifest.json,
the executed notebook and its HTML, metrics.json and the stage's artifacts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from revlib.core import io
from revlib.params import Experiment, dump, load

REPO_ROOT = io.REPO_ROOT
NOTEBOOKS = REPO_ROOT / "notebooks"
RUNNER_ENV = "REVLIB_RUNNER"  # set while the runner executes a notebook
DATA_CELL = "data"

# Sections of the params that each stage's results depend on (beside seed and its cell).
STAGE_INPUTS = {
    "00_base_model": [],
    "01_reverse_data": ["data"],
    "02_sft": ["sft"],
    "03_dpo": ["dpo"],
    "04_probe_dynamics": ["probes", "sft", "dpo"],
    "05_benchmarks": ["benchmarks"],
    "06_negative_data": ["negatives", "sft", "dpo"],
    "07_star_graph": ["star_graph", "sft", "dpo"],
}
PACKAGES = ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "lm_eval", "math-verify", "papermill"]


@dataclass(frozen=True)
class Cell:
    """One cell of the matrix: one executed notebook."""

    stage: str
    name: str
    values: dict[str, Any]
    run_dir: Path
    deps: tuple[tuple[str, str], ...] = field(default=())

    @property
    def notebook(self) -> Path:
        return NOTEBOOKS / f"{self.stage}.ipynb"

    @property
    def key(self) -> str:
        return f"{self.stage}/{self.name}"


def plan(exp: Experiment) -> list[Cell]:
    """Every cell of every stage the experiment lists, in execution order."""
    root = exp.run_root
    cells: list[Cell] = []

    def add(stage: str, name: str, values: dict, deps: list[tuple[str, str]]):
        deps = [d for d in deps if d[0] in exp.stages]
        cells.append(Cell(stage, name, values, root / stage / name, tuple(deps)))

    models = [m.name for m in exp.base_models]
    for stage in exp.stages:
        if stage == "00_base_model":
            for m in models:
                add(stage, m, {"model": m}, [])
        elif stage == "01_reverse_data":
            add(stage, DATA_CELL, {}, [])
        elif stage == "02_sft":
            for m in models:
                for s in exp.sft.train_sets:
                    add(stage, f"{m}__{s}", {"model": m, "train_set": s}, [("00_base_model", m), ("01_reverse_data", DATA_CELL)])
        elif stage == "03_dpo":
            for m in models:
                for name, values in dpo_cells(exp, m):
                    add(stage, name, values, [("02_sft", f"{m}__{values['train_set']}"), ("01_reverse_data", DATA_CELL)])
        elif stage == "04_probe_dynamics":
            for m in models:
                deps = [("00_base_model", m), ("01_reverse_data", DATA_CELL)]
                if exp.probes.models == "stages":  # the probe models are 02's and 03's own checkpoints
                    deps += [("02_sft", f"{m}__{s}") for s in exp.probes.train_sets]
                    deps += [("03_dpo", f"{m}__{s}") for s in exp.probes.train_sets if exp.dpo and s in exp.dpo.on]
                if exp.dpo and exp.dpo.per_step:  # the probes compare the two DPO variants side by side
                    deps += [("02_sft", f"{m}__{s}") for s in exp.dpo.per_step.on]
                    deps += [("03_dpo", name) for name, v in dpo_cells(exp, m) if v["train_set"] in exp.dpo.per_step.on]
                add(stage, m, {"model": m}, list(dict.fromkeys(deps)))
        elif stage == "05_benchmarks":
            for m in models:
                deps = [("01_reverse_data", DATA_CELL)]
                deps += [("02_sft", f"{m}__{s}") for s in (exp.sft.train_sets if exp.sft else [])]
                deps += [("03_dpo", name) for name, _ in dpo_cells(exp, m)]
                add(stage, m, {"model": m}, deps)
        elif stage in ("06_negative_data", "07_star_graph"):
            for m in models:
                add(stage, m, {"model": m}, [("00_base_model", m)])
    order = {s: i for i, s in enumerate(("00_base_model", "01_reverse_data", "02_sft", "03_dpo",
                                         "04_probe_dynamics", "05_benchmarks", "06_negative_data", "07_star_graph"))}
    return sorted(cells, key=lambda c: order[c.stage])


def dpo_cells(exp: Experiment, model: str) -> list[tuple[str, dict[str, Any]]]:
    """03_dpo cells of one base model: directional DPO per SFT model, and per-step DPO where asked."""
    if exp.dpo is None:
        return []
    cells = [(f"{model}__{s}", {"model": model, "train_set": s, "variant": "directional"}) for s in exp.dpo.on]
    if exp.dpo.per_step:
        cells += [(f"{model}__{s}__per_step", {"model": model, "train_set": s, "variant": "per_step"})
                  for s in exp.dpo.per_step.on]
    return cells


def find_cell(exp: Experiment, stage: str, name: str = "") -> Cell:
    cells = [c for c in plan(exp) if c.stage == stage]
    if not cells:
        raise KeyError(f"stage {stage} is not in this experiment's stages {exp.stages}")
    if not name:
        return cells[0]
    for c in cells:
        if c.name == name:
            return c
    raise KeyError(f"{stage} has no cell {name!r}; cells: {[c.name for c in cells]}")


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
        "sections": {s: data.get(s) for s in STAGE_INPUTS[cell.stage]},
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
NOT_RESULTS = {"revlib.lab.runs", "revlib.core.report", "revlib.lab.runner", "revlib.lab.cli", "revlib.core.io"}
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
    inside functions and `-m revlib.x` strings included), plus the data folders those modules read."""
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
        if name in seen or name in NOT_RESULTS or not (name == "revlib" or name.startswith("revlib.")):
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue
        files.add(path)
        text = path.read_text(encoding="utf-8")
        todo += _imported(ast.parse(text), name if path.name == "__init__.py" else name.rpartition(".")[0])
        todo += [m for m in _string_modules(text)]
        for folder in _data_folders(text):
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


def _data_folders(text: str) -> list[Path]:
    import re

    return [PACKAGE_ROOT / d for d in re.findall(r"parent\s*/\s*\"(\w+)\"", text) if (PACKAGE_ROOT / d).is_dir()]


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "manifest.json"
    if not path.exists():
        return None
    try:
        return io.read_json(path)
    except (json.JSONDecodeError, OSError):
        return None


def process_alive(pid: Any, host: Any) -> bool | None:
    """Is the process that wrote a manifest still there? None when it ran on another host (cannot tell)."""
    import socket

    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def live_status(run_dir: Path, manifest: dict[str, Any] | None = None) -> tuple[str, str | None]:
    """(status, last log line): a cell recorded as running whose process is gone is 'interrupted'."""
    m = manifest if manifest is not None else (read_manifest(run_dir) or {})
    status = m.get("status") or "new"
    if status == "running" and process_alive(m.get("pid"), m.get("host")) is False:
        return "interrupted", last_log_line(Path(run_dir) / f"{m.get('stage', '')}.ipynb")
    return status, None


def last_log_line(notebook: Path) -> str | None:
    """The last non-empty line the partly executed notebook printed (papermill saves it after every cell)."""
    try:
        cells = json.loads(notebook.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        return None
    for cell in reversed(cells):
        for out in reversed(cell.get("outputs", [])):
            text = out.get("text") or (out.get("data") or {}).get("text/plain") or \
                "\n".join(x for x in [out.get("ename"), out.get("evalue")] if x)
            text = "".join(text) if isinstance(text, list) else text
            lines = [ln.strip() for ln in str(text).replace("\r", "\n").splitlines() if ln.strip()]
            if lines:
                return lines[-1][:300]
    return None


def environment() -> dict[str, Any]:
    import torch

    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    if torch.cuda.is_available():
        dev = {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    else:
        dev = {"type": "cpu", "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    return {"python": sys.version.split()[0], "packages": versions, "device": dev, "git_commit": git_commit()}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return None
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class UpstreamMissing(RuntimeError):
    pass


def quiet_libraries() -> None:
    """Reports show results, not logs: hide library progress bars (weights loading, dataset maps,
    trl's reference pass) and deprecation chatter. revlib's own long loops opt back in explicitly."""
    import warnings

    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="IProgress not found")
    import datasets
    import huggingface_hub.utils as hub
    import transformers.utils.logging as tlog

    tlog.disable_progress_bar()
    datasets.disable_progress_bars()
    hub.disable_progress_bars()


class StageRun:
    """What a notebook needs: validated params, its cell, its run directory and its inputs."""

    def __init__(self, stage: str, params_file: str | Path, cell: str = "", run_dir: str | Path = ""):
        quiet_libraries()
        self.params_file = Path(params_file).resolve()
        self.exp: Experiment = load(self.params_file)
        self.stage = stage
        self._cell = find_cell(self.exp, stage, cell)
        self.cell = self._cell.name
        self.values = dict(self._cell.values)
        self.dir = Path(run_dir).resolve() if run_dir else self._cell.run_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.under_runner = os.environ.get(RUNNER_ENV) == "1"
        if not self.under_runner:
            io.write_text(self.dir / "params.yaml", dump(self.exp))

    @property
    def model_spec(self):
        return self.exp.model(self.values["model"])

    def upstream(self, stage: str, cell: str | None = None) -> Path:
        """The run directory of a finished upstream cell; a clear error if it has not finished."""
        name = cell if cell is not None else (DATA_CELL if stage == "01_reverse_data" else self.values.get("model", ""))
        run_dir = self.exp.run_root / stage / name
        manifest = read_manifest(run_dir)
        if not manifest or manifest.get("status") != "done":
            state = manifest.get("status") if manifest else "not run"
            raise UpstreamMissing(
                f"{stage}/{name} is {state}; run it first: revlib run {self.params_file} --only {stage}"
            )
        return run_dir

    def finish(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Record the stage's results explicitly as JSON (the notebook's last cell calls this)."""
        io.write_json(self.dir / "metrics.json", metrics)
        if not self.under_runner:  # an interactive run describes itself too
            write_manifest(self.dir, {"status": "done", "stage": self.stage, "cell": self.cell,
                                      "source": "interactive", "end": now(), **environment()})
        return metrics


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    io.write_json(Path(run_dir) / "manifest.json", manifest)


def open_stage(stage: str, params_file: str | Path, cell: str = "", run_dir: str | Path = "") -> StageRun:
    return StageRun(stage, params_file, cell, run_dir)
