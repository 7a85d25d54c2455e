"""The r1k Figure 2 rows: every §4.3 claim a row, read in sample and held out, with δ from the authors' release."""

from __future__ import annotations

import pandas as pd
import pytest

from revlib.core import io
from revlib.evaluation import paper_reference
from revlib.lab import findings, r1k_claims
from revlib.params import load
from revlib.stages.dynamics import InSampleScores, ProbeResult

from conftest import PARAMS, write_params

PAIRS = {"(D_f, T_f)": ("forward", "forward"), "(D_r, T_r)": ("reverse", "reverse"), "(D_m, T_m)": ("mix", "mix"),
         "(D_f, T_r)": ("forward", "reverse"), "(D_r, T_f)": ("reverse", "forward")}
EXAMPLES = {"forward": ["f0", "f1", "f2", "f3"], "reverse": ["r0", "r1", "r2", "r3"]}
EXAMPLES["mix"] = EXAMPLES["forward"] + EXAMPLES["reverse"]  # T_m holds both directions, as 01 builds it


def _frame(values) -> pd.DataFrame:
    """04's per-example scores: `values(pair, phase, example)` -> (ALP(y+), ALP(y-)) or None (not scored)."""
    rows = []
    for pair, (train, test) in PAIRS.items():
        for x, phase in enumerate(("base", "sft", "dpo")):
            for ex in EXAMPLES[test]:
                got = values(pair, phase, ex)
                if got is None:
                    continue
                chosen, rejected = got
                rows.append({"train_set": train, "test_set": test, "pair": pair,
                             "distribution": "ID" if train == test else "OOD", "phase": phase, "epoch": float(x),
                             "x": x, "checkpoint": phase, "example": ex, "alp_chosen": chosen,
                             "alp_rejected": rejected, "margin": chosen - rejected})
    return pd.DataFrame(rows)


def released_values(pair: str, phase: str, example: str):
    """The authors' released curves as per-example scores: 'base' is their first SFT epoch (they released no base),
    'sft' their last, 'dpo' their last DPO epoch (D_m only)."""
    rel = paper_reference.released()
    if phase == "dpo":
        if pair != "(D_m, T_m)":
            return None
        series = rel["dpo"][pair]
        return series["alp_chosen"][-1], series["alp_rejected"][-1]
    series, at = rel["sft"][pair], 0 if phase == "base" else -1
    return series["alp_chosen"][at], series["alp_rejected"][at]


def _write_04(exp, held_out: pd.DataFrame, in_sample: pd.DataFrame | None) -> None:
    d = exp.run_root / "04_probe_dynamics" / "micro"
    d.mkdir(parents=True, exist_ok=True)
    io.write_json(d / "manifest.json", {"status": "done"})
    ProbeResult(held_out).save(d)
    if in_sample is not None:
        InSampleScores(in_sample).save(d)


@pytest.fixture
def exp(tmp_path):
    # the real-text probe bar (params/r1k-smollm2.yaml): the authors' pooled rise, 0.474, is below the default 0.5
    return load(write_params(PARAMS / "smoke" / "foundation.yaml", tmp_path, probes={"min_alp_rise": 0.1}))


def _claims(exp) -> dict[str, dict]:
    return {c["id"]: c for c in findings.collect(exp)["claims"]}


def test_every_section_4_3_claim_is_a_row_and_the_unmade_one_is_gone():
    ids = [s.id for s in r1k_claims.FIGURE_2]
    assert len(ids) >= 9 and all("fig2" in i or "abstract" in i for i in ids)
    assert "r1k.fig2c.dpo_lowers_chosen_too" not in {s.id for s in findings.REGISTRY.specs}
    for s in r1k_claims.FIGURE_2:
        assert s.held_out is not None and s.reads == r1k_claims.IN_SAMPLE and s.delta > 0 and s.delta_source


def test_no_delta_exceeds_the_authors_own_effect():
    for s in r1k_claims.FIGURE_2:
        if s.released_effect is not None:
            assert abs(s.delta) <= abs(s.released_effect), s.id
        else:
            assert "released no number" in s.delta_source
    smallest = min(v for v, _ in r1k_claims.RELEASED.values() if v > 0)
    assert r1k_claims.PROBE_DELTA_FALLBACK == pytest.approx(r1k_claims.DELTA_SHARE * smallest)


def test_the_authors_released_numbers_read_reproduced_where_they_show_the_effect(exp):
    frame = _frame(released_values)
    _write_04(exp, frame, frame)
    claims = _claims(exp)
    shown = 0
    for s in r1k_claims.FIGURE_2:
        if s.released_effect is None:
            continue
        c = claims[s.id]
        assert c["effect"] == pytest.approx(s.released_effect, abs=1e-6), s.id  # the row reads what the release says
        if s.released_effect > 0:
            shown += 1
            assert c["verdict"] == c["verdict_held_out"] == "reproduced", (s.id, c["note"])
        else:  # in distribution, pooled, the release's y− does not rise from SFT epoch 1 on
            assert c["verdict"] != "reproduced" and "does not reach δ" in c["note"]
    assert shown >= 8


