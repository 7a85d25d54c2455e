"""The scaling experiment's read-outs: efficiency multiples on flat, crossing and never-crossing curves."""

from __future__ import annotations

import pytest

from revlib.core import stats
from revlib.evaluation import efficiency
from revlib.params.learning import LearningRules
from revlib.stages import scaling, scaling_readout, scaling_report, scaling_result
from revlib.stages.scaling_result import MethodRun, Passes, PassRecord, ScalingResult, SizeResult, Skip, TableRow


def _rows(sft: dict[int, float], other: dict[int, float], p: float = 0.001, method: str = "per_step_dpo"):
    rows = [TableRow(size=n, method="sft", examples=n, error=e) for n, e in sft.items()]
    rows += [TableRow(size=n, method=method, examples=n, error=e, p_vs_sft=p) for n, e in other.items()]
    return rows


def test_efficiency_not_measurable_on_a_flat_sft_curve():
    out = efficiency.efficiency(_rows({100: 0.98, 200: 1.0, 400: 0.97}, {100: 0.5}), "per_step_dpo")
    assert out[0].multiple is None and "flat" in out[0].reading


def test_efficiency_reads_a_multiple_where_the_curves_cross():
    out = efficiency.efficiency(_rows({100: 0.8, 200: 0.6, 400: 0.4}, {100: 0.6}), "per_step_dpo")
    assert out[0].multiple == pytest.approx(2.0) and out[0].reading.startswith("2.00x")


def test_efficiency_never_crossing_gives_a_bound_never_infinity():
    better = efficiency.efficiency(_rows({100: 0.8, 200: 0.6, 400: 0.4}, {100: 0.2}), "per_step_dpo")
    assert better[0].multiple == pytest.approx(4.0) and better[0].reading.startswith("> 4.00x")
    worse = efficiency.efficiency(_rows({100: 0.8, 200: 0.6, 400: 0.4}, {400: 0.9}), "per_step_dpo")
    assert worse[0].multiple == pytest.approx(0.25) and "worse" in worse[0].reading


def test_sft_need_interpolates_in_log_n_and_censors_past_the_curve():
    sizes, errs = [64, 128, 256], [0.8, 0.4, 0.2]
    assert efficiency.sft_need(sizes, errs, 0.4) == (pytest.approx(128), "")
    assert efficiency.sft_need(sizes, errs, 0.3)[0] == pytest.approx(128 * 2 ** 0.5)
    assert efficiency.sft_need(sizes, errs, 0.1) == (256, ">")
    assert efficiency.sft_need(sizes, errs, 0.9) == (64, "<")
    assert efficiency.sft_need(sizes, errs, 0.8) == (64, "")  # equal to SFT's smallest point: exactly 1x there


def test_mcnemar_and_intervals():
    a = [True] * 30 + [False] * 10
    b = [False] * 30 + [False] * 10
    assert stats.mcnemar(a, b) < 1e-6
    assert stats.mcnemar(a, a) == 1.0
    lo, hi = stats.wilson(45, 50)
    assert lo < 0.9 < hi and 0.77 < lo < 0.8
    lo, hi = stats.diff_interval(45, 50, 25, 50)
    assert 0.2 < lo < 0.4 < hi < 0.6


def test_multiple_reading_brackets_the_point_and_writes_past_the_curve_as_a_bound():
    n = 400
    # SFT errors 0.8 / 0.6 / 0.4 at 100 / 200 / 400 on the same test problems; the method at 100: error 0.6 (2x)
    sft = {100: [i % 5 == 0 for i in range(n)], 200: [i % 5 < 2 for i in range(n)], 400: [i % 5 < 3 for i in range(n)]}
    outcomes = {size: {"sft": o} for size, o in sft.items()}
    outcomes[100]["per_step_dpo"] = [i % 5 in (0, 3) for i in range(n)]
    mr = efficiency.multiple_reading(outcomes, "per_step_dpo", boot=400)
    assert mr.effect == pytest.approx(2.0) and mr.lo < 2.0 < mr.hi and 1.2 < mr.lo and mr.hi < 3.5
    assert mr.range_multiple == 4 and "2.00x [95% " in mr.text()
    # better than SFT's best point: censored at 4x and written "> 4.00x", never infinite
    outcomes[100]["per_step_dpo"] = [i % 10 != 0 for i in range(n)]
    mr = efficiency.multiple_reading(outcomes, "per_step_dpo", boot=200)
    assert mr.effect == pytest.approx(4.0) and mr.hi == pytest.approx(4.0) and mr.hi_censor == ">"
    assert mr.censored == {100: ">"} and "> 4.00x" in mr.text() and "inf" not in mr.text()
    assert efficiency.multiple_reading({100: {"sft": sft[100]}}, "per_step_dpo") is None  # one SFT point


