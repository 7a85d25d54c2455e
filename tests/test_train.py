"""SFT and DPO on a micro random model: weights move, LoRA keeps the base frozen, DPO raises the
margin, checkpoints follow the epoch schedule, a killed run resumes to the same checkpoints, and
the numbers in params (beta, steps, token lengths) are the ones the trainer uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from revlib.core import io, render
from revlib.modeling import launch, train, train_rows
from revlib.params.train import DPOParams, Lora, SFTParams
from revlib.core.records import PreferencePair
from revlib.tasks import get_task

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def records():
    return get_task("arith").sample(0, 16)


@pytest.fixture(scope="module")
def pairs(records):
    """Directional pairs for forward questions: chosen = forward answer, rejected = the reverse twin's."""
    fam = get_task("arith")
    out = []
    for fwd in records:
        rev = fam.invert(fwd)
        out.append(PreferencePair(id=fwd.id, prompt=render.prompt_messages(fwd.question),
                                  chosen=render.assistant_message(fwd.reasoning, fwd.answer),
                                  rejected=render.assistant_message(rev.reasoning, rev.answer), kind="directional"))
    return out


def sft_params(**kw) -> SFTParams:
    base = dict(epochs=2, batch_size=4, lr=1e-2, max_length=256, lora=Lora(r=4, alpha=8))
    return SFTParams(**{**base, **kw})


def dpo_params(**kw) -> DPOParams:
    base = dict(epochs=2, batch_size=4, lr=1e-2, max_length=256, max_prompt_length=96, lora=Lora(r=4, alpha=8))
    return DPOParams(**{**base, **kw})


def weights(folder: Path) -> dict[str, torch.Tensor]:
    name = "adapter_model.safetensors" if (folder / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(str(folder / name))


def test_full_sft_changes_weights(tiny_model_dir, records, tmp_path):
    result = train.sft(str(tiny_model_dir), records, tmp_path / "run", sft_params(lora=None))
    assert result.final.adapter is None
    before, after = weights(tiny_model_dir), weights(result.final.path)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before), f"unchanged tensors: {set(before) - set(changed)}"
    losses = [e["loss"] for e in train.curves_rows(result.log_history)]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert (tmp_path / "run" / "trainer_state.json").exists() and result.metrics["train_tokens_per_second"] > 0


def test_lora_sft_freezes_base_and_trains_adapter(tiny_model_dir, records, tmp_path):
    base_before = weights(tiny_model_dir)
    result = train.sft(str(tiny_model_dir), records, tmp_path / "run", sft_params(epochs=2, save_every_epochs=1))
    first, last = result.checkpoints
    assert last.adapter == str(last.path) and last.base == str(tiny_model_dir)
    assert all(torch.equal(base_before[k], v) for k, v in weights(tiny_model_dir).items()), "base file changed"
    a1, a2 = weights(first.path), weights(last.path)
    assert any("lora_B" in k for k in a2)
    assert all(v.abs().sum() > 0 for k, v in a2.items() if "lora_B" in k), "lora_B still at its zero init"
    assert any(not torch.equal(a1[k], a2[k]) for k in a2), "adapter did not change between epochs"
    model, _ = train.load_model_for(last)
    merged = {k: v for k, v in model.state_dict().items()}
    assert any(not torch.equal(base_before[k], merged[k]) for k in base_before if k in merged)


def test_sft_loss_only_on_response(tiny_model_dir, records, tmp_path):
    trainer, rows, _ = train.sft_trainer(str(tiny_model_dir), records[:4], tmp_path / "run", sft_params(padding_free=True), 0, 1, 1)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    tok = trainer.processing_class
    labelled = batch["labels"][0][batch["labels"][0] != -100].tolist()
    text = tok.decode(labelled)
    assert records[0].question not in text and render.DEFAULT_SYSTEM not in text
    assert text.startswith(render.THINK) or text.startswith("think")
    # padding-free: one row, no pad tokens
    assert batch["input_ids"].shape[0] == 1 and batch["input_ids"].shape[1] == sum(len(r["input_ids"]) for r in rows[:2])


