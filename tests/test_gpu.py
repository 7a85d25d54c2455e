"""One CUDA device, random-initialised real shapes (a qwen2.5-* preset): the calls the replicas make.

bf16 LoRA r256 SFT with flash-attention (when installed), a DPO step on it, vLLM rollouts with prefix
caching serving the adapter as a LoRARequest, and lm-eval's vLLM backend on 2 problems. Deselected by
default; `pytest -m gpu` on a GPU machine. REVLIB_GPU_PRESET picks the shapes (default qwen2.5-1.5b;
qwen2.5-7b is the replicas' and needs about 40 GiB). The models have Qwen2.5's real vocabulary (152,064) and
train on 8,192-token rows (REVLIB_GPU_TOKENS), so the LM head's memory is the real one; each step's measured peak
is printed beside `revlib preflight`'s estimate (revlib.lab.gpu_memory) and must stay under it.
"""

from __future__ import annotations

import importlib.util
import os
from types import SimpleNamespace

import pytest
import torch

from revlib.core import render
from revlib.lab import gpu_memory, hardware
from revlib.modeling import rollouts, train
from revlib.params.train import DPOParams, Lora, SFTParams
from revlib.core.records import PreferencePair
from revlib.tasks import get_task

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run `pytest -m gpu` on a GPU machine)"),
]
PRESET = os.environ.get("REVLIB_GPU_PRESET", "qwen2.5-1.5b")
needs_vllm = pytest.mark.skipif(not rollouts.vllm_available(), reason="vLLM is not installed")
R1K_LORA = Lora(r=256, alpha=512, dropout=0.05)
QWEN25_VOCAB = 152064  # Qwen2.5-7B/14B's (the 0.5B-3B checkpoints have 151,936)
LONG = int(os.environ.get("REVLIB_GPU_TOKENS", "8192"))  # tokens a training row is cut to
PEAKS: dict[str, int] = {}  # measured torch.cuda.max_memory_allocated per training step


def measured_peak(name: str, run):
    """Run `run()` with the device's peak memory counter reset; keep its peak under `name`."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    result = run()
    PEAKS[name] = torch.cuda.max_memory_allocated()
    return result


def check_against_preflight(name: str, model_dir, params) -> None:
    """The measured peak under `revlib preflight`'s estimate for the same settings, in one process."""
    spec = SimpleNamespace(name=PRESET, source="local", path=str(model_dir), id=None)
    _, arch = hardware.arch_of(spec)
    attn = train._model_kwargs(params)["attn_implementation"]
    est = gpu_memory.estimate(arch, params, gpu_memory.Launch(None, 1), attn)
    got = PEAKS[name]
    print(f"{name}: measured peak {got / 1e9:.2f} GB, preflight estimate {est.peak / 1e9:.2f} GB ({attn}; "
          f"{est.parts()})")
    assert got <= est.peak, f"{name}: measured {got / 1e9:.2f} GB above the estimate {est.peak / 1e9:.2f} GB"
    assert got >= 0.25 * (est.peak - est.runtime), f"{name}: the estimate is over 4x the measured peak"


