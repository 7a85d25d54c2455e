"""The scaling experiment's read-outs: efficiency multiples on flat, crossing and never-crossing curves."""

from __future__ import annotations

import pytest

from revlib import scaling, stats


def _rows(sft: dict[int, float], other: dict[int, float], p: float = 0.001, method: str = "per_step_dpo"):
    rows = [{"size": n, "method": "sft", "error": e} for n, e in sft.items()]
    rows += [{"size": n, "method": method, "error": e, "p_vs_sft": p} for n, e in other.items()]
    return rows


def test_sft_size_to_match_interpolates_in_log_size():
    sizes, errs = [10, 100, 1000], [0.8, 0.4, 0.2]
    assert scaling.sft_size_to_match(sizes, errs, 0.4) == pytest.approx(100)
    assert scaling.sft_size_to_match(sizes, errs, 0.3) == pytest.approx(10 ** 2.5)
    assert scaling.sft_size_to_match(sizes, errs, 0.1) is None  # not reached: no extrapolation


def test_efficiency_not_measurable_on_a_flat_sft_curve():
    out = scaling.efficiency(_rows({100: 0.98, 200: 1.0, 400: 0.97}, {100: 0.5}), "per_step_dpo")
    assert out[0]["multiple"] is None and "flat" in out[0]["reading"]


def test_efficiency_reads_a_multiple_where_the_curves_cross():
    out = scaling.efficiency(_rows({100: 0.8, 200: 0.6, 400: 0.4}, {100: 0.6}), "per_step_dpo")
    assert out[0]["multiple"] == pytest.approx(2.0) and out[0]["reading"] == "2.00x"


def test_efficiency_never_crossing_gives_a_lower_bound_or_says_worse():
    better = scaling.efficiency(_rows({100: 0.8, 200: 0.6, 400: 0.4}, {100: 0.2}), "per_step_dpo")
    assert better[0]["multiple"] == pytest.approx(4.0) and better[0]["reading"].startswith("> 4.00x")
    worse = scaling.efficiency(_rows({100: 0.8, 200: 0.6, 400: 0.4}, {400: 0.9}), "per_step_dpo")
    assert worse[0]["multiple"] is None and "worse" in worse[0]["reading"]


def test_efficiency_not_measurable_when_not_distinct_from_sft():
    out = scaling.efficiency(_rows({100: 0.8, 200: 0.6, 400: 0.4}, {100: 0.75}, p=0.4), "per_step_dpo")
    assert out[0]["multiple"] is None and "not distinct" in out[0]["reading"]


def test_mcnemar_and_intervals():
    a = [True] * 30 + [False] * 10
    b = [False] * 30 + [False] * 10
    assert stats.mcnemar(a, b) < 1e-6
    assert stats.mcnemar(a, a) == 1.0
    lo, hi = stats.wilson(45, 50)
    assert lo < 0.9 < hi and 0.77 < lo < 0.8
    lo, hi = stats.diff_interval(45, 50, 25, 50)
    assert 0.2 < lo < 0.4 < hi < 0.6
