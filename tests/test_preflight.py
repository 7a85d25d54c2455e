"""`revlib preflight`: the machine checked against the plan, with the machine's facts stubbed (GPUs, memory, packages,
driver, keys, Hub, disk), the memory estimate against DeepSpeed's own estimator and the real architectures, and the
command on this CPU machine as it is."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from revlib import params
from revlib.lab import gpu_memory, hardware, preflight
from revlib.lab.gpu_memory import Launch, estimate, read_launch
from revlib.lab.hardware import GB, KNOWN, Arch
from revlib.lab.plan import plan
from revlib.modeling import launch
from revlib.params.train import DPOParams, Lora, SFTParams

REPO = Path(__file__).resolve().parent.parent
REPLICAS = ["r1k-qwen2.5-7b.yaml", "r1k-qwen2.5-14b.yaml"]
SECRET = "dummy-secret-value-123"


def replica(name: str = REPLICAS[0]) -> params.Experiment:
    return params.load(REPO / "params" / name)


def machine(**changes) -> preflight.Machine:
    """An 8 x 80 GB machine that has everything the replicas ask for."""
    facts = dict(gpus=8, gpu_memory_gb=(80.0,) * 8, packages={p: "1.0" for p in preflight.PACKAGES},
                 driver_cuda="13.0", torch_cuda="13.0", torch_version="2.13.0",
                 env_set=frozenset({"DEEPSEEK_API_KEY", "OPENAI_API_KEY"}), hub_token=True, hub_reachable=True,
                 disk_free_gb=100_000.0, host_memory_gb=2048.0, cpu_adam=True)
    return preflight.Machine(**{**facts, **changes})


def training_cells(exp) -> set[str]:
    return {c.key for c in plan(exp) if c.stage in ("02_sft", "03_dpo")}


# ---------------------------------------------------------------- the replicas on a machine that has what they ask


@pytest.mark.parametrize("name", REPLICAS)
def test_the_replicas_fit_80_gb_per_gpu_with_liger_on_for_dpo(name):
    exp = replica(name)
    report = preflight.check(exp, machine())
    assert report.problems == []
    assert {c.cell.key for c in report.memory} == training_cells(exp)
    for c in report.memory:
        assert c.memory is not None and not c.at_risk and c.memory.peak < 80 * GB, c.cell.key
    assert exp.dpo.trainer.get("use_liger_kernel") is True  # item 6: liger on for DPO
    directional = [c for c in report.memory if c.cell.stage == "03_dpo" and c.settings.lora is not None]
    assert directional and all(c.memory.reference == 0 for c in directional)  # the adapter-disabled reference
    liger_off = estimate(KNOWN[exp.base_models[0].id], exp.dpo.model_copy(update={"trainer": {}}),
                         directional[0].launch, directional[0].attn)
    assert directional[0].memory.peak < liger_off.peak


def test_a_smaller_card_names_exactly_the_cells_at_risk_and_settings_that_fit():
    exp = replica()
    on_80 = preflight.check(exp, machine()).memory
    dpo_peaks = [c.memory.peak for c in on_80 if c.cell.stage == "03_dpo"]
    card = (max(dpo_peaks) - 1e9) / GB  # just under the largest DPO cell's estimate
    expected = {c.cell.key for c in on_80 if c.memory.peak > card * GB}
    report = preflight.check(exp, machine(gpu_memory_gb=(card,) * 8))
    at_risk = {c.cell.key for c in report.memory if c.at_risk}
    assert at_risk == expected and at_risk and not any(k.startswith("02_sft") for k in at_risk)
    named = {k for k in training_cells(exp) if any(p.startswith(f"{k}: estimated peak") for p in report.problems)}
    assert named == at_risk
    for c in report.memory:
        if not c.at_risk:
            continue
        assert c.remedies, c.cell.key
        cut = next(r for r in c.remedies if r.startswith("max_length"))
        longest = int(re.search(r"max_length: (\d+)", cut).group(1))
        arch = KNOWN[exp.base_models[0].id]
        fits = estimate(arch, c.settings.model_copy(update={"max_length": longest}), c.launch, c.attn).peak
        over = estimate(arch, c.settings.model_copy(update={"max_length": longest + 1}), c.launch, c.attn).peak
        assert fits <= card * GB < over


def test_packages_the_plan_needs_and_optional_ones():
    exp = replica()
    packages = {p: "1.0" for p in preflight.PACKAGES} | {"vllm": None, "flash-attn": None, "liger-kernel": None}
    report = preflight.check(exp, machine(packages=packages))
    missing = " ".join(p for p in report.problems if "is not installed" in p)
    assert "vllm is not installed" in missing and "05_benchmarks: backend vllm" in missing
    assert "liger-kernel is not installed" in missing and "03_dpo: trainer use_liger_kernel" in missing
    assert "flash-attn" not in missing  # attn_implementation auto: sdpa without it
    lines = dict(report.sections)["Packages"]
    assert any(line.startswith("flash-attn: not installed") and "optional" in line for line in lines)
    assert any(line.startswith("deepspeed: 1.0") for line in lines)
    # without flash-attn the estimate is sdpa's, with DPO's padding mask
    dpo = next(c for c in report.memory if c.cell.stage == "03_dpo")
    assert dpo.attn == "sdpa"


@pytest.mark.parametrize("driver,torch_cuda,blocking", [("12.4", "13.0", True), ("13.0", "13.2", False),
                                                        ("13.2", "13.0", False), (None, "13.0", True),
                                                        ("13.0", None, True)])
def test_the_drivers_cuda_against_torchs_build(driver, torch_cuda, blocking):
    report = preflight.check(replica(), machine(driver_cuda=driver, torch_cuda=torch_cuda))
    cuda_problems = [p for p in report.problems if "driver" in p or "CUDA" in p]
    assert bool(cuda_problems) == blocking, report.problems
    if (driver, torch_cuda) == ("13.0", "13.2"):
        assert any("minor-version compatibility" in line for line in dict(report.sections)["GPUs and CUDA"])


def test_api_keys_are_named_by_set_or_unset_and_the_gated_set_wants_a_token():
    exp = replica()
    assert [name for name, _ in preflight.api_keys(exp)] == ["DEEPSEEK_API_KEY", "OPENAI_API_KEY"]
    report = preflight.check(exp, machine(env_set=frozenset({"DEEPSEEK_API_KEY"}), hub_token=False))
    keys = " ".join(p for p in report.problems if "unset" in p or "token" in p)
    assert "OPENAI_API_KEY is unset" in keys and "DEEPSEEK_API_KEY" not in keys
    assert "gpqa_diamond is gated" in keys
    without_judge = exp.model_copy(update={"benchmarks": exp.benchmarks.model_copy(update={"judge": None})})
    assert [n for n, _ in preflight.api_keys(without_judge)] == ["DEEPSEEK_API_KEY"]
    only_training = exp.model_copy(update={"stages": ["00_base_model", "02_sft", "03_dpo"]})
    assert preflight.api_keys(only_training) == []  # 01 and 05 read the keys; a plan without them asks for none


def test_the_hub_offline_is_blocking_unless_every_download_is_cached():
    exp = replica()
    ids = [d.what for d in preflight.hub_downloads(exp)]
    assert ids == ["Qwen/Qwen2.5-7B-Instruct", "simplescaling/s1K-1.1", "simplescaling/aime24_nofigures",
                   "HuggingFaceH4/MATH-500", "Idavidrein/gpqa"]
    offline = preflight.check(exp, machine(hub_offline=True, hub_reachable=None))
    problem = next(p for p in offline.problems if "HF_HUB_OFFLINE=1" in p)
    assert all(i in problem for i in ids) and "HF_HUB_OFFLINE=0" in problem
    cached = preflight.check(exp, machine(hub_offline=True, hub_reachable=None, hub_cached=frozenset(ids)))
    assert not any("HF_HUB_OFFLINE" in p for p in cached.problems)
    unreachable = preflight.check(exp, machine(hub_reachable=False))
    assert any("did not answer" in p for p in unreachable.problems)


def test_disk_host_memory_and_cpu_adam_for_offload():
    exp = replica()
    total = hardware.disk_estimate(exp).total_bytes
    assert total and total > 0
    short = preflight.check(exp, machine(disk_free_gb=total / GB / 2))
    assert any("the plan writes about" in p for p in short.problems)
    offload = exp.model_copy(update={"dpo": exp.dpo.model_copy(update={"accelerate_config": "zero3_offload",
                                                                       "variants": {}})})
    cells = preflight.check(offload, machine()).memory
    host = max(c.memory.host for c in cells)
    assert host > 0 and all(c.memory.weights == 0 for c in cells if c.cell.stage == "03_dpo")
    small_host = preflight.check(offload, machine(host_memory_gb=host / GB / 2))
    assert any("host memory" in p for p in small_host.problems)
    no_adam = preflight.check(offload, machine(cpu_adam=False))
    assert any("CPU Adam" in p for p in no_adam.problems)


# ---------------------------------------------------------------- the estimate against published numbers


@pytest.mark.parametrize("model", sorted(KNOWN))
@pytest.mark.parametrize("offload_params,offload_optimizer", [(False, False), (True, True), (False, True)])
def test_model_states_match_deepspeeds_zero3_estimator(model, offload_params, offload_optimizer):
    """Full-parameter ZeRO-3 over 8 GPUs: weights, gradients, optimizer states and the gathered largest layer against
    deepspeed.runtime.zero.stage3.estimate_zero3_model_states_mem_needs (GPU per process, CPU per node)."""
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    arch = KNOWN[model]
    settings = SFTParams(lora=None, bf16=True, gradient_checkpointing=True, batch_size=1, max_length=1024)
    m = estimate(arch, settings, Launch("zero3", 8, True, 3, offload_params, offload_optimizer), "flash_attention_2")
    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
        total_params=arch.parameters, largest_layer_params=gpu_memory.largest_layer(arch), num_gpus_per_node=8,
        num_nodes=1, cpu_offload=offload_optimizer, cpu_offload_params=offload_params, zero_init=True)
    assert m.weights + m.states + m.gathered == pytest.approx(gpu, rel=1e-3)
    if offload_optimizer:
        assert m.host == pytest.approx(cpu, rel=1e-3)


@pytest.mark.parametrize("model", sorted(KNOWN))
def test_the_known_architectures_count_as_the_real_models(model):
    """Qwen2.5's config on the meta device: total parameters, the largest module (DeepSpeed's model_to_params) and
    peft's LoRA r256 all-linear count, against the numbers the estimate uses."""
    pytest.importorskip("deepspeed")
    from accelerate import init_empty_weights
    from deepspeed.runtime.zero.stage3 import model_to_params
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen2Config

    arch = KNOWN[model]
    shape = dict(hidden_size=arch.hidden, intermediate_size=arch.intermediate, num_attention_heads=arch.heads,
                 num_key_value_heads=arch.kv_heads, vocab_size=arch.vocab, tie_word_embeddings=False)
    with init_empty_weights():
        full = AutoModelForCausalLM.from_config(Qwen2Config(num_hidden_layers=arch.layers, **shape))
    total = sum(p.numel() for p in full.parameters())
    assert total == pytest.approx(arch.parameters, rel=0.005)
    assert model_to_params(full)[1] == gpu_memory.largest_layer(arch)
    with init_empty_weights():  # two layers of the real width: the LoRA count per layer
        two = AutoModelForCausalLM.from_config(Qwen2Config(num_hidden_layers=2, **shape))
        lora = get_peft_model(two, LoraConfig(r=256, lora_alpha=512, target_modules="all-linear", task_type="CAUSAL_LM"))
    trained = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    two_layers = Arch(arch.hidden, arch.intermediate, 2, arch.heads, arch.kv_heads, 0.0, arch.vocab)
    assert trained == two_layers.lora_parameters(256)


