"""Notebooks 06 and 07 end to end on the smoke params (micro model, tiny sizes), and their params checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from revlib.core import io
from revlib.params import ParamsError, load, validate
from revlib.stages.scaling import ScalingResult
from revlib.stages.star import StarResult

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "params" / "smoke" / "negatives.yaml"


def test_full_and_smoke_params_validate():
    for name in ("negative-data-full.yaml", "star-graph-full.yaml", "smoke/negatives.yaml"):
        exp = load(REPO / "params" / name)
        assert exp.negatives is not None or exp.star_graph is not None


def test_bad_negative_params_are_named(tmp_path):
    raw = yaml.safe_load(SMOKE.read_text())
    raw["negatives"]["critical_step"] = "worst"
    raw["star_graph"]["under_epochs"] = 3
    with pytest.raises(ParamsError) as err:
        validate(raw, tmp_path / "p.yaml")
    assert "negatives.critical_step" in str(err.value) and "under_epochs" in str(err.value)
    raw = yaml.safe_load(SMOKE.read_text())
    raw["negatives"]["data_sizes"] = [4, 4]
    with pytest.raises(ParamsError, match="data_sizes must be distinct"):
        validate(raw, tmp_path / "p.yaml")


@pytest.mark.notebook
def test_stages_06_and_07_run_end_to_end(tmp_path):
    raw = yaml.safe_load(SMOKE.read_text())
    raw["output_dir"] = str(tmp_path / "outputs")
    params = tmp_path / "smoke.yaml"
    params.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "revlib.lab.cli", "run", str(params)], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    root = tmp_path / "outputs" / "smoke-negatives"
    neg = root / "06_negative_data" / "micro"
    metrics = io.read_json(neg / "metrics.json")
    assert {"sft/error@4", "sft/error@8"} <= set(metrics)
    for n in (4, 8):
        samples = list(io.read_jsonl(neg / f"n{n}" / "samples.jsonl"))
        assert len(samples) == n * 2 and all("correct" in s and "steps" in s for s in samples)
        right = {s["problem_id"] for s in samples if s["correct"]}
        own = list(io.read_jsonl(neg / f"n{n}" / "rft_self.jsonl"))  # RFT on D+: only verified own samples
        assert all(r["meta"]["source"] == "rft" and r["meta"]["sample"].rsplit("-s", 1)[0] in right for r in own)
        rft = list(io.read_jsonl(neg / f"n{n}" / "rft.jsonl"))  # synthetic positives plus the same own samples
        assert len(rft) == n + len(own) and sum(r["meta"].get("source") == "rft" for r in rft) == len(own)
    scaling = ScalingResult.load(neg)  # what the findings page reads
    assert "optimizer steps" in scaling.budget_rule and {r.method for r in scaling.rows} >= {"sft", "rft"}
    assert all(len(v) == 4 for size in scaling.outcomes.values() for v in size.values() if v)  # n_test outcomes
    star = StarResult.load(root / "07_star_graph" / "micro")
    assert [r.epoch for r in star.sft_checkpoints] == [1.0, 2.0]
    assert all(0.0 <= r.critical_token_prob <= 1.0 for r in star.sft_checkpoints)
    assert set(star.per_step_dpo) == {"under", "over"} and star.per_step_dpo["over"].start_epoch == 2.0
    assert (root / "07_star_graph" / "micro" / "07_star_graph.html").exists()
