"""Stage 05 end to end through the runner: base, LoRA SFT and DPO models through lm-eval, both tables written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from revlib.core import io
from revlib import params
from revlib.core.records import read_records

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "params" / "smoke" / "benchmarks.yaml"
MATH500 = REPO.parent / "shared" / "data" / "math500.jsonl"


@pytest.mark.notebook
def test_notebook_smoke(tmp_path):
    from revlib.lab import runner
    from tests.conftest import write_params

    raw = yaml.safe_load(SMOKE.read_text())
    if MATH500.exists():
        raw["benchmarks"]["local_paths"] = {"math500": str(MATH500)}
    else:
        raw["benchmarks"]["tasks"].remove("math500")
        raw["benchmarks"]["local_paths"] = {}
    params_file = write_params(raw, tmp_path)
    exp = params.load(params_file)
    runner.run(exp, params_file)
    run_dir = exp.run_root / "05_benchmarks" / "micro"
    results = pd.read_csv(run_dir / "results.csv")
    models = set(zip(results["stage"], results["train_set"]))
    assert models == {("base", "(base)"), ("sft", "forward"), ("sft", "reverse"), ("dpo", "forward")}
    assert (results["problems"] == 4).all() and results["accuracy"].between(0, 1).all()
    # the task-world benchmark: 2 four-step chains asked both ways, evaluated for every model, judged alive or not
    assert set(results[results["task"] == "world_longer"]["stage"]) == {"base", "sft", "dpo"}
    bench = [r.question for r in read_records(run_dir / "world" / "world_longer.jsonl")]
    assert len(bench) == 4 and all("(4)" in q for q in bench)
    alive = io.read_json(run_dir / "world.json")
    assert [w["benchmark"] for w in alive] == ["world_longer"] and 0 <= alive[0]["chance"] <= 1
    assert alive[0]["alive"] == (alive[0]["best_accuracy"] >= alive[0]["chance"] + 0.2)
    assert results[results["stage"] == "dpo"]["adapter"].notna().all()
    for name in ("table1", "table2"):
        for ext in ("csv", "md", "html"):
            assert (run_dir / f"{name}.{ext}").stat().st_size > 0
        assert (run_dir / f"headline_{name}.html").exists()
    assert len(list((run_dir / "samples").glob("*/*.jsonl"))) == len(results)
    assert "forward + DPO" in (run_dir / "table2.md").read_text()
    html = (run_dir / "05_benchmarks.html").read_text()
    assert "Table 1" in html and "Table 2" in html
    metrics = io.read_json(run_dir / "metrics.json")
    assert metrics["problems/sft/forward/synthetic_forward"] == 4
