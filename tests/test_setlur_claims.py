"""Setlur et al.'s registry entries: ids and order, the gates' prose from the stages' constants, the readings."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from revlib.evaluation import efficiency, trained
from revlib.lab import setlur_claims
from revlib.lab.claims import evaluate
from revlib.params.learning import LearningRules
from revlib.stages import scaling_result
from revlib.stages import star, star_result


def _star(train_first: int = 52, under_end: int = 70, over_end: int = 42, dpo_loss: float = 0.2) -> star_result.StarResult:
    def ck(step: int, correct: int, first_train: int = 50) -> star_result.StarCheckpoint:
        return star_result.StarCheckpoint(epoch=step / 100, step=step, n=100, correct=correct, valid=80, first_node=45,
                                   critical_token_prob=0.5, critical_q_value=0.9, start_value=0.5,
                                   train=star_result.PathCounts(n=100, valid=85, first_node=first_train, correct=first_train))

    curve = [ck(100, 20, train_first), ck(200, 20, train_first), ck(900, 40, 93)]
    starts = star.choose_starts(curve, 2, 2, 3.0)
    loss = [star_result.LossPoint(step=i, epoch=0.0, loss=0.69 if i < 10 else dpo_loss) for i in range(40)]
    runs = {s.name: star_result.PerStepDPO(start_epoch=s.epoch, start_step=s.step, pairs=150, loss=loss,
                                    checkpoints=[ck(50, over_end if s.name == "over" else under_end)],
                                    samples=star_result.DrawnSamples(n=200, correct=50, critical_at_first_step=150))
            for s in starts}
    return star_result.StarResult(knobs={"degree": 2}, model_layers=4, train_graphs=5000,
                           base_lookup=star_result.BaseLookup(k=150, n=200, accuracy=0.75, chance=0.05),
                           sft_checkpoints=curve, sft_loss=[], starts=starts, asked_under=2, over_factor=3.0,
                           per_step_dpo=runs)


class _Results(SimpleNamespace):
    def reading(self, spec):
        return spec.measure(self)


def test_ids_and_order_are_the_pages():
    assert [c.id for c in setlur_claims.CLAIMS] == [
        "setlur.rft_self_2x", "setlur.per_step_8x", "setlur.per_step_beats_naive", "setlur.adv_rft",
        "setlur.star_phase_transition.under", "setlur.star_phase_transition.under_vs_over"]
    assert all(c.delta_source for c in setlur_claims.CLAIMS)


def test_star_rows_read_the_typed_result_and_gate_on_the_state_in_the_stages_words():
    by_id = {c.id: evaluate(c, _Results(star=_star(), scaling=None)) for c in setlur_claims.CLAIMS}
    under = by_id["setlur.star_phase_transition.under"]
    # the mean gain over the two under-trained starts (20% -> 70% each)
    assert under.effect == pytest.approx(0.5) and under.verdict == "reproduced" and "under_2" in under.measured
    assert by_id["setlur.star_phase_transition.under_vs_over"].effect == pytest.approx(0.48)
    assert by_id["setlur.per_step_8x"] is None
    # no checkpoint in the Clever-Hans state on its training graphs: the state gate says so in the stage's words
    missed = evaluate(setlur_claims.CLAIMS[4], _Results(star=_star(train_first=80)))
    assert missed.verdict == "inconclusive" and star_result.state_rule() in missed.note
    learned = setlur_claims.learned(_Results(star=_star(), scaling=None))
    assert learned["star_model_layers"] == 4 and learned["star_train_graphs"] == 5000 and learned["star_test_n"] == 100
    assert [s["name"] for s in learned["star_starts"]] == ["under_1", "under_2", "over"]
    assert learned["star_starts"][2] == {"name": "over", "step": 900, "valid_path_rate": 0.85,
                                         "valid_path_rate_test": 0.8, "first_node_train": 0.93, "first_node_test": 0.45}
    assert learned["star_dpo_final_loss_by_start"] == {"under_1": pytest.approx(0.2), "under_2": pytest.approx(0.2),
                                                       "over": pytest.approx(0.2)}


def test_comparing_gains_needs_every_dpo_to_keep_edge_following():
    # both fall (80% -> 40% valid paths): from under -10 points, from over -30: the gap is damage, not the transition
    st = _star(under_end=10, over_end=10)
    for name in st.per_step_dpo:
        st.per_step_dpo[name].checkpoints[0].valid = 40
    results = _Results(star=st, scaling=None)
    under, versus = (evaluate(spec, results) for spec in setlur_claims.CLAIMS[4:])
    assert under.verdict == "not reproduced" and "broke the policy" in under.measured
    assert versus.verdict == "inconclusive" and "broke the policy from under_1, under_2, over" in versus.note


def test_a_phase_transition_row_whose_dpo_did_not_train_is_inconclusive_not_a_verdict():
    flat = _Results(star=_star(dpo_loss=0.66), scaling=None)  # a big gain, but the DPO loss stayed near log 2
    for spec in setlur_claims.CLAIMS[4:]:
        claim = evaluate(spec, flat)
        assert claim.verdict == "inconclusive" and "DPO did not train" in claim.note
        assert trained.dpo_trained_rule(LearningRules()) in claim.note


def _scaling(sft_right: dict[int, int], mine_right: dict[int, int], n: int = 200, loss_last: float = 0.3,
             method: str = "per_step_dpo") -> scaling_result.ScalingResult:
    """scaling.json with SFT answering sft_right[size] of n test problems and `method` mine_right[size]."""
    outcomes = {size: {"sft": [i < k for i in range(n)]} for size, k in sft_right.items()}
    rows = [scaling_result.TableRow(size=size, method="sft", examples=size, error=1 - k / n, train_accuracy=0.7)
            for size, k in sft_right.items()]
    passes = []
    for size, k in mine_right.items():
        outcomes[size][method] = [i < k for i in range(n)]
        rows.append(scaling_result.TableRow(size=size, method=method, examples=150, error=1 - k / n, start="sft",
                                     start_step=100, pass_kept=2))
        passes.append(scaling_result.Passes(method=method, size=size, start="sft", start_step=100, kept=2,
                                     passes=[scaling_result.PassRecord(index=i, step=10 * i, validation=0.5 + i / 10)
                                             for i in range(3)], train_loss_first=0.69, train_loss_last=loss_last))
    multiples = {method: efficiency.multiple_reading(outcomes, method, boot=300)}
    return scaling_result.ScalingResult(budget_rule="", min_pairs=50, rows=rows, efficiency={}, outcomes=outcomes,
                                 nll={"D_syn": 0.9, "D+": 0.6}, passes=passes, multiples=multiples, rollouts=10)


def test_the_8x_row_reads_the_multiple_itself_with_its_interval_and_preconditions():
    sft = {64: 40, 128: 80, 256: 120, 512: 160, 1024: 180, 2048: 190}
    # per-step DPO at 64 / 128 / 256 answers as SFT does at 8x its size: the multiple is 8
    result = _scaling(sft, {64: 160, 128: 180, 256: 190})
    row = evaluate(setlur_claims.CLAIMS[1], _Results(scaling=result, star=None))
    assert row.effect == pytest.approx(8.0) and row.interval[0] > 1 and row.verdict == "reproduced"
    assert "efficiency multiple" in row.measured and "pairs by size" in row.measured
    # the same as SFT at every size: E = 1x, the interval rules out 2x
    same = evaluate(setlur_claims.CLAIMS[1], _Results(scaling=_scaling(sft, {64: 40, 128: 80, 256: 120}), star=None))
    assert same.effect == pytest.approx(1.0) and same.verdict == "not reproduced"
    # a curve reaching only 4x the largest DPO size cannot hold an 8x multiple
    short = _scaling({64: 40, 128: 80, 256: 120, 512: 160, 1024: 180}, {64: 160, 128: 180, 256: 180})
    row = evaluate(setlur_claims.CLAIMS[1], _Results(scaling=short, star=None))
    assert row.verdict == "inconclusive" and "reaches only 4x" in row.note
    # a DPO whose loss barely moved tested nothing
    flat = evaluate(setlur_claims.CLAIMS[1], _Results(scaling=_scaling(sft, {64: 160, 128: 180, 256: 190},
                                                                       loss_last=0.68), star=None))
    assert flat.verdict == "inconclusive" and "did not train at n=64" in flat.note
    assert trained.dpo_trained_rule(LearningRules()) in flat.note
    # too few pairs at a size: not trained there, read from the row's reason code, not its words
    few = _scaling(sft, {64: 160, 128: 180, 256: 190})
    few.rows = [r.model_copy(update={"skip": scaling_result.Skip.TOO_FEW_PAIRS, "note": "any words"}) if r.size == 64 and
                r.method == "per_step_dpo" else r for r in few.rows]
    row = evaluate(setlur_claims.CLAIMS[1], _Results(scaling=few, star=None))
    assert row.verdict == "inconclusive" and "n=64: any words" in row.note


def test_scaling_rows_gate_on_a_flat_sft_curve_and_the_learned_keys():
    result = _scaling({64: 100, 128: 110}, {64: 150}, method="rft_self")
    claim = evaluate(setlur_claims.CLAIMS[0], _Results(scaling=result, star=None))
    assert claim.effect is not None and claim.verdict == "inconclusive" and "flat" in claim.note
    # a curve that jumps up and down but ends where it started taught nothing: the ends decide, not its range
    zigzag = _scaling({64: 60, 128: 150, 256: 40, 512: 140, 1024: 150, 2048: 50}, {64: 160, 128: 180, 256: 190})
    row = evaluate(setlur_claims.CLAIMS[1], _Results(scaling=zigzag, star=None))
    assert row.verdict == "inconclusive" and "flat" in row.note
    learned = setlur_claims.learned(_Results(scaling=_scaling({64: 40, 128: 80}, {64: 60}), star=None))
    assert learned["negatives_sft_sizes"] == [64, 128] and learned["negatives_sft_error_by_size"] == {"64": 0.8, "128": 0.6}
    assert learned["negatives_sft_train_accuracy_by_size"] == {"64": 0.7, "128": 0.7}
    assert learned["negatives_dpo_validation_by_pass"] == {"per_step_dpo": {"64": [0.5, 0.6, 0.7]}}
    assert learned["negatives_step_value_rollouts"] == 10 and learned["negatives_dsyn_nll_gap"] == pytest.approx(0.3)
    assert learned["negatives_per_step_pairs_by_size"] == {"64": 150}
