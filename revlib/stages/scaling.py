"""Notebook 06: Setlur et al.'s scaling experiment, run with the method pieces of `revlib.data.negatives`.

The synthetic positives D_syn are a more capable teacher's chains, written in its own forms (`teacher_forms`), not the
learner's. At each synthetic data size n (nested draws, so a larger set extends the smaller ones), SFT runs for a step
budget and is read out on the validation problems (disjoint from the test set and from every training set) every
`sft_eval_every` steps; the checkpoint with the best validation accuracy is the size's SFT. At the method sizes, every
other method starts from that checkpoint: RFT on D_syn plus the SFT policy's own verified positives D+, RFT on D+
alone (Figures 2 and 9), naive DPO, per-step DPO at the Monte-Carlo critical step, advantage-filtered RFT (Figure 11),
and per-step DPO from an earlier, under-trained SFT checkpoint (Figure 8(b)'s contrast). Each makes a fixed number of
passes over its own data; every pass is read out on the validation problems and the best one is kept, pass 0 (the
start itself) a candidate. Every model is evaluated greedily on the same test problems, so methods are compared per
problem (McNemar), and the efficiency multiple is read on SFT's curve interpolated in log n.

The budget rule is stated once (`budget_rule`) and applied to every method and size alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from pydantic import BaseModel

from revlib.core import io, render, stats
from revlib.core.io import Metrics
from revlib.core.records import PreferencePair, Record
from revlib.data import negatives
from revlib.evaluation import learning
from revlib.evaluation.learning import Check
from revlib.modeling import models, preference, probes, train
from revlib.modeling.train import Checkpoint, TrainResult
from revlib.params import Experiment
from revlib.params.negatives import NegativeParams
from revlib.stages import scaling_figures as figures
from revlib.stages.context import StageContext
from revlib.tasks import get_task
from revlib.tasks.base import TaskFamily

SFT_METHODS = ("rft", "rft_self", "adv_rft")  # trained by SFT from the size's SFT checkpoint
# SFT's test error must fall by at least this from the smallest to the largest size: a flatter curve maps every
# error to any size (no efficiency multiple) and says more data taught SFT nothing
MIN_SFT_DROP = 0.1
DPO_METHODS = ("naive_dpo", "per_step_dpo", "per_step_dpo_under")  # trained by DPO from an SFT checkpoint
UNDER = "per_step_dpo_under"

# every DPO setting of 06 and where it comes from (the page states them beside the budget rule)
DPO_SETTING_SOURCES = {
    "beta": "β = {beta:g}: Setlur et al.'s β is not stated in the material this project holds; {beta:g} is the DPO "
            "paper's default (Rafailov et al., App. B) and trl's, a named choice (0.6 is the r1k paper's, not Setlur's)",
    "reference": "the reference is the DPO run's own start (the SFT checkpoint): Setlur et al. (per-step DPO from SFT)",
    "loss": "sigmoid DPO loss on pairs whose chosen and rejected share the prefix before the critical step "
            "(Setlur et al. after Hwang et al.)",
    "lr": "learning rate {lr:g}, cosine schedule, warm-up {warmup:g} of the steps, batch {batch}: our choice, from the "
          "DPO training loss and the validation accuracy by pass (docs/negatives_search.md)",
    "passes": "{passes} fixed passes over each method's own pairs, every pass read out on the validation problems, the "
              "best kept, pass 0 included: our rule (the paper tunes on held-out problems; issue 25)",
    "lengths": "max_length {max_length}, max_prompt_length {max_prompt}: the task's chains fit whole",
}


def dpo_settings(exp: Experiment) -> list[str]:
    """Every DPO setting 06 uses, with its source, in words."""
    d, P = exp.dpo, exp.negatives
    values = dict(beta=d.beta, lr=d.lr, warmup=d.warmup_ratio, batch=d.batch_size, passes=P.dpo_passes,
                  max_length=d.max_length, max_prompt=d.max_prompt_length)
    return [v.format(**values) for v in DPO_SETTING_SOURCES.values()]


def pass_rule() -> str:
    return ("the pass kept is the one with the highest greedy accuracy on the validation problems; pass 0 (the start "
            "itself) is a candidate, and ties go to the earliest pass, so a method that never beats its start keeps it")


def budget_rule(P: NegativeParams) -> str:
    return (f"SFT trains at most {P.sft_max_steps} optimizer steps from the base at every size, read out on "
            f"{P.n_validation} validation problems (disjoint from the test set and every training set) every "
            f"{P.sft_eval_every} steps, and the checkpoint with the best validation accuracy is the size's SFT (ties: "
            f"the earliest); at the method sizes {P.sizes_for_methods} every other method starts from it (negatives "
            f"from {P.samples_per_problem} samples per training problem at temperature {P.temperature:g}, "
            f"{P.under_samples_per_problem or P.samples_per_problem} from the under-trained start, at most "
            f"{P.max_negatives or 'all'} kept per problem; per-step DPO also from an earlier, under-trained "
            f"checkpoint: the earliest read-out before the chosen one whose validation accuracy reaches "
            f"{P.under_validation_share:.0%} of the chosen one's) and makes a fixed number of passes over its own "
            f"data ({P.rft_passes} for RFT-type runs, "
            f"{P.dpo_passes} for DPO, {P.log_ratio_pairs:.0%} of each DPO method's problems held out for the "
            f"log-ratios); {pass_rule()}; a DPO method with fewer than {P.min_pairs} pairs at a size is not trained "
            f"there; each kept model answers the same test problems greedily once, and up to {P.kept_skill_problems} "
            f"of its size's training problems (its training accuracy, and the kept-skill check: at most "
            f"{P.kept_skill_drop:.0%} below SFT's, else the row says it broke the policy)")


class PassRecord(BaseModel):
    """One pass of a method after SFT (0: its start): the step, the validation accuracy and, for DPO with held-out
    pairs, the mean log-ratios log pi/pi_ref of the held-out chosen and rejected responses and of the rejected
    response's critical-step tokens alone (those after the prefix it shares with the chosen one)."""

    index: int
    step: int
    validation: float
    chosen_log_ratio: float | None = None
    rejected_log_ratio: float | None = None
    critical_log_ratio: float | None = None


class Passes(BaseModel):
    """A method's passes at one size, the one kept, where it started, and its training loss (DPO)."""

    method: str
    size: int
    start: str  # "sft" (the size's SFT) or "under" (the earlier SFT checkpoint)
    start_step: int
    passes: list[PassRecord]
    kept: int
    held_out_pairs: int = 0
    train_loss_first: float | None = None
    train_loss_last: float | None = None

    @property
    def trained(self) -> bool:
        """The optimiser did its job: the loss of the last pass is below 90% of the first logged one."""
        return (self.train_loss_first is not None and self.train_loss_last is not None
                and self.train_loss_last <= 0.9 * self.train_loss_first)


