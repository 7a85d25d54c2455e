"""Peak GPU memory of one training process, estimated from the model's shape and the cell's settings (what
`revlib preflight` sets against the GPUs).

The estimate, per process, in bytes (w: 2 for bf16, else 4; T = sequences per micro-batch x max_length,
DPO's sequences being its chosen and rejected, both padded to the longer; N processes):

- weights, gradients and Adam states as DeepSpeed keeps them (`deepspeed.runtime.zero.stage3.
  estimate_zero3_model_states_mem_needs`: 18 bytes per trained parameter, i.e. w for the weight and 16 for its fp32
  gradient, fp32 master copy and two fp32 moments), the frozen base at w bytes; ZeRO-3 divides all of it by N and
  gathers the largest layer (4 bytes per parameter of it, DeepSpeed's own term); offload moves the parameters or
  the gradient and optimizer states to host memory. Without DeepSpeed: peft's float32 adapter (16 bytes per LoRA
  parameter with its gradient and moments) or bf16 full training (8 bytes: weight, gradient, two moments in the
  parameter's dtype), and DDP's gradient buckets once more.
- activations of one decoder layer (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
  Transformer Models", counted for a Llama/Qwen2 layer: RMSNorm, GQA attention, SwiGLU, LoRA), bytes for T tokens:
  two RMSNorms (4+w)Th each (transformers upcasts to fp32; liger's kernel keeps wTh + 4T); attention q, k, v and
  output w T (2h + 2kv) + the log-sum-exp 4T·heads (flash-attention and sdpa keep no s x s matrix; eager keeps its
  scores in fp32 and w, (4+w)·T·s·heads); SwiGLU 3wTI (gate, up, silu; liger recomputes silu: 2wTI); the inputs the
  trained weights' gradients need: w T (2h + I) for full training, with LoRA (w+1) T (6h + I) for dropout's output and
  mask at each of the 7 adapted inputs plus 7wTr (the rank-r activations; without dropout the layer's own inputs).
  Without gradient checkpointing every trained layer keeps them; with it, each keeps its input, wTh, and one layer is
  recomputed at a time. The backward of a layer adds its gradients in flight, w T (3I + 2h). sdpa and eager with
  more than one sequence (DPO pads chosen and rejected to one length) add the boolean padding mask, sequences x s^2
  bytes. For comparison, Korthikanti et al.'s GPT layer keeps sbh(34 + 5as/h) bytes (fp16, dropout, a 4h GeLU MLP,
  the s x s attention matrix); Qwen2's SwiGLU (I = 5.3h at 7B), fp32 RMSNorm and LoRA inputs count more, flash
  attention drops the 5as/h term.
- the LM head: trl's fused head (trl 1.16, SFT and DPO) projects 4,096 tokens x 32,768 vocabulary entries at a time
  and never materialises T x V logits: a tile, the selected hidden states (wTh), their fp32 gradient (4Th), fp32
  per-token statistics, and the head's fp32 gradient when the head itself is trained. The full logits it avoids,
  fp32 and their log-softmax copy (8 T V), are shown beside it.
- DPO's reference: the policy with its adapter disabled (LoRA) or log-probs scored before training (precompute):
  no second copy; otherwise a second copy of the weights (sharded as the policy's).
- a fixed 2 GB for the CUDA context, NCCL and cuBLAS workspaces and allocator slack (assumed, not derived).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from revlib.core.io import REPO_ROOT
from revlib.lab.hardware import GB, Arch
from revlib.modeling import launch
from revlib.params.train import DPOParams, SFTParams

RUNTIME_BYTES = 2e9  # CUDA context, NCCL and cuBLAS workspaces, allocator slack: assumed
# trl 1.16's fused LM head (trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE, trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE);
# tests/test_preflight.py checks them against the installed trl
FUSED_HEAD_TOKENS = 4096
FUSED_HEAD_VOCAB = 32768
DS_CPU_BUFFER = 1.5  # DeepSpeed's estimator's additional_buffer_factor for host memory under offload


# ---------------------------------------------------------------- how a cell launches


@dataclass(frozen=True)
class Launch:
    """How a training cell's processes hold the model: configs/<config>.yaml read for its ZeRO stage and offload."""

    config: str | None  # None: in-process
    processes: int
    deepspeed: bool = False
    zero_stage: int = 0  # 3: parameters, gradients and optimizer states sharded over the processes
    offload_params: bool = False
    offload_optimizer: bool = False

    @property
    def ddp(self) -> bool:
        return not self.deepspeed and self.processes > 1

    def describe(self) -> str:
        if self.config is None:
            return "in-process"
        what = f"ZeRO-{self.zero_stage}" if self.deepspeed else ("DDP" if self.ddp else "one process")
        off = [k for k, on in (("parameters", self.offload_params), ("optimizer", self.offload_optimizer)) if on]
        return f"{self.config} ({what} x {self.processes}" + (f", {' and '.join(off)} offloaded to CPU" if off else "") + ")"


