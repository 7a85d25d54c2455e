"""Notebooks 02 and 03: SFT and directional DPO.

Every number the trainers use comes from here (beta, epochs, max_steps, token lengths), so a run
never silently falls back to a library default (the paper's released DPO code ran with trl's
beta 0.1 instead of its reported 0.6).
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from revlib.params.common import Strict
from revlib.params.negatives import PerStepDPOParams

TrainSet = Literal["forward", "reverse", "half_mix", "mix"]
PairSet = Literal["forward", "reverse", "half_mix", "mix"]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup"]
LaunchConfig = Literal["single", "ddp", "zero3"]


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
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(default_factory=list)
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

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data):
        # YAML 1.1 reads a bare `on:` key as the boolean True; accept it as the field it was meant to be
        if isinstance(data, dict) and True in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _lengths(self):
        if self.per_step and not set(self.per_step.on) <= set(self.on):
            raise ValueError(f"per_step.on {self.per_step.on} must be among dpo.on {self.on}: "
                             "it is compared with directional DPO on the same SFT model")
        if self.max_prompt_length >= self.max_length:
            raise ValueError(f"max_prompt_length ({self.max_prompt_length}) must be below max_length ({self.max_length})")
        return self

    def switched_off(self) -> list[str]:
        """Settings asked here that revlib turns off, one line each (said at `revlib check` and when training starts).

        precompute_ref_log_probs under ZeRO-3: trl wraps the model in a second (inference) DeepSpeed engine for that
        pass, and ZeRO-3's parameter trace then breaks on the first training step ("pop from an empty deque"; seen
        with 2 processes on DeepSpeed 0.19.8). The reference is the same, scored each step instead.
        """
        if self.precompute_ref_log_probs and self.accelerate_config == "zero3":
            return ["precompute_ref_log_probs is off under ZeRO-3; the reference is scored each step"]
        return []