class SFTCurve(BaseModel):
    """One size's SFT read-outs: validation accuracy every sft_eval_every steps, the checkpoint chosen by it, the
    under-trained start, and the chosen (and under-trained) start's greedy accuracy on its own training problems."""

    size: int
    steps: list[int]
    validation: list[float]
    chosen_step: int
    under_step: int | None = None
    train_accuracy: float | None = None
    under_train_accuracy: float | None = None

    @property
    def chosen_validation(self) -> float:
        return self.validation[self.steps.index(self.chosen_step)]


@dataclass
class MethodRun:
    """One method at one size: its training examples, its checkpoint and its per-problem test outcomes."""

    method: str
    size: int
    examples: int
    correct: list[bool] = field(default_factory=list)
    checkpoint: Checkpoint | None = None
    train_correct: list[bool] = field(default_factory=list)  # greedy, on the size's first training problems
    steps: int | None = None  # optimizer steps it trained (beyond its start, for the methods after SFT)
    passes: Passes | None = None  # after SFT: every pass's validation accuracy, the pass kept
    note: str = ""  # why it was not trained

    @property
    def error(self) -> float | None:
        return None if not self.correct else 1 - sum(self.correct) / len(self.correct)

    def interval(self) -> tuple[float, float]:
        """95% Wilson interval of the error."""
        lo, hi = stats.wilson(sum(self.correct), len(self.correct))
        return 1 - hi, 1 - lo


@dataclass
class SizeResult:
    size: int
    runs: dict[str, MethodRun]
    positives: int
    negatives: int
    credits: list[negatives.StepCredit] = field(default_factory=list)
    sft_curve: SFTCurve | None = None


@dataclass(frozen=True)
class Problems:
    """06's problems: the nested training pool (D_syn, the teacher's chains), the validation and the test problems."""

    train: list[Record]
    validation: list[Record]
    test: list[Record]


def split_problems(task: TaskFamily, seed: int, sizes: Sequence[int], n_test: int, n_validation: int = 0
                   ) -> tuple[list[Record], list[Record], list[Record]]:
    """(nested training pool, validation set, test set): one draw, so every data size's set extends the smaller ones
    and the three never share a problem."""
    pool = task.sample(seed, max(sizes) + n_test + n_validation)
    return pool[n_test + n_validation:], pool[n_test:n_test + n_validation], pool[:n_test]


# the problems are drawn at the experiment's seed plus this, apart from the draws other stages make at the seed
PROBLEM_SEED_OFFSET = 606


def draw_problems(exp: Experiment) -> tuple[TaskFamily, Problems]:
    """The experiment's task family and its problems; the training chains as the teacher writes them (D_syn)."""
    P = exp.negatives
    task = get_task(P.task, P.knobs)
    pool, val, test = split_problems(task, exp.seed + PROBLEM_SEED_OFFSET, P.data_sizes, P.n_test, P.n_validation)
    pool = [negatives.teacher_chain(r, P.teacher_forms, exp.seed) for r in pool]
    return task, Problems(pool, val, test)


def accuracy(ckpt: Checkpoint, P: NegativeParams, task: TaskFamily, problems: Sequence[Record], seed: int
             ) -> list[bool]:
    """Greedy outcomes of a checkpoint on problems."""
    return negatives.outcomes(negatives.policy_engine(ckpt, P, temperature=0.0), task, list(problems), seed)


