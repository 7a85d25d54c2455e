"""Intervals and tests every report and the findings page share."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import scipy.stats

Z95 = 1.959963984540054


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (0, 1 when n is 0); k may be fractional (an averaged accuracy)."""
    if n <= 0:
        return 0.0, 1.0
    k = min(max(k, 0), n)
    if float(k).is_integer():  # scipy gives exactly 0 and 1 at k = 0 and k = n
        level = math.erf(z / math.sqrt(2))  # the two-sided confidence that z stands for
        ci = scipy.stats.binomtest(int(k), n).proportion_ci(confidence_level=level, method="wilson")
        lo, hi = ci.low, ci.high
    else:  # scipy's binomtest takes whole counts only, so an averaged accuracy keeps the score formula
        p = k / n
        den = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / den
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
        lo, hi = centre - half, centre + half
    return max(0.0, float(lo)), min(1.0, float(hi))


def diff_interval(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 - p2 (independent samples)."""
    # scipy has no interval for a difference of two independent proportions: Newcombe's combination of the two Wilsons
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    p1, p2 = (k1 / n1 if n1 else 0.0), (k2 / n2 if n2 else 0.0)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value for paired outcomes (same problems, two models)."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need equal lengths, got {len(a)} and {len(b)}")
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    n = only_a + only_b
    if n == 0:
        return 1.0
    # the exact test is a two-sided binomial test of the discordant pairs against 1/2
    return float(scipy.stats.binomtest(min(only_a, only_b), n, 0.5).pvalue)


def bootstrap_mean(values: Sequence[float], reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of a mean."""
    # not scipy.stats.bootstrap: it draws with numpy's generator (and defaults to BCa), so the intervals would change
    vals = list(values)
    if not vals:
        return math.nan, math.nan
    rng = random.Random(seed)
    n = len(vals)
    means = sorted(sum(vals[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    return means[int(0.025 * reps)], means[min(reps - 1, int(0.975 * reps))]


def chance_accuracy(golds: Sequence[str]) -> float:
    """Accuracy of always answering the commonest gold answer."""
    golds = list(golds)
    return max(golds.count(g) for g in set(golds)) / len(golds) if golds else 0.0


def paired_difference(a: Sequence[float], b: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """Mean of a - b over paired outcomes (the same problems, two models) with its normal interval:
    (mean, lo, hi); nan for no pairs."""
    d = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(d)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / max(n - 1, 1)
    half = z * math.sqrt(var / n)
    return mean, mean - half, mean + half


def difference_of_differences(k: Sequence[tuple[int, int]], z: float = Z95) -> tuple[float, float, float]:
    """(p1 - p0) - (q1 - q0) for four independent proportions given as (k, n) in the order p1, p0, q1, q0, with
    its normal interval: (effect, lo, hi)."""
    (a1, m1), (a0, m0), (b1, l1), (b0, l0) = k
    effect = (a1 / m1 - a0 / m0) - (b1 / l1 - b0 / l0)
    var = sum((c / n) * (1 - c / n) / n for c, n in k)
    half = z * math.sqrt(var)
    return effect, effect - half, effect + half


def mean_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) for two independent samples, with the interval that combines each mean's bootstrap interval
    (Newcombe's square-root rule): (effect, lo, hi)."""
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    lo_a, hi_a = bootstrap_mean(a)
    lo_b, hi_b = bootstrap_mean(b)
    effect = mean_a - mean_b
    return (effect, effect - math.hypot(mean_a - lo_a, hi_b - mean_b),
            effect + math.hypot(hi_a - mean_a, mean_b - lo_b))
