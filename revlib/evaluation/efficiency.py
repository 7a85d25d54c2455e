"""How much synthetic data SFT needs to match a method: 06's efficiency statistics, from per-test-problem outcomes.

SFT's test error against data size is read as its non-increasing fit (more data cannot cost accuracy: a point above a
smaller size's is test noise), interpolated in log n (`sft_need`). A method's efficiency multiple is the SFT data that
matches its error over its own n, censored past the curve's ends and never infinite, with a percentile-bootstrap
interval over the test problems (`multiple_reading`). `value_spread` says how exact the Monte-Carlo step values are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from pydantic import BaseModel

from revlib.core import stats
from revlib.data.negatives import StepCredit

# SFT's test error must fall by at least this from the smallest to the largest size: a flatter curve maps every
# error to any size (no efficiency multiple) and says more data taught SFT nothing
MIN_SFT_DROP = 0.1


class Point(Protocol):
    """One (size, method) of a scaling table, as `efficiency` reads it."""

    size: int
    method: str
    error: float | None
    p_vs_sft: float | None
    kept_skill: bool | None


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


def efficiency(rows: Sequence[Point], method: str, min_drop: float = MIN_SFT_DROP,
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


def value_spread(credits: Sequence[StepCredit], rollouts: int, best_of: int | None, rule: str
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
