"""Weights & Biases as a tracker: params accept it, it runs offline without a key, and runs are named
experiment/stage/cell (wandb itself is in the gpu extra, not the test install)."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from revlib.lab import context
from revlib.lab.cli import app
from revlib.modeling import train
from revlib.params import load
from revlib.params.train import SFTParams

from conftest import PARAMS, write_params


def _with_wandb(tmp_path):
    raw = yaml.safe_load((PARAMS / "smoke" / "train.yaml").read_text())
    raw["sft"]["report_to"] = ["wandb"]
    raw["dpo"]["report_to"] = ["wandb", "tensorboard"]
    return write_params(raw, tmp_path)


def test_params_with_wandb_pass_check(tmp_path):
    result = CliRunner().invoke(app, ["check", str(_with_wandb(tmp_path))])
    assert result.exit_code == 0, result.output
    assert load(_with_wandb(tmp_path)).sft.report_to == ["wandb"]


def test_wandb_runs_offline_without_a_key_and_online_with_one(tmp_path, monkeypatch):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    train._tracker_env(SFTParams(report_to=["wandb"]), tmp_path / "run")
    assert train.os.environ["WANDB_MODE"] == "offline"
    assert train.os.environ["WANDB_DIR"] == str((tmp_path / "run").resolve())  # beside the checkpoints, not the cwd
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "not-a-real-key")
    train._tracker_env(SFTParams(report_to=["wandb"]), tmp_path / "run")
    assert "WANDB_MODE" not in train.os.environ
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.delenv("WANDB_DIR")
    train._tracker_env(SFTParams(report_to=["tensorboard"]), tmp_path / "run")  # not asked: nothing set
    assert "WANDB_MODE" not in train.os.environ and "WANDB_DIR" not in train.os.environ
    args = train._common_args(SFTParams(report_to=["wandb", "mlflow"]), tmp_path / "run", 0, 1)
    assert args["report_to"] == ["wandb", "mlflow"]


def test_a_cell_names_its_wandb_run(tmp_path, monkeypatch):
    for var in ("WANDB_PROJECT", "WANDB_NAME", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    params_file = _with_wandb(tmp_path)
    ctx = context.open_stage("02_sft", params_file, "micro__forward")
    assert context.os.environ["WANDB_PROJECT"] == "smoke-train"
    assert context.os.environ["WANDB_NAME"] == "smoke-train/02_sft/micro__forward"
    assert context.os.environ["WANDB_DIR"] == str(ctx.dir)  # the run's files beside its checkpoints
    monkeypatch.setenv("WANDB_PROJECT", "my-team")  # a project the researcher chose stays
    context.open_stage("03_dpo", params_file, "micro__mix")
    assert context.os.environ["WANDB_PROJECT"] == "my-team"
    assert context.os.environ["WANDB_NAME"] == "smoke-train/03_dpo/micro__mix"
