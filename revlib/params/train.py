"""Notebooks 02 and 03: SFT and directional DPO.

Every number the trainers use comes from here (beta, epochs, max_steps, token lengths), so a run
never silently falls back to a library default (the paper's released DPO code ran with trl's
beta 0.1 instead of its reported 0.6).
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from revlib.params.common import Strict
from revlib.params.negatives import PerStepDPOParams

TrainSet = Literal["forward", "reverse", "half_mix", "mix"]
PairSet = Literal["forward", "reverse", "half_mix", "mix"]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup"]
LaunchConfig = Literal["single", "ddp", "zero3", "zero3_offload"]  # configs/<name>.yaml


class Lora(Strict):
    r: int = Field(8, ge=1, description="LoRA rank (paper: 256)")
    alpha: int = Field(16, ge=1, description="LoRA alpha (paper: 512)")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    top_layers: int | None = Field(None, ge=1, description="LoRA on the top N decoder layers only (peft "
                                   "layers_to_transform): the backward pass stops there, and 04 scores the shared "
                                   "lower layers once; null: every layer")
    reuse_frozen_states: bool = Field(True, description="with top_layers, in one process: the frozen lower layers run "
                                      "once per training row, and their output is reused at every later epoch "
                                      "(revlib.modeling.frozen_stack)")


# trl config fields revlib sets itself, by the params field that sets them (or why revlib keeps them), so a
# `trainer:` entry can never silently disagree with a first-class setting.
OWNED_COMMON = {
    "num_train_epochs": "epochs", "max_steps": "max_steps", "learning_rate": "lr", "lr_scheduler_type": "scheduler",
    "warmup_steps": "warmup_ratio", "weight_decay": "weight_decay", "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum", "gradient_checkpointing": "gradient_checkpointing", "bf16": "bf16",
    "logging_steps": "logging_steps", "report_to": "report_to", "max_length": "max_length",
    "model_init_kwargs": "bf16 and attn_implementation", "seed": "the experiment's seed", "data_seed": "the experiment's seed",
    "output_dir": "revlib (checkpoints/ of the run directory)", "save_strategy": "save_every_epochs",
    "save_steps": "save_every_epochs", "save_total_limit": "save_every_epochs (every scheduled checkpoint is kept)",
    "logging_strategy": "logging_steps", "use_cpu": "revlib (CPU only without CUDA, never for a GPU launch config)", "fp16": "bf16",
    "remove_unused_columns": "revlib (pre-tokenized rows)", "disable_tqdm": "revlib (curves instead of progress bars)",
    "resume_from_checkpoint": "revlib (resumes from the last finished checkpoint)",
    "activation_checkpointing": "gradient_checkpointing",
    "save_only_model": "keep_optimizer_states (the newest checkpoint keeps its state, for resume)",
}
OWNED = {
    "sft": {**OWNED_COMMON, "padding_free": "padding_free", "completion_only_loss": "revlib (loss on the response only)",
            "dataset_text_field": "revlib (pre-tokenized rows)"},
    "dpo": {**OWNED_COMMON, "beta": "beta", "precompute_ref_log_probs": "precompute_ref_log_probs"},
}


@lru_cache(maxsize=2)
def trl_fields(kind: str) -> frozenset[str]:
    """Field names of trl's SFTConfig or DPOConfig (imports trl, so only when a `trainer:` mapping is given)."""
    import dataclasses

    from trl import DPOConfig, SFTConfig

    return frozenset(f.name for f in dataclasses.fields(SFTConfig if kind == "sft" else DPOConfig) if f.init)


def check_trainer(kind: str, entries: dict[str, Any]) -> dict[str, Any]:
    """Every key must be a field of trl's config that revlib does not set itself; the nearest name is suggested."""
    if not entries:
        return entries
    config = "SFTConfig" if kind == "sft" else "DPOConfig"
    fields, problems = trl_fields(kind), []
    for key in entries:
        if key in OWNED[kind]:
            owner = OWNED[kind][key]
            where = owner if owner.startswith("revlib") or owner.startswith("the ") else f"{kind}.{owner}"
            problems.append(f"{key}: set by {where}; give it once, there")
        elif key not in fields:
            near = difflib.get_close_matches(key, sorted(fields), n=1, cutoff=0.6)
            problems.append(f"{key}: not a field of trl's {config}" + (f"; did you mean {near[0]!r}?" if near else ""))
    if problems:
        raise ValueError("; ".join(problems))
    return entries


