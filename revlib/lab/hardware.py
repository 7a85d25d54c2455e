"""What a plan asks of the machine, said before anything runs: GPUs, settings revlib switches off, and disk.

`revlib check` prints all three (a missing GPU as a warning); `revlib run` refuses, before any compute, a
plan that asks for more GPUs than this machine shows.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from revlib.lab.plan import plan
from revlib.modeling import launch
from revlib.params import BaseModelSpec, Experiment

GB = 1e9


def _saves(epochs: int, every: int) -> int:
    """Checkpoints an epoch schedule saves: every `every`-th epoch, and the last (train.expected_epochs)."""
    return len(set(range(every, epochs + 1, every)) | {epochs})


@dataclass(frozen=True)
class Arch:
    """What the disk and memory estimates need of a decoder (its config.json's numbers)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    parameters: float
    vocab: int = 0  # 0: unknown (the memory estimate then leaves the embedding and the LM head out)

    def lora_parameters(self, r: int) -> float:
        """LoRA on every linear layer of every decoder layer (q, k, v, o, gate, up, down): r * (in + out) each."""
        kv = self.hidden // self.heads * self.kv_heads
        per_layer = (2 * (self.hidden + self.hidden) + 2 * (self.hidden + kv)
                     + 3 * (self.hidden + self.intermediate))
        return r * per_layer * self.layers


# Hub models the replicas name, from their config.json (no hub here); a local folder is read from its own
KNOWN = {
    "Qwen/Qwen2.5-7B-Instruct": Arch(3584, 18944, 28, 28, 4, 7.62e9, vocab=152064),
    "Qwen/Qwen2.5-14B-Instruct": Arch(5120, 13824, 48, 40, 8, 14.77e9, vocab=152064),
}


def gpu_demand(exp: Experiment) -> list[tuple[str, int]]:
    """(what asks, GPUs it asks for) for every stage of the plan that needs GPUs."""
    asks = []
    for stage, section in (("02_sft", exp.sft), ("03_dpo", exp.dpo)):
        if section is not None and stage in exp.stages:
            n = launch.gpus_asked(section.accelerate_config, section.num_processes)
            if n:
                asks.append((f"{stage}: accelerate_config {section.accelerate_config} x {section.num_processes} "
                             "processes", n))
    b = exp.benchmarks
    if b is not None and "05_benchmarks" in exp.stages and b.backend == "vllm":
        asks.append(("05_benchmarks: vLLM, data_parallel_size x tensor_parallel_size",
                     b.data_parallel_size * b.tensor_parallel_size))
    return asks


def missing_gpus(exp: Experiment) -> str | None:
    """The plan's GPU shortfall on this machine, in one line; None when it has what the plan asks."""
    asks = gpu_demand(exp)
    if not asks:
        return None
    need = max(n for _, n in asks)
    have = launch.visible_gpus()
    if have >= need:
        return None
    why = "" if have else f" ({launch.cuda_diagnosis()})"
    return (f"this plan asks for {need} GPU(s) and this machine shows {have}{why}; {need - have} missing. "
            + "; ".join(f"{what}: {n}" for what, n in asks))


def switched_off(exp: Experiment) -> list[str]:
    """Settings the params ask for that revlib turns off on this plan, one line each."""
    out = []
    if exp.dpo is not None and ("03_dpo" in exp.stages or "04_probe_dynamics" in exp.stages):
        out += [f"dpo: {line}" for line in exp.dpo.switched_off()]
    return out


def _arch(exp: Experiment) -> tuple[str, Arch | None]:
    return arch_of(exp.base_models[0])


def arch_of(spec: BaseModelSpec) -> tuple[str, Arch | None]:
    """(name shown, its architecture) of a base model: a known Hub id, or a local folder's config.json; else None."""
    if spec.source == "hub":
        return spec.id, KNOWN.get(spec.id)
    config = Path(spec.path) / "config.json" if spec.source == "local" and spec.path else None
    if config is None or not config.is_file():
        return spec.name, None
    c = json.loads(config.read_text())
    hidden, inter, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    heads = c["num_attention_heads"]
    arch = Arch(hidden, inter, layers, heads, c.get("num_key_value_heads", heads), 0.0)
    # embeddings (tied or not) + attention + MLP: enough for a size estimate
    kv = hidden // heads * arch.kv_heads
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter
    embed = c["vocab_size"] * hidden * (1 if c.get("tie_word_embeddings") else 2)
    return spec.name, Arch(hidden, inter, layers, heads, arch.kv_heads, float(per_layer * layers + embed),
                           vocab=c["vocab_size"])


class DiskEstimate(list):
    """disk_estimate's lines, with the total in bytes (None where the model's size is unknown): preflight compares
    it with the free space."""

    def __init__(self, lines: list[str], total_bytes: float | None = None):
        super().__init__(lines)
        self.total_bytes = total_bytes


def disk_estimate(exp: Experiment) -> DiskEstimate:
    """Lines: checkpoints of 02, 03 and 04, their size, the merged copies, and the total."""
    name, arch = _arch(exp)
    cells = plan(exp)
    count = {s: sum(c.stage == s for c in cells) for s in ("02_sft", "03_dpo", "04_probe_dynamics", "05_benchmarks")}
    saved = []  # (stage, checkpoints, training runs, the params they train with)
    if exp.sft is not None and count["02_sft"]:
        saved.append(("02_sft", count["02_sft"] * _saves(exp.sft.epochs, exp.sft.save_every_epochs), count["02_sft"], exp.sft))
    if exp.dpo is not None and count["03_dpo"]:  # a named variant of dpo.variants saves with its own settings
        runs_of = Counter(c.values["variant"] if c.values["variant"] in exp.dpo.variants else "" for c in cells
                          if c.stage == "03_dpo")
        for variant, runs in runs_of.items():
            d = exp.dpo.for_variant(variant or "directional")
            saved.append((f"03_dpo ({variant})" if variant else "03_dpo", runs * _saves(d.epochs, d.save_every_epochs),
                          runs, d))
    p = exp.probes
    if p is not None and count["04_probe_dynamics"] and p.models == "train" and exp.sft and exp.dpo:
        per_cell = _saves(p.sft_epochs, p.sft_save_every) + _saves(p.dpo_epochs, p.dpo_save_every)
        saved.append(("04_probe_dynamics", count["04_probe_dynamics"] * per_cell, 2 * count["04_probe_dynamics"], exp.sft))
    if arch is None:
        total = sum(n for _, n, _, _ in saved)
        return [f"{total} checkpoints ({', '.join(f'{s}: {n}' for s, n, _, _ in saved)}); size unknown: "
                f"no architecture known for {name}"]
    lines, total = [], 0.0
    full_bf16 = arch.parameters * 2
    for stage, n, runs, section in saved:
        trained = arch.lora_parameters(section.lora.r) if section.lora else arch.parameters
        weights = trained * (4 if section.lora else 2)  # peft keeps LoRA weights in float32; full fine-tuning bf16
        optimizer = trained * 4 * 2  # Adam's two float32 moments
        with_state = n if section.keep_optimizer_states == "all" else min(n, runs)  # "last": the newest of each run
        size = n * weights + with_state * optimizer
        total += size
        lines.append(f"{stage}: {n} checkpoints of {weights / GB:.1f} GB"
                     f" + optimizer state {optimizer / GB:.1f} GB on "
                     f"{'every checkpoint' if section.keep_optimizer_states == 'all' else 'the newest of each run'}"
                     f" = {size / GB:,.0f} GB")
    merged = 0
    if exp.dpo is not None and exp.sft is not None and exp.sft.lora is not None:
        merged += count["03_dpo"]  # each DPO run from a LoRA SFT merges its adapter into a full copy (merged_sft)
    if exp.benchmarks is not None and count["05_benchmarks"] and exp.benchmarks.backend == "vllm":
        merged += count["05_benchmarks"]  # vLLM serves merged weights of each LoRA model it scores
    if merged:
        total += merged * full_bf16
        lines.append(f"merged copies: {merged} x {full_bf16 / GB:.1f} GB (bf16) = {merged * full_bf16 / GB:,.0f} GB")
    lines.append(f"total about {total / GB:,.0f} GB under {exp.run_root} ({name}, estimate)")
    return DiskEstimate(lines, total)


GATED = ("02_sft", "03_dpo", "04_probe_dynamics")  # stages whose learning checks fail the cell (require_learning)


def gate_stops(exp: Experiment) -> list[str]:
    """Which later stages a failed learning gate would leave unstarted (the runner stops at the first failed cell)."""
    if not exp.require_learning:
        return []
    order = [c.stage for c in plan(exp)]
    out = []
    for stage in GATED:
        if stage in order:
            later = sorted({s for s in order[order.index(stage):] if s != stage}, key=order.index)
            if later:
                out.append(f"a failed learning gate in {stage} stops the run before {', '.join(later)} "
                           "(require_learning: false runs on and marks the finding)")
    return out