def _mean(xs: Sequence[bool]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _best(scores: Sequence[float]) -> int:
    """Index of the highest score; ties go to the earliest."""
    return max(range(len(scores)), key=lambda i: (round(scores[i], 9), -i))


def under_start(validation: Sequence[float], share: float) -> int | None:
    """Index of the under-trained start: the earliest read-out before the chosen (best) one whose validation accuracy
    reaches `share` of the chosen one's; None when the chosen one is the first to get there."""
    best = _best(validation)
    return next((i for i in range(best) if validation[i] >= share * validation[best]), None)


def run_sft(exp: Experiment, base: str, task: TaskFamily, probs: Problems, size: int, out_dir: Path,
            log: Callable[[str], None] = print) -> tuple[SFTCurve, Checkpoint, Checkpoint | None]:
    """SFT at one size under the step budget, read out on the validation problems: (its curve, the checkpoint chosen by
    validation accuracy, the under-trained start or None when no earlier read-out exists)."""
    P = exp.negatives
    params = exp.sft.model_copy(update={"max_steps": P.sft_max_steps, "save_every_epochs": 10**6,
                                        "save_every_steps": P.sft_eval_every})
    res = train.sft(base, probs.train[:size], Path(out_dir) / "sft", params, seed=exp.seed, epochs=10**6,
                    save_every_epochs=10**6)
    ckpts = res.checkpoints
    val = [_mean(accuracy(c, P, task, probs.validation, exp.seed + 1)) for c in ckpts]
    best = _best(val)
    chosen = ckpts[best]
    early = under_start(val, P.under_validation_share)
    under = ckpts[early] if early is not None else None
    log(f"n={size}: SFT validation accuracy by step {', '.join(f'{c.step}: {v:.2f}' for c, v in zip(ckpts, val))}; "
        f"kept step {chosen.step}" + (f", under-trained start step {under.step}" if under else ""))
    curve = SFTCurve(size=size, steps=[c.step for c in ckpts], validation=val, chosen_step=chosen.step,
                     under_step=under.step if under else None)
    return curve, chosen, under


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def log_ratios(policies: Sequence[Checkpoint], reference: Checkpoint, pairs: Sequence[PreferencePair], dpo_params
               ) -> list[tuple[float, float, float]]:
    """(chosen, rejected, critical-step) mean log-ratios log pi - log pi_ref of held-out pairs under each policy.

    The critical-step tokens are the rejected response's tokens after its longest common token prefix with the chosen
    one (for a per-step pair: the critical step itself; for a naive pair: where the two responses part)."""
    items = preference.pair_items(models.load_tokenizer(reference.path), pairs, dpo_params)
    split = [_common_prefix(it.chosen_ids, it.rejected_ids) for it in items]
    scorer, bank = probes.Scorer(), probes.ModelBank()
    try:
        def scores(ckpt: Checkpoint) -> list[probes.ItemScore]:
            with bank.use(ckpt) as model:
                return scorer.score(model, items, keep_token_logps=True)

        ref = scores(reference)
        out = []
        for policy in policies:
            pol = scores(policy)
            ch = [p.sum_chosen - r.sum_chosen for p, r in zip(pol, ref)]
            rj = [p.sum_rejected - r.sum_rejected for p, r in zip(pol, ref)]
            cr = [float(np.sum(p.token_logps_rejected[k:]) - np.sum(r.token_logps_rejected[k:]))
                  for p, r, k in zip(pol, ref, split)]
            out.append((float(np.mean(ch)), float(np.mean(rj)), float(np.mean(cr))))
        return out
    finally:
        bank.close()


def _losses(res: TrainResult) -> tuple[float | None, float | None]:
    """The first logged training loss and the mean loss of the last pass (the last epoch's log entries)."""
    pts = [(e.get("epoch", 0.0), e["loss"]) for e in train.curves_rows(res.log_history)]
    if not pts:
        return None, None
    last_epoch = math.ceil(max(e for e, _ in pts) - 1e-9)
    last = [v for e, v in pts if e > last_epoch - 1 + 1e-9] or [pts[-1][1]]
    return float(pts[0][1]), float(np.mean(last))


def after_sft(exp: Experiment, method: str, start: Checkpoint, start_name: str, start_validation: float,
              data: list, task: TaskFamily, probs: Problems, size: int, out_dir: Path,
              log: Callable[[str], None] = print) -> tuple[Checkpoint, Passes]:
    """A method after SFT under the budget rule: fixed passes over its own data from `start`, every pass read out on
    the validation problems, the best kept (pass 0, the start, a candidate); DPO logs its held-out log-ratios."""
    P = exp.negatives
    held: list[PreferencePair] = []
    first = last = None
    if method in DPO_METHODS:
        items, held = negatives.split_pairs(data, P.log_ratio_pairs, exp.seed)
        params = exp.dpo.model_copy(update={"max_steps": -1, "save_every_epochs": 1, "save_every_steps": None})
        res = preference.dpo_from(start, items, out_dir, params, exp.seed, epochs=P.dpo_passes, save_every_epochs=1)
        first, last = _losses(res)
    else:
        params = exp.sft.model_copy(update={"max_steps": -1, "save_every_epochs": 1, "save_every_steps": None})
        # a LoRA start is merged into its base first, and the passes train a fresh adapter on the merge
        init = (train.merge_adapter(start.base, start.adapter, Path(out_dir) / train.MERGED_SFT) if start.adapter
                else str(start.path))
        res = train.sft(init, data, out_dir, params, seed=exp.seed, epochs=P.rft_passes, save_every_epochs=1)
    ckpts = [start] + list(res.checkpoints)
    val = [start_validation] + [_mean(accuracy(c, P, task, probs.validation, exp.seed + 1)) for c in res.checkpoints]
    ratios: list[tuple[float | None, ...]] = [(None, None, None)] * len(ckpts)
    if held:
        ratios = [(0.0, 0.0, 0.0)] + log_ratios(res.checkpoints, start, held, exp.dpo)
    # a pass's step counts the method's own run from its start (0 at pass 0)
    records = [PassRecord(index=i, step=c.step if i else 0, validation=v, chosen_log_ratio=r[0],
                          rejected_log_ratio=r[1], critical_log_ratio=r[2])
               for i, (c, v, r) in enumerate(zip(ckpts, val, ratios))]
    kept = _best(val)
    log(f"n={size}: {method} validation accuracy by pass {', '.join(f'{i}: {v:.2f}' for i, v in enumerate(val))}; "
        f"kept pass {kept}" + (f"; training loss {first:.3f} -> {last:.3f}" if first is not None else ""))
    return ckpts[kept], Passes(method=method, size=size, start=start_name, start_step=start.step, passes=records,
                               kept=kept, held_out_pairs=len(held), train_loss_first=first, train_loss_last=last)


@dataclass(frozen=True)
class KeptSkill:
    """A method's greedy accuracy on its size's training problems against SFT's, and whether it kept SFT's skill."""

    train_accuracy: float
    sft_train_accuracy: float
    n: int
    kept: bool
    text: str


def kept_skill(run: MethodRun, sft: MethodRun, max_drop: float) -> KeptSkill | None:
    """Whether a method kept SFT's skill: its greedy accuracy on the size's training problems against SFT's."""
    if not run.train_correct or not sft.train_correct:
        return None
    n, acc, base = len(run.train_correct), sum(run.train_correct), sum(sft.train_correct)
    ok = acc / n >= base / n - max_drop
    return KeptSkill(acc / n, base / n, n, ok, f"training problems {acc}/{n} vs SFT {base}/{n}" +
                     ("" if ok else f": broke the policy (fell more than {max_drop:.0%})"))


@dataclass
class Drawn:
    """A policy's verified samples of the training problems and their Monte-Carlo step credits."""

    samples: list[negatives.Sample]
    credits: list[negatives.StepCredit]

    @property
    def positives(self) -> int:
        return sum(s.correct for s in self.samples)


def draw(exp: Experiment, ckpt: Checkpoint, task: TaskFamily, problems: list[Record], out_dir: Path, values: bool,
         log: Callable[[str], None] = print, label: str = "SFT", samples_per_problem: int | None = None) -> Drawn:
    """The policy's samples on its training problems (negatives capped) and, with `values`, every step's value;
    `samples_per_problem` empty: the params'."""
    P, seed = exp.negatives, exp.seed
    policy = negatives.policy_engine(ckpt, P, cache_dir=out_dir / "rollout_cache")
    drawn = negatives.sample_policy(policy, task, problems, samples_per_problem or P.samples_per_problem, seed,
                                    P.step_split)
    samples = negatives.cap_negatives(drawn, P.max_negatives)
    negatives.write_samples(out_dir / "samples.jsonl", samples)
    pos = sum(s.correct for s in samples)
    log(f"n={len(problems)}: the {label} policy's {len(drawn)} samples hold {pos} positives and {len(drawn) - pos} "
        f"negatives, {len(samples) - pos} kept (at most {P.max_negatives or 'all'} per problem)")
    credits: list[negatives.StepCredit] = []
    if values:
        credits = negatives.estimate_values(policy, task, problems, samples, P.rollouts, seed, P.best_of,
                                            P.best_of_rule)
        io.write_jsonl(out_dir / "step_values.jsonl",
                       ({"sample": c.sample.id, "correct": c.sample.correct, "values": c.values,
                         "successes": [len(w) for w in c.successes], "advantages": c.advantages} for c in credits))
    return Drawn(samples, credits)


def _train_or_skip(exp: Experiment, run: MethodRun, items: list, log: Callable[[str], None]) -> bool:
    P = exp.negatives
    if not items:
        run.note = "no training data"
        log(f"n={run.size}: {run.method} has no training data; its point is left out")
        return False
    if run.method in DPO_METHODS and len(items) < P.min_pairs:
        run.note = f"not trained: {len(items)} pairs, fewer than {P.min_pairs}"
        log(f"n={run.size}: {run.method} has {len(items)} pairs, fewer than {P.min_pairs}; its point is left out")
        return False
    return True


def run_size(exp: Experiment, base: str, task: TaskFamily, probs: Problems, size: int, out_dir: Path,
             log: Callable[[str], None] = print) -> SizeResult:
    """SFT at one size (chosen on validation) and, at a method size, every other method from it."""
    P, seed = exp.negatives, exp.seed
    problems = probs.train[:size]
    out_dir = Path(out_dir)
    curve, sft_ckpt, under_ckpt = run_sft(exp, base, task, probs, size, out_dir, log)
    runs: dict[str, MethodRun] = {"sft": MethodRun("sft", size, len(problems), checkpoint=sft_ckpt,
                                                   steps=sft_ckpt.step)}
    positives = negs = 0
    credits: list[negatives.StepCredit] = []
    if size in P.sizes_for_methods and set(P.methods) - {"sft"}:
        wants_values = bool({"per_step_dpo", "adv_rft"} & set(P.methods))
        drawn = draw(exp, sft_ckpt, task, problems, out_dir, wants_values, log)
        samples, credits = drawn.samples, drawn.credits
        positives, negs = drawn.positives, len(samples) - drawn.positives
        d_plus = negatives.rft_records(samples, problems, P.rft_k)
        data: dict[str, list] = {}
        if "rft" in P.methods:
            data["rft"] = problems + d_plus
        if "rft_self" in P.methods:
            data["rft_self"] = d_plus
        if "adv_rft" in P.methods:
            kept = negatives.advantage_filtered(credits, P.adv_percentile)
            data["adv_rft"] = problems + negatives.rft_records(kept, problems, P.rft_k)
        if "naive_dpo" in P.methods:
            data["naive_dpo"] = negatives.naive_pairs(samples, problems, seed)
        if "per_step_dpo" in P.methods:
            data["per_step_dpo"] = negatives.per_step_pairs(credits, problems, P.critical_step, P.advantage_threshold,
                                                            seed, P.rejected)
        if UNDER in P.methods:
            if under_ckpt is None:
                runs[UNDER] = MethodRun(UNDER, size, 0, note=f"no under-trained start: no SFT read-out before the "
                                                              f"chosen one reaches {P.under_validation_share:.0%} of its "
                                                              "validation accuracy")
            else:
                under = draw(exp, under_ckpt, task, problems, out_dir / "under", True, log, "under-trained SFT",
                             P.under_samples_per_problem)
                data[UNDER] = negatives.per_step_pairs(under.credits, problems, P.critical_step,
                                                       P.advantage_threshold, seed, P.rejected)
        sft_val = curve.chosen_validation
        under_val = (curve.validation[curve.steps.index(curve.under_step)] if curve.under_step is not None else 0.0)
        for method, items in data.items():
            io.write_jsonl(out_dir / f"{method}.jsonl", (x.model_dump(mode="json") for x in items))
            runs[method] = run = MethodRun(method, size, len(items))
            if not _train_or_skip(exp, run, items, log):
                continue
            start, name, val = (under_ckpt, "under", under_val) if method == UNDER else (sft_ckpt, "sft", sft_val)
            run.checkpoint, run.passes = after_sft(exp, method, start, name, val, items, task, probs, size,
                                                   out_dir / method, log)
            # a kept pass > 0 is a checkpoint of the method's own run, which counts its steps from 0
            run.steps = 0 if run.checkpoint.path == start.path else run.checkpoint.step
        if under_ckpt is not None and UNDER in runs:
            curve.under_train_accuracy = _mean(accuracy(under_ckpt, P, task, problems[: P.kept_skill_problems],
                                                        seed + 1))
    check = problems[: P.kept_skill_problems]
    for method, run in runs.items():
        if run.checkpoint is None:
            continue
        engine = negatives.policy_engine(run.checkpoint, P, temperature=0.0)
        run.correct = negatives.outcomes(engine, task, probs.test, seed + 1)
        run.train_correct = negatives.outcomes(engine, task, check, seed + 1)
        lo, hi = run.interval()
        log(f"n={size}: {method} ({run.examples} examples, {run.steps} steps) test error {run.error:.3f} "
            f"[{lo:.3f}, {hi:.3f}]; training problems {sum(run.train_correct)}/{len(run.train_correct)}")
    curve.train_accuracy = _mean(runs["sft"].train_correct)
    io.write_json(out_dir / "outcomes.json", {m: {"examples": r.examples, "steps": r.steps, "note": r.note,
                                                  "passes": r.passes.model_dump() if r.passes else {},
                                                  "correct": r.correct, "train_correct": r.train_correct}
                                              for m, r in runs.items()})
    return SizeResult(size, runs, positives, negs, credits, curve)


def run_sizes(exp: Experiment, base: str, task: TaskFamily, probs: Problems, out_dir: Path,
              log: Callable[[str], None] = print) -> list[SizeResult]:
    """Every size, smallest first, each under out_dir/n<size>."""
    return [run_size(exp, base, task, probs, n, Path(out_dir) / f"n{n}", log) for n in sorted(exp.negatives.data_sizes)]


# ---------------------------------------------------------------- read-outs


class TableRow(BaseModel):
    """One (size, method) of 06's table: error with its 95% Wilson interval, training examples (pairs for DPO),
    optimizer steps, McNemar p against SFT, the kept-skill check, and why a method was not trained (`note`)."""

    size: int
    method: str
    examples: int
    steps: int | None = None
    error: float | None = None
    n_test: int = 0
    error_lo: float | None = None
    error_hi: float | None = None
    p_vs_sft: float | None = None
    train_accuracy: float | None = None
    kept_skill: bool | None = None
    start: str | None = None          # after SFT: "sft" (the size's SFT) or "under" (the earlier checkpoint)
    start_step: int | None = None     # the SFT step it started from (SFT: the step chosen on validation)
    pass_kept: int | None = None      # after SFT: the pass kept by validation accuracy (0: the start itself)
    validation: float | None = None   # the kept model's validation accuracy
    held_out_pairs: int | None = None
    note: str = ""


class EfficiencyRow(BaseModel):
    """At one size: how much synthetic data SFT needs to match a method (`multiple`, with its 95% bootstrap interval
    where measured), or why that is not measurable (`reading` says which)."""

    size: int
    method: str
    error: float
    sft_error: float | None = None
    p_vs_sft: float | None = None
    multiple: float | None = None
    reading: str = ""
    multiple_lo: float | None = None
    multiple_hi: float | None = None


def table(results: Sequence[SizeResult], max_drop: float = 0.15) -> list[TableRow]:
    """One row per (size, method): error with its interval, training examples (pairs for DPO), optimizer steps,
    McNemar p against SFT, the kept-skill check, and why a method was not trained."""
    rows = []
    for res in results:
        sft = res.runs["sft"]
        for method, run in res.runs.items():
            row = TableRow(size=res.size, method=method, examples=run.examples, steps=run.steps, error=run.error,
                           n_test=len(run.correct))
            if run.passes:
                ps = run.passes
                row.start, row.start_step, row.pass_kept = ps.start, ps.start_step, ps.kept
                row.validation = ps.passes[ps.kept].validation
                row.held_out_pairs = ps.held_out_pairs if method in DPO_METHODS else None
            elif method == "sft" and res.sft_curve is not None:
                row.start_step, row.validation = res.sft_curve.chosen_step, res.sft_curve.chosen_validation
            if run.correct:
                row.error_lo, row.error_hi = run.interval()
            if method != "sft" and run.correct and sft.correct:
                row.p_vs_sft = stats.mcnemar(run.correct, sft.correct)
            kept = kept_skill(run, sft, max_drop) if method != "sft" else None
            if kept is not None:
                row.train_accuracy, row.kept_skill = kept.train_accuracy, kept.kept
            elif method == "sft" and run.train_correct:
                row.train_accuracy = sum(run.train_correct) / len(run.train_correct)
            row.note = run.note or (kept.text if kept is not None and not kept.kept else "")
            rows.append(row)
    return rows


def per_step_pairs_by_size(rows: Sequence[TableRow]) -> dict[str, int]:
    """Per-step DPO pairs built at each size (trained or not)."""
    return {str(r.size): r.examples for r in rows if r.method == "per_step_dpo"}


def sft_size_to_match(sizes: Sequence[float], sft_errors: Sequence[float], target_error: float) -> float | None:
    """Data SFT needs to reach `target_error`, by linear interpolation of its curve in log size.

    None when the target lies outside SFT's measured curve (no extrapolation either way).
    """
    pts = sorted(zip(sizes, sft_errors))
    for (n0, e0), (n1, e1) in zip(pts, pts[1:]):
        if e0 >= target_error >= e1 and e0 != e1:
            t = (e0 - target_error) / (e0 - e1)
            return math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0)))
    return None