def read_launch(config: str | None, processes: int) -> Launch:
    """The ZeRO stage and offload of configs/<config>.yaml (its DeepSpeed JSON, or accelerate's inline keys)."""
    if config is None:
        return Launch(None, 1)
    raw = yaml.safe_load((launch.CONFIGS / f"{config}.yaml").read_text())
    if raw.get("distributed_type") != "DEEPSPEED":
        return Launch(config, processes)
    ds = raw.get("deepspeed_config") or {}
    if ds.get("deepspeed_config_file"):
        zero = json.loads((REPO_ROOT / ds["deepspeed_config_file"]).read_text()).get("zero_optimization", {})
        stage = int(zero.get("stage", 0))
        params_to = (zero.get("offload_param") or {}).get("device", "none")
        optimizer_to = (zero.get("offload_optimizer") or {}).get("device", "none")
    else:
        stage = int(ds.get("zero_stage", 0))
        params_to, optimizer_to = ds.get("offload_param_device", "none"), ds.get("offload_optimizer_device", "none")
    return Launch(config, processes, True, stage, params_to == "cpu" and stage == 3, optimizer_to == "cpu")


# ---------------------------------------------------------------- the memory estimate


@dataclass(frozen=True)
class Memory:
    """One training cell's estimated peak memory per process (bytes), by part."""

    weights: float
    states: float  # gradients and optimizer states (what of them stays on the GPU)
    gathered: float  # ZeRO-3: the largest layer gathered whole
    activations: float  # as the params train (with or without gradient checkpointing)
    activations_checkpointed: float
    activations_full: float
    head: float  # the LM head's working set (trl's fused head)
    full_logits: float  # what T x V logits would take, for comparison
    reference: float  # DPO: a second copy of the weights where there is one
    reference_note: str
    runtime: float
    host: float  # host memory the offloaded parts take on the node (all processes)
    trained_parameters: float

    @property
    def peak(self) -> float:
        return (self.weights + self.states + self.gathered + self.activations + self.head + self.reference
                + self.runtime)

    def parts(self) -> str:
        g = lambda x: f"{x / GB:.1f}"  # noqa: E731
        return (f"weights {g(self.weights)} · gradients and optimizer states {g(self.states)} "
                f"({self.trained_parameters / 1e6:,.0f}M trained parameters) · gathered layer {g(self.gathered)} · "
                f"activations {g(self.activations)} (with gradient checkpointing {g(self.activations_checkpointed)}, "
                f"without {g(self.activations_full)}) · LM head {g(self.head)} (full logits would take "
                f"{g(self.full_logits)}) · reference {g(self.reference)} ({self.reference_note}) · "
                f"runtime {g(self.runtime)}" + (f" · host memory for offload {g(self.host)}" if self.host else ""))


def largest_layer(arch: Arch) -> float:
    """Parameters of the largest single module (what ZeRO-3 gathers whole): the embedding or one MLP matrix."""
    return float(max(arch.vocab * arch.hidden, arch.hidden * arch.intermediate))


def trained_layers(arch: Arch, settings: SFTParams | DPOParams) -> int:
    """Decoder layers that keep activations for a backward pass: all, or LoRA's top layers (nothing below needs one)."""
    lo = settings.lora
    return min(lo.top_layers, arch.layers) if lo is not None and lo.top_layers else arch.layers


def layer_activations(arch: Arch, tokens: int, seq_len: int, sequences: int, settings: SFTParams | DPOParams,
                      attn: str, liger: bool) -> float:
    """Bytes one trained decoder layer keeps for its backward pass (the formula in the module docstring)."""
    w = 2 if settings.bf16 else 4
    h, inter, heads = arch.hidden, arch.intermediate, arch.heads
    kv = h // heads * arch.kv_heads
    t = float(tokens)
    norms = 2 * ((w * t * h + 4 * t) if liger else (4 + w) * t * h)
    attention = w * t * (2 * h + 2 * kv) + 4 * t * heads
    if attn == "eager":
        attention += (4 + w) * t * seq_len * heads
    mlp = (2 if liger else 3) * w * t * inter
    lo = settings.lora
    if lo is None:
        inputs = w * t * (2 * h + inter)
    elif lo.dropout > 0:
        inputs = (w + 1) * t * (6 * h + inter) + 7 * w * t * lo.r
    else:
        inputs = w * t * (2 * h + inter) + 7 * w * t * lo.r
    return norms + attention + mlp + inputs


