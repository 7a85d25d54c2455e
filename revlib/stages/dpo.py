"""Notebook 03: DPO from one SFT model, with that SFT model as the reference.

Directional variant: the r1k paper's pairs from notebook 01 (for x_f, chosen y_f and rejected y_r; for x_r the
opposite). Per-step variant: pairs cut at the critical step of the SFT policy's own forward and reverse samples
(`negatives.direction_aware_pairs`), trained for a step budget when params give one. Named variants
(`dpo.variants`, e.g. the r1k authors' released script's settings): the directional pairs, with the settings the
variant changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from revlib.core import records
from revlib.core.records import PreferencePair
from revlib.core.io import Metrics
from revlib.data import negatives
from revlib.data.sets import load_pairs, load_set
from revlib.evaluation import learning, stage_checks
from revlib.modeling import preference, train
from revlib.modeling.rollouts import Sampler
from revlib.params.train import DPOParams
from revlib.stages.context import StageContext

PAIRS_FILE = "pairs.jsonl"  # the per-step pairs, written before training (also when there are none)


@dataclass(frozen=True)
class Start:
    """What one 03 cell starts from: its SFT model's final checkpoint and the data it was trained on."""

    model: str
    train_set: str
    variant: str  # "directional", "per_step" or the name of one of dpo.variants
    sft: train.Checkpoint
    data_dir: Path

    @property
    def sft_cell(self) -> str:
        return f"{self.model}__{self.train_set}"


def start(ctx: StageContext) -> Start:
    """The cell's SFT model (the last checkpoint 02 wrote) and 01's data folder."""
    model, train_set, variant = ctx.values["model"], ctx.values["train_set"], ctx.values["variant"]
    sft = train.load_checkpoints(ctx.upstream("02_sft", f"{model}__{train_set}"))[-1]
    return Start(model, train_set, variant, sft, ctx.upstream("01_reverse_data"))


@dataclass
class Pairs:
    pairs: list[PreferencePair]
    stats: dict[str, Any]
    source: str  # what the pairs are, in words

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{"statistic": k, "value": v} for k, v in self.stats.items()])


def preference_pairs(ctx: StageContext, begin: Start, sampler: Sampler | None = None) -> Pairs:
    """The pairs DPO trains on: per-step pairs from the SFT policy's own samples (written to pairs.jsonl; a
    ValueError when none came out), or the directional pairs of `dpo.pairs`.

    `sampler` stands in for the SFT policy's rollout engine (tests use a scripted policy).
    """
    exp = ctx.exp
    if begin.variant == "per_step":
        pairs, stats = negatives.direction_aware_pairs(begin.sft, load_set(begin.data_dir, begin.train_set),
                                                       exp.dpo.per_step, exp.seed,
                                                       cache_dir=ctx.dir / "rollout_cache", sampler=sampler)
        records.write_records(ctx.dir / PAIRS_FILE, pairs)
        if not pairs:
            raise ValueError(f"no per-step pairs: none of {stats['samples']} samples was incorrect with a successful "
                             "rollout at its critical step; raise dpo.per_step.samples_per_problem, rollouts or problems")
        return Pairs(pairs, stats, f"per-step pairs from the SFT policy on {begin.train_set}")
    pairs = load_pairs(begin.data_dir, exp.dpo.pairs)
    return Pairs(pairs, {"pairs": len(pairs)}, f"directional pairs of {exp.dpo.pairs}")


def params_for(dpo: DPOParams, variant: str, n_pairs: int) -> DPOParams:
    """The DPO params a cell trains with. Per-step pairs are few: with `dpo.per_step.steps` their run takes that
    step budget, as whole epochs (rounded up, the last one saved); a named variant trains with the dpo section
    changed as `dpo.variants` says; otherwise the params as they are."""
    steps = dpo.per_step.steps if variant == "per_step" else None
    if not steps:
        return dpo.for_variant(variant)
    epochs = -(-steps * dpo.batch_size // n_pairs)
    return dpo.model_copy(update={"epochs": epochs, "save_every_epochs": epochs})


@dataclass
class DPORun:
    """One DPO cell's run: its start, its pairs, what it wrote, its logged curves and its learning checks."""

    begin: Start
    pairs: Pairs
    beta: float
    train: train.TrainResult
    curves: list[dict[str, Any]]  # trl's log rows (loss, learning rate, rewards) by step
    checks: list[learning.Check]
    changed: dict[str, Any] = field(default_factory=dict)  # a named variant's settings in place of the dpo section's

    def _changed_text(self) -> str:
        return ", ".join("full parameters" if k == "lora" and v is None else f"{k} {v}"
                         for k, v in sorted(self.changed.items()))

    def run_table(self) -> pd.DataFrame:
        return pd.DataFrame([{"SFT model": self.begin.sft_cell, "variant": self.begin.variant,
                              **({"settings changed": self._changed_text()} if self.changed else {}),
                              "pairs": f"{self.pairs.source} ({len(self.pairs.pairs)})", "beta": self.beta,
                              "steps": self.train.final.step, "seconds": self.train.metrics["train_runtime"],
                              "tokens/s": self.train.metrics["train_tokens_per_second"],
                              **train.cut_columns(self.train.metrics)}])

    def checkpoint_table(self) -> pd.DataFrame:
        return pd.DataFrame(train.checkpoint_table(self.train.checkpoints))

    @property
    def metrics(self) -> Metrics:
        """What 03 records in metrics.json: the pairs, the run, its last logged loss, margin and reward accuracy,
        and the learning checks."""
        last = self.curves[-1] if self.curves else {}
        return {"sft": self.begin.sft_cell, "variant": self.begin.variant,
                **({"variant_settings": self._changed_text()} if self.changed else {}), "pairs": self.pairs.source,
                "n_pairs": len(self.pairs.pairs), **{f"pair_stats/{k}": v for k, v in self.pairs.stats.items()},
                "beta": self.beta, "checkpoints": [c.epoch for c in self.train.checkpoints],
                "steps": self.train.final.step, "final_loss": last.get("loss"),
                "final_margin": last.get("rewards/margins"), "final_accuracy": last.get("rewards/accuracies"),
                "train_runtime": self.train.metrics["train_runtime"],
                "tokens_per_second": self.train.metrics["train_tokens_per_second"]} | learning.metrics(self.checks)


def run(ctx: StageContext, begin: Start, pairs: Pairs) -> DPORun:
    """DPO from the SFT model on the pairs (`preference.dpo_from`: a LoRA SFT's adapter merged first), then whether
    the log-probabilities moved and the policy kept SFT's skill."""
    exp = ctx.exp
    settings = params_for(exp.dpo, begin.variant, len(pairs.pairs))
    result = preference.dpo_from(begin.sft, pairs.pairs, ctx.dir, settings, exp.seed)
    curves = train.curves_rows(result.log_history)
    checks = stage_checks.dpo_checks(curves, settings.beta)
    checks += stage_checks.kept_skill_checks(begin.sft, result.final, begin.data_dir, begin.train_set, exp.learning)
    named = exp.dpo.variants.get(begin.variant)
    return DPORun(begin, pairs, settings.beta, result, curves, checks, named.changes() if named else {})