def test_without_in_sample_scores_the_primary_verdict_is_inconclusive_never_a_pass(exp):
    _write_04(exp, _frame(released_values), None)
    c = _claims(exp)["r1k.fig2a.sft_raises_chosen"]
    assert c["verdict"] == "inconclusive" and "probes.in_sample is off" in c["note"]
    assert c["verdict_held_out"] == "reproduced" and c["interval_held_out"][0] > 0
    page = findings.render(findings.collect(exp))
    assert "Two readings of Figure 2" in page and "The first is the reading that matches the paper's protocol" in page


def test_the_held_out_probe_keys_are_learned_without_in_sample_scores(exp):
    """The demo leaves probes.in_sample off: its held-out read-outs must still reach `learned` (they once did not)."""
    _write_04(exp, _frame(released_values), None)
    io.write_json(exp.run_root / "04_probe_dynamics" / "micro" / "metrics.json",
                  {"scoring/tokens_per_second": 1234.5, "scoring/cpu_matmul": "bfloat16"})
    learned = findings.collect(exp)["learned"]
    for key in ("probe_alp_pos_id_after_sft", "probe_margin_id_after_sft", "probe_alp_neg_change_dpo"):
        assert isinstance(learned[key], float), key
    assert learned["probe_alp_neg_change_dpo"] < 0  # the release's DPO lowers y-
    assert learned["probe_tokens_per_s"] == 1234.5 and learned["probe_cpu_matmul"] == "bfloat16"
    assert "probe_in_sample_n" not in learned


def test_each_reading_gets_its_own_interval_and_verdict(exp):
    def memorised(pair, phase, ex):  # in sample y+ rises by 1, varying per example
        got = released_values(pair, phase, ex)
        return None if got is None else (got[0] + (0 if phase == "base" else 1 + 0.1 * int(ex[1:])), got[1])

    def flat(pair, phase, ex):  # held out nothing moves under SFT
        got = released_values(pair, "base" if phase == "sft" else phase, ex)
        return got

    _write_04(exp, _frame(flat), _frame(memorised))
    c = _claims(exp)["r1k.fig2a.sft_raises_chosen"]
    assert c["verdict"] == "reproduced" and c["reading"] == r1k_claims.IN_SAMPLE
    assert c["interval"][0] > 0.9 and c["interval"] != c["interval_held_out"]
    # held out, y+ did not rise: that reading's own gate says its models did not learn; the in-sample one passed its own
    assert c["verdict_held_out"] == "inconclusive" and c["effect_held_out"] == pytest.approx(0, abs=1e-9)
    assert "did not learn (held out" in c["note_held_out"] and c["note"] == ""
    assert c["reading_held_out"] == r1k_claims.HELD_OUT and "held out" in c["measured_held_out"]
    for key in ("verdict", "verdict_held_out", "effect_held_out", "interval_held_out", "delta", "delta_source",
                "released_effect"):
        assert key in c


def test_limited_suppression_needs_a_rise_in_y_minus_first(exp):
    def no_rise(pair, phase, ex):  # SFT leaves y− where the base had it; DPO lowers it
        got = released_values(pair, phase, ex)
        if got is None:
            return None
        base = released_values(pair, "base", ex)[1]
        return got[0], base - (0.05 if phase == "dpo" else 0.0)

    frame = _frame(no_rise)
    _write_04(exp, frame, frame)
    c = _claims(exp)["r1k.fig2b.dpo_suppression_limited"]
    assert c["verdict"] == c["verdict_held_out"] == "inconclusive"
    assert c["note"].startswith("precondition failed: a rise in y− to suppress")
    assert "held out" in c["note_held_out"]


# ---------------------------------------------------------------- the authors' measure: what the rows compare on

def _write_authors(exp, held_out: pd.DataFrame, in_sample: pd.DataFrame | None, cap: int = 1000,
                   base_first50: float | None = -2.25) -> None:
    from revlib.stages.dynamics import AuthorsInSampleScores, AuthorsMeasure, AuthorsScores

    d = exp.run_root / "04_probe_dynamics" / "micro"
    AuthorsMeasure(True, "", cap, "ends", "the file's rows", 16, {}, "r1k-probe-100.parquet", base_first50, 50).save(d)
    AuthorsScores(held_out).save(d)
    if in_sample is not None:
        AuthorsInSampleScores(in_sample).save(d)


def _flat(pair, phase, ex):  # nothing moves under SFT or DPO
    return released_values(pair, "base", ex)


def _constant(pair, phase, ex):  # every probe, every checkpoint alike: no effect of any kind
    return -2.0, -2.0


@pytest.fixture
def exp_authors_gates(tmp_path):
    # as the replicas: the probe bar read on the authors' measure, the one it was derived on
    return load(write_params(PARAMS / "smoke" / "foundation.yaml", tmp_path,
                             probes={"min_alp_rise": 0.1, "gates_measure": "authors"}))