def test_the_fused_head_tiles_are_trls():
    from trl.kernels.chunked_logprob import TOKEN_CHUNK_SIZE
    from trl.trainer import utils as trl_utils

    assert gpu_memory.FUSED_HEAD_TOKENS == TOKEN_CHUNK_SIZE
    assert gpu_memory.FUSED_HEAD_VOCAB == trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE


def test_activations_follow_the_settings():
    arch = KNOWN["Qwen/Qwen2.5-7B-Instruct"]
    run = read_launch("zero3", 8)
    dpo = DPOParams(lora=Lora(r=256, alpha=512, dropout=0.05), bf16=True, gradient_checkpointing=True, batch_size=1,
                    max_length=16384, max_prompt_length=2048, accelerate_config="zero3", num_processes=8)
    base = estimate(arch, dpo, run, "flash_attention_2")
    assert base.activations == base.activations_checkpointed < base.activations_full
    no_ckpt = estimate(arch, dpo.model_copy(update={"gradient_checkpointing": False}), run, "flash_attention_2")
    assert no_ckpt.activations == base.activations_full
    liger = estimate(arch, dpo.model_copy(update={"trainer": {"use_liger_kernel": True}}), run, "flash_attention_2")
    assert liger.activations < base.activations
    assert estimate(arch, dpo, run, "eager").activations > estimate(arch, dpo, run, "sdpa").activations > base.activations
    sft = SFTParams(**{k: getattr(dpo, k) for k in ("lora", "bf16", "gradient_checkpointing", "batch_size", "max_length",
                                                    "accelerate_config", "num_processes")})
    one = gpu_memory.layer_activations(arch, 16384, 16384, 1, sft, "flash_attention_2", False)
    two = gpu_memory.layer_activations(arch, 32768, 16384, 2, dpo, "flash_attention_2", False)
    assert two == pytest.approx(2 * one)  # chosen and rejected: twice the tokens, no s x s term with flash
    top = estimate(arch, dpo.model_copy(update={"lora": Lora(r=256, alpha=512, top_layers=4)}), run, "flash_attention_2")
    assert top.activations_full < base.activations_full and top.trained_parameters < base.trained_parameters
    assert base.head < base.full_logits / 10  # trl's fused head never holds the T x V logits


