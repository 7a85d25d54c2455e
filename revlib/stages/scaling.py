"""Notebook 06: Setlur et al.'s scaling experiment, run with the method pieces of `revlib.data.negatives`.

At each synthetic data size n (nested draws, so a larger set extends the smaller ones):
SFT on the oracle's positives; the SFT policy's samples, verified; RFT on synthetic plus self-generated
positives; RFT on the self-generated positives alone (D+, the paper's Figures 2 and 9); naive DPO;
per-step DPO at the Monte-Carlo critical step; advantage-filtered RFT (Figure 11). Every method is
evaluated greedily on the same test problems, so methods are compared per problem (McNemar).

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
from revlib.modeling import models, preference, train
from revlib.modeling.train import Checkpoint, TrainResult
from revlib.params import Experiment
from revlib.params.negatives import NegativeParams
from revlib.stages import scaling_figures as figures
from revlib.stages.context import StageContext
from revlib.tasks import get_task
from revlib.tasks.base import TaskFamily

SFT_METHODS = ("rft", "rft_self", "adv_rft")  # trained by SFT from the base
# SFT's test error must fall by at least this from the smallest to the largest size: a flatter curve maps every
# error to any size (no efficiency multiple) and says more data taught SFT nothing
MIN_SFT_DROP = 0.1
DPO_METHODS = ("naive_dpo", "per_step_dpo")  # trained by DPO from the SFT checkpoint


def budget_rule(P: NegativeParams) -> str:
    dpo = (f"makes up to {P.dpo_epochs} passes over its own pairs less the {P.held_out_pairs:.0%} of problems held out, "
           "and keeps the pass with the lowest DPO loss on the held-out pairs (early stopping)" if P.held_out_pairs else
           f"makes {P.dpo_epochs} passes over its own pairs")
    return (f"every SFT-type run (SFT, RFT, RFT on D+, advantage-filtered RFT) trains {P.sft_steps} optimizer steps "
            f"from the base, whatever the data size; every DPO run (naive, per-step) starts from the SFT checkpoint and "
            f"{dpo} (so its steps grow with its pairs), and a DPO method with fewer "
            f"than {P.min_pairs} pairs at a size is not trained there; each model answers the same test problems "
            f"greedily once, and up to {P.kept_skill_problems} of its size's training problems for the kept-skill check "
            f"(greedy accuracy at most {P.kept_skill_drop:.0%} below SFT's, else the row says it broke the policy)")


@dataclass(frozen=True)
class DPOKept:
    """How a DPO run's checkpoint was chosen: its training and held-out pairs, the pass kept, and with held-out pairs
    the held-out DPO loss of every pass (by epoch)."""

    train_pairs: int
    held_out_pairs: int
    epoch: float
    held_out_loss: dict[str, float] | None = None

    def as_json(self) -> Metrics:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class MethodRun:
    """One method at one size: its training examples, its checkpoint and its per-problem test outcomes."""

    method: str
    size: int
    examples: int
    correct: list[bool] = field(default_factory=list)
    checkpoint: Checkpoint | None = None
    train_correct: list[bool] = field(default_factory=list)  # greedy, on the size's first training problems
    steps: int | None = None  # optimizer steps it trained
    dpo: DPOKept | None = None  # DPO: training / held-out pairs, the pass kept, held-out losses
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


def split_problems(task: TaskFamily, seed: int, sizes: Sequence[int], n_test: int) -> tuple[list[Record], list[Record]]:
    """(nested training pool, test set): one draw, so every data size's set extends the smaller ones."""
    pool = task.sample(seed, max(sizes) + n_test)
    return pool[n_test:], pool[:n_test]


# the problems are drawn at the experiment's seed plus this, apart from the draws other stages make at the seed
PROBLEM_SEED_OFFSET = 606


def draw_problems(exp: Experiment) -> tuple[TaskFamily, list[Record], list[Record]]:
    """The experiment's task family, its nested training pool and its test problems."""
    P = exp.negatives
    task = get_task(P.task, P.knobs)
    train_pool, test = split_problems(task, exp.seed + PROBLEM_SEED_OFFSET, P.data_sizes, P.n_test)
    return task, train_pool, test


def _sft(exp: Experiment, base: str, records: list[Record], out_dir: Path) -> TrainResult:
    P = exp.negatives
    params = exp.sft.model_copy(update={"max_steps": P.sft_steps, "save_every_epochs": 10**6, "save_every_steps": None})
    return train.sft(base, records, out_dir, params, seed=exp.seed, epochs=1, save_every_epochs=10**6)


