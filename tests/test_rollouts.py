"""The rollout engine: prefix-cache reuse must not change what the model samples."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from revlib.modeling import rollouts
from revlib.modeling.models import build_model


@pytest.fixture(scope="module")
def micro(task_tokenizer):
    model = build_model("micro", task_tokenizer, seed=1)
    return model.eval(), task_tokenizer




def test_greedy_matches_generate_with_padding(micro):
    """Left-padded batched prefill + repeated cache gives generate's greedy tokens, prefix by prefix."""
    model, tok = micro
    eng = rollouts.HFRolloutEngine(model, tok, temperature=0, max_new_tokens=12, prefix_batch=4)
    prefixes = [eng.request_ids(q, "<|im_start|>think\n" + extra) for q, extra in
                [("Start from 3. Apply in order: add 2. What is the result?", ""),
                 ("Edges: 1>2 2>3 1>4 4>5. Path from centre 1 to leaf 5?", "1>4\n")]]
    assert len(prefixes[0]) != len(prefixes[1])  # exercises left padding
    ours = eng.sample_ids(prefixes, n=3, seed=0)
    base = rollouts.GenerateBaseline(model, tok, temperature=0, max_new_tokens=12).sample_ids(prefixes, n=1, seed=0)
    for mine, ref in zip(ours, base):
        assert all(r == ref[0] for r in mine)  # greedy: every rollout equals generate's


def test_sampling_reproducible_and_independent_of_batch(micro, tmp_path):
    model, tok = micro
    eng = rollouts.HFRolloutEngine(model, tok, temperature=1.0, max_new_tokens=10, prefix_batch=8)
    p = [eng.request_ids("Start from 3. Apply in order: add 2. What is the result?", "<|im_start|>think\n"),
         eng.request_ids("Start from 7. Apply in order: add 1. What is the result?", "<|im_start|>think\n7 + 1")]
    together = eng.sample_ids(p, n=4, seed=5)
    alone = rollouts.HFRolloutEngine(model, tok, temperature=1.0, max_new_tokens=10, prefix_batch=1).sample_ids(p, n=4, seed=5)
    assert together == alone
    assert len({tuple(r) for r in together[0]}) > 1  # distinct rollouts, not one repeated
    other = eng.sample_ids(p, n=4, seed=6)
    assert other != together


def test_sampling_follows_the_model_distribution(task_tokenizer):
    """A model whose next-token distribution is known: sampled frequencies match it."""
    tok = task_tokenizer
    model = build_model("micro", tok, seed=0)
    with torch.no_grad():  # the output bias decides everything: P(a)=0.75, P(eos)=0.25
        model.lm_head.weight = torch.nn.Parameter(torch.zeros_like(model.lm_head.weight))
        a = tok.convert_tokens_to_ids("5")
        bias = torch.full((len(tok),), -1e9)
        bias[a] = 0.0
        bias[tok.eos_token_id] = -torch.log(torch.tensor(3.0))
        model.lm_head.bias = torch.nn.Parameter(bias)
    eng = rollouts.HFRolloutEngine(model, tok, temperature=1.0, max_new_tokens=1)
    rows = eng.sample_ids([[a, a]], n=2000, seed=0)[0]
    frac_a = sum(1 for r in rows if r == [a]) / len(rows)
    assert abs(frac_a - 0.75) < 0.04


def test_disk_cache_returns_same_rollouts(micro, tmp_path):
    model, tok = micro
    kw = dict(temperature=1.0, max_new_tokens=8, cache_dir=tmp_path / "c", model_id="micro-seed1")
    eng = rollouts.HFRolloutEngine(model, tok, **kw)
    reqs = [("Start from 3. Apply in order: add 2. What is the result?", "<|im_start|>think\n")]
    first = eng.sample(reqs, n=3, seed=1)
    again = rollouts.HFRolloutEngine(model, tok, **kw)
    assert again.sample(reqs, n=3, seed=1) == first
    assert again.stats["cache_hits"] == 1 and again.stats["rollouts"] == 0


def test_bad_input_is_named(micro):
    model, tok = micro
    with pytest.raises(ValueError, match="temperature"):
        rollouts.HFRolloutEngine(model, tok, temperature=-1)
    with pytest.raises(ValueError, match="engine"):
        rollouts.make_engine("sglang", model, tok)


@pytest.mark.vllm
@pytest.mark.skipif(not rollouts.vllm_available(), reason="vLLM is not installed here; VLLMEngine tests run where it is")
def test_vllm_engine_samples(tiny_model_dir):
    eng = rollouts.VLLMEngine(str(tiny_model_dir), temperature=1.0, max_new_tokens=8, dtype="float32")
    out = eng.sample([("Start from 3. Apply in order: add 2. What is the result?", "<|im_start|>think\n")], n=3, seed=0)
    assert len(out) == 1 and len(out[0]) == 3
    assert out == eng.sample([("Start from 3. Apply in order: add 2. What is the result?", "<|im_start|>think\n")], n=3, seed=0)


