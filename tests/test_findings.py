"""The findings page: the verdict rule, claims computed from what the stages wrote, the gate on learning."""

from __future__ import annotations

import pandas as pd
import pytest

from revlib.lab import claims, findings
from revlib.core import io
from revlib.params import load

from conftest import PARAMS, write_params


@pytest.mark.parametrize("lo, hi, delta, expected", [
    (0.01, 0.2, 0.02, "reproduced"),        # the interval lies on the paper's side of zero
    (-0.3, -0.1, 0.02, "not reproduced"),   # the opposite effect
    (-0.01, 0.015, 0.02, "not reproduced"),  # rules out an effect of the size the claim needs
    (-0.05, 0.15, 0.02, "inconclusive"),     # compatible with both
])
def test_verdict_rule(lo, hi, delta, expected):
    assert claims.verdict(lo, hi, delta) == expected


@pytest.mark.parametrize("effect, lo, hi, delta, expected, note", [
    (0.05, 0.01, 0.09, 0.02, "reproduced", ""),                        # lo > 0 and E >= δ
    (0.0004, 0.0, 0.001, 0.05, "not reproduced", ""),                  # the E = +0.000 [+0.000, +0.001]: lo is not > 0
    (0.0004, 0.0001, 0.001, 0.05, "not reproduced", claims.TOO_SMALL),  # above 0, wholly below δ
    (0.01, 0.001, 0.06, 0.02, "inconclusive", "below δ"),              # above 0, E < δ, but δ not ruled out
    (-0.2, -0.3, -0.1, 0.02, "not reproduced", ""),                    # the opposite effect
])
def test_decide_needs_the_effect_to_reach_delta(effect, lo, hi, delta, expected, note):
    v, why = claims.decide(effect, lo, hi, delta)
    assert v == expected and (note in why.text if note else why == claims.Note())
    assert claims.verdict(lo, hi, delta, effect) == expected


def test_a_multiple_below_delta_is_worded_on_its_own_scale_from_its_reason_code():
    v, note = claims.judge(claims.Reading(1.5, (1.1, 2.6), "a multiple"), 2.0, None, None, origin=1.0)
    assert v == "inconclusive" and note.code == claims.NoteCode.BELOW_DELTA and "above 1x but E = 1.50x" in note.text
    v, note = claims.judge(claims.Reading(None, None, "", missing="no pairs"), 2.0, None, None)
    assert v == "inconclusive" and note == claims.Note(claims.NoteCode.NOTHING_MEASURED, "no pairs")


def test_decide_names_a_failed_precondition_and_a_gate_first():
    v, why = claims.decide(0.3, 0.2, 0.4, 0.02, precondition="a loss to recover")
    assert v == "inconclusive" and why == claims.Note(claims.NoteCode.PRECONDITION, "precondition failed: a loss to recover")
    v, why = claims.decide(0.3, 0.2, 0.4, 0.02, gate="SFT did not learn", precondition="x")
    assert v == "inconclusive" and why == claims.Note(claims.NoteCode.GATE, "SFT did not learn")


def _world_run(d, outcomes: dict[tuple[str, str], list[bool]], task="world_long", chance=0.1, alive=True):
    """05 outputs for one task-world benchmark: results.csv, per-model samples, world.json."""
    _done(d)
    rows = []
    for (stage, train_set), hits in outcomes.items():
        rows.append({"stage": stage, "train_set": train_set, "task": task, "accuracy": sum(hits) / len(hits),
                     "problems": len(hits)})
        io.write_jsonl(d / "samples" / f"{stage}__{train_set}" / f"{task}.jsonl",
                       [{"doc_id": i, "sample": 0, "correct": h, "gold": str(i % 7)} for i, h in enumerate(hits)])
    for (stage, train_set), acc in {("sft", "forward"): 0.97, ("sft", "reverse"): 0.96}.items():
        for t in ("synthetic_forward", "synthetic_reverse"):
            own = t.endswith(train_set)
            hits = [True] * (97 if own else 3) + [False] * (3 if own else 97)
            rows.append({"stage": stage, "train_set": train_set, "task": t, "accuracy": sum(hits) / 100, "problems": 100})
            io.write_jsonl(d / "samples" / f"{stage}__{train_set}" / f"{t}.jsonl",
                           [{"doc_id": i, "sample": 0, "correct": h, "gold": str(i % 10)} for i, h in enumerate(hits)])
    pd.DataFrame(rows).to_csv(d / "results.csv", index=False)
    best = max(sum(h) / len(h) for h in outcomes.values())
    io.write_json(d / "world.json", [{"benchmark": task, "n": len(next(iter(outcomes.values()))), "chance": chance,
                                      "best_accuracy": best, "alive": alive, "what": "longer chains"}])