def test_padding_free_loss_matches_padded(tiny_model_dir, records, tmp_path):
    """Concatenated rows with position_ids give the same loss as padded rows (no cross-attention between examples)."""
    losses = []
    for free in (True, False):
        trainer, _, _ = train.sft_trainer(str(tiny_model_dir), records[:4], tmp_path / f"r{free}", sft_params(padding_free=free), 0, 1, 1)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        with torch.no_grad():
            losses.append(trainer.model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids", "labels")}).loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


@pytest.mark.parametrize("epochs,every,expected", [(6, 2, [2, 4, 6]), (5, 2, [2, 4, 5]), (3, 1, [1, 2, 3])])
def test_checkpoint_schedule(tiny_model_dir, records, tmp_path, epochs, every, expected):
    result = train.sft(str(tiny_model_dir), records[:8], tmp_path / "run",
                       sft_params(batch_size=8), epochs=epochs, save_every_epochs=every)
    assert [c.epoch for c in result.checkpoints] == [float(e) for e in expected] == train.expected_epochs(epochs, every)
    folders = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("checkpoint-*"))
    assert folders == sorted(f"checkpoint-{e}" for e in expected)  # one step per epoch


class Killed(Exception):
    pass


def test_resume_after_kill_matches_uninterrupted(tiny_model_dir, records, tmp_path):
    params = sft_params(epochs=4, save_every_epochs=2, batch_size=8)
    clean = train.sft(str(tiny_model_dir), records, tmp_path / "clean", params)

    def die_in_epoch_3(entry):
        if entry.get("epoch", 0) > 2.4 and "loss" in entry:
            raise Killed()

    with pytest.raises(Killed):
        train.sft(str(tiny_model_dir), records, tmp_path / "killed", params, on_log=die_in_epoch_3)
    # a save that was cut short (no marker) must not be resumed from
    (tmp_path / "killed" / "checkpoints" / "checkpoint-5").mkdir()
    assert [c.epoch for c in train.load_checkpoints(tmp_path / "killed")] == [2.0]
    resumed = train.sft(str(tiny_model_dir), records, tmp_path / "killed", params)
    assert [(c.epoch, c.step) for c in resumed.checkpoints] == [(c.epoch, c.step) for c in clean.checkpoints]
    assert not (tmp_path / "killed" / "checkpoints" / "checkpoint-5").exists()
    a, b = weights(clean.final.path), weights(resumed.final.path)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    # a resumed run reports throughput over the epochs it trained (2 of 4), not the whole schedule
    assert resumed.metrics["resumed_from_epoch"] == 2.0
    assert resumed.metrics["train_tokens"] == clean.metrics["train_tokens"] // 2