def test_launch_configs_are_read_for_their_zero_stage_and_offload():
    assert read_launch(None, 1) == Launch(None, 1)
    ddp = read_launch("ddp", 8)
    assert not ddp.deepspeed and ddp.ddp
    z3 = read_launch("zero3", 8)
    assert z3.deepspeed and z3.zero_stage == 3 and not (z3.offload_params or z3.offload_optimizer)
    off = read_launch("zero3_offload", 8)
    assert off.zero_stage == 3 and off.offload_params and off.offload_optimizer
    assert launch.gpus_asked("zero3_offload", 8) == 8
    d = DPOParams(accelerate_config="zero3_offload", num_processes=8, precompute_ref_log_probs=True)
    assert d.switched_off()  # the ZeRO-3 trace problem holds with offload too


# ---------------------------------------------------------------- this machine, as it is


def test_probe_reads_this_machine_without_reading_a_key(monkeypatch):
    import torch

    monkeypatch.setenv("DEEPSEEK_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    exp = replica()
    m = preflight.probe(exp)
    assert m.gpus == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert m.torch_cuda == torch.version.cuda and len(m.gpu_memory_gb) == m.gpus
    assert m.packages["deepspeed"] == importlib.metadata.version("deepspeed")
    assert (m.packages["vllm"] is None) == (importlib.util.find_spec("vllm") is None)
    assert "DEEPSEEK_API_KEY" in m.env_set and "OPENAI_API_KEY" not in m.env_set
    assert SECRET not in repr(m)
    assert m.hub_offline and m.hub_reachable is None  # offline: the Hub is not asked
    assert m.disk_free_gb > 0 and m.host_memory_gb > 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(preflight, "_hub_reachable", lambda timeout_s=3.0: False)  # no network here: stubbed
    assert preflight.probe(exp).hub_reachable is False


def test_preflight_of_the_7b_replica_on_this_cpu_machine():
    """The issue's check: exit 2, a per-GPU estimate for every 02 and 03 cell, vllm not installed, OPENAI_API_KEY
    unset, and the dummy key's value nowhere."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update(DEEPSEEK_API_KEY=SECRET, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", COLUMNS="400")
    proc = subprocess.run([sys.executable, "-m", "revlib.lab.cli", "preflight", "params/r1k-qwen2.5-7b.yaml"],
                          cwd=REPO, capture_output=True, text=True, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    for key in training_cells(replica()):
        assert re.search(rf"{re.escape(key)}: peak \d+\.\d GB per GPU process", proc.stdout), key
    if importlib.util.find_spec("vllm") is None:
        assert "vllm: not installed" in proc.stdout and "vllm is not installed" in proc.stderr
    assert "OPENAI_API_KEY: unset" in proc.stdout and "OPENAI_API_KEY is unset" in proc.stderr
    assert "DEEPSEEK_API_KEY: set" in proc.stdout
    assert SECRET not in out

