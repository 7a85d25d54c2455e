"""The scaling experiment's read-outs: efficiency multiples on flat, crossing and never-crossing curves."""

from __future__ import annotations

import pytest

from revlib.stages import scaling
from revlib.core import stats


def _rows(sft: dict[int, float], other: dict[int, float], p: float = 0.001, method: str = "per_step_dpo"):
    rows = [scaling.TableRow(size=n, method="sft", examples=n, error=e) for n, e in sft.items()]
    rows += [scaling.TableRow(size=n, method=method, examples=n, error=e, p_vs_sft=p) for n, e in other.items()]
    return rows


def test_sft_size_to_match_interpolates_in_log_size():
    sizes, errs = [10, 100, 1000], [0.8, 0.4, 0.2]
    assert scaling.sft_size_to_match(sizes, errs, 0.4) == pytest.approx(100)
    assert scaling.sft_size_to_match(sizes, errs, 0.3) == pytest.approx(10 ** 2.5)
    assert scaling.sft_size_to_match(sizes, errs, 0.1) is None  # not reached: no extrapolation


def test_efficiency_not_measurable_on_a_flat_sft_curve():
    out = scaling.efficiency(_rows({100: 0.98, 200: 1.0, 400: 0.97}, {100: 0.5}), "per_step_dpo")
    assert out[0].multiple is None and "flat" in out[0].reading


def test_efficiency_reads_a_multiple_where_the_curves_cross():
    out = scaling.efficiency(_rows({100: 0.8, 200: 0.6, 400: 0.4}, {100: 0.6}), "per_step_dpo")
    assert out[0].multiple == pytest.approx(2.0) and out[0].reading == "2.00x"


def test_efficiency_never_crossing_gives_a_lower_bound_or_says_worse():
    better = scaling.efficiency(_rows({100: 0.8, 200: 0.6, 400: 0.4}, {100: 0.2}), "per_step_dpo")
    assert better[0].multiple == pytest.approx(4.0) and better[0].reading.startswith("> 4.00x")
    worse = scaling.efficiency(_rows({100: 0.8, 200: 0.6, 400: 0.4}, {400: 0.9}), "per_step_dpo")
    assert worse[0].multiple is None and "worse" in worse[0].reading


def test_efficiency_not_measurable_when_not_distinct_from_sft():
    out = scaling.efficiency(_rows({100: 0.8, 200: 0.6, 400: 0.4}, {100: 0.75}, p=0.4), "per_step_dpo")
    assert out[0].multiple is None and "not distinct" in out[0].reading


def test_mcnemar_and_intervals():
    a = [True] * 30 + [False] * 10
    b = [False] * 30 + [False] * 10
    assert stats.mcnemar(a, b) < 1e-6
    assert stats.mcnemar(a, a) == 1.0
    lo, hi = stats.wilson(45, 50)
    assert lo < 0.9 < hi and 0.77 < lo < 0.8
    lo, hi = stats.diff_interval(45, 50, 25, 50)
    assert 0.2 < lo < 0.4 < hi < 0.6


def test_multiple_interval_brackets_the_point_reading_and_leaves_the_curve_when_it_should():
    n = 400
    # SFT errors 0.8 / 0.6 / 0.4 at 100 / 200 / 400 on the same test problems; the method at 100: error 0.6
    sft = {100: [i % 5 == 0 for i in range(n)], 200: [i % 5 < 2 for i in range(n)], 400: [i % 5 < 3 for i in range(n)]}
    mine = [i % 5 in (0, 3) for i in range(n)]
    outcomes = {size: {"sft": o} for size, o in sft.items()}
    outcomes[100]["per_step_dpo"] = mine
    lo, hi = scaling.multiple_interval(outcomes, "per_step_dpo", 100, boot=500)
    assert lo < 2.0 < hi and 1.2 < lo and hi < 3.5
    rows = _rows({k: 1 - sum(v) / n for k, v in sft.items()}, {100: 1 - sum(mine) / n})
    out = scaling.efficiency(rows, "per_step_dpo", outcomes=outcomes)
    assert out[0].multiple == pytest.approx(2.0) and abs(out[0].multiple_lo - lo) < 0.2 and "[95% " in out[0].reading
    # a method better than SFT's best point: the upper bound leaves the curve (inf), read as "> 4.00x"
    outcomes[100]["per_step_dpo"] = [i % 10 != 0 for i in range(n)]
    lo, hi = scaling.multiple_interval(outcomes, "per_step_dpo", 100, boot=200)
    assert hi == float("inf") and lo == float("inf")
    rows = _rows({k: 1 - sum(v) / n for k, v in sft.items()}, {100: 0.1})
    assert scaling.efficiency(rows, "per_step_dpo", outcomes=outcomes)[0].reading.endswith("[95% > 4.00x, > 4.00x]")
    assert scaling.multiple_interval({100: {"sft": sft[100]}}, "per_step_dpo", 100) is None  # one SFT point