def efficiency(rows: Sequence[TableRow], method: str, min_drop: float = MIN_SFT_DROP,
               outcomes: dict[int, dict[str, Sequence[bool]]] | None = None) -> list[EfficiencyRow]:
    """At each size: how much synthetic data SFT needs to match `method` (SFT's curve interpolated in log n), or why
    that is not measurable.

    Not measurable when SFT's curve falls by less than `min_drop` over the sizes (a flat curve maps every error to any
    size). A method better than SFT's best point reads "> m" (m: SFT's largest size over n), one worse than its
    smallest "< m"; never infinity. With `outcomes` (size -> method -> per-test-problem correctness), each multiple
    gets a 95% bootstrap interval over the test problems (`multiple_lo`, `multiple_hi`, censored the same way).
    """
    sft = sorted((r.size, r.error) for r in rows if r.method == "sft" and r.error is not None)
    mine = sorted((r.size, r.error, r.p_vs_sft, r.kept_skill) for r in rows
                  if r.method == method and r.error is not None)
    out = []
    drop = (sft[0][1] - min(e for _, e in sft)) if sft else 0.0
    for size, err, p, kept in mine:
        row = EfficiencyRow(size=size, method=method, error=err, sft_error=dict(sft).get(size), p_vs_sft=p)
        if len(sft) < 2 or drop < min_drop:
            row.reading = f"not measurable: SFT's curve is flat (falls {drop:.2f} < {min_drop})"
        else:
            at_size = (outcomes or {}).get(size, {})
            same = answers_as_sft(at_size.get(method), at_size.get("sft"))
            need, censor = (size, "") if same else sft_need([s for s, _ in sft], [e for _, e in sft], err)
            row.multiple = need / size
            row.reading = MultipleReading.fmt(need / size, censor) + {
                ">": " (beyond SFT's largest size)", "<": ": worse than SFT at every measured size", "": ""}[censor]
            at = {n: {"sft": o.get("sft", [])} for n, o in (outcomes or {}).items()}
            if outcomes and outcomes.get(size, {}).get(method):
                at[size][method] = outcomes[size][method]
                mr = multiple_reading(at, method, boot=1000)
                if mr is not None:
                    row.multiple_lo, row.multiple_hi = mr.lo, mr.hi
                    row.reading += f" [95% {mr.fmt(mr.lo, mr.lo_censor)}, {mr.fmt(mr.hi, mr.hi_censor)}]"
            if p is not None:
                row.reading += f"; McNemar p = {p:.2g} against SFT at n={size}"
        if kept is False:
            row.reading += "; it broke the policy (kept-skill check failed)"
        out.append(row)
    return out


