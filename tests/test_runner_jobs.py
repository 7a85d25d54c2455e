"""`revlib run --jobs N`: cells of a stage run side by side, never before the cells they read from."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import yaml

from revlib.lab import gpu_split, runner
from revlib.modeling import launch
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

    def execute(exp_, params_file, cell, **kw):
        with lock:
            log.append(("start", cell.stage, cell.name, time.monotonic(), os.getcwd(), kw.get("kernel_env")))
        time.sleep(0.2)
        status = "failed" if cell.key == fail else "done"
        write_manifest(cell.run_dir, {"status": status, "fingerprint": fingerprint(exp, cell)})
        with lock:
            log.append(("end", cell.stage, cell.name, time.monotonic(), None, None))
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
    t = {(kind, stage, name): at for kind, stage, name, at, *_ in log}
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


def test_side_by_side_cells_get_disjoint_gpus_and_ports(tmp_path, monkeypatch):
    """On a (stubbed) 4-GPU machine, --jobs 2 gives each running cell two GPUs of its own and its own port."""
    exp, params = _experiment(tmp_path)
    log: list = []
    monkeypatch.setattr(runner, "execute_cell", _fake(exp, log))
    monkeypatch.setattr(launch, "visible_gpus", lambda: 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    runner.run(exp, params, jobs=2)
    live: dict[tuple[str, str], dict] = {}
    overlapped = 0
    for kind, stage, name, _, _, env in sorted(log, key=lambda e: e[3]):
        if kind == "end":
            live.pop((stage, name))
            continue
        assert env is not None and len(env["CUDA_VISIBLE_DEVICES"].split(",")) == 2
        for other in live.values():
            overlapped += 1
            assert not set(env["CUDA_VISIBLE_DEVICES"].split(",")) & set(other["CUDA_VISIBLE_DEVICES"].split(","))
            assert env[launch.MAIN_PORT_ENV] != other[launch.MAIN_PORT_ENV]
        live[(stage, name)] = env
    assert overlapped > 0  # the 02 cells did run side by side


def test_a_split_that_cannot_give_a_cell_its_processes_is_refused():
    """The 7B replica's training cells each launch 8 processes: --jobs 2 on 8 GPUs cannot hold them."""
    exp = load(REPO / "params" / "r1k-qwen2.5-7b.yaml")
    cells = plan(exp)
    with pytest.raises(gpu_split.SplitRefused, match=r"--jobs 2 on 8 GPU.*02_sft/qwen2.5-7b__forward \(8\).*--jobs 1"):
        gpu_split.Devices.for_plan(exp, cells, jobs=2, visible=8)
    devices = gpu_split.Devices.for_plan(exp, cells, jobs=2, visible=16)
    first, second = devices.take(cells[2]), devices.take(cells[3])
    assert first.env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"
    assert second.env["CUDA_VISIBLE_DEVICES"] == "8,9,10,11,12,13,14,15"
    assert devices.take(cells[4]) is None  # both slots busy: the third cell waits
    devices.give_back(first)
    assert devices.take(cells[4]).gpus == first.gpus
    # one job, or no GPU: cells run in the runner's environment
    assert gpu_split.Devices.for_plan(exp, cells, jobs=1, visible=8).take(cells[2]).env == {}


@pytest.mark.notebook
def test_a_cells_kernel_sees_its_own_environment(tmp_path):
    """The slot's variables reach the kernel a cell runs in, and never the runner's own environment."""
    import nbformat
    import papermill as pm

    from revlib.lab.kernel import IPCKernelManager

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES'), os.environ.get('REVLIB_MAIN_PROCESS_PORT'))")])
    src, out = tmp_path / "env.ipynb", tmp_path / "env_out.ipynb"
    nbformat.write(nb, str(src))
    pm.execute_notebook(str(src), str(out), kernel_name="python3", progress_bar=False,
                        kernel_manager_class=IPCKernelManager.with_env({"CUDA_VISIBLE_DEVICES": "2,3",
                                                                        launch.MAIN_PORT_ENV: "29612"}))
    printed = nbformat.read(str(out), as_version=4).cells[0].outputs[0]["text"]
    assert printed.strip() == "2,3 29612"
    assert os.environ.get(launch.MAIN_PORT_ENV) is None