@pytest.mark.parametrize("max_steps", [-1, 3])
def test_each_checkpoint_saved_once(tiny_model_dir, records, tmp_path, max_steps):
    """The last step is a step end and an epoch end: it must be written once, not twice."""
    from transformers import TrainerCallback

    saves: list[int] = []

    class CountSaves(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            saves.append(state.global_step)

    trainer, _, _ = train.sft_trainer(str(tiny_model_dir), records[:8], tmp_path / "run",
                                   sft_params(batch_size=4, max_steps=max_steps), 0, 2, 1)
    trainer.add_callback(CountSaves())
    trainer.train()
    assert saves == ([2, 4] if max_steps == -1 else [2, 3])


def test_dpo_rows_truncate_in_tokens_and_keep_prompt_once(task_tokenizer, pairs):
    rows = train_rows.dpo_rows(task_tokenizer, pairs, max_length=60, max_prompt_length=40)[0]
    for row, pair in zip(rows, pairs):
        assert len(row["prompt_ids"]) <= 40
        assert len(row["prompt_ids"]) + len(row["chosen_ids"]) <= 60
        assert len(row["prompt_ids"]) + len(row["rejected_ids"]) <= 60
        # the question lives in the prompt only, never inside the responses
        assert pair.prompt[-1]["content"] not in task_tokenizer.decode(row["chosen_ids"])
    full = train_rows.dpo_rows(task_tokenizer, pairs, max_length=4096, max_prompt_length=4000)[0]
    assert any(len(f["chosen_ids"]) > len(r["chosen_ids"]) for f, r in zip(full, rows)), "nothing was truncated"


def test_dpo_trainer_uses_params(tiny_model_dir, pairs, tmp_path):
    params = dpo_params(beta=0.6, max_length=200, max_prompt_length=100, max_steps=3)
    trainer, rows, _ = train.dpo_trainer(str(tiny_model_dir), pairs, tmp_path / "run", params, 0, None, 2, 1)
    assert trainer.beta == 0.6 and trainer.args.beta == 0.6
    assert trainer.args.max_steps == 3 and trainer.data_collator.max_length == 200
    assert trainer.precompute_ref_logps and "ref_chosen_logps" in trainer.train_dataset.column_names
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    tok = trainer.processing_class
    for ids in batch["input_ids"]:
        text = tok.decode(ids)
        assert text.count(pairs[0].prompt[-1]["content"][:30]) <= 1
        assert text.count("<|im_start|>user") == 1 and text.count("<|im_start|>assistant") == 1
    assert batch["input_ids"].shape[1] <= 200
    result = train.dpo(str(tiny_model_dir), pairs, tmp_path / "run2", params)
    assert result.final.step == 3
    # a step budget read out every 2 steps: checkpoints at 2 and at the last step, whatever the epochs
    stepped = train.dpo(str(tiny_model_dir), pairs, tmp_path / "run3", params.model_copy(
        update={"max_steps": 5, "save_every_steps": 2, "batch_size": 2}), epochs=1)
    assert [c.step for c in stepped.checkpoints] == [2, 4, 5]


def _margins(model, tok, pairs) -> torch.Tensor:
    """Summed log p(chosen) - log p(rejected) per pair."""
    out = []
    for row in train_rows.dpo_rows(tok, pairs, 4096, 4000)[0]:
        lp = []
        for resp in (row["chosen_ids"], row["rejected_ids"]):
            ids = torch.tensor([row["prompt_ids"] + resp])
            with torch.no_grad():
                logits = model(ids).logits[0, :-1].log_softmax(-1)
            tgt = ids[0, 1:]
            lp.append(logits.gather(-1, tgt[:, None])[len(row["prompt_ids"]) - 1:].sum())
        out.append(lp[0] - lp[1])
    return torch.stack(out)


def test_dpo_on_lora_sft_raises_margin_with_sft_reference(tiny_model_dir, records, pairs, tmp_path):
    sft = train.sft(str(tiny_model_dir), records, tmp_path / "sft", sft_params(epochs=1))
    result = train.dpo(str(tiny_model_dir), pairs, tmp_path / "dpo", dpo_params(epochs=3, lr=2e-2),
                       sft_adapter=sft.final.adapter)
    assert [c.epoch for c in result.checkpoints] == [1.0, 2.0, 3.0]
    merged = tmp_path / "dpo" / "merged_sft"
    assert result.final.base == str(merged) and (merged / "config.json").exists()
    sft_model, tok = train.load_model_for(sft.final)
    dpo_model, _ = train.load_model_for(result.final)
    before, after = _margins(sft_model, tok, pairs), _margins(dpo_model, tok, pairs)
    assert after.mean() > before.mean() + 0.5, (before.mean(), after.mean())
    # the reference is the SFT model: trl's first logged reward margin is 0 (policy == reference)
    first = train.curves_rows(result.log_history)[0]
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-4)


def test_sft_rejects_prompt_longer_than_max_length(tiny_model_dir, records, tmp_path):
    with pytest.raises(ValueError, match="max_length"):
        train.sft(str(tiny_model_dir), records[:2], tmp_path / "run", sft_params(max_length=8))


def test_two_process_gloo_sft_through_accelerate(tiny_model_dir, records, tmp_path):
    env_before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        result = train.sft(str(tiny_model_dir), records[:16], tmp_path / "ddp",
                           sft_params(epochs=1, accelerate_config="ddp", num_processes=2))
    finally:
        if env_before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES")
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = env_before
    assert result.final.step == 2  # 16 rows / (batch 4 x 2 processes)
    model, tok = train.load_model_for(result.final)
    ids = tok("hello", return_tensors="pt")["input_ids"]
    assert torch.isfinite(model(ids).logits).all()


