"""Notebook 06's read-outs of its runs: the table (error, intervals, McNemar against SFT, the kept-skill check), the
efficiency readings, SFT's learning checks, Figure 3's likelihoods and Figure 7's step values.

Each takes the runs (`revlib.stages.scaling_result.SizeResult`) and returns rows of what scaling.json saves; the
statistics behind them are `revlib.evaluation.efficiency`, the kept-skill rule `revlib.evaluation.trained`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from revlib.core import io, stats
from revlib.core.records import Record
from revlib.data import negatives
from revlib.evaluation import efficiency, learning, trained
from revlib.evaluation.efficiency import EfficiencyRow
from revlib.evaluation.learning import Check
from revlib.modeling import likelihood
from revlib.modeling.train import Checkpoint
from revlib.params import Experiment
from revlib.params.learning import LearningRules
from revlib.stages.scaling_result import DPO_METHODS, MethodRun, NLLRow, SizeResult, TableRow, ValueRow
from revlib.tasks.base import TaskFamily

# the methods the efficiency table reads, in the order it lists them
EFFICIENCY_METHODS = ("rft_self", "per_step_dpo", "per_step_dpo_under", "naive_dpo", "rft", "adv_rft")


def kept_skill_row(run: MethodRun, sft: MethodRun, rules: LearningRules) -> tuple[float, bool, str] | None:
    """(its accuracy on the size's training problems, whether it kept SFT's skill there, the note when it did not);
    None when either answered none (not trained)."""
    if not run.train_correct or not sft.train_correct:
        return None
    n, acc, base = len(run.train_correct), sum(run.train_correct), sum(sft.train_correct)
    kept = trained.kept_skill(base / n, acc / n, rules)
    return acc / n, kept.kept, f"training problems {acc}/{n} vs SFT {base}/{n}" + (
        "" if kept.kept else f": broke the policy (fell more than {kept.max_drop:.0%})")


def table(results: Sequence[SizeResult], rules: LearningRules) -> list[TableRow]:
    """One row per (size, method): error with its interval, training examples (pairs for DPO), optimizer steps,
    McNemar p against SFT, the kept-skill check, and why a method was not trained."""
    rows = []
    for res in results:
        sft = res.runs["sft"]
        for method, run in res.runs.items():
            row = TableRow(size=res.size, method=method, examples=run.examples, steps=run.steps, error=run.error,
                           n_test=len(run.correct), skip=run.skip)
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
            kept = kept_skill_row(run, sft, rules) if method != "sft" else None
            if kept is not None:
                row.train_accuracy, row.kept_skill = kept[0], kept[1]
            elif method == "sft" and run.train_correct:
                row.train_accuracy = sum(run.train_correct) / len(run.train_correct)
            row.note = run.note or (kept[2] if kept is not None and not kept[1] else "")
            rows.append(row)
    return rows


def outcomes_by_size(results: Sequence[SizeResult]) -> dict[int, dict[str, list[bool]]]:
    """size -> method -> per-test-problem correctness."""
    return {r.size: {m: run.correct for m, run in r.runs.items()} for r in results}


def efficiencies(rows: Sequence[TableRow], results: Sequence[SizeResult], methods: Sequence[str]
                 ) -> dict[str, list[EfficiencyRow]]:
    """`efficiency.efficiency` of each method the experiment ran, with bootstrap intervals over its test problems."""
    outcomes = outcomes_by_size(results)
    return {m: efficiency.efficiency(rows, m, outcomes=outcomes) for m in EFFICIENCY_METHODS if m in methods}


def multiples(outcomes: dict[int, dict[str, list[bool]]], methods: Sequence[str]
              ) -> dict[str, efficiency.MultipleReading]:
    """Each method's efficiency multiple (the 2x and 8x rows read these), for the methods that ran."""
    return {m: r for m in EFFICIENCY_METHODS
            if m in methods and (r := efficiency.multiple_reading(outcomes, m)) is not None}


def sft_checks(results: Sequence[SizeResult], test: Sequence[Record], min_drop: float = efficiency.MIN_SFT_DROP
               ) -> list[Check]:
    """Did SFT learn, and learn more from more data? Its test error falls by `min_drop` from the smallest to the
    largest size, and at the largest size it answers above chance."""
    by_size = sorted(results, key=lambda r: r.size)
    first, last = by_size[0].runs["sft"], by_size[-1].runs["sft"]
    return [learning.change("SFT test error, smallest to largest data size", first.error, last.error, -1, min_drop),
            learning.accuracy(f"SFT accuracy at n={last.size}", sum(last.correct), len(last.correct),
                              stats.chance_accuracy([p.gold for p in test]))]


def self_positives(out_dir: Path, size: int) -> list[Record]:
    """The SFT policy's own verified positives at one size (D+: its RFT-on-D+ data), none if that method did not run."""
    path = Path(out_dir) / f"n{size}" / "rft_self.jsonl"
    return [Record(**r) for r in io.read_jsonl(path)] if path.exists() else []


def likelihoods(base: str, train_pool: list[Record], size: int, out_dir: Path) -> list[NLLRow]:
    """Figure 3 at one method size: each response's mean per-token NLL under the base, of the teacher's chains of the
    size's problems (D_syn) and of the SFT policy's own verified positives for them (D+); none without D+."""
    d_plus = self_positives(out_dir, size)
    if not d_plus:
        return []
    sets = {"D_syn": train_pool[:size], "D+": d_plus}
    every = [r for records in sets.values() for r in records]
    nll = iter(likelihood.response_nll(base, every))
    return [NLLRow(name, r.id, next(nll)) for name, records in sets.items() for r in records]


def nll_means(nll: Sequence[NLLRow]) -> dict[str, float]:
    """The mean per-token NLL of each set (what scaling.json keeps)."""
    return pd.DataFrame([{"set": r.set, "nll": r.nll} for r in nll]).groupby("set")["nll"].mean().to_dict() if nll \
        else {}


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


def method_values(exp: Experiment, task: TaskFamily, result: SizeResult, test: list[Record]) -> list[ValueRow]:
    """Figure 7 at one size: `values_by_method` of every trained method on the first `value_problems` test
    problems; none when `value_problems` is 0."""
    P = exp.negatives
    ckpts = {m: r.checkpoint for m, r in result.runs.items() if r.checkpoint is not None}
    return values_by_method(exp, task, ckpts, test[: P.value_problems]) if P.value_problems else []
