"""Confidence intervals for accuracies over few problems (AIME has 30)."""

from __future__ import annotations

from revlib.stats import wilson

__all__ = ["format_accuracy", "wilson"]


def format_accuracy(acc: float, lo: float, hi: float, n: int) -> str:
    """"41.2 [36.9, 45.6] n=500" in percent."""
    return f"{100 * acc:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] n={n}"
