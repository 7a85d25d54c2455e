"""Cell fingerprints cover the revlib code a notebook runs: fixing a bug re-runs the cells that ran it,
and `revlib check` says why a cell is stale (code, params or upstream changed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from revlib.lab import fingerprint
from revlib.lab.manifest import read_manifest, write_manifest
from revlib.lab.plan import NOTEBOOKS, plan
from revlib.lab.runner import cell_state, describe_state
from revlib.params import load
from tests.conftest import write_params

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "params" / "smoke" / "benchmarks.yaml"  # stages 00, 01, 02, 03, 05


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of the revlib sources the fingerprint reads, so a test can edit them."""
    root = tmp_path / "src" / "revlib"
    shutil.copytree(REPO / "revlib", root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprint, "PACKAGE_ROOT", root)
    return root


@pytest.fixture
def finished(params_copy, package_copy):
    """Every cell of the smoke benchmarks plan recorded as done with today's fingerprint (nothing trained)."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw["benchmarks"]["tasks"] = [t for t in raw["benchmarks"]["tasks"] if t.startswith("synthetic_")]
    raw["benchmarks"]["local_paths"] = {}  # nothing is evaluated here; the plan and its fingerprints are what count
    params_file = params_copy(raw)
    exp = load(params_file)
    for cell in plan(exp):  # plan order: upstream cells are recorded before the cells that read them
        parts = fingerprint.fingerprint_parts(exp, cell)
        cell.run_dir.mkdir(parents=True, exist_ok=True)
        write_manifest(cell.run_dir, {"status": "done", "fingerprint": fingerprint.fingerprint_hash(parts),
                                           "fingerprint_parts": parts})
    return params_file, exp


def states(exp) -> dict[str, str]:
    return {c.key: cell_state(exp, c) for c in plan(exp)}


def test_sources_follow_imports_through_the_package():
    sft = {p.relative_to(fingerprint.PACKAGE_ROOT).as_posix() for p in fingerprint.revlib_sources(NOTEBOOKS / "02_sft.ipynb")}
    assert {"modeling/train.py", "modeling/launch.py", "modeling/worker.py", "modeling/train_rows.py",
            "core/render.py"} <= sft  # worker.py only through `-m revlib.modeling.worker`
    assert "core/report.py" not in sft and not any(f.startswith("lab/") for f in sft)  # presentation, not results
    bench = {p.relative_to(fingerprint.PACKAGE_ROOT).as_posix() for p in fingerprint.revlib_sources(NOTEBOOKS / "05_benchmarks.ipynb")}
    assert {"evaluation/judge.py", "evaluation/__init__.py", "evaluation/lmeval_tasks/revlib_math500.yaml"} <= bench


def _closures(exp) -> dict[str, set[str]]:
    return {c.key: set(fingerprint.code_hashes(c.notebook)) for c in plan(exp)}


def test_code_fix_makes_only_the_cells_that_run_it_stale(finished, package_copy):
    params_file, exp = finished
    assert set(states(exp).values()) == {"done"}
    closures = _closures(exp)
    # a source some cells of the plan run and others do not
    candidates = sorted({f for c in closures.values() for f in c if f.startswith("revlib/")})
    target = next(f for f in candidates if 0 < sum(f in c for c in closures.values()) < len(closures))
    path = package_copy / target.removeprefix("revlib/")
    path.write_text(path.read_text() + "\n# a fix\n")
    after = states(exp)
    expected = {k for k, files in closures.items() if target in files}
    assert {k for k, v in after.items() if v == "stale"} == expected
    cell = next(c for c in plan(exp) if c.key in expected)
    assert describe_state(exp, cell) == f"stale (code changed: {target})"


def test_params_and_upstream_changes_name_themselves(finished):
    params_file, exp = finished
    exp2 = exp.model_copy(update={"dpo": exp.dpo.model_copy(update={"beta": 0.3})})
    dpo = next(c for c in plan(exp2) if c.stage == "03_dpo")
    assert fingerprint.stale_reasons(exp2, dpo) == ["params changed"]
    sft = next(c for c in plan(exp) if c.key == f"02_sft/{dpo.values['model']}__{dpo.values['train_set']}")
    m = read_manifest(sft.run_dir)
    write_manifest(sft.run_dir, {**m, "fingerprint": "re-run"})
    assert fingerprint.stale_reasons(exp, dpo) == [f"upstream changed: {sft.key}"]


def test_check_prints_why_cells_are_stale(finished, package_copy, monkeypatch):
    from rich.console import Console

    from revlib.lab import cli

    monkeypatch.setattr(cli, "console", Console(width=400))

    params_file, exp = finished
    train = package_copy / "modeling" / "train.py"
    train.write_text(train.read_text() + "\n# a fix\n")
    result = CliRunner().invoke(cli.app, ["check", str(params_file)])
    assert result.exit_code == 0, result.output
    assert "code changed: revlib/modeling/train.py" in result.output
    assert result.output.count("stale") == sum("revlib/modeling/train.py" in files for files in _closures(exp).values())


def _record_done(params_file) -> object:
    exp = load(params_file)
    for cell in plan(exp):
        parts = fingerprint.fingerprint_parts(exp, cell)
        cell.run_dir.mkdir(parents=True, exist_ok=True)
        write_manifest(cell.run_dir, {"status": "done", "fingerprint": fingerprint.fingerprint_hash(parts),
                                      "fingerprint_parts": parts})
    return exp


def _stage_states(exp) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for key, state in states(exp).items():
        out.setdefault(key.split("/")[0], set()).add(state)
    return out


@pytest.mark.parametrize("edited, stale, fresh", [
    ("data/teachers/api.py", {"01_reverse_data"}, {"00_base_model", "02_sft", "03_dpo", "04_probe_dynamics", "06_negative_data"}),
    ("modeling/train.py", {"02_sft", "03_dpo"}, {"00_base_model", "01_reverse_data"}),
])
def test_fingerprints_follow_what_each_stage_runs(tmp_path, package_copy, edited, stale, fresh):
    (tmp_path / "demo").mkdir()
    (tmp_path / "negatives").mkdir()
    demo = _record_done(write_params(REPO / "params" / "demo.yaml", tmp_path / "demo"))
    negatives = _record_done(write_params(REPO / "params" / "negative-data.yaml", tmp_path / "negatives"))
    path = package_copy / edited
    path.write_text(path.read_text() + "\n# an edit\n")
    by_stage = _stage_states(demo) | {"06_negative_data": _stage_states(negatives)["06_negative_data"]}
    assert {s for s, v in by_stage.items() if v == {"stale"}} >= stale
    assert all(by_stage[s] == {"done"} for s in fresh), by_stage
    assert all(by_stage[s] == {"stale"} for s in stale), by_stage
