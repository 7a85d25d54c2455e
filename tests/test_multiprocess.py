"""Training through `accelerate launch` with 2 CPU processes (gloo) and configs/, as on a GPU node.

The probe schedule's SFT then DPO as notebook 04 runs it (LoRA SFT, the merge, LoRA DPO, all in 2
processes); a 2-process DPO killed mid-run resumes to the same checkpoints; a ZeRO-3 DPO step where
DeepSpeed is installed. One probe-schedule run serves the first three tests, to keep the tier short.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from revlib.data import reverse
from revlib.data.sets import load_pairs
from revlib.stages import dynamics
from revlib.core import io
from revlib import params
from revlib.modeling import launch, train, train_rows

pytestmark = pytest.mark.multiprocess
SMOKE_PROBES = Path(__file__).resolve().parent.parent / "params" / "smoke" / "probes.yaml"


@pytest.fixture(scope="module", autouse=True)
def cpu_only():
    """No CUDA devices: accelerate falls back to CPU processes with the gloo backend."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CUDA_VISIBLE_DEVICES", "")
    mp.setenv("OMP_NUM_THREADS", "1")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def probe_run(tiny_model_dir, tmp_path_factory):
    """dynamics.train_probe_models on one probe set, SFT and DPO each through `accelerate launch` (ddp, 2 processes)."""
    from tests.conftest import write_params

    tmp = tmp_path_factory.mktemp("mp_probe")
    exp = params.load(write_params(SMOKE_PROBES, tmp))
    launch = {"accelerate_config": "ddp", "num_processes": 2, "batch_size": 1}  # 4 rows: 2 steps per epoch
    exp = exp.model_copy(update={
        "sft": exp.sft.model_copy(update=launch),
        "dpo": exp.dpo.model_copy(update=launch),
        "probes": exp.probes.model_copy(update={"train_sets": ["forward"], "pairs": [("forward", "forward")]}),
    })
    data_dir = tmp / "data"
    reverse.write(reverse.build(exp), data_dir)
    entries: list[dict] = []
    ckpts = dynamics.train_probe_models(exp, str(tiny_model_dir), data_dir, tmp / "run", on_log=entries.append)
    return exp, data_dir, tmp / "run" / "train" / "forward", ckpts, entries


def probe_dpo_args(exp, data_dir: Path, run: Path) -> tuple[list, dict]:
    """The pairs and keyword arguments dynamics.train_probe_models gave train.dpo."""
    p = exp.probes
    dpo_params = exp.dpo.model_copy(update={"epochs": p.dpo_epochs, "save_every_epochs": p.dpo_save_every, "max_steps": -1})
    sft_final = train.load_checkpoints(run / "sft")[-1]
    return load_pairs(data_dir, "probe_forward"), dict(
        params=dpo_params, seed=exp.seed, sft_adapter=sft_final.adapter, epochs=p.dpo_epochs,
        save_every_epochs=p.dpo_save_every)


def test_probe_schedule_sft_then_dpo_in_two_processes(probe_run):
    exp, _, run, ckpts, _ = probe_run
    p = exp.probes
    assert [(c.phase, c.epoch) for c in ckpts] == (
        [("base", 0.0)] + [("sft", float(e)) for e in train.expected_epochs(p.sft_epochs, p.sft_save_every)]
        + [("dpo", float(e)) for e in train.expected_epochs(p.dpo_epochs, p.dpo_save_every)])
    assert [c.step for c in ckpts if c.phase == "sft"] == [2, 4]  # 4 rows / (batch 1 x 2 processes) per epoch
    for phase in ("sft", "dpo"):
        log = (run / phase / "launch" / "launch.log").read_text()
        assert "--num_processes 2" in log and launch.LOG_PREFIX in log


def test_lora_sft_merge_lora_dpo_in_two_processes(probe_run, tiny_model_dir):
    exp, data_dir, run, ckpts, entries = probe_run
    dpo = train.load_checkpoints(run / "dpo")
    merged = run / "dpo" / train.MERGED_SFT
    assert (merged / "config.json").exists()
    assert all(c.base == str(merged) and c.adapter == str(c.path) for c in dpo)
    model, tok = train.load_model_for(dpo[-1])
    pairs, _ = probe_dpo_args(exp, data_dir, run)
    row = train_rows.dpo_rows(tok, pairs[:1], exp.dpo.max_length, exp.dpo.max_prompt_length)[0][0]
    assert torch.isfinite(model(torch.tensor([row["prompt_ids"] + row["chosen_ids"]])).logits).all()
    # the reference is the merged SFT model: the first logged reward margin is 0 (policy == reference)
    history = io.read_json(run / "dpo" / "trainer_state.json")["log_history"]
    assert train.curves_rows(history)[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-4)
    # rank 0's log entries reached the caller while the processes ran (SFT's, then DPO's)
    assert [e["step"] for e in entries if "rewards/margins" in e] == [e["step"] for e in train.curves_rows(history)]