def test_launch_entry_point_usage():
    proc = subprocess.run([sys.executable, "-m", "revlib.modeling.worker"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr


@pytest.mark.parametrize("name", ["r1k-qwen2.5-7b.yaml", "r1k-qwen2.5-14b.yaml", "smoke/train.yaml"])
def test_params_files_validate(name):
    from revlib import params

    exp = params.load(REPO / "params" / name)
    assert exp.sft is not None and exp.dpo is not None
    if name.startswith("r1k"):
        assert exp.dpo.beta == 0.6 and exp.sft.lora.r == 256 and exp.sft.lora.alpha == 512
        assert exp.sft.epochs == 12 and exp.sft.save_every_epochs == 2
        assert exp.dpo.epochs == 7 and exp.dpo.save_every_epochs == 1


def test_trainer_passthrough_reaches_trl_untouched(tiny_model_dir, pairs, tmp_path):
    params = dpo_params(max_steps=1, trainer={"loss_type": ["ipo"], "max_grad_norm": 0.25, "adam_beta2": 0.95})
    trainer, _, _ = train.dpo_trainer(str(tiny_model_dir), pairs[:4], tmp_path / "run", params, 0, None, 1, 1)
    assert trainer.args.loss_type == ["ipo"] and trainer.args.max_grad_norm == 0.25 and trainer.args.adam_beta2 == 0.95
    trainer, _, _ = train.sft_trainer(str(tiny_model_dir), get_task("arith").sample(0, 2), tmp_path / "s",
                                   sft_params(trainer={"neftune_noise_alpha": 5.0, "max_grad_norm": 0.5}), 0, 1, 1)
    assert trainer.args.neftune_noise_alpha == 5.0 and trainer.args.max_grad_norm == 0.5


@pytest.mark.parametrize("section,entries,message", [
    ("sft", {"max_grad_nrom": 1.0}, "sft.trainer: max_grad_nrom: not a field of trl's SFTConfig; did you mean 'max_grad_norm'?"),
    ("dpo", {"los_type": ["ipo"]}, "did you mean 'loss_type'?"),
    ("dpo", {"beta": 0.1}, "dpo.trainer: beta: set by dpo.beta; give it once, there"),
    ("sft", {"learning_rate": 0.1}, "learning_rate: set by sft.lr"),
])
def test_trainer_passthrough_checked_at_check_time(params_copy, section, entries, message):
    import yaml

    raw = yaml.safe_load((REPO / "params" / "smoke" / "train.yaml").read_text())
    raw[section]["trainer"] = entries
    target = params_copy(raw)
    proc = subprocess.run([sys.executable, "-m", "revlib.lab.cli", "check", str(target)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "400"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in " ".join(proc.stderr.split())


def test_launched_dpo_starts_from_the_merged_sft(tiny_model_dir, records, pairs, tmp_path, monkeypatch):
    """Ranks must never race to load merged_sft: the caller merges before `accelerate launch` starts them."""
    sft = train.sft(str(tiny_model_dir), records[:4], tmp_path / "sft", sft_params(epochs=1))
    seen = {}

    def fake_launch(kind, job, data, out_dir, accelerate_config, num_processes, on_log=None):
        seen.update(base=job["base"], keys=sorted(job), ready=(Path(job["base"]) / "config.json").exists())
        io.write_json(Path(out_dir) / "trainer_state.json", {"log_history": []})
        io.write_json(Path(out_dir) / "train_metrics.json", {})

    monkeypatch.setattr(launch, "launch", fake_launch)
    train.dpo(str(tiny_model_dir), pairs, tmp_path / "dpo", dpo_params(accelerate_config="ddp", num_processes=2),
              sft_adapter=sft.final.adapter)
    # the job names the merged SFT as its base, and no adapter: the worker never merges
    assert seen == {"base": str(tmp_path / "dpo" / train.MERGED_SFT), "ready": True,
                    "keys": ["base", "epochs", "params", "save_every_epochs", "seed"]}


def test_launch_streams_output_as_it_happens(tmp_path, monkeypatch, capsys):
    """Each line reaches launch.log and the caller while the processes still run (the child waits for proof)."""
    proof = tmp_path / "seen"
    child = (f"import json, os, sys, time\n"
             f"print({launch.LOG_PREFIX!r} + json.dumps({{'step': 1, 'epoch': 0.5, 'loss': 1.0}}), flush=True)\n"
             f"t = time.time()\n"
             f"while not os.path.exists({str(proof)!r}):\n"
             f"    time.sleep(0.05)\n"
             f"    if time.time() - t > 20: sys.exit(3)\n")
    real_popen = subprocess.Popen
    monkeypatch.setattr(launch.subprocess, "Popen", lambda cmd, **kw: real_popen([sys.executable, "-c", child], **kw))
    out = tmp_path / "run"

    def on_log(entry):
        assert entry["loss"] == 1.0
        assert launch.LOG_PREFIX in (out / "launch" / "launch.log").read_text()  # already on disk
        proof.touch()

    launch.launch("sft", {"base": "base"}, [], out, "ddp", 2, on_log=on_log)
    # without on_log (a notebook cell), each entry is printed as a progress line
    launch.launch("sft", {"base": "base"}, [], out, "ddp", 2)
    assert "[sft] step 1" in capsys.readouterr().out


@pytest.fixture(scope="module")
def three_layer_dir(tmp_path_factory, task_tokenizer) -> Path:
    from revlib.modeling.models import build_model

    path = tmp_path_factory.mktemp("micro3")
    build_model("micro", task_tokenizer, seed=0, num_hidden_layers=3).save_pretrained(path)
    task_tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_reused_frozen_states_learn_what_the_whole_stack_learns(three_layer_dir, records, pairs, tmp_path, kind):
    """LoRA on the top layer of three: reusing the lower layers' output gives the same loss curve and adapter as
    running the whole stack every step, and the lower layers run once per row, not once per epoch."""
    runs = {}
    for reuse in (True, False):
        lora = Lora(r=4, alpha=8, top_layers=1, reuse_frozen_states=reuse)
        if kind == "sft":
            runs[reuse] = train.sft(str(three_layer_dir), records, tmp_path / f"r{reuse}", sft_params(epochs=3, lora=lora))
        else:
            runs[reuse] = train.dpo(str(three_layer_dir), pairs, tmp_path / f"r{reuse}", dpo_params(epochs=3, lora=lora))
    key = "loss"
    reused, whole = ([e[key] for e in train.curves_rows(runs[r].log_history)] for r in (True, False))
    assert len(reused) == len(whole) >= 6
    assert reused == pytest.approx(whole, abs=2e-4)
    assert whole[-1] < whole[0] - 0.05, "the reference run did not learn: the comparison would be empty"
    a, b = weights(runs[True].final.path), weights(runs[False].final.path)
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    counts = runs[True].metrics["frozen_state_reuse"]
    # SFT computes them in its first epoch; DPO in the reference pass before training, so every epoch reuses them
    rows = len(records) if kind == "sft" else 2 * len(pairs)
    assert counts["rows_computed"] == rows and counts["rows_reused"] == (2 if kind == "sft" else 3) * rows
    assert runs[False].metrics["frozen_state_reuse"] is None


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_labelled_positions_only_learn_what_every_position_learns(three_layer_dir, records, pairs, tmp_path, kind,
                                                                  monkeypatch):
    """trl's fused head on CPU asked for the labelled positions only: the same loss curve and adapter as
    scoring every position (trl's default off CUDA), with fewer positions projected through the head."""
    import trl.trainer.utils as trl_utils

    projected: list[int] = []
    real_apply = trl_utils._ChunkedLogProbFunction.apply

    def counting_apply(hidden, *args):
        projected.append(hidden.shape[0])
        return real_apply(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counting_apply)
    runs, rows = {}, {}
    for labelled in (True, False):
        projected.clear()
        lora = Lora(r=4, alpha=8, top_layers=1)
        if kind == "sft":
            runs[labelled] = train.sft(str(three_layer_dir), records, tmp_path / f"h{labelled}",
                                       sft_params(epochs=3, lora=lora, head_on_labels_only=labelled))
        else:
            runs[labelled] = train.dpo(str(three_layer_dir), pairs, tmp_path / f"h{labelled}",
                                       dpo_params(epochs=3, lora=lora, head_on_labels_only=labelled))
        rows[labelled] = sum(projected)
    compact, every = ([e["loss"] for e in train.curves_rows(runs[x].log_history)] for x in (True, False))
    assert len(compact) == len(every) >= 6
    assert compact == pytest.approx(every, abs=2e-4)
    assert every[-1] < every[0] - 0.05, "the reference run did not learn: the comparison would be empty"
    a, b = weights(runs[True].final.path), weights(runs[False].final.path)
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    assert 0 < rows[True] < 0.9 * rows[False], rows
