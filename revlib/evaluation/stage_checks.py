"""The checks a training stage runs on what it trained: 02's SFT models, 03's DPO runs, 05's SFT rows.

Each answers "did this model learn?" on held-out problems of its own direction, graded by the task's verifier
(revlib.tasks.grading, the grader 05 uses too), or on the training logs trl wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from revlib.core.records import Record
from revlib.core.stats import chance_accuracy
from revlib.data import negatives
from revlib.data.sets import load_set
from revlib.evaluation import trained
from revlib.evaluation.learning import Check, accuracy, change
from revlib.modeling.train import Checkpoint
from revlib.params.learning import LearningRules
from revlib.params.negatives import Sampling
from revlib.tasks import REGISTRY, get_task


def greedy_outcomes(ckpt: Checkpoint, records: Sequence[Record], max_new_tokens: int = 64) -> list[bool]:
    """Whether a checkpoint answers each record right, greedily, graded by the record's task family."""
    engine = negatives.policy_engine(ckpt, Sampling(max_new_tokens=max_new_tokens, engine="hf", prefix_batch=64),
                                     temperature=0.0)
    out: list[bool] = []
    for name in dict.fromkeys(r.task for r in records):
        group = [r for r in records if r.task == name]
        out += negatives.outcomes(engine, get_task(name), group)
    return out


CHECK_PROBLEMS = 100  # held-out problems a training stage answers to show it learned
ID_TEST_SET = {"forward": "test_forward", "reverse": "test_reverse", "half_mix": "test_mix", "mix": "test_mix"}


def _in_distribution(data_dir: Path, train_set: str) -> list[Record]:
    """Up to CHECK_PROBLEMS held-out problems of a training set's own direction(s); none for non-task records."""
    test = load_set(data_dir, ID_TEST_SET[train_set])
    if not test or not all(r.task in REGISTRY for r in test):
        return []
    if train_set in ("mix", "half_mix"):
        return test[: CHECK_PROBLEMS // 2] + test[len(test) // 2:][: CHECK_PROBLEMS // 2]
    return test[:CHECK_PROBLEMS]


def kept_skill_checks(sft: Checkpoint, dpo: Checkpoint, data_dir: Path, train_set: str,
                      rules: LearningRules | None = None) -> list[Check]:
    """03: DPO kept what SFT learned (`trained.kept_skill` on greedy in-distribution accuracy).

    Log-probabilities can move the right way while generation collapses (lr 5e-4 took 98% to 25%).
    """
    picked = _in_distribution(data_dir, train_set)
    if not picked:
        return []
    before, after = sum(greedy_outcomes(sft, picked)), sum(greedy_outcomes(dpo, picked))
    n = len(picked)
    kept = trained.kept_skill(before / n, after / n, rules or LearningRules())
    return [Check(f"greedy accuracy on {ID_TEST_SET[train_set]} kept after DPO", after / n, before / n, kept.kept,
                  f"SFT {before}/{n} = {before / n:.1%}, after DPO {after}/{n} = {after / n:.1%} "
                  f"(may fall by at most {kept.max_drop:.0%})")]


def sft_checks(ckpt: Checkpoint, data_dir: Path, train_set: str, log_rows: Sequence[dict[str, Any]],
               rules: LearningRules | None = None) -> list[Check]:
    """02: in-distribution greedy accuracy against chance, and whether SFT trained (`trained.sft_trained`)."""
    rules = rules or LearningRules()
    checks = []
    rows = [r for r in log_rows if r.get("loss") is not None]
    picked = _in_distribution(data_dir, train_set)
    if len(rows) >= 2 and picked:
        checks.append(trained.sft_trained("SFT loss", rows[0]["loss"], rows[-1]["loss"], rules))
    elif len(rows) >= 2:  # real text: no floor is known, and single batches vary; the last quarter's mean
        tail = rows[-max(1, len(rows) // 4):]
        checks.append(trained.sft_trained("SFT loss (real text: mean of the last quarter of steps)", rows[0]["loss"],
                                          sum(r["loss"] for r in tail) / len(tail), rules, real_text=True))
    if picked:
        won = greedy_outcomes(ckpt, picked)
        checks.append(accuracy(f"greedy accuracy on {ID_TEST_SET[train_set]} (in distribution)", sum(won), len(won),
                               chance_accuracy([r.gold for r in picked])))
    return checks


def dpo_checks(log_rows: Sequence[dict[str, Any]], beta: float) -> list[Check]:
    """03: on the pairs it trains on, the policy moved away from its reference: log p(rejected) fell below the
    reference's and the reward margin grew.

    trl logs rewards = beta * (log pi - log pi_ref), summed over each response, per batch: policy and reference on
    the same pairs. The raw summed log p of one batch against another's compares different responses (real r1k
    batches differ by 100 nats), so it is not used. A move of 1 nat is the least a reader can see.
    """
    rows = [r for r in log_rows if r.get("rewards/rejected") is not None]
    if len(rows) < 2:
        return []
    # the last tenth averaged (single batches are noisy); a run of a few steps is judged on its second half
    tail = rows[len(rows) // 2:] if len(rows) < 20 else rows[-max(1, len(rows) // 10):]
    mean = lambda key, rs: sum(r[key] for r in rs) / len(rs)  # noqa: E731
    return [change("log p(rejected) below the reference's on the same pairs (rewards/rejected / beta), summed over "
                   "the response", 0.0, mean("rewards/rejected", tail) / beta, -1, 1.0),
            change("reward margin beta*(log-ratio chosen - rejected)", 0.0, mean("rewards/margins", tail), 1, 0.1 * beta)]


def benchmark_checks(results: pd.DataFrame, data_dir: Path | None) -> list[Check]:
    """05: each SFT model answers its own direction's synthetic test set above chance."""
    out = []
    for direction in ("forward", "reverse"):
        rows = results[(results["stage"] == "sft") & (results["train_set"] == direction)
                       & (results["task"] == f"synthetic_{direction}")]
        if rows.empty:
            continue
        r = rows.iloc[0]
        n = int(r["problems"])
        golds = [x.gold for x in load_set(data_dir, f"test_{direction}")] if data_dir else []
        out.append(accuracy(f"SFT on {direction}, tested on {direction} (in distribution)", round(float(r["accuracy"]) * n),
                            n, chance_accuracy(golds)))
    return out
