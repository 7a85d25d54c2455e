"""Finished work is never erased, and one `revlib run` of an experiment runs at a time."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import papermill
import pytest
import yaml

from revlib.lab import previous_runs, run_lock, runner
from revlib.lab.fingerprint import fingerprint
from revlib.lab.manifest import read_manifest, write_manifest
from revlib.lab.plan import plan
from revlib.params import load

REPO = Path(__file__).resolve().parent.parent
REVLIB = [sys.executable, "-m", "revlib.lab.cli"]
TRAIN = REPO / "params" / "smoke" / "train.yaml"


def _params(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load(TRAIN.read_text())
    raw["output_dir"] = str(tmp_path / "outputs")
    raw["stages"] = ["00_base_model", "01_reverse_data", "02_sft"]
    raw["sft"]["train_sets"] = ["forward"]
    raw["sft"].update(changes)
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(raw))
    return params


def _files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


@pytest.mark.notebook
def test_a_changed_setting_keeps_every_finished_checkpoint(tmp_path):
    params = _params(tmp_path)
    first = subprocess.run([*REVLIB, "run", str(params)], capture_output=True, text=True, cwd=REPO)
    assert first.returncode == 0, first.stderr
    exp = load(params)
    sft = next(c for c in plan(exp) if c.stage == "02_sft")
    before = _files(sft.run_dir)
    checkpoints = [k for k in before if k.startswith("checkpoints/checkpoint-")]
    assert checkpoints, sorted(before)
    old_fp = read_manifest(sft.run_dir)["fingerprint"]

    _params(tmp_path, lr=0.02)
    second = subprocess.run([*REVLIB, "run", str(params)], capture_output=True, text=True, cwd=REPO)
    assert second.returncode == 0, second.stderr
    assert f"{sft.key}: its earlier run (done) moved to" in second.stdout
    kept = [r for r in previous_runs.previous_runs(exp.run_root) if r.stage == "02_sft"]
    assert [(r.cell, r.fingerprint) for r in kept] == [(sft.name, old_fp)]
    assert _files(kept[0].path) == before  # byte for byte, checkpoints included
    assert read_manifest(sft.run_dir)["fingerprint"] != old_fp  # the current run is the new one

    status = subprocess.run([*REVLIB, "status", str(exp.run_root)], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "COLUMNS": "250"})
    assert status.returncode == 0
    assert "previous runs, kept" in status.stdout and old_fp[:12] in status.stdout
    check = subprocess.run([*REVLIB, "check", str(params)], capture_output=True, text=True, cwd=REPO,
                           env={**os.environ, "COLUMNS": "250"})
    assert "previous runs kept" in check.stdout


def test_fresh_sets_an_interrupted_run_aside_instead_of_resuming(tmp_path, monkeypatch):
    params = _params(tmp_path)
    exp = load(params)
    cell = plan(exp)[1]
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stop")))

    def interrupted() -> None:
        write_manifest(cell.run_dir, {"status": "failed", "fingerprint": fingerprint(exp, cell)})
        (cell.run_dir / "partial-work").write_text("hours of it")

    interrupted()
    runner.execute_cell(exp, params, cell)  # same inputs: resumes in place
    assert (cell.run_dir / "partial-work").exists()
    assert not previous_runs.previous_runs(exp.run_root)

    said: list[str] = []
    runner.execute_cell(exp, params, cell, fresh=True, on_set_aside=said.append)
    assert not (cell.run_dir / "partial-work").exists()
    kept = previous_runs.previous_runs(exp.run_root)
    assert len(kept) == 1 and (kept[0].path / "partial-work").read_text() == "hours of it"
    assert said and str(kept[0].path) in said[0]
    # a second set-aside of the same fingerprint gets its own name
    interrupted()
    runner.execute_cell(exp, params, cell, fresh=True)
    assert sorted(r.path.name for r in previous_runs.previous_runs(exp.run_root)) == \
        sorted([kept[0].path.name, kept[0].path.name + ".2"])


def _hold_lock(run_root: Path) -> subprocess.Popen:
    code = ("import sys, time\nfrom revlib.lab import run_lock\n"
            f"with run_lock.hold({str(run_root)!r}):\n    print('held', flush=True)\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_naming_the_first_and_a_dead_holder_is_taken_over(tmp_path, monkeypatch):
    params = _params(tmp_path)
    exp = load(params)
    holder = _hold_lock(exp.run_root)
    try:
        second = subprocess.run([*REVLIB, "run", str(params)], capture_output=True, text=True, cwd=REPO,
                                env={**os.environ, "COLUMNS": "250"})
        assert second.returncode == 2
        assert f"pid {holder.pid}" in second.stderr and "since" in second.stderr, second.stderr
        assert not (exp.run_root / "00_base_model").exists()  # nothing ran
        with pytest.raises(run_lock.RunLocked, match=f"pid {holder.pid}"):
            runner.run(exp, params)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    # the killed holder's note is left behind; the lock itself is free: the next run takes over and says so
    assert run_lock.read_holder(exp.run_root)["pid"] == holder.pid
    said: list[str] = []
    ran: list[str] = []

    def execute(exp_, params_file, cell, **kw):
        ran.append(cell.key)
        write_manifest(cell.run_dir, {"status": "done", "fingerprint": fingerprint(exp_, cell)})
        return {"status": "done", "wall_time_s": 0.0, "error": None}

    monkeypatch.setattr(runner, "execute_cell", execute)
    runner.run(exp, params, say=said.append)
    assert len(ran) == len(plan(exp))
    assert any(f"pid {holder.pid}" in s and "process is gone" in s for s in said), said
    assert not (exp.run_root / run_lock.HOLDER_FILE).exists()  # released at the end