# ---------------------------------------------------------------- one vLLM engine per process (a stand-in vllm module)


class _FakeLLM:
    built: list[dict] = []
    shut: list["_FakeLLM"] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls: list = []
        self.llm_engine = self
        _FakeLLM.built.append(kwargs)

    def shutdown(self):
        _FakeLLM.shut.append(self)

    def generate(self, prompts, params, use_tqdm=False, lora_request=None):
        from types import SimpleNamespace

        self.calls.append((len(prompts), lora_request))
        return [SimpleNamespace(outputs=[SimpleNamespace(text="x")] * p.n) for p in params]


@pytest.fixture
def fake_vllm(monkeypatch):
    import types
    from dataclasses import dataclass

    @dataclass
    class LoRARequest:
        lora_name: str
        lora_int_id: int
        lora_path: str

    class SamplingParams:
        def __init__(self, n=1, **kw):
            self.n = n

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = _FakeLLM, SamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    for name, mod in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, mod)
    _FakeLLM.built, _FakeLLM.shut = [], []
    rollouts.free_engines()
    yield _FakeLLM
    rollouts.free_engines()


def _adapter(tmp_path, name: str, r: int) -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": r}))
    return str(folder)


def test_vllm_engine_built_once_and_serves_lora_checkpoints(fake_vllm, tiny_model_dir, tmp_path):
    from revlib.params.negatives import VLLMSettings
    from revlib.modeling.train import Checkpoint

    settings = VLLMSettings(gpu_memory_utilization=0.5, tensor_parallel_size=2)
    engines = []
    for i, name in enumerate(("sft-1", "sft-2")):
        adapter = _adapter(tmp_path, name, 4)
        ckpt = Checkpoint(Path(adapter), float(i + 1), i + 1, str(tiny_model_dir), adapter)
        engines.append(rollouts.make_engine("vllm", None, None, checkpoint=ckpt, vllm=settings, temperature=1.0))
    assert len(fake_vllm.built) == 1, "a second engine in the same process would not fit in GPU memory"
    kw = fake_vllm.built[0]
    assert kw["model"] == str(tiny_model_dir) and kw["enable_lora"] and kw["max_lora_rank"] == 8
    assert kw["gpu_memory_utilization"] == 0.5 and kw["tensor_parallel_size"] == 2 and "data_parallel_size" not in kw
    assert kw["enable_prefix_caching"]
    for eng in engines:
        assert eng.sample([("q", "")], 2, seed=0) == [["x", "x"]]
    requests = [lr for _, lr in engines[0].llm.calls]
    assert [r.lora_path for r in requests] == [e.adapter for e in engines] and requests[0].lora_int_id != requests[1].lora_int_id
    # an adapter of a higher rank needs an engine built for it: the old one is freed first
    big = _adapter(tmp_path, "sft-r64", 64)
    rollouts.make_engine("vllm", None, None, checkpoint=Checkpoint(Path(big), 1.0, 1, str(tiny_model_dir), big))
    assert len(fake_vllm.built) == 2 and fake_vllm.built[1]["max_lora_rank"] == 64 and len(fake_vllm.shut) == 1


def test_vllm_engine_needs_a_model(fake_vllm):
    with pytest.raises(ValueError, match="model folder or a checkpoint"):
        rollouts.make_engine("vllm", None, None, model_path=None)


def test_training_frees_the_engine(fake_vllm, tiny_model_dir, tmp_path, monkeypatch):
    from revlib.modeling import train
    from revlib.params.train import SFTParams
    from revlib.tasks import get_task

    rollouts.make_engine("vllm", None, None, model_path=str(tiny_model_dir))
    assert rollouts._ENGINE
    for name in ("vllm", "vllm.lora", "vllm.lora.request"):  # trl probes for vllm at import: no stand-in there
        monkeypatch.delitem(sys.modules, name)
    train.sft(str(tiny_model_dir), get_task("arith").sample(0, 4), tmp_path / "sft",
              SFTParams(epochs=1, batch_size=4, max_length=256, max_steps=1))
    assert not rollouts._ENGINE and len(fake_vllm.shut) == 1


def test_policy_engine_serves_a_lora_checkpoint_on_its_base(fake_vllm, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from revlib.data import negatives
    from revlib.modeling.models import load_tokenizer
    from revlib.params.negatives import Sampling
    from revlib.modeling.train import Checkpoint

    folder = tmp_path / "checkpoint-1"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    model.save_pretrained(folder)
    load_tokenizer(tiny_model_dir).save_pretrained(folder)  # trainers save it beside the adapter
    ckpt = Checkpoint(folder, 1.0, 1, str(tiny_model_dir), str(folder))
    engine = negatives.policy_engine(ckpt, Sampling(engine="vllm", vllm={"gpu_memory_utilization": 0.4}))
    assert fake_vllm.built[0]["model"] == str(tiny_model_dir)  # not "None"
    assert fake_vllm.built[0]["gpu_memory_utilization"] == 0.4 and engine.lora_request.lora_path == str(folder)