EFFICIENCY_METHODS = ("rft_self", "per_step_dpo", "per_step_dpo_under", "naive_dpo", "rft", "adv_rft")  # the order the table lists them


def outcomes_by_size(results: Sequence[SizeResult]) -> dict[int, dict[str, list[bool]]]:
    """size -> method -> per-test-problem correctness."""
    return {r.size: {m: run.correct for m, run in r.runs.items()} for r in results}


def efficiencies(rows: Sequence[TableRow], results: Sequence[SizeResult], methods: Sequence[str]
                 ) -> dict[str, list[EfficiencyRow]]:
    """`efficiency` of each method the experiment ran, with bootstrap intervals over its test problems."""
    outcomes = outcomes_by_size(results)
    return {m: efficiency(rows, m, outcomes=outcomes) for m in EFFICIENCY_METHODS if m in methods}


def efficiency_table(eff: dict[str, list[EfficiencyRow]]) -> pd.DataFrame:
    return pd.DataFrame([r.model_dump() for rs in eff.values() for r in rs])


def answers_as_sft(mine: Sequence[bool] | None, sft: Sequence[bool] | None) -> bool:
    """A model that answers every test problem as SFT at its size does (it kept its start) is SFT there: 1x, whatever
    the fitted curve reads at that size."""
    return mine is not None and sft is not None and len(mine) > 0 and np.array_equal(mine, sft)


def non_increasing(ys: Sequence[float]) -> list[float]:
    """The least-squares non-increasing fit of `ys` (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, count]
    for y in ys:
        blocks.append([float(y), 1.0])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            (m1, c1), (m2, c2) = blocks[-2], blocks.pop()
            blocks[-1] = [(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2]
    return [m for m, c in blocks for _ in range(int(c))]


def sft_need(sizes: Sequence[float], errs: Sequence[float], err: float) -> tuple[float, str]:
    """The synthetic data SFT needs to reach error `err`: (n, censor), SFT's curve (its non-increasing fit: more data
    cannot cost accuracy, so a point above a smaller size's is test noise) interpolated linearly in log n at its
    first crossing of `err` from above. censor ">": `err` is below every point (n is SFT's largest size, a lower
    bound); "<": `err` is above SFT's smallest point (n is its smallest size, an upper bound); "": measured."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    pts = list(zip([sizes[i] for i in order], non_increasing([errs[i] for i in order])))
    if err > pts[0][1]:
        return pts[0][0], "<"
    if err == pts[0][1]:
        return pts[0][0], ""
    for (n0, e0), (n1, e1) in zip(pts, pts[1:]):
        if e0 > err >= e1:
            t = (e0 - err) / (e0 - e1)
            return math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0))), ""
    return pts[-1][0], ">"


