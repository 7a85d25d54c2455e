"""Notebooks 06 and 07: negative data with per-step credit assignment, and the star graph."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from revlib.params.common import Strict

Method = Literal["sft", "rft", "rft_self", "naive_dpo", "per_step_dpo", "per_step_dpo_under", "adv_rft"]
CriticalStep = Literal["first_pit", "first_below", "most_negative"]


class VLLMSettings(Strict):
    """The rollout engine's vLLM settings (engine: vllm or auto); one engine per stage process serves every checkpoint."""

    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="share of GPU memory the engine reserves")
    tensor_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1)
    max_model_len: int | None = Field(None, ge=16, description="context length; empty: the model's")


class Sampling(Strict):
    """How the SFT policy is sampled and its step prefixes valued by Monte-Carlo rollouts."""

    samples_per_problem: int = Field(4, ge=1, description="samples from the SFT policy per training problem")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of samples and rollouts")
    rollouts: int = Field(4, ge=1, description="Monte-Carlo rollouts per step prefix (M)")
    max_new_tokens: int = Field(64, ge=1, description="tokens per sample or rollout")
    critical_step: CriticalStep = Field("first_below", description="first_pit (Setlur et al.: the first step where the "
                                        "value reaches its lowest), first step below the threshold, or the most negative")
    advantage_threshold: float = Field(-0.5, ge=-1, le=0, description="for first_below")
    best_of: int | None = Field(None, ge=1, description="value a prefix under the best-of-K policy (Setlur et al. §6): "
                                "the share of groups of K rollouts with a right one; empty: the rollouts' success rate")
    best_of_rule: Literal["groups", "plug_in"] = Field("groups", description="with best_of K: groups (the share of "
                                                       "groups of K rollouts with a right one) or plug_in (1 - (1 - p)^K "
                                                       "with p the success rate of all the rollouts)")
    rejected: Literal["full", "step"] = Field("full", description="per-step pairs' rejected response: the whole sample, "
                                              "or the sample ending at its critical step (the paper's pair)")
    step_split: Literal["task", "line", "sentence"] = Field("task", description="task splitter, or per line/sentence (free text)")
    engine: Literal["hf", "vllm", "auto"] = Field("hf", description="rollout engine; auto: vLLM when installed")
    prefix_batch: int = Field(16, ge=1, description="prefixes prefilled together by the HF engine")
    vllm: VLLMSettings = Field(default_factory=VLLMSettings, description="vLLM engine settings")

    @model_validator(mode="after")
    def _groups(self):
        if self.best_of is not None and self.best_of_rule == "groups" and self.rollouts % self.best_of:
            raise ValueError(f"rollouts ({self.rollouts}) must be a multiple of best_of ({self.best_of})")
        return self


# keys 06 once had whose meaning changed; an old file naming one is refused, never read under the new meaning
RENAMED = {
    "sft_steps": "sft_steps is now sft_max_steps, a step budget: SFT is read out every sft_eval_every steps on the "
                 "validation problems and the checkpoint with the best validation accuracy is kept (not the last)",
    "dpo_epochs": "dpo_epochs is now dpo_passes: a fixed number of passes, every one read out on the validation "
                  "problems, and the best of them (pass 0, the start, included) kept",
    "under_fraction": "under_fraction is now under_validation_share: the under-trained start is the earliest read-out "
                      "whose validation accuracy reaches that share of the chosen one's (a share of the steps picked "
                      "checkpoints from before SFT's sudden onset, which had learned nothing)",
    "kept_skill_drop": "negatives.kept_skill_drop is now learning.kept_skill_drop: one kept-skill rule for 03, 06 and 07",
    "held_out_pairs": "held_out_pairs no longer chooses the DPO pass (validation accuracy does); the pairs held out for "
                      "the chosen/rejected log-ratios are log_ratio_pairs",
}


