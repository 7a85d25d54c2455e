"""The findings page: the verdict rule, claims computed from what the stages wrote, the gate on learning."""

from __future__ import annotations

import pandas as pd
import pytest

from revlib import findings, io
from revlib.params import load

from conftest import PARAMS, write_params


@pytest.mark.parametrize("lo, hi, delta, expected", [
    (0.01, 0.2, 0.02, "reproduced"),        # the interval lies on the paper's side of zero
    (-0.3, -0.1, 0.02, "not reproduced"),   # the opposite effect
    (-0.01, 0.015, 0.02, "not reproduced"),  # rules out an effect of the size the claim needs
    (-0.05, 0.15, 0.02, "inconclusive"),     # compatible with both
])
def test_verdict_rule(lo, hi, delta, expected):
    assert findings.verdict(lo, hi, delta) == expected


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


def test_no_finished_stage_writes_no_page(exp):
    assert findings.write(exp) is None