def test_tables_read_on_world_benchmarks_with_the_precondition(exp):
    d = exp.run_root / "05_benchmarks" / "micro"
    n = 200
    same = [i % 2 == 0 for i in range(n)]  # 50%
    _world_run(d, {("sft", "forward"): same, ("sft", "reverse"): [i % 4 != 0 for i in range(n)],  # 75%
                   ("sft", "mix"): same, ("sft", "half_mix"): same, ("dpo", "mix"): [True] * n})
    data = findings.collect(exp)
    by_id = {c["id"]: c for c in data["claims"]}
    rev = by_id["r1k.table1.reverse_beats_forward"]
    assert rev["verdict"] == "reproduced" and abs(rev["effect"] - 0.25) < 1e-9 and "world_long" in rev["measured"]
    # an analogue of the paper's table, naming this run's base model and benchmarks beside the paper's
    assert rev["measured"].startswith("analogue, with micro (embedded preset micro)")
    assert rev["paper_figure"].startswith("Table 1 analogue") and "AIME24" in rev["paper_figure"]
    assert by_id["r1k.table1.mixing_hurts"]["verdict"] == "not reproduced"  # identical outcomes: E = 0 [0, 0]
    rec = by_id["r1k.table2.dpo_recovers_mix"]  # DPO gains 50 points, but mixing lost nothing
    assert rec["verdict"] == "inconclusive" and rec["note"].startswith("precondition failed: a loss to recover")
    # benchmarks: the world one and both in-distribution sets, with chance and every model's accuracy
    bench = {b["name"]: b for b in data["benchmarks"]}
    assert set(bench) == {"world_long", "synthetic_forward", "synthetic_reverse"}
    assert bench["world_long"]["in_distribution"] is False and bench["synthetic_forward"]["in_distribution"] is True
    assert bench["world_long"]["chance"] == 0.1 and bench["synthetic_forward"]["chance"] == 0.1
    assert bench["world_long"]["accuracy"]["dpo/mix"] == 1.0 and bench["world_long"]["n"] == n
    for b in data["benchmarks"]:
        assert set(b) >= {"name", "n", "chance", "in_distribution", "accuracy"}
    tr = {(t["model"], t["benchmark"]): t for t in data["transfer"]}
    assert tr[("sft/reverse", "in distribution (T_f, T_r)")]["other_direction"] == 0.03
    html = findings.render(data)
    assert "Cross-direction transfer" in html and "outside both training sets" in html


def test_recovery_is_judged_when_mixing_did_lose(exp):
    d = exp.run_root / "05_benchmarks" / "micro"
    n = 200
    _world_run(d, {("sft", "forward"): [True] * n, ("sft", "mix"): [i % 2 == 0 for i in range(n)],
                   ("sft", "reverse"): [True] * n, ("sft", "half_mix"): [True] * n,
                   ("dpo", "mix"): [i % 4 != 0 for i in range(n)]})
    by_id = {c["id"]: c for c in findings.collect(exp)["claims"]}
    assert by_id["r1k.table1.mixing_hurts"]["verdict"] == "reproduced"
    rec = by_id["r1k.table2.dpo_recovers_mix"]
    assert rec["verdict"] == "reproduced" and rec["note"] == ""


def test_inert_world_benchmarks_decide_nothing(exp):
    d = exp.run_root / "05_benchmarks" / "micro"
    _world_run(d, {("sft", "forward"): [False] * 50, ("sft", "reverse"): [True] + [False] * 49}, alive=False)
    c = {c["id"]: c for c in findings.collect(exp)["claims"]}["r1k.table1.reverse_beats_forward"]
    assert c["verdict"] == "inconclusive" and "no task-world benchmark is alive" in c["note"]