class NegativeParams(Sampling):
    """Notebook 06 (Setlur et al.'s scaling study): SFT over `data_sizes` and every other method at `method_sizes`.

    Every size's SFT is the checkpoint with the best accuracy on the validation problems (disjoint from the test set
    and from every training set) within `sft_max_steps`; every other method starts from it and makes a fixed number
    of passes over its own data, each pass read out on the validation problems, the best kept (pass 0, the start
    itself, is a candidate).
    """

    task: str = "arith"
    knobs: dict[str, Any] = Field(default_factory=dict)
    data_sizes: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1,
                                  description="synthetic training problems per point of SFT's scaling curve")
    method_sizes: list[int] | None = Field(None, description="sizes (among data_sizes) where RFT and the DPO methods "
                                           "run; empty: every size")
    n_test: int = Field(100, ge=1)
    n_validation: int = Field(100, ge=1, description="validation problems (one set, disjoint from the test set and "
                              "from every training set) that choose SFT's checkpoint and every method's pass")
    teacher_forms: list[str] = Field(default_factory=lambda: ["canonical"], min_length=1,
                                     description="the synthetic teacher writes each problem's chain in one of these "
                                     "forms (drawn per problem; the task family's `teacher_forms`, written by its "
                                     "`restyle_step`): D_syn; canonical alone is the oracle")
    rft_k: int = Field(2, ge=1, description="verified positives kept per problem for RFT")
    max_negatives: int | None = Field(None, ge=1, description="incorrect samples kept per problem (the paper: up to 8); "
                                      "empty: all of them")
    methods: list[Method] = Field(default_factory=lambda: ["sft", "rft", "rft_self", "naive_dpo", "per_step_dpo",
                                                           "adv_rft"], min_length=1)
    sft_max_steps: int = Field(300, ge=1, description="SFT's step budget at every size")
    sft_eval_every: int = Field(50, ge=1, description="SFT is saved and read out on the validation problems every N "
                                "steps; the best checkpoint by validation accuracy is the size's SFT (ties: the earliest)")
    under_validation_share: float = Field(0.5, gt=0, le=1, description="per_step_dpo_under starts from the earliest "
                                          "SFT read-out before the chosen one whose validation accuracy reaches this "
                                          "share of the chosen one's (Figure 8(b)): a start that has learned the task "
                                          "but trained for fewer steps")
    under_samples_per_problem: int | None = Field(None, ge=1, description="samples per problem drawn from the "
                                                  "under-trained start, which is wrong most of the time, so fewer "
                                                  "samples give enough negatives (every one is valued by rollouts); "
                                                  "empty: samples_per_problem")
    dpo_passes: int = Field(3, ge=1, description="passes of every DPO run over its own training pairs, each read out")
    rft_passes: int = Field(3, ge=1, description="passes of every RFT-type run over its own data, each read out")
    log_ratio_pairs: float = Field(0.2, ge=0, lt=1, description="share of each DPO method's problems whose pairs are "
                                   "held out of training; their chosen, rejected and critical-step log-ratios are "
                                   "logged at every pass")
    min_pairs: int = Field(50, ge=1, description="a DPO method with fewer pairs at a size is not trained there "
                           "(its row says so): a handful of pairs measures a starved optimiser, not the method")
    kept_skill_problems: int = Field(100, ge=1, description="training problems the kept-skill check answers (at most "
                                     "the size); how far a method may fall below SFT on them is learning.kept_skill_drop")
    adv_percentile: float = Field(50.0, ge=0, le=100, description="advantage-filtered RFT keeps positives whose lowest "
                                  "step advantage reaches this percentile over all responses (Figure 11)")
    value_problems: int = Field(16, ge=0, description="test problems for the value-per-step read-out (Figure 7); 0: skip")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        if isinstance(data, dict):
            old = [k for k in RENAMED if k in data]
            if old:
                raise ValueError("; ".join(RENAMED[k] for k in old))
        return data

    @model_validator(mode="after")
    def _sizes(self):
        if any(n < 1 for n in self.data_sizes) or len(set(self.data_sizes)) != len(self.data_sizes):
            raise ValueError(f"data_sizes must be distinct positive counts, got {self.data_sizes}")
        if self.method_sizes is not None and (not self.method_sizes or not set(self.method_sizes) <= set(self.data_sizes)
                                              or len(set(self.method_sizes)) != len(self.method_sizes)):
            raise ValueError(f"method_sizes must be distinct sizes among data_sizes {self.data_sizes}, "
                             f"got {self.method_sizes}")
        if "sft" not in self.methods:
            raise ValueError("methods must include sft: every other method starts from it")
        if self.sft_eval_every > self.sft_max_steps:
            raise ValueError(f"sft_eval_every ({self.sft_eval_every}) exceeds sft_max_steps ({self.sft_max_steps})")
        return self

    @property
    def sizes_for_methods(self) -> list[int]:
        return sorted(self.method_sizes if self.method_sizes is not None else self.data_sizes)


class StarGraphParams(Sampling):
    """The star graph (07): SFT for `sft_epochs` epochs, read out every `readout_every_steps` steps on test and
    training graphs; the per-step DPO starts are then chosen from that curve by state (stages/star.py's rules), and
    each start gets per-step DPO for `dpo.max_steps` steps, read out every `dpo.save_every_steps`."""

    knobs: dict[str, Any] = Field(default_factory=dict)
    n_train: int = Field(200, ge=1)
    n_test: int = Field(100, ge=1)
    probe_problems: int = Field(32, ge=1, description="test problems, and as many training problems, on which the "
                                "critical token's probability and Monte-Carlo Q are read")
    train_readout: int = Field(200, ge=1, description="training problems answered greedily at each checkpoint (the "
                               "start states are read on them: valid paths, first node)")
    sft_epochs: int = Field(8, ge=1, description="SFT epochs in all; the over-trained start is the most trained checkpoint")
    readout_every_steps: int | None = Field(None, ge=1, description="SFT checkpoint every N optimizer steps; empty: "
                                            "every epoch")
    under_starts: int = Field(2, ge=1, description="under-trained starts of per-step DPO (Figure 8(b)), spread over "
                              "the checkpoints in the Clever-Hans state")
    over_factor: float = Field(3.0, ge=1, description="the over-trained start is trained at least this many times as "
                               "long as the latest under-trained start (Figure 8(c))")
    pair_problems: int | None = Field(None, ge=1, description="training problems sampled for per-step pairs; empty: all")
    gold_chosen: bool = Field(True, description="when no rollout from the prefix verified, the gold continuation is "
                              "the chosen answer")


class PerStepDPOParams(Sampling):
    """Direction-aware alignment (beyond both papers): per-step DPO pairs from the SFT policy's own samples of
    the mixed forward and reverse training questions, trained side by side with directional DPO."""

    on: list[Literal["forward", "reverse", "half_mix", "mix"]] = Field(
        default_factory=lambda: ["mix"], min_length=1, description="SFT models (by training set) to run it on")
    problems: int = Field(64, ge=1, description="training questions sampled (drawn from the SFT model's own training set)")
    steps: int | None = Field(None, ge=1, description="optimizer steps of per-step DPO, rounded up to whole epochs "
                                                     "over its pairs (they are few, so a step budget such as directional "
                                                     "DPO's, not its epochs); default: dpo.epochs")
