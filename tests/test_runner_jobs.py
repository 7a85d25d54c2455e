"""`revlib run --jobs N`: cells of a stage run side by side, never before the cells they read from."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import yaml

from revlib.lab import runner
from revlib.params import load
from revlib.lab.fingerprint import fingerprint
from revlib.lab.plan import plan
from revlib.lab.manifest import read_manifest, write_manifest

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "params" / "smoke" / "train.yaml"


def _experiment(tmp_path):
    raw = yaml.safe_load(TRAIN.read_text())
    raw["output_dir"] = str(tmp_path / "outputs")
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(raw))
    return load(params), params


def _fake(exp, log, fail=None):
    lock = threading.Lock()

    def execute(exp_, params_file, cell):
        with lock:
            log.append(("start", cell.stage, cell.name, time.monotonic(), os.getcwd()))
        time.sleep(0.2)
        status = "failed" if cell.key == fail else "done"
        write_manifest(cell.run_dir, {"status": status, "fingerprint": fingerprint(exp, cell)})
        with lock:
            log.append(("end", cell.stage, cell.name, time.monotonic(), None))
        return {"status": status, "wall_time_s": 0.2, "error": "boom" if status == "failed" else None}

    return execute


def test_cells_overlap_up_to_jobs_and_wait_for_what_they_read(tmp_path, monkeypatch):
    exp, params = _experiment(tmp_path)
    log: list = []
    monkeypatch.setattr(runner, "execute_cell", _fake(exp, log))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cwd = os.getcwd()
    results = runner.run(exp, params, jobs=2)
    cells = plan(exp)
    assert sorted(r["cell"] for r in results) == sorted(c.key for c in cells)
    assert os.getcwd() == cwd and "OMP_NUM_THREADS" not in os.environ
    assert all(entry[4] == str(runner.NOTEBOOKS) for entry in log if entry[0] == "start")
    t = {(kind, stage, name): at for kind, stage, name, at, _ in log}
    for cell in cells:
        for dep in cell.deps:
            assert t[("start", cell.stage, cell.name)] >= t[("end", *dep)], (cell.key, dep)
    live, most = 0, 0
    for kind, *_ in sorted(log, key=lambda e: e[3]):
        live += 1 if kind == "start" else -1
        most = max(most, live)
    assert most == 2  # the 02 cells ran side by side, never more than two
    # a second run skips everything
    assert {r["status"] for r in runner.run(exp, params, jobs=2)} == {"skipped"}


def test_a_failure_stops_new_cells_and_is_named(tmp_path, monkeypatch):
    exp, params = _experiment(tmp_path)
    first_sft = next(c for c in plan(exp) if c.stage == "02_sft")
    log: list = []
    monkeypatch.setattr(runner, "execute_cell", _fake(exp, log, fail=first_sft.key))
    with pytest.raises(runner.CellFailed, match=first_sft.key):
        runner.run(exp, params, jobs=2)
    started = {(s, n) for kind, s, n, *_ in log if kind == "start"}
    assert not any(s > "02_sft" for s, _ in started)  # nothing downstream started after the failure
    assert read_manifest(first_sft.run_dir)["status"] == "failed"


@pytest.mark.notebook
def test_two_jobs_run_real_notebooks(tmp_path):
    """papermill in two threads: every report written, kernels in the notebooks' folder, the same results."""
    exp, params = _experiment(tmp_path)
    results = runner.run(exp, params, only=["00", "01", "02"], jobs=2)
    assert {r["status"] for r in results} == {"done"}
    for cell in (c for c in plan(exp) if c.stage <= "02_sft"):
        assert (cell.run_dir / f"{cell.stage}.html").exists()
        assert read_manifest(cell.run_dir)["status"] == "done"