def estimate(arch: Arch, settings: SFTParams | DPOParams, run: Launch, attn: str) -> Memory:
    """Peak memory of one training process of these settings (module docstring), for a model of `arch`."""
    w = 2 if settings.bf16 else 4
    dpo = isinstance(settings, DPOParams)
    liger = bool(settings.trainer.get("use_liger_kernel", False))
    n = run.processes
    params = arch.parameters
    lora = settings.lora
    lora_params = arch.lora_parameters(lora.r) * trained_layers(arch, settings) / arch.layers if lora else 0.0
    trained = lora_params if lora else params
    # weights, gradients and optimizer states
    host = 0.0
    if run.deepspeed:
        shard_params = n if run.zero_stage >= 3 else 1
        shard_grads = n if run.zero_stage >= 2 else 1
        shard_optimizer = n if run.zero_stage >= 1 else 1
        all_weights = (params + lora_params) * w
        weights = 0.0 if run.offload_params else all_weights / shard_params
        states = 0.0 if run.offload_optimizer else trained * (4 / shard_grads + 12 / shard_optimizer)
        gathered = 4 * largest_layer(arch) if run.zero_stage >= 3 else 0.0
        host = DS_CPU_BUFFER * ((all_weights if run.offload_params else 0.0)
                                + (trained * 16 if run.offload_optimizer else 0.0))
    else:
        trained_bytes = 4 if lora else w  # peft keeps the adapter in float32; full training in the model's dtype
        weights = params * w + lora_params * 4
        states = trained * trained_bytes * (3 + (1 if run.ddp else 0))  # gradient, 2 moments, DDP's bucket
        gathered = 0.0
    # activations
    sequences = settings.batch_size * (2 if dpo else 1)
    tokens = sequences * settings.max_length
    attn_mask = sequences * settings.max_length ** 2 if attn != "flash_attention_2" and sequences > 1 else 0.0
    layer = layer_activations(arch, tokens, settings.max_length, sequences, settings, attn, liger)
    backward = w * tokens * (3 * arch.intermediate + 2 * arch.hidden)
    layers = trained_layers(arch, settings)
    checkpointed = layers * w * tokens * arch.hidden + layer + backward + attn_mask
    full = layers * layer + backward + attn_mask
    # the LM head (trl's fused head) and the logits it avoids
    head_trained = lora is None and arch.vocab > 0
    tile = min(tokens, FUSED_HEAD_TOKENS) * min(arch.vocab, FUSED_HEAD_VOCAB) * w
    head = (tile + w * tokens * arch.hidden + 4 * tokens * arch.hidden + 8 * 4 * tokens
            + (4 * arch.vocab * arch.hidden if head_trained else 0.0))
    full_logits = 8.0 * tokens * arch.vocab
    # DPO's reference
    reference, note = 0.0, "none: SFT"
    if dpo:
        if lora is not None:
            note = "the policy with its adapter disabled: no second copy"
        elif settings.precompute_ref_log_probs and not settings.switched_off():
            note = "log-probs scored before training: no second copy"
        else:
            reference = 0.0 if run.offload_params else params * w / (n if run.zero_stage >= 3 else 1)
            note = "a second copy of the weights" + (" (offloaded)" if run.offload_params else "")
            host += DS_CPU_BUFFER * params * w if run.offload_params else 0.0
    return Memory(weights=weights, states=states, gathered=gathered,
                  activations=checkpointed if settings.gradient_checkpointing else full,
                  activations_checkpointed=checkpointed, activations_full=full, head=head, full_logits=full_logits,
                  reference=reference, reference_note=note, runtime=RUNTIME_BYTES, host=host,
                  trained_parameters=trained)


def _with(settings: SFTParams | DPOParams, **changes: Any) -> SFTParams | DPOParams:
    return settings.model_copy(update=changes)


def remedies(arch: Arch, settings: SFTParams | DPOParams, attn: str, available: float) -> tuple[str, ...]:
    """Settings that would bring a cell at risk under `available` bytes, each with its estimate."""
    options: list[tuple[str, SFTParams | DPOParams]] = []
    if not settings.gradient_checkpointing:
        options.append(("gradient_checkpointing: true", _with(settings, gradient_checkpointing=True)))
    if not settings.trainer.get("use_liger_kernel"):
        options.append(("trainer: {use_liger_kernel: true}",
                        _with(settings, trainer={**settings.trainer, "use_liger_kernel": True})))
    if settings.accelerate_config != "zero3" and settings.num_processes > 1:
        options.append(("accelerate_config: zero3", _with(settings, accelerate_config="zero3")))
    if settings.accelerate_config != "zero3_offload" and settings.num_processes > 1:
        options.append(("accelerate_config: zero3_offload", _with(settings, accelerate_config="zero3_offload")))
    if settings.batch_size > 1:
        options.append((f"batch_size: 1, grad_accum: {settings.batch_size * settings.grad_accum}",
                        _with(settings, batch_size=1, grad_accum=settings.batch_size * settings.grad_accum)))
    out = []
    for what, changed in options:
        m = estimate(arch, changed, read_launch(changed.accelerate_config, changed.num_processes), attn)
        if m.peak <= available:
            out.append(f"{what} ({m.peak / GB:.1f} GB)")
    run = read_launch(settings.accelerate_config, settings.num_processes)
    floor = (settings.max_prompt_length + 1) if isinstance(settings, DPOParams) else 8
    low, high = floor, settings.max_length  # the longest max_length that fits as the rest stands
    if estimate(arch, _with(settings, max_length=low), run, attn).peak <= available:
        while high - low > 1:
            mid = (low + high) // 2
            fits = estimate(arch, _with(settings, max_length=mid), run, attn).peak <= available
            low, high = (mid, high) if fits else (low, mid)
        out.append(f"max_length: {low} or less (rows longer are cut; 02/03 say how many)")
    return tuple(out)
