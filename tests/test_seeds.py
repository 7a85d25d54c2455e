"""`revlib seeds`: one params file per seed (only the seed and name change), each claim's verdict per seed, flips
marked, the page linked from the index. The runs themselves are faked here: the sweep's own cost is in the README."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from revlib.core import io
from revlib.lab import seeds
from revlib.params import load

from conftest import PARAMS, write_params


def _fake_05(exp, forward_acc: float):
    """05 outputs as a finished run would leave them: T_f and T_r per model, samples, results.csv."""
    d = exp.run_root / "05_benchmarks" / "micro"
    d.mkdir(parents=True, exist_ok=True)
    io.write_json(d / "manifest.json", {"status": "done", "wall_time_s": 12.5})
    rows = []
    accs = {("sft", "forward", "synthetic_forward"): forward_acc, ("sft", "reverse", "synthetic_reverse"): 0.95,
            ("sft", "reverse", "synthetic_forward"): 0.62}
    for (stage, ts, task), acc in accs.items():
        rows.append({"stage": stage, "train_set": ts, "task": task, "accuracy": acc, "problems": 200})
    pd.DataFrame(rows).to_csv(d / "results.csv", index=False)


def _smoke(tmp_path):
    raw = yaml.safe_load((PARAMS / "smoke" / "benchmarks.yaml").read_text())
    raw["benchmarks"]["tasks"].remove("math500")
    raw["benchmarks"]["local_paths"] = {}
    return write_params(raw, tmp_path)


def test_sweep_writes_one_verdict_per_seed_and_marks_flips(tmp_path):
    params_file = _smoke(tmp_path)
    exp = load(params_file)
    ran = []

    def fake_run(exp_s, path):
        ran.append((exp_s.experiment, exp_s.seed, path))
        # seed 1's forward model is weaker: reverse-minus-forward is +2 points there, -28 elsewhere
        _fake_05(exp_s, 0.6 if exp_s.seed == 1 else 0.9)

    page = seeds.sweep(params_file, [0, 1, 2], run=fake_run)
    assert [(e, s) for e, s, _ in ran] == [(exp.experiment, 0), (f"{exp.experiment}-seed1", 1), (f"{exp.experiment}-seed2", 2)]
    # a seed's params differ from the source only in name, seed and description
    raw0, raw1 = load(params_file).model_dump(mode="json"), load(ran[1][2]).model_dump(mode="json")
    assert {k for k in raw0 if raw0[k] != raw1[k]} == {"experiment", "seed", "description"}
    data = io.read_json(exp.run_root / "seeds.json")
    assert data["seeds"] == [0, 1, 2] and "shared by every seed" not in data["base"]  # the smoke base is embedded
    row = {r["id"]: r for r in data["claims"]}["r1k.table1.reverse_beats_forward"]
    assert row["verdicts"] == {"0": "not reproduced", "1": "inconclusive", "2": "not reproduced"}
    assert row["across_seeds"] == "flips"
    html = page.read_text()
    assert "flips" in html and "seed 2" in html and f"{exp.experiment}-seed1/findings.html" in html
    assert "seeds.html" in (exp.run_root / "index.html").read_text()
    assert all(r["cells_s"] == 12.5 for r in data["runs"])


def test_a_local_base_is_named_as_shared(tmp_path):
    exp = load(PARAMS / "demo.yaml")
    assert "shared by every seed" in seeds.base_note(exp) and "bases/arith" in seeds.base_note(exp)


def test_seeds_must_be_distinct(tmp_path):
    params_file = _smoke(tmp_path)
    with pytest.raises(ValueError, match="distinct"):
        seeds.sweep(params_file, [1, 1], run=lambda e, p: None)


def test_a_failed_seed_is_a_row_not_the_end(tmp_path):
    params_file = _smoke(tmp_path)

    def fake_run(exp_s, path):
        if exp_s.seed == 1:
            raise RuntimeError("kernel died")
        _fake_05(exp_s, 0.9)

    seeds.sweep(params_file, [0, 1, 2], run=fake_run)
    data = io.read_json(load(params_file).run_root / "seeds.json")
    status = {r["seed"]: r["status"] for r in data["runs"]}
    assert status[0] == status[2] == "done" and status[1] == "failed: RuntimeError: kernel died"
    row = {r["id"]: r for r in data["claims"]}["r1k.table1.reverse_beats_forward"]
    assert row["verdicts"]["1"] == "not run" and row["not_run"] == [1]
    assert row["across_seeds"] == "not reproduced"  # the seeds that ran agree; the missing one is named, not a flip
