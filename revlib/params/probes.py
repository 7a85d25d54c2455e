"""Notebook 04: probe dynamics (ALP of chosen and rejected responses across checkpoints).

The probe models train with the experiment's `sft` and `dpo` sections, epochs and save schedule
overridden from here (the paper: SFT 12 epochs saved every 2, then DPO 7 epochs saved every 1).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from revlib.params.common import Strict

ProbeTrainSet = Literal["forward", "reverse", "mix"]
ProbeTestSet = Literal["forward", "reverse", "mix"]

# The paper's Figure 2: in-distribution (D_f,T_f), (D_r,T_r), (D_m,T_m); out-of-distribution (D_f,T_r), (D_r,T_f).
PAPER_PAIRS: list[tuple[str, str]] = [
    ("forward", "forward"), ("reverse", "reverse"), ("mix", "mix"), ("forward", "reverse"), ("reverse", "forward"),
]


class ProbeParams(Strict):
    models: Literal["train", "stages"] = Field(
        "train", description="train: SFT then DPO on the probe sets here (the paper's design); stages: score the "
        "checkpoints 02 and 03 trained on D_f, D_r, D_m instead (when the steps cannot be afforded twice)")
    train_sets: list[ProbeTrainSet] = Field(default_factory=lambda: ["forward", "reverse", "mix"], min_length=1,
                                            description="probe-training sets D_f, D_r, D_m (probe_<set> from notebook 01)")
    pairs: list[tuple[ProbeTrainSet, ProbeTestSet]] = Field(
        default_factory=lambda: list(PAPER_PAIRS), min_length=1,
        description="(train set, test set) pairs to plot; test sets are probe_test_<set> from notebook 01")
    max_response_tokens: int = Field(1000, ge=1, description="ALP scores at most this many response tokens (paper: 1000)")
    token_budget: int = Field(16384, ge=64, description="tokens per scoring batch (rows x longest row)")
    logit_chunk: int | None = Field(None, ge=1, description="positions projected through the LM head at once; "
                                    "null: about 16 MiB of logits on CPU, 1 GiB on a GPU")
    share_prompt: Literal["auto", "always", "never"] = Field(
        "auto", description="score chosen and rejected in one row sharing the prompt; auto: when prompts are long enough")
    score_dtype: Literal["by_device", "float32", "bfloat16", "auto"] = Field(
        "by_device", description="weights while scoring; by_device: bfloat16 on a GPU (a 7B checkpoint in float32 "
                                 "takes 33 GB), float32 on CPU; auto: as saved")
    cpu_matmul: Literal["float32", "bfloat16", "auto"] = Field(
        "float32", description="matrix products while scoring on a CPU: float32 (exact sums); bfloat16: the decoder "
        "layers under bfloat16 autocast, the LM head and its log-softmax in float32 (2-3x float32's speed where the "
        "CPU multiplies bfloat16 natively, AMX or AVX512-BF16; on SmolLM2's probe rows every row's ALP within "
        "3e-3 nats/token of float32 and the set's mean within 1e-3: benchmarks/probe_scoring.py --real-model); "
        "auto: bfloat16 where the CPU has those instructions, else float32. A GPU scores in score_dtype")
    extra_probes: bool = Field(True, description="also score where the mass goes: another question's response "
                               "(irrelevant), y+ with its tokens shuffled, and the argmax token along y+")
    min_alp_rise: float = Field(0.5, gt=0, description="learning check: in-distribution ALP(y+) must rise at least "
                                "this much from the base to the last SFT checkpoint (nats per token)")
    min_alp_after_sft: float | None = Field(-0.5, description="learning check: in-distribution ALP(y+) after SFT "
                                            "must exceed this; null: no such bar (real text has no known floor)")
    min_alp_fall_dpo: float | None = Field(0.05, gt=0, description="learning check: in-distribution ALP(y-) must fall "
                                           "at least this much from the last SFT to the last DPO checkpoint (nats per "
                                           "token); null: no bar here (03 checks DPO on its own pairs), the held-out "
                                           "fall is a finding")
    authors_measure_max_tokens: int = Field(
        1000, ge=2, description="the r1k authors' ALP measure (their analysis script: the whole `text` chat string "
        "after their own prompt, first token dropped) reads at most this many tokens of `text`; theirs: 1000. The "
        "string repeats the system turn and the question first, so a small cap reads little of the response")
    authors_measure_checkpoints: Literal["all", "ends"] = Field(
        "all", description="where 04 reads the authors' measure: all: every checkpoint it scores; ends: the base and "
        "each training set's last SFT and DPO checkpoint (what the Figure 2 rows read)")
    gates_measure: Literal["response", "authors"] = Field(
        "response", description="the measure the learning gates (min_alp_rise, min_alp_after_sft, min_alp_fall_dpo) "
        "read, held out in 04 and on each Figure 2 reading's rows: response: revlib's response-only ALP; authors: "
        "the authors' measure (a gate derived from their released numbers reads their measure)")
    in_sample: bool = Field(False, description="also score y+ and y- on the probe-training examples themselves "
                            "(the paper does not say whether its T is held out): base, last SFT and last DPO checkpoints")
    include_base: bool = Field(True, description="also score the base model before SFT (the x axis starts there)")
    sft_epochs: int = Field(12, ge=1, description="paper: 12")
    sft_save_every: int = Field(2, ge=1, description="paper: every 2 epochs")
    dpo_epochs: int = Field(7, ge=1, description="paper: 7")
    dpo_save_every: int = Field(1, ge=1, description="paper: every epoch")

    @model_validator(mode="after")
    def _consistent(self):
        problems = []
        if self.sft_save_every > self.sft_epochs:
            problems.append(f"sft_save_every ({self.sft_save_every}) exceeds sft_epochs ({self.sft_epochs})")
        if self.dpo_save_every > self.dpo_epochs:
            problems.append(f"dpo_save_every ({self.dpo_save_every}) exceeds dpo_epochs ({self.dpo_epochs})")
        untrained = sorted({t for t, _ in self.pairs} - set(self.train_sets))
        if untrained:
            problems.append(f"pairs use train sets {untrained} that are not in train_sets {self.train_sets}")
        if len(set(map(tuple, self.pairs))) != len(self.pairs):
            problems.append("pairs: each (train, test) pair may appear once")
        if problems:
            raise ValueError("; ".join(problems))
        return self
