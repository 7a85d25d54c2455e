"""Training through `accelerate launch` with 2 CPU processes (gloo) and configs/ddp.yaml, as on a GPU node.

LoRA SFT, then the merge, then LoRA DPO in 2 processes; a 2-process DPO killed mid-run resumes to
the same checkpoints; the probe schedule's SFT then DPO as notebook 04 runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from revlib import data, dynamics, io, params, render, train
from revlib.params.train import DPOParams, Lora, SFTParams
from revlib.records import PreferencePair
from revlib.tasks import get_task

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
def records():
    return get_task("arith").sample(0, 16)


@pytest.fixture(scope="module")
def pairs(records):
    fam = get_task("arith")
    out = []
    for fwd in records:
        rev = fam.invert(fwd)
        out.append(PreferencePair(id=fwd.id, prompt=render.prompt_messages(fwd.question),
                                  chosen=render.assistant_message(fwd.reasoning, fwd.answer),
                                  rejected=render.assistant_message(rev.reasoning, rev.answer), kind="directional"))
    return out


def sft_params(**kw) -> SFTParams:
    base = dict(epochs=1, batch_size=4, lr=1e-2, max_length=256, lora=Lora(r=4, alpha=8),
                accelerate_config="ddp", num_processes=2)
    return SFTParams(**{**base, **kw})


def dpo_params(**kw) -> DPOParams:
    base = dict(epochs=2, batch_size=4, lr=1e-2, max_length=256, max_prompt_length=96, lora=Lora(r=4, alpha=8),
                accelerate_config="ddp", num_processes=2)
    return DPOParams(**{**base, **kw})


@pytest.fixture(scope="module")
def sft_run(tiny_model_dir, records, tmp_path_factory):
    return train.sft(str(tiny_model_dir), records, tmp_path_factory.mktemp("mp") / "sft", sft_params())


@pytest.fixture(scope="module")
def dpo_run(tiny_model_dir, pairs, sft_run, tmp_path_factory):
    entries: list[dict] = []
    out = tmp_path_factory.mktemp("mp") / "dpo"
    result = train.dpo(str(tiny_model_dir), pairs, out, dpo_params(), sft_adapter=sft_run.final.adapter,
                       on_log=entries.append)
    return result, out, entries


def test_lora_sft_merge_lora_dpo_in_two_processes(sft_run, dpo_run, pairs):
    result, out, entries = dpo_run
    assert sft_run.final.step == 2  # 16 rows / (batch 4 x 2 processes)
    assert [(c.epoch, c.step) for c in result.checkpoints] == [(1.0, 2), (2.0, 4)]
    merged = out / train.MERGED_SFT
    assert result.final.base == str(merged) and (merged / "config.json").exists()
    assert result.final.adapter == str(result.final.path)
    model, tok = train.load_model_for(result.final)
    row = train.dpo_rows(tok, pairs[:1], 256, 96)[0]
    assert torch.isfinite(model(torch.tensor([row["prompt_ids"] + row["chosen_ids"]])).logits).all()
    # the reference is the merged SFT model: the first logged reward margin is 0 (policy == reference)
    first = train.curves_rows(result.log_history)[0]
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-4)
    # the parent saw rank 0's log entries, and the launch log holds the processes' output
    assert [e["step"] for e in entries if "loss" in e] == [e["step"] for e in train.curves_rows(result.log_history)]
    log = (out / "launch" / "launch.log").read_text()
    assert train.LOG_PREFIX in log and "checkpoint(s)" in log


class Killed(Exception):
    pass


def test_kill_mid_dpo_then_resume_to_same_checkpoints(tiny_model_dir, pairs, sft_run, dpo_run, tmp_path):
    clean, _, _ = dpo_run
    out = tmp_path / "dpo"

    def die_in_epoch_2(entry):
        if entry.get("epoch", 0) > 1.4 and "loss" in entry:
            raise Killed()

    with pytest.raises(Killed):
        train.dpo(str(tiny_model_dir), pairs, out, dpo_params(), sft_adapter=sft_run.final.adapter,
                  on_log=die_in_epoch_2)
    assert [c.epoch for c in train.load_checkpoints(out)] == [1.0]
    assert "processes killed" in (out / "launch" / "launch.log").read_text()
    resumed = train.dpo(str(tiny_model_dir), pairs, out, dpo_params(), sft_adapter=sft_run.final.adapter)
    assert [(c.epoch, c.step) for c in resumed.checkpoints] == [(c.epoch, c.step) for c in clean.checkpoints]
    a = load_file(str(clean.final.path / "adapter_model.safetensors"))
    b = load_file(str(resumed.final.path / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4)
    # throughput counts only the epoch trained after the resume
    assert resumed.metrics["resumed_from_epoch"] == 1.0
    assert resumed.metrics["train_tokens"] == pytest.approx(clean.metrics["train_tokens"] / 2, rel=0.01)


def test_probe_schedule_sft_then_dpo_in_two_processes(tiny_model_dir, tmp_path):
    from tests.conftest import write_params

    exp = params.load(write_params(SMOKE_PROBES, tmp_path))
    launch = {"accelerate_config": "ddp", "num_processes": 2}
    exp = exp.model_copy(update={
        "sft": exp.sft.model_copy(update=launch),
        "dpo": exp.dpo.model_copy(update=launch),
        "probes": exp.probes.model_copy(update={"train_sets": ["forward"], "pairs": [("forward", "forward")]}),
    })
    data_dir = tmp_path / "data"
    data.write(data.build(exp), data_dir)
    ckpts = dynamics.train_probe_models(exp, str(tiny_model_dir), data_dir, tmp_path / "run")
    p = exp.probes
    assert [(c.phase, c.epoch) for c in ckpts] == (
        [("base", 0.0)] + [("sft", float(e)) for e in train.expected_epochs(p.sft_epochs, p.sft_save_every)]
        + [("dpo", float(e)) for e in train.expected_epochs(p.dpo_epochs, p.dpo_save_every)])
    run = tmp_path / "run" / "train" / "forward"
    assert (run / "sft" / "launch" / "launch.log").exists() and (run / "dpo" / "launch" / "launch.log").exists()
    dpo_ckpts = [c for c in ckpts if c.phase == "dpo"]
    assert all(c.base == str(run / "dpo" / train.MERGED_SFT) for c in dpo_ckpts)
    state = io.read_json(run / "dpo" / "trainer_state.json")
    assert train.curves_rows(state["log_history"])[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-4)
    model, _ = train.load_model_for(train.load_checkpoints(run / "dpo")[-1])
    assert all(torch.isfinite(w).all() for w in model.parameters())