def _done(run_dir, metrics=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    io.write_json(run_dir / "manifest.json", {"status": "done"})
    io.write_json(run_dir / "metrics.json", metrics or {})


def _results(run_dir, acc: dict[tuple[str, str, str], float], n=200):
    rows = [{"stage": s, "train_set": t, "task": k, "accuracy": a, "problems": n} for (s, t, k), a in acc.items()]
    pd.DataFrame(rows).to_csv(run_dir / "results.csv", index=False)


@pytest.fixture
def exp(tmp_path):
    return load(write_params(PARAMS / "smoke" / "foundation.yaml", tmp_path))


def test_claims_from_stage_outputs(exp):
    root = exp.run_root
    _done(root / "00_base_model" / "micro", {"primitive_accuracy/arith": 0.99})
    d = root / "05_benchmarks" / "micro"
    _done(d)
    F, R = "synthetic_forward", "synthetic_reverse"
    _results(d, {("sft", "forward", F): 0.95, ("sft", "reverse", R): 0.93, ("sft", "reverse", F): 0.05,
                 ("sft", "mix", F): 0.94, ("sft", "half_mix", F): 0.945, ("dpo", "mix", F): 0.95})
    data = findings.collect(exp)
    assert data["learned"]["base_primitive_accuracy_arith"] == 0.99
    assert data["learned"]["sft_id_accuracy_forward"] == 0.95 and data["learned"]["sft_test_n"] == 200
    by_id = {c["id"]: c for c in data["claims"]}
    assert by_id["r1k.table1.reverse_beats_forward"]["verdict"] == "not reproduced"  # 5% vs 95%
    assert by_id["r1k.table1.mixing_hurts"]["verdict"] in ("inconclusive", "not reproduced")
    for c in data["claims"]:
        assert set(c) >= {"id", "paper", "claim", "measured", "verdict"}
        assert c["verdict"] in ("reproduced", "not reproduced", "inconclusive")
    page = findings.write(exp)
    assert page.exists() and "Verdict rule" in page.read_text() and (root / "findings.json").exists()


def test_claims_are_inconclusive_when_sft_did_not_learn(exp):
    d = exp.run_root / "05_benchmarks" / "micro"
    _done(d)
    F, R = "synthetic_forward", "synthetic_reverse"
    _results(d, {("sft", "forward", F): 0.02, ("sft", "reverse", R): 0.9, ("sft", "reverse", F): 0.6})
    claim = {c["id"]: c for c in findings.collect(exp)["claims"]}["r1k.table1.reverse_beats_forward"]
    assert claim["verdict"] == "inconclusive" and "did not learn" in claim["note"]


def test_a_failed_gate_in_a_replica_is_listed_in_the_findings(tmp_path):
    """The replicas run on past a failed learning gate (require_learning: false); findings.json names the gate."""
    replica = load(write_params(PARAMS / "r1k-qwen2.5-7b.yaml", tmp_path))
    assert replica.require_learning is False
    root, m = replica.run_root, replica.base_models[0].name
    _done(root / "02_sft" / f"{m}__forward", {"learned": False, "learned/loss fell": False, "learned/accuracy": True})
    _done(root / "02_sft" / f"{m}__reverse", {"learned": True, "learned/loss fell": True})
    _done(root / "04_probe_dynamics" / m, {"learned": False, "learned/ALP(y+) rose": False})
    data = findings.collect(replica)
    assert data["learned"]["failed_gates"] == [f"02_sft/{m}__forward: loss fell",
                                               f"04_probe_dynamics/{m}: ALP(y+) rose"]
    page = findings.write(replica).read_text()
    assert "Learning gates that failed" in page and f"02_sft/{m}__forward: loss fell" in page


def test_no_failed_gate_no_entry(exp):
    _done(exp.run_root / "00_base_model" / "micro", {"learned": True, "primitive_accuracy/arith": 0.99})
    assert "failed_gates" not in findings.collect(exp)["learned"]


def test_no_finished_stage_writes_no_page(exp):
    assert findings.write(exp) is None


def _star_json(d, under: tuple[int, int], over: tuple[int, int], train_first=50, dpo_loss=0.2):
    """07's star.json: SFT read out at steps 100, 200 and 900 (valid paths 80% on test, 85% on training graphs); the
    starts chosen by the stage's rule; per-step DPO from each (start correct -> end correct), its loss `dpo_loss`."""
    from revlib.stages import star, star_result

    _done(d)

    def ck(step, correct, first_train=train_first):
        return star_result.StarCheckpoint(epoch=step / 100, step=step, n=100, correct=correct, valid=80, first_node=45,
                                   critical_token_prob=0.5, critical_q_value=0.9, start_value=0.5,
                                   train=star_result.PathCounts(n=100, valid=85, first_node=first_train, correct=first_train))

    curve = [ck(100, under[0]), ck(200, under[0]), ck(900, over[0], 93)]
    starts = star.choose_starts(curve, 2, 2, 3.0)
    loss = [star_result.LossPoint(step=i, epoch=0.0, loss=0.69 if i < 10 else dpo_loss) for i in range(40)]
    runs = {s.name: star_result.PerStepDPO(start_epoch=s.epoch, start_step=s.step, pairs=300, loss=loss,
                                    checkpoints=[ck(50, over[1] if s.name == "over" else under[1])],
                                    samples=star_result.DrawnSamples(n=800, correct=400, critical_at_first_step=300))
            for s in starts}
    star_result.StarResult(knobs={"degree": 2}, model_layers=4, train_graphs=5000,
                    base_lookup=star_result.BaseLookup(k=145, n=200, accuracy=0.725, chance=0.05), sft_checkpoints=curve,
                    sft_loss=[], starts=starts, asked_under=2, over_factor=3.0, per_step_dpo=runs).save(d)


def test_star_rows_judge_the_phase_transition_and_learned_keys(exp):
    d = exp.run_root / "07_star_graph" / "micro"
    _star_json(d, under=(15, 90), over=(35, 36))
    data = findings.collect(exp)
    L = data["learned"]
    assert L["star_base_lookup_accuracy"] == 0.725 and L["star_degree"] == 2 and L["star_model_layers"] == 4
    assert L["star_sft_valid_path_rate"] == 0.8 and L["star_sft_first_node_accuracy"] == 0.45
    assert [s["name"] for s in L["star_starts"]] == ["under_1", "under_2", "over"] and L["star_test_n"] == 100
    by_id = {c["id"]: c for c in data["claims"]}
    assert by_id["setlur.star_phase_transition.under"]["verdict"] == "reproduced"  # 15% -> 90%
    assert by_id["setlur.star_phase_transition.under_vs_over"]["verdict"] == "reproduced"  # +75 vs +1 points
    _star_json(d, under=(15, 5), over=(35, 36))  # no jump: from the under-trained starts it fell
    by_id = {c["id"]: c for c in findings.collect(exp)["claims"]}
    assert by_id["setlur.star_phase_transition.under"]["verdict"] == "not reproduced"
    assert by_id["setlur.star_phase_transition.under_vs_over"]["verdict"] != "reproduced"
    # a DPO whose loss stayed near log 2 did not train: the rows say so, whatever the accuracies did
    _star_json(d, under=(15, 90), over=(35, 36), dpo_loss=0.66)
    row = {c["id"]: c for c in findings.collect(exp)["claims"]}["setlur.star_phase_transition.under"]
    assert row["verdict"] == "inconclusive" and "DPO did not train" in row["note"]
    # an SFT that never reached the Clever-Hans state on its training graphs gates the rows
    _star_json(d, under=(15, 90), over=(35, 36), train_first=80)
    row = {c["id"]: c for c in findings.collect(exp)["claims"]}["setlur.star_phase_transition.under"]
    assert row["verdict"] == "inconclusive" and "did not reach the state" in row["note"]


def test_negatives_rows_name_pair_counts_and_left_out_points(exp):
    d = exp.run_root / "06_negative_data" / "micro"
    _done(d)
    n = 200
    sft = {64: [i % 10 < 2 for i in range(n)], 128: [i % 10 < 6 for i in range(n)], 256: [i % 10 < 8 for i in range(n)]}
    rows, outcomes = [], {}
    for size, o in sft.items():
        rows.append({"size": size, "method": "sft", "examples": size, "error": 1 - sum(o) / n, "note": ""})
        outcomes[str(size)] = {"sft": o, "per_step_dpo": o if size > 64 else []}
        pairs = {64: 12, 128: 80, 256: 150}[size]
        rows.append({"size": size, "method": "per_step_dpo", "examples": pairs,
                     "error": None if size == 64 else 1 - sum(o) / n,
                     "note": "not trained: 12 pairs, fewer than 50" if size == 64 else "",
                     "skip": "too_few_pairs" if size == 64 else None})
    io.write_json(d / "scaling.json", {"budget_rule": "", "min_pairs": 50, "rows": rows, "outcomes": outcomes,
                                       "efficiency": {}, "nll": {}})
    data = findings.collect(exp)
    assert data["learned"]["negatives_per_step_pairs_by_size"] == {"64": 12, "128": 80, "256": 150}
    row = {c["id"]: c for c in data["claims"]}["setlur.per_step_8x"]
    # no efficiency multiple in this scaling.json: the row says what is missing, never a verdict
    assert row["verdict"] == "inconclusive" and "n=64: not trained: 12 pairs, fewer than 50" in row["note"]


def test_star_rows_say_when_per_step_dpo_broke_the_policy(exp):
    d = exp.run_root / "07_star_graph" / "micro"
    _star_json(d, under=(15, 40), over=(35, 36))
    raw = io.read_json(d / "star.json")
    raw["per_step_dpo"]["under_1"]["checkpoints"][-1]["valid"] = 50  # 80% -> 50% valid paths
    io.write_json(d / "star.json", raw)
    by_id = {c["id"]: c for c in findings.collect(exp)["claims"]}
    assert "valid paths 80% → 50% (broke the policy" in by_id["setlur.star_phase_transition.under"]["measured"]
    versus = by_id["setlur.star_phase_transition.under_vs_over"]
    assert "over (SFT step 900, 300 pairs, 50 DPO steps): test accuracy 35.0% → 36.0%; valid paths 80% → 80% (kept" \
        in versus["measured"]
    assert versus["verdict"] == "inconclusive" and "broke the policy from under_1" in versus["note"]
