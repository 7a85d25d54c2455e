"""A cell whose process is gone shows as `interrupted` with its last output, not `running`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from revlib.core import io
from revlib.lab.cli import app
from revlib.lab.manifest import live_status

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _running_cell(root: Path, pid: int) -> Path:
    import socket

    run_dir = root / "01_reverse_data" / "data"
    io.write_json(run_dir / "manifest.json", {"stage": "01_reverse_data", "cell": "data", "status": "running",
                                              "pid": pid, "host": socket.gethostname(), "start": "2026-01-01T00:00:00"})
    nb = {"cells": [{"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout",
                                                        "text": ["building sets\n", "asked the teacher 12 of 40\n"]}]},
                    {"cell_type": "code", "outputs": []}]}
    (run_dir / "01_reverse_data.ipynb").write_text(json.dumps(nb))
    return run_dir


def test_gone_process_is_interrupted_with_its_last_line(tmp_path):
    run_dir = _running_cell(tmp_path, _gone_pid())
    assert live_status(run_dir) == ("interrupted", "asked the teacher 12 of 40")
    result = runner.invoke(app, ["status", str(tmp_path)], env={"COLUMNS": "250"})
    text = " ".join(result.output.split())
    assert "interrupted" in text and "running" not in text
    assert "asked the teacher 12 of 40" in text


def test_live_process_stays_running(tmp_path):
    run_dir = _running_cell(tmp_path, os.getpid())
    assert live_status(run_dir) == ("running", None)


@pytest.mark.notebook
def test_killed_run_shows_interrupted(params_copy):
    raw = yaml.safe_load((REPO / "params" / "smoke" / "data.yaml").read_text())
    params_file = params_copy(raw)
    out = Path(yaml.safe_load(params_file.read_text())["output_dir"]) / raw["experiment"]
    manifest = out / "01_reverse_data" / "data" / "manifest.json"
    proc = subprocess.Popen([sys.executable, "-m", "revlib.lab.cli", "run", str(params_file)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if manifest.exists() and io.read_json(manifest).get("status") == "running":
            break
        time.sleep(0.2)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the cell never started")
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its kernel, as a closed laptop lid would
    proc.wait()
    assert io.read_json(manifest)["status"] == "running"  # what the manifest still says on disk
    result = runner.invoke(app, ["status", str(out)])
    assert "interrupted" in result.output and "running" not in result.output, result.output
    check = runner.invoke(app, ["check", str(params_file)])
    assert "interrupted" in check.output