def _dpo(exp: Experiment, ckpt: Checkpoint, pairs: list[PreferencePair], out_dir: Path, log: Callable[[str], None] = print
         ) -> tuple[Checkpoint, DPOKept]:
    """DPO from the SFT checkpoint under the budget rule: (the kept checkpoint, how it was chosen).

    With `held_out_pairs`, the pairs of a share of the problems are held out, every pass over the rest is
    checkpointed, and the pass with the lowest held-out DPO loss is kept (early stopping); else the last pass.
    """
    P = exp.negatives
    train_pairs, held = negatives.split_pairs(pairs, P.held_out_pairs, exp.seed)
    every = 1 if held else P.dpo_epochs
    params = exp.dpo.model_copy(update={"max_steps": -1, "save_every_epochs": every, "save_every_steps": None})
    res = preference.dpo_from(ckpt, train_pairs, out_dir, params, exp.seed, epochs=P.dpo_epochs, save_every_epochs=every)
    if not held:
        return res.final, DPOKept(len(train_pairs), len(held), res.final.epoch)
    # the reference (the SFT checkpoint) is scored once for every pass
    losses = dict(zip([c.epoch for c in res.checkpoints], preference.pair_losses(res.checkpoints, ckpt, held, exp.dpo)))
    best = min(res.checkpoints, key=lambda c: (round(losses[c.epoch], 6), c.epoch))
    log(f"{out_dir.name}: held-out DPO loss by pass {', '.join(f'{e:g}: {v:.4f}' for e, v in losses.items())}; "
        f"kept pass {best.epoch:g}")
    return best, DPOKept(len(train_pairs), len(held), best.epoch, {str(k): v for k, v in losses.items()})


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


def run_size(exp: Experiment, base: str, task: TaskFamily, train_pool: list[Record], test: list[Record], size: int,
             out_dir: Path, log: Callable[[str], None] = print) -> SizeResult:
    """Every method at one synthetic data size, under the budget rule."""
    P, seed = exp.negatives, exp.seed
    problems = train_pool[:size]
    out_dir = Path(out_dir)
    runs: dict[str, MethodRun] = {}
    sft = _sft(exp, base, problems, out_dir / "sft")
    runs["sft"] = MethodRun("sft", size, len(problems), checkpoint=sft.final)
    policy = negatives.policy_engine(sft.final, P, cache_dir=out_dir / "rollout_cache")
    drawn = negatives.sample_policy(policy, task, problems, P.samples_per_problem, seed, P.step_split)
    samples = negatives.cap_negatives(drawn, P.max_negatives)
    negatives.write_samples(out_dir / "samples.jsonl", samples)
    positives = sum(s.correct for s in samples)
    log(f"n={size}: the SFT policy's {len(drawn)} samples hold {positives} positives and {len(drawn) - positives} "
        f"negatives, {len(samples) - positives} kept (at most {P.max_negatives or 'all'} per problem)")
    credits: list[negatives.StepCredit] = []
    if {"per_step_dpo", "adv_rft"} & set(P.methods):
        credits = negatives.estimate_values(policy, task, problems, samples, P.rollouts, seed, P.best_of)
        io.write_jsonl(out_dir / "step_values.jsonl",
                       ({"sample": c.sample.id, "correct": c.sample.correct, "values": c.values,
                         "advantages": c.advantages} for c in credits))
    data: dict[str, list] = {}
    if "rft" in P.methods:
        data["rft"] = problems + negatives.rft_records(samples, problems, P.rft_k)
    if "rft_self" in P.methods:
        data["rft_self"] = negatives.rft_records(samples, problems, P.rft_k)
    if "adv_rft" in P.methods:
        kept = negatives.advantage_filtered(credits, P.adv_percentile)
        data["adv_rft"] = problems + negatives.rft_records(kept, problems, P.rft_k)
    if "naive_dpo" in P.methods:
        data["naive_dpo"] = negatives.naive_pairs(samples, problems, seed)
    if "per_step_dpo" in P.methods:
        data["per_step_dpo"] = negatives.per_step_pairs(credits, problems, P.critical_step, P.advantage_threshold, seed,
                                                        P.rejected)
    for method, items in data.items():
        io.write_jsonl(out_dir / f"{method}.jsonl", (x.model_dump(mode="json") for x in items))
        runs[method] = MethodRun(method, size, len(items))
        if not items:
            runs[method].note = "no training data"
            log(f"n={size}: {method} has no training data; its point is left out")
            continue
        if method in DPO_METHODS and len(items) < P.min_pairs:
            runs[method].note = f"not trained: {len(items)} pairs, fewer than {P.min_pairs}"
            log(f"n={size}: {method} has {len(items)} pairs, fewer than {P.min_pairs}; its point is left out")
            continue
        if method in DPO_METHODS:
            kept, runs[method].dpo = _dpo(exp, sft.final, items, out_dir / method, log)
        else:
            kept = _sft(exp, base, items, out_dir / method).final
        runs[method].checkpoint = kept
        runs[method].steps = kept.step
    runs["sft"].steps = sft.final.step
    check = problems[: P.kept_skill_problems]
    for method, run in runs.items():
        if run.checkpoint is None:
            continue
        engine = negatives.policy_engine(run.checkpoint, P, temperature=0.0)
        run.correct = negatives.outcomes(engine, task, test, seed + 1)
        run.train_correct = negatives.outcomes(engine, task, check, seed + 1)
        lo, hi = run.interval()
        log(f"n={size}: {method} ({run.examples} examples, {run.steps} steps) test error {run.error:.3f} "
            f"[{lo:.3f}, {hi:.3f}]; training problems {sum(run.train_correct)}/{len(run.train_correct)}")
    io.write_json(out_dir / "outcomes.json", {m: {"examples": r.examples, "steps": r.steps, "note": r.note,
                                                  "dpo": r.dpo.as_json() if r.dpo else {},
                                                  "correct": r.correct, "train_correct": r.train_correct}
                                              for m, r in runs.items()})
    return SizeResult(size, runs, positives, len(samples) - positives, credits)


