"""Did a stage's models learn? Accuracy against chance, loss against its floor, and a gate that fails the cell.

A stage whose models learned nothing has failed even when every cell ran: its figures would be noise.
Each notebook builds a few `Check` rows, shows them, records them in its metrics, and calls `require`,
which raises (after the results are saved) when a check fails and the experiment asks for learning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from revlib import stats


class NotLearned(RuntimeError):
    """The stage ran, but its models did not learn what the stage exists to teach them."""


@dataclass
class Check:
    what: str
    value: float
    reference: float
    passed: bool
    detail: str

    def row(self) -> dict[str, Any]:
        return {"check": self.what, "value": self.value, "reference": self.reference,
                "learned": "yes" if self.passed else "NO", "how it was judged": self.detail}


def accuracy(what: str, correct: int, n: int, chance: float, minimum: float | None = None) -> Check:
    """Learned when the 95% Wilson interval lies above chance (and, if given, the accuracy reaches `minimum`)."""
    lo, hi = stats.wilson(correct, n)
    acc = correct / n if n else 0.0
    passed = n > 0 and lo > chance and (minimum is None or acc >= minimum)
    bar = f" and at least {minimum:.0%}" if minimum is not None else ""
    return Check(what, acc, chance, passed,
                 f"{correct}/{n} = {acc:.1%} [95% {lo:.1%}, {hi:.1%}]; needs the interval above chance {chance:.1%}{bar}")


def loss(what: str, first: float, last: float, floor: float = 0.0, fraction: float = 0.5) -> Check:
    """Learned when the loss closed at least `fraction` of the gap between its first value and its floor."""
    closed = (first - last) / (first - floor) if first > floor else 0.0
    return Check(what, last, floor, closed >= fraction,
                 f"from {first:.4f} to {last:.4f} against a floor of {floor:g}: {closed:.0%} of the gap closed "
                 f"(needs {fraction:.0%})")


def change(what: str, before: float, after: float, direction: int, minimum: float) -> Check:
    """Learned when a quantity moved by at least `minimum` in `direction` (+1 up, -1 down)."""
    moved = (after - before) * direction
    return Check(what, after, before, moved >= minimum,
                 f"from {before:.4f} to {after:.4f}: moved {moved:+.4f} in the expected direction (needs {minimum:g})")


def table(checks: Sequence[Check]) -> pd.DataFrame:
    return pd.DataFrame([c.row() for c in checks])


def metrics(checks: Sequence[Check]) -> dict[str, Any]:
    out: dict[str, Any] = {"learned": all(c.passed for c in checks)}
    for c in checks:
        out[f"learned/{c.what}"] = c.passed
    return out


def require(checks: Sequence[Check], enforce: bool = True) -> None:
    """Raise NotLearned naming the failed checks (after the stage has saved its results)."""
    failed = [c for c in checks if not c.passed]
    if failed and enforce:
        raise NotLearned("the models of this stage did not learn: " + "; ".join(f"{c.what}: {c.detail}" for c in failed)
                         + ". Its figures are noise; see the 'Did the models learn?' table for what to change.")


def chance_accuracy(golds: Sequence[str]) -> float:
    """Accuracy of always answering the commonest gold answer."""
    golds = list(golds)
    return max(golds.count(g) for g in set(golds)) / len(golds) if golds else 0.0


def greedy_outcomes(ckpt: Any, records: Sequence[Any], max_new_tokens: int = 64) -> list[bool]:
    """Whether a checkpoint answers each record right, greedily, graded by the record's task family."""
    from revlib import negatives
    from revlib.params.negatives import Sampling
    from revlib.tasks import get_task

    engine = negatives.policy_engine(ckpt, Sampling(max_new_tokens=max_new_tokens, engine="hf", prefix_batch=64),
                                     temperature=0.0)
    out: list[bool] = []
    for name in dict.fromkeys(r.task for r in records):
        group = [r for r in records if r.task == name]
        out += negatives.outcomes(engine, get_task(name), group)
    return out


# On real text the loss has no known floor: it must fall by this fraction of its first value (held-out ALP in 04
# is the real test of learning there)
REAL_TEXT_LOSS_FALL = 0.05
CHECK_PROBLEMS = 100  # held-out problems a training stage answers to show it learned
ID_TEST_SET = {"forward": "test_forward", "reverse": "test_reverse", "half_mix": "test_mix", "mix": "test_mix"}


def _in_distribution(data_dir: Any, train_set: str) -> list[Any]:
    """Up to CHECK_PROBLEMS held-out problems of a training set's own direction(s); none for non-task records."""
    from revlib import data
    from revlib.tasks import REGISTRY

    test = data.load_set(data_dir, ID_TEST_SET[train_set])
    if not test or not all(r.task in REGISTRY for r in test):
        return []
    if train_set in ("mix", "half_mix"):
        return test[: CHECK_PROBLEMS // 2] + test[len(test) // 2:][: CHECK_PROBLEMS // 2]
    return test[:CHECK_PROBLEMS]


def kept_skill_checks(sft: Any, dpo: Any, data_dir: Any, train_set: str, max_drop: float = 0.15) -> list[Check]:
    """03: DPO kept what SFT learned: greedy in-distribution accuracy fell by at most `max_drop`.

    Log-probabilities can move the right way while generation collapses (lr 5e-4 took 98% to 25%).
    """
    picked = _in_distribution(data_dir, train_set)
    if not picked:
        return []
    before, after = sum(greedy_outcomes(sft, picked)), sum(greedy_outcomes(dpo, picked))
    n = len(picked)
    return [Check(f"greedy accuracy on {ID_TEST_SET[train_set]} kept after DPO", after / n, before / n,
                  after / n >= before / n - max_drop,
                  f"SFT {before}/{n} = {before / n:.1%}, after DPO {after}/{n} = {after / n:.1%} "
                  f"(may fall by at most {max_drop:.0%})")]


def sft_checks(ckpt: Any, data_dir: Any, train_set: str, log_rows: Sequence[dict[str, Any]]) -> list[Check]:
    """02: in-distribution greedy accuracy against chance, and the loss against its floor."""
    checks = []
    rows = [r for r in log_rows if r.get("loss") is not None]
    picked = _in_distribution(data_dir, train_set)
    if len(rows) >= 2 and picked:
        checks.append(loss("SFT loss", rows[0]["loss"], rows[-1]["loss"]))
    elif len(rows) >= 2:  # real text: no floor is known, and single batches vary; the last quarter's mean
        tail = rows[-max(1, len(rows) // 4):]
        checks.append(loss("SFT loss (real text: mean of the last quarter of steps)", rows[0]["loss"],
                           sum(r["loss"] for r in tail) / len(tail), fraction=REAL_TEXT_LOSS_FALL))
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


def benchmark_checks(results: Any, data_dir: Any) -> list[Check]:
    """05: each SFT model answers its own direction's synthetic test set above chance."""
    from revlib import data

    out = []
    for direction in ("forward", "reverse"):
        rows = results[(results["stage"] == "sft") & (results["train_set"] == direction)
                       & (results["task"] == f"synthetic_{direction}")]
        if rows.empty:
            continue
        r = rows.iloc[0]
        n = int(r["problems"])
        golds = [x.gold for x in data.load_set(data_dir, f"test_{direction}")] if data_dir else []
        out.append(accuracy(f"SFT on {direction}, tested on {direction} (in distribution)", round(float(r["accuracy"]) * n),
                            n, chance_accuracy(golds)))
    return out