class MultipleReading(BaseModel):
    """The efficiency multiple of a method over SFT: at each size where it ran, SFT data to match it over n, and their
    geometric mean over those sizes (the claim's effect) with a 95% percentile-bootstrap interval over the test problems
    (one resample of problem indices applied to every curve at once). A multiple past SFT's curve is censored at its
    bound and written "> m" (beyond the largest size) or "< m" (worse than the smallest), never infinite."""

    method: str
    sizes: list[int]
    by_size: dict[int, float]
    censored: dict[int, str]
    effect: float
    lo: float
    hi: float
    lo_censor: str = ""
    hi_censor: str = ""
    range_multiple: float  # SFT's largest size over the method's largest size

    @staticmethod
    def fmt(x: float, censor: str = "") -> str:
        return f"{censor} {x:.2f}x".strip() if censor else f"{x:.2f}x"

    def text(self) -> str:
        each = ", ".join(f"n={n}: {self.fmt(self.by_size[n], self.censored[n])}" for n in self.sizes)
        return (f"efficiency multiple (SFT data to match {self.method}, over n; geometric mean over n = "
                f"{', '.join(map(str, self.sizes))}): {self.fmt(self.effect)} [95% {self.fmt(self.lo, self.lo_censor)}, "
                f"{self.fmt(self.hi, self.hi_censor)}]; by size {each}; SFT's curve reaches {self.range_multiple:g}x "
                "the method's largest size")


def _geo(xs: Sequence[float]) -> float:
    return float(math.exp(sum(math.log(x) for x in xs) / len(xs)))


def multiple_reading(outcomes: dict[int, dict[str, Sequence[bool]]], method: str, boot: int = 2000, seed: int = 0
                     ) -> MultipleReading | None:
    """`MultipleReading` of `method` from every model's per-test-problem outcomes; None without two SFT points or a
    size where the method answered."""
    sft = {n: np.asarray(o["sft"], bool) for n, o in outcomes.items() if o.get("sft")}
    mine = {n: np.asarray(o[method], bool) for n, o in outcomes.items() if o.get(method)}
    if len(sft) < 2 or not mine:
        return None
    sizes, msizes = sorted(sft), sorted(mine)

    def read(idx: np.ndarray | None) -> tuple[dict[int, float], dict[int, str]]:
        errs = [1 - (sft[n] if idx is None else sft[n][idx]).mean() for n in sizes]
        vals, cens = {}, {}
        for m in msizes:
            if answers_as_sft(mine[m], sft.get(m)):
                vals[m], cens[m] = 1.0, ""
                continue
            need, c = sft_need(sizes, errs, 1 - (mine[m] if idx is None else mine[m][idx]).mean())
            vals[m], cens[m] = need / m, c
        return vals, cens

    vals, cens = read(None)
    n_test = len(next(iter(sft.values())))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(boot):
        v, c = read(rng.integers(0, n_test, n_test))
        boots.append((_geo(list(v.values())), ">" in c.values(), "<" in c.values()))
    geos = np.array([b[0] for b in boots])
    lo_i, hi_i = np.argsort(geos)[int(0.025 * (boot - 1))], np.argsort(geos)[int(np.ceil(0.975 * (boot - 1)))]
    lo_c = "<" if boots[lo_i][2] and not boots[lo_i][1] else ""
    hi_c = ">" if boots[hi_i][1] and not boots[hi_i][2] else ""
    return MultipleReading(method=method, sizes=msizes, by_size=vals, censored=cens, effect=_geo(list(vals.values())),
                           lo=float(geos[lo_i]), hi=float(geos[hi_i]), lo_censor=lo_c, hi_censor=hi_c,
                           range_multiple=max(sizes) / max(msizes))


def sft_checks(results: Sequence[SizeResult], test: Sequence[Record], min_drop: float = MIN_SFT_DROP) -> list[Check]:
    """Did SFT learn, and learn more from more data? Its test error falls by `min_drop` from the smallest to the
    largest size, and at the largest size it answers above chance."""
    by_size = sorted(results, key=lambda r: r.size)
    first, last = by_size[0].runs["sft"], by_size[-1].runs["sft"]
    return [learning.change("SFT test error, smallest to largest data size", first.error, last.error, -1, min_drop),
            learning.accuracy(f"SFT accuracy at n={last.size}", sum(last.correct), len(last.correct),
                              stats.chance_accuracy([p.gold for p in test]))]


@dataclass(frozen=True)
class NLLRow:
    """The mean per-token negative log-likelihood of one response of one set under one model (Figure 3)."""

    set: str
    id: str
    nll: float


@dataclass(frozen=True)
class ValueRow:
    """A method's average Monte-Carlo value after `step` steps of its own samples (Figure 7)."""

    method: str
    step: int
    value: float
    count: int


@dataclass(frozen=True)
class AdvantageRow:
    """The advantage of one step of one positive or negative trace (Figure 10)."""

    trace: str
    step: int
    advantage: float


def self_positives(out_dir: Path, size: int) -> list[Record]:
    """The SFT policy's own verified positives at one size (D+: its RFT-on-D+ data), none if that method did not run."""
    path = Path(out_dir) / f"n{size}" / "rft_self.jsonl"
    return [Record(**r) for r in io.read_jsonl(path)] if path.exists() else []


def likelihoods(base: str, train_pool: list[Record], size: int, out_dir: Path) -> list[NLLRow]:
    """Figure 3 at one method size: `response_nll` under the base of the teacher's chains of its problems (D_syn)
    and of the SFT policy's own verified positives for them (D+); none without D+."""
    d_plus = self_positives(out_dir, size)
    return response_nll(base, {"D_syn": train_pool[:size], "D+": d_plus}) if d_plus else []


def nll_table(nll: Sequence[NLLRow]) -> pd.DataFrame | None:
    """Mean, spread and count of the per-token NLL of each set; None without NLL rows."""
    if not nll:
        return None
    return pd.DataFrame([asdict(r) for r in nll]).groupby("set")["nll"].agg(["mean", "std", "count"]).reset_index()


def nll_means(nll: Sequence[NLLRow]) -> dict[str, float]:
    """The mean per-token NLL of each set (what scaling.json keeps)."""
    return pd.DataFrame([asdict(r) for r in nll]).groupby("set")["nll"].mean().to_dict() if nll else {}


def method_values(exp: Experiment, task: TaskFamily, result: SizeResult, test: list[Record]) -> list[ValueRow]:
    """Figure 7 at one size: `values_by_method` of every trained method on the first `value_problems` test
    problems; none when `value_problems` is 0."""
    P = exp.negatives
    ckpts = {m: r.checkpoint for m, r in result.runs.items() if r.checkpoint is not None}
    return values_by_method(exp, task, ckpts, test[: P.value_problems]) if P.value_problems else []