class _Common(Strict):
    """Fields SFT and DPO share: optimisation, checkpoints, logging and hardware."""

    lora: Lora | None = Field(Lora(), description="null for full fine-tuning")
    lr: float = Field(1e-3, gt=0)
    scheduler: Scheduler = "cosine"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(16, ge=1, description="per device")
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(512, ge=8, description="tokens of prompt + response; longer examples are cut in tokens")
    save_every_epochs: int = Field(1, ge=1, description="checkpoint every N epochs; the last epoch is always saved")
    save_every_steps: int | None = Field(None, ge=1, description="checkpoint every N optimizer steps instead of by "
                                                                 "epoch (a step budget's curve); the last step is always saved")
    keep_optimizer_states: Literal["last", "all"] = Field(
        "last", description="last: only the newest checkpoint keeps optimizer and scheduler state (what resume "
                            "needs; at 7B about 9 GB a checkpoint); all: every checkpoint keeps it")
    max_steps: int = Field(-1, description="-1: run all epochs; otherwise stop after this many optimizer steps")
    logging_steps: int = Field(1, ge=1)
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list, description="trackers the trainer logs to; wandb runs offline without WANDB_API_KEY and "
                                          "names its run experiment/stage/cell in a project named after the experiment")
    accelerate_config: LaunchConfig | None = Field(
        None, description="launch through accelerate with configs/<name>.yaml; null trains in-process"
    )
    num_processes: int = Field(1, ge=1, description="processes for accelerate launch")
    bf16: bool = False
    head_on_labels_only: bool = Field(True, description="trl's fused LM head scores only the positions with a label "
                                      "on CPU too, as it does on CUDA (revlib.modeling.labelled_head): the same "
                                      "numbers, without projecting prompt and padding through the vocabulary")
    gradient_checkpointing: bool = Field(False, description="trades compute for memory; off for small models")
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = Field(
        "auto", description="auto: flash_attention_2 on a GPU when installed, else sdpa"
    )
    trainer: dict[str, Any] = Field(
        default_factory=dict, description="further fields of trl's SFTConfig/DPOConfig (max_grad_norm, loss_type, "
                                          "use_liger_kernel...), checked against trl at `revlib check` and passed through untouched")


class SFTParams(_Common):
    @field_validator("trainer")
    @classmethod
    def _trl_fields(cls, value):
        return check_trainer("sft", value)

    train_sets: list[TrainSet] = Field(default_factory=lambda: ["forward", "reverse", "half_mix", "mix"], min_length=1)
    epochs: int = Field(3, ge=1)
    padding_free: bool | None = Field(
        None, description="concatenate a batch into one row (no pad tokens); null: on with flash-attention only "
                          "(with sdpa on CPU the block-diagonal mask makes it slower than padding)")


def _on_key(data: Any) -> Any:
    """YAML 1.1 reads a bare `on:` key as the boolean True; accept it as the field it was meant to be."""
    if isinstance(data, dict) and True in data:
        data = {("on" if k is True else k): v for k, v in data.items()}
    return data


VARIANT_NAME = r"^[a-z0-9][a-z0-9-]*$"
BUILT_IN_VARIANTS = ("directional", "per_step")  # 03's own cells: the dpo section's settings, per_step's budget


class DPOVariant(Strict):
    """A further DPO run from the same SFT models on the same pairs, with the settings given here in place of the
    dpo section's (everything left out is the section's). Its cells are <model>__<set>__<name>; 04 scores its final
    model beside directional DPO, and Table 2 shows it as its own row. Example: the r1k authors' released DPO
    script (full parameters, beta 0.1, lr 5e-7, 50 steps, ZeRO-3 with CPU offload) beside the paper's beta 0.6."""

    description: str = Field("", description="what this variant is, shown with its runs")
    on: list[TrainSet] | None = Field(None, min_length=1, description="SFT models to run it on; null: all of dpo.on")
    lora: Lora | None = Field(None, description="null: full-parameter DPO (a frozen copy of the SFT model is the "
                                                "reference); leave the key out to keep the dpo section's")
    beta: float | None = Field(None, gt=0)
    lr: float | None = Field(None, gt=0)
    epochs: int | None = Field(None, ge=1)
    max_steps: int | None = Field(None, description="-1: all epochs; otherwise stop after this many optimizer steps")
    save_every_epochs: int | None = Field(None, ge=1)
    save_every_steps: int | None = Field(None, ge=1)
    scheduler: Scheduler | None = None
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    batch_size: int | None = Field(None, ge=1)
    grad_accum: int | None = Field(None, ge=1)
    max_length: int | None = Field(None, ge=8)
    max_prompt_length: int | None = Field(None, ge=1)
    precompute_ref_log_probs: bool | None = None
    accelerate_config: LaunchConfig | None = None
    num_processes: int | None = Field(None, ge=1)
    gradient_checkpointing: bool | None = None
    trainer: dict[str, Any] | None = Field(None, description="replaces the dpo section's trainer mapping")

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data):
        return _on_key(data)

    @field_validator("trainer")
    @classmethod
    def _trl_fields(cls, value):
        return check_trainer("dpo", value) if value is not None else value

    def changes(self) -> dict[str, Any]:
        """The dpo settings this variant gives (a key written as null counts: `lora: null` is full parameters)."""
        return {k: getattr(self, k) for k in self.model_fields_set if k not in ("description", "on")}