def test_passes_keep_the_best_by_validation_with_the_start_a_candidate():
    assert scaling.best([0.5, 0.5, 0.4]) == 0  # a tie with the start keeps the start
    assert scaling.best([0.5, 0.6, 0.6]) == 1
    ps = Passes(method="per_step_dpo", size=64, start="sft", start_step=100, kept=0,
                passes=[PassRecord(index=0, step=0, validation=0.5)], train_loss_first=0.69, train_loss_last=0.65)
    rules = LearningRules()  # trained: the final loss at least 10% below log 2 (0.624)
    assert not ps.trained(rules)
    assert ps.model_copy(update={"train_loss_last": 0.3}).trained(rules)
    assert ps.trained(LearningRules(dpo_loss_fall=0.05))  # a rule asking less


def test_kept_skill_check_names_a_broken_policy():
    sft = MethodRun("sft", 64, 64, train_correct=[True] * 90 + [False] * 10)
    kept = MethodRun("per_step_dpo", 64, 120, train_correct=[True] * 80 + [False] * 20)
    broke = MethodRun("naive_dpo", 64, 120, train_correct=[True] * 70 + [False] * 30)
    rules = LearningRules(kept_skill_drop=0.15)
    assert scaling_readout.kept_skill_row(kept, sft, rules)[1]
    accuracy, ok, note = scaling_readout.kept_skill_row(broke, sft, rules)
    assert not ok and "broke the policy" in note and accuracy == 0.7
    assert scaling_readout.kept_skill_row(MethodRun("rft", 64, 0), sft, rules) is None  # not trained: nothing to check
    res = SizeResult(64, {"sft": sft, "naive_dpo": broke, "per_step_dpo": kept,
                          "rft": MethodRun("rft", 64, 10, note="not trained: 10 pairs, fewer than 50",
                                           skip=Skip.TOO_FEW_PAIRS)}, positives=1, negatives=1)
    for m, r in res.runs.items():
        r.correct = [True, False]
    rows = {r.method: r for r in scaling_readout.table([res], rules)}
    assert rows["naive_dpo"].kept_skill is False and "broke the policy" in rows["naive_dpo"].note
    assert rows["per_step_dpo"].kept_skill is True and rows["per_step_dpo"].note == ""
    assert rows["rft"].skip == Skip.TOO_FEW_PAIRS and rows["sft"].train_accuracy == 0.9
    # a looser rule keeps the same drop
    assert {r.method: r for r in scaling_readout.table([res], LearningRules(kept_skill_drop=0.25))}["naive_dpo"].kept_skill
    assert scaling_result.per_step_pairs_by_size(list(rows.values())) == {"64": 120}
    eff = efficiency.efficiency(_rows({64: 0.8, 128: 0.5, 256: 0.3}, {}) + [rows["naive_dpo"].model_copy(
        update={"error": 0.5, "p_vs_sft": 0.001})], "naive_dpo")
    assert eff[0].reading.endswith("it broke the policy (kept-skill check failed)")