def test_rows_compare_on_the_authors_measure_with_revlibs_beside(exp_authors_gates):
    exp = exp_authors_gates
    flat = _frame(_constant).assign(alp_irrelevant=-3.0, alp_argmax=-0.5)  # the extra probes only revlib scores
    _write_04(exp, flat, flat)  # revlib's response-only measure: no effect at all
    released = _frame(released_values)
    _write_authors(exp, released, released, cap=640)  # the authors' measure: their released curves
    claims = _claims(exp)
    for s in r1k_claims.FIGURE_2:
        c = claims[s.id]
        if s.released_effect is None:  # the mass row: their script scores no irrelevant response
            assert c["compares_on"].startswith("revlib's response-only ALP") and not c["beside"]
            continue
        assert c["compares_on"].startswith("the r1k authors' ALP measure") and "640 tokens (theirs: 1,000)" in c["compares_on"]
        assert c["effect"] == pytest.approx(s.released_effect, abs=1e-6), s.id
        assert "the authors' measure" in c["measured"] and "the authors' measure" in c["measured_held_out"]
        if s.released_effect > 0:
            assert c["verdict"] == c["verdict_held_out"] == "reproduced", (s.id, c["note"])
        names = [b["name"] for b in c["beside"]]
        assert names == ["revlib's response-only ALP, in sample", "revlib's response-only ALP, held out"]
        for b in c["beside"]:  # revlib's own reading, judged by the same rule: here nothing moved
            assert b["verdict"] != "reproduced" and "response-only measure" in b["measured"] + b["note"]
            assert "borrowed" in b["delta_note"]
    page = findings.render(findings.collect(exp))
    assert "compares on" in page and "beside, revlib&#x27;s response-only ALP, in sample" in page
    learned = findings.collect(exp)["learned"]
    assert learned["authors_measure_max_tokens"] == 640 and learned["probe_authors_alp_base"] == -2.25


def test_where_the_authors_measure_does_not_apply_the_rows_say_so(exp):
    from revlib.stages.dynamics import AuthorsMeasure

    frame = _frame(released_values)
    _write_04(exp, frame, frame)
    d = exp.run_root / "04_probe_dynamics" / "micro"
    why = "No probe row can be read the authors' way: its rows (arith) have no `text` / `worse-text` chat strings."
    AuthorsMeasure(False, why, 1000, "all").save(d)
    collected = findings.collect(exp)
    c = {x["id"]: x for x in collected["claims"]}["r1k.fig2a.sft_raises_chosen"]
    assert c["compares_on"].startswith("revlib's response-only ALP (No probe row can be read the authors' way")
    assert "borrowed" in c["compares_on"] and not c["beside"]
    assert c["verdict"] == "reproduced" and "revlib's response-only measure" in c["measured"]
    # nothing was read on it: no cap or base value in learned (the demo's learned block stays as it was)
    assert "authors_measure_max_tokens" not in collected["learned"] and "probe_authors_alp_base" not in collected["learned"]


def test_the_probe_gate_reads_the_measure_its_bar_was_derived_on(exp, exp_authors_gates):
    # a bar derived on revlib's measure (the default) reads it: there nothing rose, so the authors' reading is gated
    released = _frame(released_values)
    _write_04(exp, _frame(_flat), _frame(_flat))
    _write_authors(exp, released, released)
    c = _claims(exp)["r1k.fig2a.sft_raises_chosen"]
    assert c["verdict"] == "inconclusive" and "revlib's response-only measure" in c["note"]
    # the replicas' bars come from the released numbers: they read the authors' measure (probes.gates_measure)
    exp = exp_authors_gates
    released = _frame(released_values)
    _write_04(exp, _frame(_flat), _frame(_flat))  # on revlib's measure nothing rose: that gate would fail
    _write_authors(exp, released, released)
    c = _claims(exp)["r1k.fig2a.sft_raises_chosen"]
    assert c["verdict"] == c["verdict_held_out"] == "reproduced"  # the gate read the authors' measure, which rose
    beside = {b["name"]: b for b in c["beside"]}
    # revlib's own reading beside: its gate reads the authors' measure too, so its verdict is its numbers'
    assert beside["revlib's response-only ALP, in sample"]["verdict"] == "not reproduced"
    # where the authors' measure was not read, a gate on it says so
    (exp.run_root / "04_probe_dynamics" / "micro" / "authors_measure.json").unlink()
    fresh = _claims(exp)["r1k.fig2a.sft_raises_chosen"]
    assert fresh["verdict"] == "inconclusive" and "probes.gates_measure: authors" in fresh["note"]


@pytest.mark.parametrize("name", ["r1k-qwen2.5-7b.yaml", "r1k-qwen2.5-14b.yaml"])
def test_the_replicas_read_the_authors_protocol_like_for_like(name):
    p = load(PARAMS / name).probes
    assert p.in_sample  # the rows the models trained on, where the authors read Figure 2
    assert p.authors_measure_max_tokens == 1000  # their cap
    assert p.gates_measure == "authors"  # the bars come from their released numbers, on their measure