class Killed(Exception):
    pass


def test_kill_mid_dpo_then_resume_to_same_checkpoints(probe_run, tiny_model_dir, tmp_path):
    exp, data_dir, run, _, _ = probe_run
    pairs, kwargs = probe_dpo_args(exp, data_dir, run)
    clean = train.load_checkpoints(run / "dpo")
    clean_metrics = io.read_json(run / "dpo" / "train_metrics.json")
    out = tmp_path / "dpo"

    def die_in_epoch_2(entry):
        if entry.get("epoch", 0) > 1.4 and "loss" in entry:
            raise Killed()

    with pytest.raises(Killed):
        train.dpo(str(tiny_model_dir), pairs, out, on_log=die_in_epoch_2, **kwargs)
    assert [c.epoch for c in train.load_checkpoints(out)] == [1.0]
    assert "processes killed" in (out / "launch" / "launch.log").read_text()
    resumed = train.dpo(str(tiny_model_dir), pairs, out, **kwargs)
    assert [(c.epoch, c.step) for c in resumed.checkpoints] == [(c.epoch, c.step) for c in clean]
    a = load_file(str(clean[-1].path / "adapter_model.safetensors"))
    b = load_file(str(resumed.final.path / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4)
    # throughput counts only the epoch trained after the resume
    assert resumed.metrics["resumed_from_epoch"] == 1.0
    assert resumed.metrics["train_tokens"] == pytest.approx(clean_metrics["train_tokens"] / 2, rel=0.01)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                    reason="deepspeed is not installed (pip install deepspeed==0.19.8 builds without CUDA)")
def test_zero3_dpo_step_in_two_processes(probe_run, tiny_model_dir, tmp_path):
    """configs/zero3.yaml as the replicas use it, on DeepSpeed's CPU accelerator: parameters sharded over 2 ranks."""
    exp, data_dir, run, _, _ = probe_run
    pairs, kwargs = probe_dpo_args(exp, data_dir, run)
    kwargs["params"] = kwargs["params"].model_copy(update={"accelerate_config": "zero3", "max_steps": 1,
                                                           "precompute_ref_log_probs": True})
    result = train.dpo(str(tiny_model_dir), pairs, tmp_path / "zero3", **kwargs)
    assert [c.step for c in result.checkpoints] == [1]
    assert any(result.final.path.glob("global_step*")), "not a DeepSpeed checkpoint"
    adapter = load_file(str(result.final.path / "adapter_model.safetensors"))
    assert adapter and all(v.numel() > 0 for v in adapter.values()), "ZeRO-3 saved empty (ungathered) adapter shards"
    assert train.curves_rows(result.log_history)[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-4)
    model, _ = train.load_model_for(result.final)
    assert all(torch.isfinite(w).all() for w in model.parameters())


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                    reason="deepspeed is not installed (pip install deepspeed==0.19.8 builds without CUDA)")
def test_zero3_full_parameter_dpo_from_a_lora_sft(probe_run, tiny_model_dir, tmp_path):
    """The replicas' authors-code variant (dpo.variants: lora null) under ZeRO-3 in 2 processes: the LoRA SFT merged,
    every weight trained against trl's frozen copy of it, a whole model gathered at the save."""
    exp, data_dir, run, _, _ = probe_run
    pairs, kwargs = probe_dpo_args(exp, data_dir, run)
    section = kwargs["params"].model_copy(update={"accelerate_config": "zero3"})
    section = section.model_validate(section.model_dump() | {"variants": {"authors-code": {
        "lora": None, "beta": 0.1, "lr": 1e-3, "max_steps": 2}}})
    kwargs["params"] = section.for_variant("authors-code")
    result = train.dpo(str(tiny_model_dir), pairs, tmp_path / "full", **kwargs)
    assert [c.step for c in result.checkpoints] == [2] and result.final.adapter is None
    merged = load_file(str(tmp_path / "full" / train.MERGED_SFT / "model.safetensors"))
    trained = load_file(str(result.final.path / "model.safetensors"))
    assert trained.keys() == merged.keys() and all(v.numel() > 0 for v in trained.values()), "ungathered shards"
    assert sum(not torch.equal(trained[k].float(), merged[k].float()) for k in merged) > len(merged) // 2
    assert train.curves_rows(result.log_history)[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-4)