def test_kept_skill_check_names_a_broken_policy():
    sft = scaling.MethodRun("sft", 64, 64, train_correct=[True] * 90 + [False] * 10)
    kept = scaling.MethodRun("per_step_dpo", 64, 120, train_correct=[True] * 80 + [False] * 20)
    broke = scaling.MethodRun("naive_dpo", 64, 120, train_correct=[True] * 70 + [False] * 30)
    assert scaling.kept_skill(kept, sft, 0.15).kept
    out = scaling.kept_skill(broke, sft, 0.15)
    assert not out.kept and "broke the policy" in out.text and out.train_accuracy == 0.7
    assert scaling.kept_skill(scaling.MethodRun("rft", 64, 0), sft, 0.15) is None  # not trained: nothing to check
    res = scaling.SizeResult(64, {"sft": sft, "naive_dpo": broke, "per_step_dpo": kept,
                                  "rft": scaling.MethodRun("rft", 64, 10, note="not trained: 10 pairs, fewer than 50")},
                             positives=1, negatives=1)
    for m, r in res.runs.items():
        r.correct = [True, False]
    rows = {r.method: r for r in scaling.table([res])}
    assert rows["naive_dpo"].kept_skill is False and "broke the policy" in rows["naive_dpo"].note
    assert rows["per_step_dpo"].kept_skill is True and rows["per_step_dpo"].note == ""
    assert rows["rft"].note.startswith("not trained") and rows["sft"].train_accuracy == 0.9
    assert scaling.per_step_pairs_by_size(list(rows.values())) == {"64": 120}
    eff = scaling.efficiency(_rows({64: 0.8, 128: 0.5, 256: 0.3}, {}) + [rows["naive_dpo"].model_copy(
        update={"error": 0.5, "p_vs_sft": 0.001})], "naive_dpo")
    assert eff[0].reading.endswith("it broke the policy (kept-skill check failed)")


def test_scaling_result_round_trips_through_scaling_json(tmp_path):
    from revlib.core import io
    from revlib.params.negatives import NegativeParams

    P = NegativeParams(data_sizes=[4, 8], n_test=4, min_pairs=2, methods=["sft", "rft", "per_step_dpo"])
    results = []
    for size, right in ((4, [True, False, False, False]), (8, [True, True, True, False])):
        runs = {"sft": scaling.MethodRun("sft", size, size, correct=right, steps=10),
                "rft": scaling.MethodRun("rft", size, size + 1, correct=right[::-1], steps=10),
                "per_step_dpo": scaling.MethodRun("per_step_dpo", size, 1, note="not trained: 1 pairs, fewer than 2")}
        results.append(scaling.SizeResult(size, runs, positives=1, negatives=3))
    rows = scaling.table(results, P.kept_skill_drop)
    eff = scaling.efficiencies(rows, results, P.methods)
    assert list(eff) == ["per_step_dpo", "rft"]  # in EFFICIENCY_METHODS' order, only the methods that ran
    nll = [scaling.NLLRow("D_syn", "a", 1.0), scaling.NLLRow("D_syn", "b", 2.0), scaling.NLLRow("D+", "c", 0.5)]
    result = scaling.ScalingResult(budget_rule=scaling.budget_rule(P), min_pairs=P.min_pairs, rows=rows,
                                   efficiency=eff, outcomes=scaling.outcomes_by_size(results),
                                   nll=scaling.nll_means(nll))
    assert not scaling.ScalingResult.exists(tmp_path)
    path = result.save(tmp_path)
    assert path == tmp_path / "scaling.json" and scaling.ScalingResult.exists(tmp_path)
    again = scaling.ScalingResult.load(tmp_path)
    assert again == result
    raw = io.read_json(path)  # the keys a reader opens, sizes as JSON keys
    assert set(raw) == {"budget_rule", "rows", "efficiency", "min_pairs", "outcomes", "nll"}
    assert raw["outcomes"]["4"]["rft"] == [False, False, False, True] and raw["outcomes"]["8"]["per_step_dpo"] == []
    assert raw["nll"] == {"D+": 0.5, "D_syn": 1.5}
    assert again.per_step_pairs_by_size == {"4": 1, "8": 1} and again.sft_error_by_size() == {"4": 0.75, "8": 0.25}
    assert again.pooled("rft", "sft") == ([False, False, False, True, False, True, True, True],
                                          [True, False, False, False, True, True, True, False])
    assert again.pooled("per_step_dpo", "sft") == ([], [])  # never trained: nothing to pair
    assert scaling.stage_metrics(rows, eff, []) == {"sft/error@4": 0.75, "rft/error@4": 0.75, "sft/error@8": 0.25,
                                                    "rft/error@8": 0.25,
                                                    **{f"rft/multiple@{r.size}": r.reading for r in eff["rft"]},
                                                    "learned": True}


def test_an_unbounded_multiple_interval_survives_the_file(tmp_path):
    row = scaling.EfficiencyRow(size=4, method="rft", error=0.1, multiple=2.0, reading="> 2.00x",
                                multiple_lo=float("inf"), multiple_hi=float("inf"))
    result = scaling.ScalingResult(budget_rule="", min_pairs=1, rows=[], efficiency={"rft": [row]}, outcomes={}, nll={})
    result.save(tmp_path)
    assert scaling.ScalingResult.load(tmp_path).efficiency["rft"][0].multiple_hi == float("inf")


def test_problems_are_drawn_at_the_seed_plus_the_stage_offset():
    from revlib.params import Experiment
    from revlib.tasks import get_task

    exp = Experiment.model_validate({"experiment": "x", "seed": 3, "stages": ["06_negative_data"],
                                     "base_models": [{"name": "m"}], "sft": {}, "dpo": {},
                                     "negatives": {"data_sizes": [4, 8], "n_test": 4}}, context={"base_dir": "/tmp"})
    task, pool, test = scaling.draw_problems(exp)
    assert scaling.PROBLEM_SEED_OFFSET == 606
    again = get_task(exp.negatives.task, exp.negatives.knobs).sample(3 + 606, 8 + 4)
    assert [r.id for r in test] == [r.id for r in again[:4]] and [r.id for r in pool] == [r.id for r in again[4:]]
