"""The notebook side of a stage: validated params, its cell, its run directory and its upstream inputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from revlib.core import io
from revlib.core.provenance import environment, now
from revlib.lab.fingerprint import code_hashes
from revlib.lab.manifest import read_manifest, write_manifest
from revlib.lab.plan import find_cell
from revlib.modeling import models
from revlib.params import Experiment, dump, load
from revlib.params.stages import DATA_CELL

RUNNER_ENV = "REVLIB_RUNNER"  # set while the runner executes a notebook


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


def name_tracked_runs(exp: Experiment, stage: str, cell: str, run_dir: Path) -> None:
    """Where sft or dpo report to Weights & Biases: the cell's trainings are named experiment/stage/cell, in a
    project named after the experiment (a WANDB_PROJECT already set wins), their files in the cell's run directory.
    Set in the kernel's environment, which the trainer's W&B callback and the processes accelerate launches read."""
    if any(section is not None and "wandb" in section.report_to for section in (exp.sft, exp.dpo)):
        os.environ.setdefault("WANDB_PROJECT", exp.experiment)
        os.environ["WANDB_NAME"] = f"{exp.experiment}/{stage}/{cell}"
        os.environ["WANDB_DIR"] = str(run_dir)


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
        name_tracked_runs(self.exp, stage, self.cell, self.dir)
        if not self.under_runner:
            io.write_text(self.dir / "params.yaml", dump(self.exp))

    @property
    def code_hashes(self) -> dict[str, str]:
        """sha256 of the stage's notebook and of every revlib file it runs (what its fingerprint covers)."""
        return code_hashes(find_cell(self.exp, self.stage, self.cell).notebook)

    def base_path(self) -> str:
        """The path or Hub id of this cell's base model, as its finished 00_base_model cell recorded it."""
        return models.base_path(self.upstream("00_base_model"))

    def base_tokenizer(self) -> Any:
        """The first base model's tokenizer once 00_base_model has recorded it, else None."""
        run_dir = self.exp.run_root / "00_base_model" / self.exp.base_models[0].name
        if (read_manifest(run_dir) or {}).get("status") != "done":
            return None
        try:
            return models.load_tokenizer(models.base_path(run_dir))
        except Exception:  # an unreachable Hub tokenizer only costs an exact count
            return None

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


def open_stage(stage: str, params_file: str | Path, cell: str = "", run_dir: str | Path = "") -> StageRun:
    return StageRun(stage, params_file, cell, run_dir)