def values_by_method(exp: Experiment, task: TaskFamily, ckpts: dict[str, Checkpoint], problems: list[Record]
                     ) -> list[ValueRow]:
    """Figure 7: each method's own samples on held-out problems, valued by its own rollouts, averaged per step."""
    P = exp.negatives
    rows = []
    for method, ckpt in ckpts.items():
        engine = negatives.policy_engine(ckpt, P)
        samples = negatives.sample_policy(engine, task, problems, 1, exp.seed + 2, P.step_split)
        for r in negatives.value_per_step(negatives.estimate_values(engine, task, problems, samples, P.rollouts,
                                                                    exp.seed + 2, P.best_of, P.best_of_rule)):
            rows.append(ValueRow(method, int(r["step"]), r["value"], int(r["count"])))
    return rows


def advantages_by_step(credits: Sequence[negatives.StepCredit]) -> list[AdvantageRow]:
    """Figure 10: the advantage of every step of positive and of negative traces."""
    return [AdvantageRow("positive" if cr.sample.correct else "negative", i + 1, a)
            for cr in credits for i, a in enumerate(cr.advantages)]


def response_nll(model_path: str, sets: dict[str, list[Record]]) -> list[NLLRow]:
    """Figure 3: mean per-token negative log-likelihood of each set's responses under one model."""
    model = models.load_model(model_path)
    tok = models.load_tokenizer(model_path)
    rows = []
    with torch.no_grad():
        for name, records in sets.items():
            for r in records:
                prompt, completion = render.tokenize_example(tok, r.question, r.reasoning, r.answer)
                ids = torch.tensor([prompt + completion])
                labels = torch.tensor([[-100] * len(prompt) + completion])
                rows.append(NLLRow(name, r.id, model(input_ids=ids, labels=labels).loss.item()))
    return rows


# ---------------------------------------------------------------- what 06 hands on, and its report


class ScalingResult(BaseModel):
    """What 06 measured (scaling.json, read by the findings page): the budget rule, the table's rows, the efficiency
    readings, the pair floor, every method's per-test-problem outcomes by size, and the mean NLL per set."""

    FILE: ClassVar[str] = "scaling.json"

    budget_rule: str
    min_pairs: int
    rows: list[TableRow]
    efficiency: dict[str, list[EfficiencyRow]]
    outcomes: dict[int, dict[str, list[bool]]]  # size -> method -> correct per test problem (empty: not trained)
    nll: dict[str, float]
    nll_size: int | None = None                 # the method size Figure 3 reads at
    sft_curves: list[SFTCurve] = []             # each size's SFT read-outs on the validation problems
    passes: list[Passes] = []                   # every method after SFT: each pass's validation accuracy, the kept one
    method_sizes: list[int] = []
    n_validation: int | None = None
    teacher_forms: list[str] = []
    rollouts: int | None = None
    best_of: int | None = None
    best_of_rule: str = ""
    value_spread: dict[str, float] = {}         # the step values' spread (`value_spread`)
    multiples: dict[str, MultipleReading] = {}  # method -> its efficiency multiple (the 2x and 8x rows)
    pass_rule: str = ""
    dpo_settings: list[str] = []

    @classmethod
    def exists(cls, run_dir: Path) -> bool:
        return (Path(run_dir) / cls.FILE).exists()

    @classmethod
    def load(cls, run_dir: Path) -> ScalingResult:
        return cls.model_validate(io.read_json(Path(run_dir) / cls.FILE))

    def save(self, run_dir: Path) -> Path:
        # python-mode dump: an unbounded multiple interval (inf) stays Infinity, as json writes it
        return io.write_json(Path(run_dir) / self.FILE, self.model_dump())

    def rows_of(self, method: str) -> list[TableRow]:
        return [r for r in self.rows if r.method == method]

    @property
    def per_step_pairs_by_size(self) -> dict[str, int]:
        return per_step_pairs_by_size(self.rows)

    def sft_error_by_size(self) -> dict[str, float | None]:
        return {str(r.size): r.error for r in self.rows_of("sft")}

    @property
    def sft_sizes(self) -> list[int]:
        return sorted(r.size for r in self.rows_of("sft"))

    def sft_train_accuracy_by_size(self) -> dict[str, float | None]:
        return {str(r.size): r.train_accuracy for r in self.rows_of("sft")}

    def validation_by_pass(self) -> dict[str, dict[str, list[float]]]:
        """method -> size -> the validation accuracy of every pass, pass 0 (the start) first."""
        out: dict[str, dict[str, list[float]]] = {}
        for ps in self.passes:
            out.setdefault(ps.method, {})[str(ps.size)] = [round(p.validation, 4) for p in ps.passes]
        return out

    def passes_of(self, method: str) -> list[Passes]:
        return [p for p in self.passes if p.method == method]

    @property
    def nll_gap(self) -> float | None:
        """Mean per-token NLL of D_syn minus that of D+ under the base (Figure 3); None without both."""
        return self.nll["D_syn"] - self.nll["D+"] if {"D_syn", "D+"} <= set(self.nll) else None

    def pooled(self, a: str, b: str) -> tuple[list[bool], list[bool]]:
        """Outcomes of methods a and b over every size at which both answered the test problems, paired per problem.

        Sizes are pooled in the order scaling.json lists them (its keys are text, sorted: "128" before "64"), the
        order the findings page has always pooled in: the interval's variance sums in that order, to the last digit.
        """
        xs: list[bool] = []
        ys: list[bool] = []
        for size in sorted(self.outcomes, key=str):
            by_method = self.outcomes[size]
            if by_method.get(a) and by_method.get(b):
                xs += by_method[a]
                ys += by_method[b]
        return xs, ys


def value_spread(credits: Sequence[negatives.StepCredit], rollouts: int, best_of: int | None, rule: str
                 ) -> dict[str, float]:
    """How exact the step values are: over every valued prefix, the mean width of the 95% interval of its value (the
    Wilson interval of the rollouts' success rate, mapped through the value rule), and the share of values strictly
    between 0 and 1."""
    if not credits:
        return {}
    widths, inner = [], []
    for cr in credits:
        for v, wins in zip(cr.values, cr.successes):
            lo, hi = stats.wilson(len(wins), rollouts)
            if best_of is not None and rule == "plug_in":
                lo, hi = 1 - (1 - lo) ** best_of, 1 - (1 - hi) ** best_of
            widths.append(hi - lo)
            inner.append(0 < v < 1)
    return {"prefixes": float(len(widths)), "mean_interval_width": float(np.mean(widths)),
            "share_strictly_between_0_and_1": float(np.mean(inner))}


