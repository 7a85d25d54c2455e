"""Cell fingerprints cover the revlib code a notebook runs: fixing a bug re-runs the cells that ran it,
and `revlib check` says why a cell is stale (code, params or upstream changed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from revlib import runs
from revlib.params import load
from revlib.runner import cell_state, describe_state

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "params" / "smoke" / "benchmarks.yaml"  # stages 00, 01, 02, 03, 05


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of the revlib sources the fingerprint reads, so a test can edit them."""
    root = tmp_path / "src" / "revlib"
    shutil.copytree(REPO / "revlib", root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runs, "PACKAGE_ROOT", root)
    return root


@pytest.fixture
def finished(params_copy, package_copy):
    """Every cell of the smoke benchmarks plan recorded as done with today's fingerprint (nothing trained)."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw["benchmarks"]["tasks"] = [t for t in raw["benchmarks"]["tasks"] if t.startswith("synthetic_")]
    raw["benchmarks"]["local_paths"] = {}  # nothing is evaluated here; the plan and its fingerprints are what count
    params_file = params_copy(raw)
    exp = load(params_file)
    for cell in runs.plan(exp):  # plan order: upstream cells are recorded before the cells that read them
        parts = runs.fingerprint_parts(exp, cell)
        cell.run_dir.mkdir(parents=True, exist_ok=True)
        runs.write_manifest(cell.run_dir, {"status": "done", "fingerprint": runs.fingerprint_hash(parts),
                                           "fingerprint_parts": parts})
    return params_file, exp


def states(exp) -> dict[str, str]:
    return {c.key: cell_state(exp, c) for c in runs.plan(exp)}


def test_sources_follow_imports_through_the_package():
    sft = {p.relative_to(runs.PACKAGE_ROOT).as_posix() for p in runs.revlib_sources(runs.NOTEBOOKS / "02_sft.ipynb")}
    assert {"train.py", "launch.py", "render.py"} <= sft  # launch.py only through the `-m revlib.launch` string
    assert "report.py" not in sft and "runs.py" not in sft  # presentation, not results
    bench = {p.relative_to(runs.PACKAGE_ROOT).as_posix() for p in runs.revlib_sources(runs.NOTEBOOKS / "05_benchmarks.ipynb")}
    assert {"evaluation/judge.py", "evaluation/__init__.py", "lmeval_tasks/revlib_math500.yaml"} <= bench


def _closures(exp) -> dict[str, set[str]]:
    return {c.key: set(runs.code_hashes(c.notebook)) for c in runs.plan(exp)}


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
    cell = next(c for c in runs.plan(exp) if c.key in expected)
    assert describe_state(exp, cell) == f"stale (code changed: {target})"


def test_params_and_upstream_changes_name_themselves(finished):
    params_file, exp = finished
    exp2 = exp.model_copy(update={"dpo": exp.dpo.model_copy(update={"beta": 0.3})})
    dpo = next(c for c in runs.plan(exp2) if c.stage == "03_dpo")
    assert runs.stale_reasons(exp2, dpo) == ["params changed"]
    sft = next(c for c in runs.plan(exp) if c.key == f"02_sft/{dpo.values['model']}__{dpo.values['train_set']}")
    m = runs.read_manifest(sft.run_dir)
    runs.write_manifest(sft.run_dir, {**m, "fingerprint": "re-run"})
    assert runs.stale_reasons(exp, dpo) == [f"upstream changed: {sft.key}"]


def test_check_prints_why_cells_are_stale(finished, package_copy, monkeypatch):
    from rich.console import Console

    from revlib import cli

    monkeypatch.setattr(cli, "console", Console(width=400))

    params_file, exp = finished
    train = package_copy / "train.py"
    train.write_text(train.read_text() + "\n# a fix\n")
    result = CliRunner().invoke(cli.app, ["check", str(params_file)])
    assert result.exit_code == 0, result.output
    assert "code changed: revlib/train.py" in result.output
    assert result.output.count("stale") == sum("revlib/train.py" in files for files in _closures(exp).values())