def run_sizes(exp: Experiment, base: str, task: TaskFamily, train_pool: list[Record], test: list[Record],
              out_dir: Path, log: Callable[[str], None] = print) -> list[SizeResult]:
    """Every method at every data size, smallest first, each size under out_dir/n<size>."""
    return [run_size(exp, base, task, train_pool, test, n, Path(out_dir) / f"n{n}", log)
            for n in sorted(exp.negatives.data_sizes)]


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
    dpo_epoch_kept: float | None = None
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
            if run.dpo:
                row.dpo_epoch_kept, row.held_out_pairs = run.dpo.epoch, run.dpo.held_out_pairs
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


def _multiple(sizes: Sequence[float], sft_errors: Sequence[float], size: float, err: float) -> float:
    """SFT data to match `err`, over `size`: inf beyond SFT's best point, 0 when worse than its every point."""
    need = sft_size_to_match(sizes, sft_errors, err)
    if need is not None:
        return need / size
    if err < min(sft_errors):
        return math.inf
    if err > max(sft_errors):
        return 0.0
    return math.nan  # equal to a flat stretch of the curve


def multiple_interval(outcomes: dict[int, dict[str, Sequence[bool]]], method: str, size: int, boot: int = 2000,
                      seed: int = 0) -> tuple[float, float] | None:
    """95% percentile-bootstrap interval of the efficiency multiple at `size`, resampling the test problems.

    Every model answered the same test problems, so one resample of problem indices is applied to SFT at
    every size and to the method at once (the curves stay paired). Resamples beyond SFT's curve count as
    inf (above its largest size) or 0 (worse than its smallest), so the bounds say where the interval leaves it.
    """
    sft = {n: np.asarray(o["sft"], bool) for n, o in outcomes.items() if o.get("sft")}
    mine = outcomes.get(size, {}).get(method)
    if len(sft) < 2 or not mine:
        return None
    mine = np.asarray(mine, bool)
    sizes = sorted(sft)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(mine), size=(boot, len(mine)))
    sft_err = np.stack([1 - sft[n][idx].mean(1) for n in sizes], 1)
    my_err = 1 - mine[idx].mean(1)
    vals = np.array([_multiple(sizes, list(e), size, m) for e, m in zip(sft_err, my_err)])
    vals = vals[~np.isnan(vals)]
    if not len(vals):
        return None
    return float(np.percentile(vals, 2.5, method="lower")), float(np.percentile(vals, 97.5, method="higher"))


def _fmt_multiple(x: float, lo_bound: float, hi_bound: float) -> str:
    """inf: beyond SFT's largest size ("> hi_bound"); 0: worse than its smallest ("< lo_bound")."""
    return f"> {hi_bound:.2f}x" if math.isinf(x) else f"< {lo_bound:.2f}x" if x == 0 else f"{x:.2f}x"



