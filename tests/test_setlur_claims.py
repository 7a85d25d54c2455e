"""Setlur et al.'s registry entries: ids and order, the gates' prose from the stages' constants, the readings."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from revlib.lab import setlur_claims
from revlib.lab.claims import evaluate
from revlib.stages import scaling, star


def _star(valid: int, under_end: int, over_end: int) -> star.StarResult:
    def ck(epoch: float, correct: int) -> star.StarCheckpoint:
        return star.StarCheckpoint(epoch=epoch, step=1, n=100, correct=correct, valid=valid, first_node=45,
                                   critical_token_prob=0.5, critical_q_value=0.9, start_value=0.5)

    def dpo(start: float, end: int) -> star.PerStepDPO:
        return star.PerStepDPO(start_epoch=start, pairs=10, checkpoints=[ck(1.0, end)], loss=[],
                               samples=star.DrawnSamples(n=20, correct=5, critical_at_first_step=3))

    return star.StarResult(knobs={"degree": 2}, base_lookup=star.BaseLookup(k=150, n=200, accuracy=0.75, chance=0.05),
                           sft_checkpoints=[ck(4.0, 20), ck(12.0, 40)], sft_loss=[],
                           per_step_dpo={"under": dpo(4.0, under_end), "over": dpo(12.0, over_end)})


class _Results(SimpleNamespace):
    def reading(self, spec):
        return spec.measure(self)


def test_ids_and_order_are_the_pages():
    assert [c.id for c in setlur_claims.CLAIMS] == [
        "setlur.rft_self_2x", "setlur.per_step_8x", "setlur.per_step_beats_naive", "setlur.adv_rft",
        "setlur.star_phase_transition.under", "setlur.star_phase_transition.under_vs_over",
        "setlur.star_phase_transition"]
    assert all(c.delta_source for c in setlur_claims.CLAIMS)


def test_star_rows_read_the_typed_result_and_gate_on_the_state_in_the_stages_words():
    results = _Results(star=_star(valid=80, under_end=70, over_end=42), scaling=None)
    by_id = {c.id: evaluate(c, results) for c in setlur_claims.CLAIMS}
    under = by_id["setlur.star_phase_transition.under"]
    assert under.effect == pytest.approx(0.5) and under.verdict == "reproduced"
    assert by_id["setlur.star_phase_transition.under_vs_over"].effect == pytest.approx(0.48)
    assert by_id["setlur.star_phase_transition"] is None and by_id["setlur.per_step_8x"] is None
    missed = evaluate(setlur_claims.CLAIMS[4], _Results(star=_star(valid=40, under_end=70, over_end=42)))
    assert missed.verdict == "inconclusive" and star.state_rule() in missed.note
    assert "70%" in star.state_rule() and "15 points" in star.state_rule()
    learned = setlur_claims.learned(_Results(star=_star(80, 70, 42), scaling=None))
    assert learned == {"star_sft_valid_path_rate": 0.8, "star_sft_first_node_accuracy": 0.45,
                       "base_lookup_accuracy_star": 0.75, "star_base_lookup_accuracy": 0.75, "star_degree": 2}


def test_scaling_rows_pool_sizes_and_gate_on_a_flat_sft_curve():
    rows = [scaling.TableRow(size=n, method=m, examples=n, error=e) for n, m, e in
            ((64, "sft", 0.5), (128, "sft", 0.45), (64, "rft_self", 0.25), (128, "rft_self", 0.25))]
    outcomes = {64: {"sft": [True, False] * 2, "rft_self": [True] * 4}, 128: {"sft": [True, False] * 2,
                                                                            "rft_self": [True] * 4}}
    result = scaling.ScalingResult(budget_rule="", min_pairs=1, rows=rows, efficiency={}, outcomes=outcomes, nll={})
    claim = evaluate(setlur_claims.CLAIMS[0], _Results(scaling=result, star=None))
    assert claim.effect == pytest.approx(0.5) and "n=8" in claim.measured
    assert claim.verdict == "inconclusive" and "flat" in claim.note  # 0.05 < scaling.MIN_SFT_DROP
    assert setlur_claims.learned(_Results(scaling=result, star=None)) == {
        "negatives_sft_error_by_size": {"64": 0.5, "128": 0.45}, "negatives_per_step_pairs_by_size": {}}
