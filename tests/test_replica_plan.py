"""params/r1k-qwen2.5-7b.yaml as a researcher runs it on a GPU node, with everything but the GPU kept.

Swapped: the model for the `micro` preset (same cell names), 8 GPUs for 2 CPU processes (still ZeRO-3
through configs/zero3.yaml when DeepSpeed is installed), the Hub and the API teacher for the r1k paper's
published sample in ../shared/data, vLLM for lm-eval's hf backend, lengths and epochs cut down. The plan
(stages, matrix cells, their order and dependencies) is the replica's own.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from revlib import params
from revlib.modeling import train
from revlib.lab.plan import plan
from revlib.lab.manifest import read_manifest

REPO = Path(__file__).resolve().parent.parent
REPLICA = REPO / "params" / "r1k-qwen2.5-7b.yaml"
SHARED = REPO.parent / "shared" / "data"


def test_replica_params_pass_check():
    proc = subprocess.run([sys.executable, "-m", "revlib.lab.cli", "check", str(REPLICA)], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout


@pytest.mark.parametrize("replica", ["r1k-qwen2.5-7b.yaml", "r1k-qwen2.5-14b.yaml"])
def test_a_failed_gate_never_stops_a_replica(replica):
    """After days of training, a failed learning gate must not leave the stages after it unstarted."""
    from revlib.lab import hardware

    exp = params.load(REPO / "params" / replica)
    assert not exp.require_learning and hardware.gate_stops(exp) == []
    gated = params.load(REPO / "params" / replica).model_copy(update={"require_learning": True})
    assert any("05_benchmarks" in line for line in hardware.gate_stops(gated))  # what the setting prevents


@pytest.mark.parametrize("replica", ["r1k-qwen2.5-7b.yaml", "r1k-qwen2.5-14b.yaml"])
def test_the_authors_dpo_runs_beside_the_papers(replica):
    """dpo.variants.authors-code: the authors' released DPO script's settings, on every SFT model, beside beta 0.6."""
    exp = params.load(REPO / "params" / replica)
    paper, theirs = exp.dpo.for_variant("directional"), exp.dpo.for_variant("authors-code")
    assert paper.beta == 0.6 and paper.lora.r == 256 and paper.max_steps == -1
    assert theirs.lora is None and theirs.beta == 0.1 and theirs.lr == 5e-7 and theirs.max_steps == 50
    assert theirs.accelerate_config == "zero3_offload" and (REPO / "configs" / "zero3_offload.yaml").exists()
    assert theirs.batch_size * theirs.grad_accum * theirs.num_processes == 16  # theirs: 1 x 4 accumulation x 4 GPUs
    model = exp.base_models[0].name
    dpo_cells = [c.name for c in plan(exp) if c.stage == "03_dpo"]
    assert dpo_cells == [f"{model}__{s}" for s in exp.dpo.on] + [f"{model}__{s}__authors-code" for s in exp.dpo.on]


def scaled_down(tmp_path: Path) -> dict:
    raw = yaml.safe_load(REPLICA.read_text())
    name = raw["base_models"][0]["name"]
    raw["output_dir"] = str(tmp_path / "outputs")
    raw["require_learning"] = False  # a few steps on a micro model learn nothing worth asserting
    raw["base_models"] = [{"name": name, "preset": "micro",
                           "pretrain": {"steps": 5, "batch_size": 8, "corpus_size": 200, "eval_size": 10}}]
    raw["data"].update(source={"kind": "r1k", "path": str(SHARED / "r1k-probe-100.parquet")}, teacher={"kind": "oracle"},
                       n_train=30, n_test=10, probe_train=10, probe_test=10)
    zero3 = importlib.util.find_spec("deepspeed") is not None
    for section in ("sft", "dpo"):
        s = raw[section]
        s.update(epochs=2, save_every_epochs=1, max_length=1536, lora={**s["lora"], "r": 8, "alpha": 16},
                 batch_size=2, grad_accum=1, num_processes=2, accelerate_config="zero3" if zero3 else "ddp",
                 lr=1e-3)
    raw["dpo"]["max_prompt_length"] = 1024
    if importlib.util.find_spec("liger_kernel") is None:  # its kernels are Triton's (GPU); the replica asks for them
        raw["dpo"].get("trainer", {}).pop("use_liger_kernel", None)
    for variant in raw["dpo"].get("variants", {}).values():  # the authors' full-parameter DPO, a few steps
        variant.update(max_steps=2, accelerate_config="zero3" if zero3 else "ddp")
    raw["probes"].update(max_response_tokens=32, token_budget=2048, sft_epochs=2, sft_save_every=1, dpo_epochs=1,
                         dpo_save_every=1)
    local = {}
    for task, rows in (("aime24", [{"problem": "What is 1+1?", "answer": "2"}, {"problem": "What is 2+3?", "answer": "5"}]),
                       ("gpqa_diamond", [{"Question": "Which is a prime?", "Correct Answer": "7", "Incorrect Answer 1": "8",
                                          "Incorrect Answer 2": "9", "Incorrect Answer 3": "10"}] * 2)):
        path = tmp_path / f"{task}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        local[task] = str(path)
    local["math500"] = str(SHARED / "math500.jsonl")
    b = raw["benchmarks"]
    b.update(backend="hf", dtype="float32", max_gen_toks=16, max_model_len=None, data_parallel_size=1, limit=2,
             local_paths=local, batch_size=4)
    b.pop("judge", None)  # no API key here; the judge's client is tested against a mock server
    return raw


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.skipif(not (SHARED / "r1k-probe-100.parquet").exists(), reason="../shared/data is not here")
def test_replica_plan_runs_on_micro_with_two_processes(tmp_path, monkeypatch):
    from revlib.lab import runner

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    target = tmp_path / "r1k-micro.yaml"
    target.write_text(yaml.safe_dump(scaled_down(tmp_path), sort_keys=False))
    exp = params.load(target)
    replica = params.load(REPLICA)
    assert [(c.stage, c.name, c.deps) for c in plan(replica)] == [(c.stage, c.name, c.deps) for c in plan(exp)]
    runner.run(exp, target)
    for cell in plan(exp):
        assert (read_manifest(cell.run_dir) or {}).get("status") == "done", cell.key
    sft = train.load_checkpoints(exp.run_root / "02_sft" / f"{exp.base_models[0].name}__forward")
    assert [c.epoch for c in sft] == [1.0, 2.0]
    log = (exp.run_root / "02_sft" / f"{exp.base_models[0].name}__forward" / "launch" / "launch.log").read_text()
    assert "--num_processes 2" in log
    results = pd.read_csv(exp.run_root / "05_benchmarks" / exp.base_models[0].name / "results.csv")
    assert set(results["task"]) == {"aime24", "math500", "gpqa_diamond"}