def stage_metrics(rows: Sequence[TableRow], eff: dict[str, list[EfficiencyRow]], checks: Sequence[Check]) -> Metrics:
    """What 06 records in metrics.json: each measured error, each efficiency reading, and the learning checks."""
    out: Metrics = {f"{r.method}/error@{r.size}": r.error for r in rows if r.error is not None}
    out |= {f"{m}/multiple@{r.size}": r.reading for m, rs in eff.items() for r in rs}
    return out | learning.metrics(checks)


@dataclass
class ScalingRun:
    """06's run: every method at every size, what it hands on (`result`, saved as scaling.json), SFT's learning
    checks, and the report's tables and figures."""

    exp: Experiment
    task: TaskFamily
    test: list[Record]
    sizes: list[SizeResult]
    result: ScalingResult
    checks: list[Check]
    nll: list[NLLRow]

    @property
    def methods(self) -> list[str]:
        return list(self.exp.negatives.methods)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([r.model_dump() for r in self.result.rows])

    def checks_table(self) -> pd.DataFrame:
        return learning.table(self.checks)

    def efficiency_table(self) -> pd.DataFrame:
        return efficiency_table(self.result.efficiency)

    def nll_table(self) -> pd.DataFrame | None:
        return nll_table(self.nll)

    def scaling_figure(self) -> go.Figure:
        return figures.scaling_figure(self.result.rows, self.methods)

    def self_data_figure(self) -> go.Figure | None:
        return figures.self_data_figure(self.result.rows, self.methods)

    @property
    def method_size(self) -> SizeResult:
        """The largest size where every method ran (Figures 7 and 10 read there)."""
        return [r for r in self.sizes if r.size == max(self.exp.negatives.sizes_for_methods)][0]

    def advantages_figure(self) -> go.Figure | None:
        """Figure 10 at the largest method size."""
        return figures.advantages_figure(advantages_by_step(self.method_size.credits))

    def sft_validation_figure(self) -> go.Figure:
        return figures.sft_validation_figure(self.result.sft_curves)

    def passes_figure(self) -> go.Figure | None:
        return figures.passes_figure(self.result.passes)

    def passes_table(self) -> pd.DataFrame:
        """Every pass of every method after SFT: validation accuracy, held-out log-ratios, and which was kept."""
        return pd.DataFrame([{"method": ps.method, "size": ps.size, "start": f"{ps.start} (step {ps.start_step})",
                              "pass": p.index, "steps": p.step, "validation": p.validation,
                              "chosen log-ratio": p.chosen_log_ratio, "rejected log-ratio": p.rejected_log_ratio,
                              "critical-step log-ratio": p.critical_log_ratio, "kept": p.index == ps.kept,
                              "training loss first -> last": (f"{ps.train_loss_first:.3f} -> {ps.train_loss_last:.3f}"
                                                              if ps.train_loss_first is not None else "")}
                             for ps in self.result.passes for p in ps.passes])

    def starts_table(self) -> pd.DataFrame:
        """Each size's SFT start (chosen on validation) and the under-trained one: validation and training accuracy."""
        return pd.DataFrame([{"size": c.size, "chosen step": c.chosen_step, "validation": c.chosen_validation,
                              "training-problem accuracy": c.train_accuracy, "under-trained step": c.under_step,
                              "under-trained validation": (c.validation[c.steps.index(c.under_step)]
                                                           if c.under_step is not None else None),
                              "under-trained training-problem accuracy": c.under_train_accuracy}
                             for c in self.result.sft_curves])

    def multiples_table(self) -> pd.DataFrame:
        return pd.DataFrame([{"method": m, "reading": r.text()} for m, r in self.result.multiples.items()])

    def settings(self) -> list[str]:
        return [f"budget rule: {self.result.budget_rule}", *self.result.dpo_settings,
                f"step values: {self.result.rollouts} rollouts per prefix, best-of-{self.result.best_of} "
                f"({self.result.best_of_rule}: 1 - (1 - p)^K)" if self.result.best_of_rule == "plug_in" else
                f"step values: {self.result.rollouts} rollouts per prefix",
                f"step value spread: {self.result.value_spread}",
                f"D_syn: the teacher writes each chain in one of {self.result.teacher_forms}"]

    def nll_figure(self) -> go.Figure | None:
        return figures.nll_figure(self.nll)

    @cached_property
    def values(self) -> list[ValueRow]:
        """Figure 7's rows, sampled on first use (every later call reuses them)."""
        return method_values(self.exp, self.task, self.method_size, self.test)

    def values_figure(self) -> go.Figure | None:
        return figures.values_figure(self.values)

    @property
    def metrics(self) -> Metrics:
        return stage_metrics(self.result.rows, self.result.efficiency, self.checks)


def run(ctx: StageContext, log: Callable[[str], None] = print) -> ScalingRun:
    """06 for the cell's base: SFT at every size chosen on validation, every other method at the method sizes under
    the budget rule, the table, the efficiency readings, Figure 3's likelihoods, SFT's learning checks; scaling.json
    saved."""
    exp, base = ctx.exp, ctx.base_path()
    P = exp.negatives
    task, probs = draw_problems(exp)
    sizes = run_sizes(exp, base, task, probs, ctx.dir, log)
    rows = table(sizes, P.kept_skill_drop)
    checks = sft_checks(sizes, probs.test)
    eff = efficiencies(rows, sizes, P.methods)
    outcomes = outcomes_by_size(sizes)
    multiples = {m: r for m in ("rft_self", "per_step_dpo", UNDER, "naive_dpo", "rft", "adv_rft")
                 if m in P.methods and (r := multiple_reading(outcomes, m)) is not None}
    method_sizes = P.sizes_for_methods
    nll_size = max(method_sizes)
    nll = likelihoods(base, probs.train, nll_size, ctx.dir)
    credits = [c for r in sizes if r.size in method_sizes for c in r.credits]
    result = ScalingResult(budget_rule=budget_rule(P), min_pairs=P.min_pairs, rows=rows, efficiency=eff,
                           outcomes=outcomes, nll=nll_means(nll), nll_size=nll_size,
                           sft_curves=[r.sft_curve for r in sizes if r.sft_curve is not None],
                           passes=[run.passes for r in sizes for run in r.runs.values() if run.passes is not None],
                           method_sizes=method_sizes, n_validation=P.n_validation, teacher_forms=list(P.teacher_forms),
                           rollouts=P.rollouts, best_of=P.best_of, best_of_rule=P.best_of_rule,
                           value_spread=value_spread(credits, P.rollouts, P.best_of, P.best_of_rule),
                           multiples=multiples, pass_rule=pass_rule(), dpo_settings=dpo_settings(exp))
    result.save(ctx.dir)
    return ScalingRun(exp, task, probs.test, sizes, result, checks, nll)


def settings_table(exp: Experiment) -> pd.DataFrame:
    """Every DPO setting of 06 with its source, as a table."""
    return pd.DataFrame({"setting and source": dpo_settings(exp)})