def test_scaling_result_round_trips_through_scaling_json(tmp_path):
    from revlib.core import io
    from revlib.params.negatives import NegativeParams

    P = NegativeParams(data_sizes=[4, 8], n_test=4, min_pairs=2, methods=["sft", "rft", "per_step_dpo"])
    results = []
    for size, right in ((4, [True, False, False, False]), (8, [True, True, True, False])):
        runs = {"sft": MethodRun("sft", size, size, correct=right, steps=10),
                "rft": MethodRun("rft", size, size + 1, correct=right[::-1], steps=10),
                "per_step_dpo": MethodRun("per_step_dpo", size, 1, note="not trained: 1 pairs, fewer than 2",
                                          skip=Skip.TOO_FEW_PAIRS)}
        results.append(SizeResult(size, runs, positives=1, negatives=3))
    rows = scaling_readout.table(results, LearningRules())
    eff = scaling_readout.efficiencies(rows, results, P.methods)
    assert list(eff) == ["per_step_dpo", "rft"]
    multiples = {"rft": efficiency.multiple_reading(scaling_readout.outcomes_by_size(results), "rft", boot=50)}  # in EFFICIENCY_METHODS' order, only the methods that ran
    nll = [scaling_result.NLLRow("D_syn", "a", 1.0), scaling_result.NLLRow("D_syn", "b", 2.0), scaling_result.NLLRow("D+", "c", 0.5)]
    result = ScalingResult(budget_rule=scaling_report.budget_rule(P, LearningRules()), min_pairs=P.min_pairs, rows=rows,
                                   efficiency=eff, outcomes=scaling_readout.outcomes_by_size(results),
                                   nll=scaling_readout.nll_means(nll), multiples=multiples, rollouts=10)
    assert not ScalingResult.exists(tmp_path)
    path = result.save(tmp_path)
    assert path == tmp_path / "scaling.json" and ScalingResult.exists(tmp_path)
    again = ScalingResult.load(tmp_path)
    assert again == result
    raw = io.read_json(path)  # the keys a reader opens, sizes as JSON keys
    assert {"budget_rule", "rows", "efficiency", "min_pairs", "outcomes", "nll", "multiples", "passes"} <= set(raw)
    assert raw["outcomes"]["4"]["rft"] == [False, False, False, True] and raw["outcomes"]["8"]["per_step_dpo"] == []
    assert raw["nll"] == {"D+": 0.5, "D_syn": 1.5} and again.nll_gap == 1.0 and again.rollouts == 10
    assert again.per_step_pairs_by_size == {"4": 1, "8": 1} and again.sft_error_by_size() == {"4": 0.75, "8": 0.25}
    assert again.pooled("rft", "sft") == ([False, False, False, True, False, True, True, True],
                                          [True, False, False, False, True, True, True, False])
    assert again.pooled("per_step_dpo", "sft") == ([], [])  # never trained: nothing to pair
    assert scaling_report.stage_metrics(rows, eff, []) == {"sft/error@4": 0.75, "rft/error@4": 0.75, "sft/error@8": 0.25,
                                                    "rft/error@8": 0.25,
                                                    **{f"rft/multiple@{r.size}": r.reading for r in eff["rft"]},
                                                    "learned": True}


def test_problems_are_drawn_at_the_seed_plus_the_stage_offset():
    from revlib.params import Experiment
    from revlib.tasks import get_task

    exp = Experiment.model_validate({"experiment": "x", "seed": 3, "stages": ["06_negative_data"],
                                     "base_models": [{"name": "m"}], "sft": {}, "dpo": {},
                                     "negatives": {"data_sizes": [4, 8], "n_test": 4}}, context={"base_dir": "/tmp"})
    probs = scaling.draw_problems(exp)
    assert scaling.PROBLEM_SEED_OFFSET == 606
    nv = exp.negatives.n_validation
    again = get_task(exp.negatives.task, exp.negatives.knobs).sample(3 + 606, 8 + 4 + nv)
    assert [r.id for r in probs.test] == [r.id for r in again[:4]]
    assert [r.id for r in probs.validation] == [r.id for r in again[4:4 + nv]]
    assert [r.id for r in probs.train] == [r.id for r in again[4 + nv:]]
    assert not {r.id for r in probs.validation} & ({r.id for r in probs.test} | {r.id for r in probs.train})


