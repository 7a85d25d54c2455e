"""Entry point for `accelerate launch -m revlib.modeling.worker <job.json>`: one training process of a launched job.

`revlib.modeling.launch` writes the job file and starts this in each process; it runs the same in-process
trainer as an unlaunched run (`train.sft/dpo`), which accelerate shards. Kept apart from the launcher because
it imports train, and train imports the launcher.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch.distributed as dist

from revlib.core import io
from revlib.core.records import read_pairs, read_records
from revlib.modeling import launch, train
from revlib.params.train import DPOParams, SFTParams


def run_job(job_file: str | Path) -> train.TrainResult:
    """Run the job a launcher wrote: sft or dpo on its data, logging through LOG_PREFIX lines."""
    job = io.read_json(job_file)
    kwargs = dict(seed=job["seed"], epochs=job["epochs"], save_every_epochs=job["save_every_epochs"],
                  on_log=launch.print_log_line)
    if job["kind"] == "sft":
        return train.sft(job["base"], read_records(job["data"]), Path(job["out_dir"]), SFTParams(**job["params"]), **kwargs)
    if job["kind"] == "dpo":
        return train.dpo(job["base"], read_pairs(job["data"]), Path(job["out_dir"]), DPOParams(**job["params"]), **kwargs)
    raise ValueError(f"unknown job kind {job['kind']!r}; expected 'sft' or 'dpo'")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: accelerate launch -m {launch.WORKER} <job.json>", file=sys.stderr)
        return 2
    os.environ[launch.LAUNCHED_ENV] = "1"  # the job's params name accelerate; do not launch again
    result = run_job(argv[0])
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{launch.WORKER}: {len(result.checkpoints)} checkpoint(s); final {result.final.path}")
    _close_process_group()
    return 0


def _close_process_group() -> None:
    """Leave the process group together: a rank that exits while gloo's threads still run can abort
    ("terminate called without an active exception", seen once in 2-process CPU SFT after training finished)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
