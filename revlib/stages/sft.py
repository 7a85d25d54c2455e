"""Notebook 02: supervised fine-tuning of one base model on one training set, and whether it learned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from revlib.core.records import Record
from revlib.core.io import Metrics
from revlib.data.sets import load_set
from revlib.evaluation import learning, stage_checks
from revlib.modeling import train
from revlib.stages.context import StageContext


@dataclass
class SFTRun:
    """One SFT cell's run: what it trained on, what it wrote, its logged curves and its learning checks."""

    model: str
    train_set: str
    records: list[Record]
    train: train.TrainResult
    curves: list[dict[str, Any]]  # trl's log rows (loss, learning rate) by step
    checks: list[learning.Check]

    def run_table(self) -> pd.DataFrame:
        return pd.DataFrame([{"model": self.model, "train set": self.train_set, "examples": len(self.records),
                              "steps": self.train.final.step, "seconds": self.train.metrics["train_runtime"],
                              "tokens/s": self.train.metrics["train_tokens_per_second"],
                              **train.cut_columns(self.train.metrics)}])

    def checkpoint_table(self) -> pd.DataFrame:
        return pd.DataFrame(train.checkpoint_table(self.train.checkpoints))

    @property
    def metrics(self) -> Metrics:
        """What 02 records in metrics.json: the run, its final loss and checkpoints, and the learning checks."""
        return {"train_set": self.train_set, "examples": len(self.records),
                "final_loss": self.curves[-1]["loss"] if self.curves else None,
                "checkpoints": [c.epoch for c in self.train.checkpoints], "steps": self.train.final.step,
                "train_runtime": self.train.metrics["train_runtime"],
                "tokens_per_second": self.train.metrics["train_tokens_per_second"]} | learning.metrics(self.checks)


def run(ctx: StageContext) -> SFTRun:
    """SFT of the cell's base model on its training set (from 01), then the final checkpoint's learning checks."""
    model, train_set = ctx.values["model"], ctx.values["train_set"]
    base = ctx.base_path()
    data_dir = ctx.upstream("01_reverse_data")
    records = load_set(data_dir, train_set)
    result = train.sft(base, records, ctx.dir, ctx.exp.sft, seed=ctx.exp.seed)
    curves = train.curves_rows(result.log_history)
    checks = stage_checks.sft_checks(result.final, data_dir, train_set, curves, ctx.exp.learning)
    return SFTRun(model, train_set, records, result, curves, checks)
