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

from revlib.core import stats


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