class DPOParams(_Common):
    @field_validator("trainer")
    @classmethod
    def _trl_fields(cls, value):
        return check_trainer("dpo", value)

    on: list[TrainSet] = Field(default_factory=lambda: ["forward", "reverse", "half_mix", "mix"], min_length=1,
                               description="SFT models (by training set) to run DPO on")
    pairs: PairSet = Field("mix", description="directional pair set; the paper uses pairs of both directions (mix)")
    beta: float = Field(0.6, gt=0, description="paper: 0.6")
    epochs: int = Field(2, ge=1)
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    max_prompt_length: int = Field(256, ge=1, description="prompt tokens kept (from the end)")
    precompute_ref_log_probs: bool = Field(True, description="score the reference once, not every epoch")
    per_step: PerStepDPOParams | None = Field(
        None, description="also run per-step DPO (Monte-Carlo credit on the SFT policy's samples) beside directional DPO")
    variants: dict[str, DPOVariant] = Field(
        default_factory=dict, description="further directional DPO runs by name (lowercase, digits, '-'), each with "
                                          "some settings changed, e.g. the authors' released script's")

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data):
        return _on_key(data)

    @model_validator(mode="after")
    def _lengths(self):
        if self.per_step and not set(self.per_step.on) <= set(self.on):
            raise ValueError(f"per_step.on {self.per_step.on} must be among dpo.on {self.on}: "
                             "it is compared with directional DPO on the same SFT model")
        if self.max_prompt_length >= self.max_length:
            raise ValueError(f"max_prompt_length ({self.max_prompt_length}) must be below max_length ({self.max_length})")
        for name, variant in self.variants.items():
            if not re.match(VARIANT_NAME, name) or name in BUILT_IN_VARIANTS:
                raise ValueError(f"variants: {name!r} is not a variant name (lowercase letters, digits and '-', not "
                                 f"{' or '.join(BUILT_IN_VARIANTS)})")
            if variant.on is not None and not set(variant.on) <= set(self.on):
                raise ValueError(f"variants.{name}.on {variant.on} must be among dpo.on {self.on}: it starts from "
                                 "the same SFT models")
            try:
                self.for_variant(name)
            except ValidationError as err:  # a combination the dpo section refuses (max_prompt_length >= max_length)
                problems = "; ".join((f"{'.'.join(map(str, e['loc']))}: " if e['loc'] else "") + e['msg'].removeprefix('Value error, ')
                                     for e in err.errors())
                raise ValueError(f"variants.{name}: {problems}") from None
        return self

    def for_variant(self, variant: str) -> DPOParams:
        """The settings a 03 cell trains with: the section's own for directional and per-step DPO, the section with
        a named variant's changes for that variant (validated as a dpo section)."""
        if variant in BUILT_IN_VARIANTS:
            return self
        if variant not in self.variants:
            raise KeyError(f"no DPO variant named {variant!r}; dpo.variants has {sorted(self.variants)}")
        own = self.model_dump(exclude={"variants", "per_step"}, exclude_unset=False)
        return DPOParams.model_validate(own | self.variants[variant].changes())

    def variant_on(self, variant: str) -> list[str]:
        """The SFT models (by training set) a named variant runs on."""
        return self.variants[variant].on or list(self.on)

    def switched_off(self) -> list[str]:
        """Settings asked here that revlib turns off, one line each (said at `revlib check` and when training starts).

        precompute_ref_log_probs under ZeRO-3 (with or without offload): trl 1.16 accepts it and wraps the model in a
        second (inference) DeepSpeed engine for that pass, but ZeRO-3's parameter trace can then break on the first
        training step ("pop from an empty deque"). Re-checked with trl 1.16.0 and DeepSpeed 0.19.8, 2 processes,
        LoRA, through revlib's own DPO path: batch 4 breaks, with or without gradient checkpointing or LoRA dropout;
        batch 1 ran. It depends on the run's shapes, so it stays off. The reference is the same, scored each step
        instead: with LoRA it is the policy with its adapter disabled, so this costs a forward pass per step, no memory.
        """
        if self.precompute_ref_log_probs and self.accelerate_config in ("zero3", "zero3_offload"):
            return ["precompute_ref_log_probs is off under ZeRO-3; the reference is scored each step"]
        return []