@pytest.fixture(scope="module")
def real_shape_model(tmp_path_factory, task_tokenizer):
    from revlib.modeling.models import build_model

    path = tmp_path_factory.mktemp(PRESET)
    model = build_model(PRESET, task_tokenizer, seed=0, vocab_size=QWEN25_VOCAB).to(torch.bfloat16)
    model.config.max_position_embeddings = max(model.config.max_position_embeddings, 2 * LONG)
    model.save_pretrained(path)
    task_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def records(task_tokenizer):
    """Arithmetic chains whose reasoning is repeated past LONG tokens (max_length cuts each row to LONG)."""
    out = []
    for r in get_task("arith").sample(0, 8):
        per_copy = len(task_tokenizer(r.reasoning + "\n")["input_ids"])
        out.append(r.model_copy(update={"reasoning": "\n".join([r.reasoning] * (LONG // per_copy + 2))}))
    return out


@pytest.fixture(scope="module")
def sft_run(real_shape_model, records, tmp_path_factory):
    trainer = {"use_liger_kernel": True} if importlib.util.find_spec("liger_kernel") else {}
    params = SFTParams(lora=R1K_LORA, bf16=True, gradient_checkpointing=True, batch_size=1, max_steps=1, epochs=1,
                       max_length=LONG, trainer=trainer)
    out = tmp_path_factory.mktemp("sft")
    return measured_peak("sft", lambda: train.sft(str(real_shape_model), records, out, params)), params


def test_lora_r256_sft_step_bf16(real_shape_model, sft_run):
    sft_run, params = sft_run
    assert sft_run.final.step == 1 and sft_run.final.adapter
    assert sft_run.metrics["max_length_cut"]["cut"] > 0  # every row reached max_length
    check_against_preflight("sft", real_shape_model, params)
    losses = [e["loss"] for e in train.curves_rows(sft_run.log_history)]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    if importlib.util.find_spec("flash_attn"):
        assert train._model_kwargs(SFTParams())["attn_implementation"] == "flash_attention_2"


def test_dpo_step_on_the_sft_adapter(real_shape_model, records, sft_run, tmp_path):
    sft_run, _ = sft_run
    fam = get_task("arith")
    pairs = [PreferencePair(id=r.id, prompt=render.prompt_messages(r.question),
                            chosen=render.assistant_message(r.reasoning, r.answer),
                            rejected=render.assistant_message(fam.invert(r).reasoning, fam.invert(r).answer),
                            kind="directional") for r in records]
    trainer = {"use_liger_kernel": True} if importlib.util.find_spec("liger_kernel") else {}
    params = DPOParams(lora=R1K_LORA, bf16=True, gradient_checkpointing=True, batch_size=1, max_steps=1, epochs=1,
                       max_length=LONG, max_prompt_length=256, beta=0.6, trainer=trainer)
    result = measured_peak("dpo", lambda: train.dpo(str(real_shape_model), pairs, tmp_path, params,
                                                    sft_adapter=sft_run.final.adapter))
    first = train.curves_rows(result.log_history)[0]
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-3)
    check_against_preflight("dpo", real_shape_model, params)


@needs_vllm
def test_vllm_rollouts_with_prefix_caching_and_a_lora_request(sft_run):
    from revlib.params.negatives import VLLMSettings

    sft_run, _ = sft_run
    engine = rollouts.make_engine("vllm", None, None, checkpoint=sft_run.final, temperature=1.0, max_new_tokens=8,
                                  vllm=VLLMSettings(gpu_memory_utilization=0.3, max_model_len=1024))
    assert engine.lora_request is not None and engine.llm.llm_engine is not None
    outs = engine.sample([("What is 2+2?", render.THINK), ("What is 2+2?", render.THINK + " 2")], n=2, seed=0)
    assert [len(o) for o in outs] == [2, 2]
    again = rollouts.make_engine("vllm", None, None, checkpoint=sft_run.final, temperature=1.0, max_new_tokens=8,
                                 vllm=VLLMSettings(gpu_memory_utilization=0.3, max_model_len=1024))
    assert again.llm is engine.llm, "a second engine in the same process"
    rollouts.free_engines()


@needs_vllm
def test_lm_eval_vllm_backend_on_two_problems(real_shape_model, tmp_path):
    from revlib.evaluation import harness
    from revlib.params.benchmarks import BenchmarkParams
    from tests.conftest import write_synthetic_test_sets

    rollouts.free_engines()
    data_dir = write_synthetic_test_sets(tmp_path / "data", seed=0, n=2)
    bp = BenchmarkParams(tasks=["synthetic_forward"], backend="vllm", dtype="bfloat16", max_gen_toks=16, limit=2,
                         gpu_memory_utilization=0.3, max_model_len=1024)
    ref = harness.ModelRef("base", "-", str(real_shape_model), None, str(real_shape_model))
    ev = harness.evaluate(ref, bp, data_dir, seed=0, work_dir=tmp_path / "work")
    assert len(ev.samples["synthetic_forward"]) == 2
