"""The runner: run directories describe themselves, finished cells are skipped, failures and kills resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from revlib.core import io
from revlib.params import load
from revlib.lab.plan import plan
from revlib.lab.manifest import read_manifest

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "params" / "smoke" / "foundation.yaml"
REVLIB = [sys.executable, "-m", "revlib.lab.cli"]

pytestmark = pytest.mark.notebook


def revlib_cmd(*args, **kw):
    return subprocess.run([*REVLIB, *args], capture_output=True, text=True, cwd=REPO, **kw)


def test_run_directory_describes_itself(foundation_run):
    params, exp = foundation_run
    for cell in plan(exp):
        d = cell.run_dir
        manifest = read_manifest(d)
        assert manifest["status"] == "done"
        for key in ("fingerprint", "inputs", "git_commit", "packages", "device", "start", "end", "wall_time_s"):
            assert key in manifest, key
        assert manifest["packages"]["torch"].startswith("2.13")
        assert (d / "params.yaml").exists() and (d / "metrics.json").exists()
        assert (d / f"{cell.stage}.ipynb").exists() and (d / f"{cell.stage}.html").exists()
        assert yaml.safe_load((d / "params.yaml").read_text())["experiment"] == exp.experiment
    base = exp.run_root / "00_base_model" / "micro"
    assert (base / "model" / "config.json").exists() and (base / "base.json").exists()
    data = exp.run_root / "01_reverse_data" / "data"
    assert len(io.read_jsonl(data / "sets" / "forward.jsonl")) == exp.data.n_train
    index = (exp.run_root / "index.html").read_text()
    assert "00_base_model/micro/00_base_model.html" in index


def test_second_run_skips_finished_cells(foundation_run):
    params, exp = foundation_run
    before = {c.key: read_manifest(c.run_dir)["end"] for c in plan(exp)}
    result = revlib_cmd("run", str(params))
    assert result.returncode == 0
    assert result.stdout.count("skip") == len(before)
    assert {c.key: read_manifest(c.run_dir)["end"] for c in plan(exp)} == before


def test_status_and_dry_run(foundation_run):
    params, exp = foundation_run
    status = revlib_cmd("status", str(exp.run_root))
    assert status.returncode == 0 and "01_reverse_data" in status.stdout and "done" in status.stdout
    dry = revlib_cmd("run", str(params), "--dry-run", "--only", "01")
    assert dry.returncode == 0 and "01_reverse_data" in dry.stdout and "00_base_model" not in dry.stdout


def test_changed_params_rerun_only_affected_cells(foundation_run, tmp_path):
    params, exp = foundation_run
    raw = yaml.safe_load(params.read_text())
    raw["data"]["n_test"] = 5
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(raw))
    dry = revlib_cmd("check", str(changed))
    assert dry.returncode == 0
    lines = {l.split("│")[1].strip(): l for l in dry.stdout.splitlines() if l.count("│") >= 4}
    assert "done" in lines["00_base_model"] and "stale" in lines["01_reverse_data"]
    # the task's knobs shape the embedded model's pretraining, so they make stage 00 stale too
    raw["data"]["source"] = {"kind": "synthetic", "task": "arith", "knobs": {"max_value": 7}}
    changed.write_text(yaml.safe_dump(raw))
    lines = {l.split("│")[1].strip(): l for l in revlib_cmd("check", str(changed)).stdout.splitlines() if l.count("│") >= 4}
    assert "stale" in lines["00_base_model"]


def test_failing_cell_keeps_its_notebook_stops_and_resumes(tmp_path):
    raw = yaml.safe_load(SMOKE.read_text())
    raw["output_dir"] = str(tmp_path / "outputs")
    raw["data"]["source"] = {"kind": "synthetic", "task": "arith", "knobs": {"steps": 2}}
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(raw))
    exp = load(params)
    # Break 01 at run time: a teacher model that does not exist (valid params, fails when loading)
    bad = dict(raw, data={**raw["data"], "teacher": {"kind": "hf", "model": str(tmp_path / "no-such-teacher")}})
    bad_params = tmp_path / "bad.yaml"
    bad_params.write_text(yaml.safe_dump(bad))
    result = revlib_cmd("run", str(bad_params))
    assert result.returncode == 1
    assert "01_reverse_data/data failed" in result.stderr
    failed = exp.run_root / "01_reverse_data" / "data"
    assert read_manifest(failed)["status"] == "failed"
    assert read_manifest(failed)["error"]
    assert "Traceback" in (failed / "01_reverse_data.html").read_text() or "Error" in (failed / "01_reverse_data.html").read_text()
    base_end = read_manifest(exp.run_root / "00_base_model" / "micro")["end"]
    # fixed params: the finished base model is reused, the failed cell re-runs
    result = revlib_cmd("run", str(params))
    assert result.returncode == 0, result.stderr
    assert read_manifest(exp.run_root / "00_base_model" / "micro")["end"] == base_end
    assert read_manifest(failed)["status"] == "done"


def test_killed_run_resumes_without_redoing_finished_cells(tmp_path):
    raw = yaml.safe_load(SMOKE.read_text())
    raw["output_dir"] = str(tmp_path / "outputs")
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(raw))
    exp = load(params)
    first, second = plan(exp)[:2]
    proc = subprocess.Popen([*REVLIB, "run", str(params)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        m = read_manifest(second.run_dir)
        if m and m.get("status") == "running":
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the second cell never started")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_manifest(second.run_dir)["status"] == "running"
    (second.run_dir / "partial-work").write_text("kept for resuming")
    first_end = read_manifest(first.run_dir)["end"]
    result = revlib_cmd("run", str(params))
    assert result.returncode == 0, result.stderr
    assert read_manifest(first.run_dir)["end"] == first_end
    assert read_manifest(second.run_dir)["status"] == "done"
    assert "skip" in result.stdout
    # same inputs: the killed cell resumed in place, its partial work still there
    assert (second.run_dir / "partial-work").exists()


def test_cell_rerun_with_changed_inputs_starts_clean(tmp_path):
    raw = yaml.safe_load(SMOKE.read_text())
    raw["output_dir"] = str(tmp_path / "outputs")
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(raw))
    assert revlib_cmd("run", str(params)).returncode == 0
    data_dir = load(params).run_root / "01_reverse_data" / "data"
    (data_dir / "stale-artifact").write_text("made from the old inputs")
    raw["data"]["n_test"] = 3
    params.write_text(yaml.safe_dump(raw))
    result = revlib_cmd("run", str(params))
    assert result.returncode == 0, result.stderr
    assert not (data_dir / "stale-artifact").exists()
    assert len(io.read_jsonl(data_dir / "sets" / "test_forward.jsonl")) == 3
    # the earlier run is set aside whole, never deleted
    kept = list((load(params).run_root / "previous" / "01_reverse_data").glob("data@*"))
    assert len(kept) == 1 and (kept[0] / "stale-artifact").read_text() == "made from the old inputs"


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path):
    target = tmp_path / "a.json"
    io.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            raise RuntimeError("killed")
    assert io.read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_notebooks_open_with_title_and_literal_parameters_cell():
    import nbformat

    for nb_path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), nb_path.name
        params_cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params_cells) == 1, nb_path.name
        src = params_cells[0].source
        # each notebook opens on the experiment that runs it: the demo (00-05), negative data (06), star graph (07)
        home = {"06": "negative-data", "07": "star-graph"}.get(nb_path.name[:2], "demo")
        assert f'params_file: str = "../params/{home}.yaml"' in src, nb_path.name
        assert load(REPO / "params" / f"{home}.yaml").stages, home
        assert 'cell: str = ""' in src and 'run_dir: str = ""' in src
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{nb_path.name} has outputs"