def test_the_teacher_writes_its_own_form_and_the_answer_still_verifies():
    from revlib.core import render
    from revlib.data import negatives
    from revlib.tasks import get_task
    from revlib.tasks.grading import verified

    task = get_task("arith", {"steps": 2, "max_value": 9, "ops": ["add", "sub"]})
    rec = task.sample(0, 1)[0]
    out = negatives.teacher_chain(task, rec, ["verbose"])
    assert out.reasoning != rec.reasoning and out.reasoning.startswith("(1) we have ") and out.meta["teacher_form"] == "verbose"
    assert len(task.split_steps(out.reasoning)) == 2
    assert verified(task, rec, render.assistant_content(out.reasoning, out.answer))
    assert task.restyle_step("(1) 9 - 4 = 5", "result_first") == "(1) 5 = 9 - 4"
    with pytest.raises(ValueError, match="task 'arith' has no teacher form 'shouted'"):
        task.restyle_step("(1) 9 - 4 = 5", "shouted")


def test_the_star_teacher_restyles_its_edges_and_a_family_without_forms_names_the_one_it_has():
    from revlib.core import render
    from revlib.data import negatives
    from revlib.tasks import TaskFamily, get_task
    from revlib.tasks.grading import verified

    star = get_task("star_graph", {"degree": 2, "path_length": 3, "node_count": 20})
    rec = star.sample(0, 1)[0]
    out = negatives.teacher_chain(star, rec, ["worded"])
    assert out.reasoning != rec.reasoning and all(line.startswith("go from ") for line in out.reasoning.split("\n"))
    assert len(star.split_steps(out.reasoning)) == len(star.split_steps(rec.reasoning))
    assert verified(star, rec, render.assistant_content(out.reasoning, out.answer))
    assert star.parse_answer(" 3, 7 ,9.") == ["3", "7", "9"]

    class Plain(type(star)):  # a family that writes only its own chain
        teacher_forms = ("canonical",)
        restyle_step = TaskFamily.restyle_step

    with pytest.raises(ValueError, match="has no teacher form 'verbose'; it writes canonical"):
        negatives.teacher_chain(Plain(star.knobs), rec, ["verbose"])


def test_the_under_trained_start_is_the_earliest_read_out_near_the_chosen_one():
    # SFT's sudden onset: a share of the steps would land before it (0.10, nothing learned); a share of the
    # validation accuracy lands on the first read-out after it
    val = [0.0, 0.03, 0.12, 0.10, 0.87, 0.74, 0.91, 0.87]
    assert scaling.under_start(val, 0.5) == 4
    assert scaling.under_start(val, 0.99) is None  # none before the chosen one gets that close
    assert scaling.under_start([0.0, 0.0], 0.5) is None  # the chosen one (ties: the earliest) is the first
    assert scaling.under_start([0.2, 0.5, 0.4], 0.3) == 0


def test_the_multiple_reads_sfts_curve_as_non_increasing_and_sft_itself_as_1x():
    assert efficiency.non_increasing([0.5, 0.2, 0.04, 0.08, 0.05, 0.07]) == pytest.approx([0.5, 0.2, 0.06, 0.06, 0.06, 0.06])
    assert efficiency.non_increasing([0.3, 0.2, 0.1]) == [0.3, 0.2, 0.1]
    # a bump in SFT's curve (test noise) is pooled: 0.055 lies between the fit's 0.06 (256-384) and 0.05 (512), not
    # between the raw points 0.5 (64) and 0.04 (256)
    need, censor = efficiency.sft_need([64, 256, 384, 512], [0.5, 0.04, 0.08, 0.05], 0.055)
    assert 384 < need < 512 and censor == ""
    sft = {64: [False] * 6 + [True] * 4, 256: [True] * 9 + [False], 384: [True] * 8 + [False] * 2,
           512: [True] * 9 + [False]}
    outcomes = {n: {"sft": v} for n, v in sft.items()}
    outcomes[384]["per_step_dpo"] = list(sft[384])  # it kept its start: the same answers as SFT at 384
    mr = efficiency.multiple_reading(outcomes, "per_step_dpo", boot=50)
    assert mr.by_size == {384: 1.0} and mr.effect == 1.0 and mr.lo == mr.hi == 1.0