def efficiency(rows: Sequence[TableRow], method: str, min_drop: float = MIN_SFT_DROP, alpha: float = 0.05,
               outcomes: dict[int, dict[str, Sequence[bool]]] | None = None) -> list[EfficiencyRow]:
    """At each size: how much synthetic data SFT needs to match `method`, or why that is not measurable.

    Measurable only when both curves are measured, SFT's curve falls by at least `min_drop` over the
    sizes (a flat curve maps every error to any size), and the method differs from SFT at that size
    (McNemar p < alpha). A method better than SFT's best point gives a lower bound ("> k x").
    With `outcomes` (size -> method -> per-test-problem correctness), each measured multiple gets a 95%
    bootstrap interval over the test problems (`multiple_lo`, `multiple_hi`).
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
        elif p is None or p >= alpha:
            row.reading = (f"not measurable: not distinct from SFT at this size (p = {p:.2f})" if p is not None
                           else "not measurable: no paired test")
        else:
            need = sft_size_to_match([s for s, _ in sft], [e for _, e in sft], err)
            if need is not None:
                row.multiple, row.reading = need / size, f"{need / size:.2f}x"
            elif err < min(e for _, e in sft):
                bound = max(s for s, _ in sft) / size
                row.multiple, row.reading = bound, f"> {bound:.2f}x (beyond SFT's largest size)"
            else:
                bound = min(s for s, _ in sft) / size
                row.reading = f"< {bound:.2f}x: worse than SFT at every measured size"
            ci = multiple_interval(outcomes, method, size) if outcomes else None
            if ci is not None:
                row.multiple_lo, row.multiple_hi = ci
                hi_bound, lo_bound = max(s for s, _ in sft) / size, min(s for s, _ in sft) / size
                row.reading += (f" [95% {_fmt_multiple(ci[0], lo_bound, hi_bound)}, "
                                f"{_fmt_multiple(ci[1], lo_bound, hi_bound)}]")
        if kept is False:
            row.reading += "; it broke the policy (kept-skill check failed)"
        out.append(row)
    return out


EFFICIENCY_METHODS = ("rft_self", "per_step_dpo", "naive_dpo", "rft", "adv_rft")  # the order the table lists them


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
    """The SFT policy's own verified positives at one size (its RFT-on-D+ data), none if that method did not run."""
    path = Path(out_dir) / f"n{size}" / "rft_self.jsonl"
    return [Record(**r) for r in io.read_jsonl(path)] if path.exists() else []


def likelihoods(base: str, train_pool: list[Record], results: Sequence[SizeResult], out_dir: Path) -> list[NLLRow]:
    """Figure 3 at the largest size: `response_nll` of its synthetic problems (D_syn) and of the SFT policy's own
    positives (D+) under the base model; none without D+."""
    largest = results[-1].size
    d_plus = self_positives(out_dir, largest)
    return response_nll(base, {"D_syn": train_pool[:largest], "D+": d_plus}) if d_plus else []


def nll_table(nll: Sequence[NLLRow]) -> pd.DataFrame | None:
    """Mean, spread and count of the per-token NLL of each set; None without NLL rows."""
    if not nll:
        return None
    return pd.DataFrame([asdict(r) for r in nll]).groupby("set")["nll"].agg(["mean", "std", "count"]).reset_index()


def nll_means(nll: Sequence[NLLRow]) -> dict[str, float]:
    """The mean per-token NLL of each set (what scaling.json keeps)."""
    return pd.DataFrame([asdict(r) for r in nll]).groupby("set")["nll"].mean().to_dict() if nll else {}


def method_values(exp: Experiment, task: TaskFamily, results: Sequence[SizeResult], test: list[Record]) -> list[ValueRow]:
    """Figure 7 at the largest size: `values_by_method` of every trained method on the first `value_problems` test
    problems; none when `value_problems` is 0."""
    P = exp.negatives
    ckpts = {m: r.checkpoint for m, r in results[-1].runs.items() if r.checkpoint is not None}
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
                                                                    exp.seed + 2)):
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

    def advantages_figure(self) -> go.Figure | None:
        """Figure 10 at the largest size."""
        return figures.advantages_figure(advantages_by_step(self.sizes[-1].credits))

    def nll_figure(self) -> go.Figure | None:
        return figures.nll_figure(self.nll)

    @cached_property
    def values(self) -> list[ValueRow]:
        """Figure 7's rows, sampled on first use (every later call reuses them)."""
        return method_values(self.exp, self.task, self.sizes, self.test)

    def values_figure(self) -> go.Figure | None:
        return figures.values_figure(self.values)

    @property
    def metrics(self) -> Metrics:
        return stage_metrics(self.result.rows, self.result.efficiency, self.checks)


def run(ctx: StageContext, log: Callable[[str], None] = print) -> ScalingRun:
    """06 for the cell's base: every method at every size under the budget rule, the table, the efficiency readings,
    Figure 3's likelihoods, SFT's learning checks; scaling.json saved."""
    exp, base = ctx.exp, ctx.base_path()
    P = exp.negatives
    task, train_pool, test = draw_problems(exp)
    sizes = run_sizes(exp, base, task, train_pool, test, ctx.dir, log)
    rows = table(sizes, P.kept_skill_drop)
    checks = sft_checks(sizes, test)
    eff = efficiencies(rows, sizes, P.methods)
    nll = likelihoods(base, train_pool, sizes, ctx.dir)
    result = ScalingResult(budget_rule=budget_rule(P), min_pairs=P.min_pairs, rows=rows, efficiency=eff,
                           outcomes=outcomes_by_size(sizes), nll=nll_means(nll))
    result.save(ctx.dir)
    return ScalingRun(exp, task, test, sizes, result, checks, nll)
