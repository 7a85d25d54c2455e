"""DPO from an SFT checkpoint, and the DPO loss of held-out pairs: preference training for every stage that runs it.

`dpo_from` is the one way a stage starts DPO from SFT (03, 04's probe models, 06 and 07). `pair_losses` scores
held-out pairs under several policy checkpoints against one reference, batched through the probe scorer
(`revlib.modeling.probes`), so a pass's held-out loss is read the way the probes read log-probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch

from revlib.core.records import PreferencePair
from revlib.modeling import models, probes, train, train_rows
from revlib.modeling.train import Checkpoint, OnLog, TrainResult
from revlib.params.train import DPOParams


class DPOTrainer(Protocol):
    """What `dpo_from` trains with: `revlib.modeling.train` itself, or a stand-in with its `dpo` (tests)."""

    def dpo(self, base: str, pairs: list[PreferencePair], out_dir: Path, params: DPOParams, seed: int = 0,
            sft_adapter: str | None = None, epochs: int | None = None, save_every_epochs: int | None = None,
            on_log: OnLog | None = None) -> TrainResult: ...


def dpo_from(ckpt: Checkpoint, pairs: list[PreferencePair], out_dir: Path, dpo_params: DPOParams, seed: int,
             epochs: int | None = None, save_every_epochs: int | None = None, on_log: OnLog | None = None,
             trainer: DPOTrainer | None = None) -> TrainResult:
    """DPO with an SFT checkpoint as start and reference.

    A LoRA checkpoint's adapter is handed to `train.dpo`, which merges it into its base first and trains a fresh
    adapter on the merge (the reference is the merge with the adapter off: exactly the SFT model); a full
    checkpoint is itself the start, and trl keeps a frozen copy of it as the reference. `trainer` defaults to
    `revlib.modeling.train`.
    """
    trainer = train if trainer is None else trainer
    if ckpt.adapter:
        return trainer.dpo(ckpt.base, pairs, out_dir, dpo_params, seed=seed, sft_adapter=ckpt.adapter,
                           epochs=epochs, save_every_epochs=save_every_epochs, on_log=on_log)
    return trainer.dpo(str(ckpt.path), pairs, out_dir, dpo_params, seed=seed, epochs=epochs,
                       save_every_epochs=save_every_epochs, on_log=on_log)


def pair_items(tokenizer: object, pairs: Sequence[PreferencePair], dpo_params: DPOParams) -> list[probes.ProbeItem]:
    """The pairs tokenized and truncated exactly as DPO trains on them (`train_rows.dpo_rows`), as scorer items."""
    rows, _ = train_rows.dpo_rows(tokenizer, list(pairs), dpo_params.max_length, dpo_params.max_prompt_length)
    return [probes.ProbeItem(p.id, p.id, "", p.kind, tuple(r["prompt_ids"]), tuple(r["chosen_ids"]),
                             tuple(r["rejected_ids"])) for p, r in zip(pairs, rows)]


def pair_losses(policies: Sequence[Checkpoint], reference: Checkpoint, pairs: Sequence[PreferencePair],
                dpo_params: DPOParams) -> list[float]:
    """Mean sigmoid DPO loss of `pairs` under each policy checkpoint against `reference`, in the policies' order.

    The reference is scored once; every model is served by one ModelBank (a LoRA checkpoint as its adapter on the
    loaded base) and scored in token-budget batches by the probe scorer, whose per-response sums of log p are the
    log-likelihoods DPO's loss compares.
    """
    if not pairs:
        raise ValueError("no pairs to score")
    items = pair_items(models.load_tokenizer(reference.path), pairs, dpo_params)
    scorer, bank = probes.Scorer(), probes.ModelBank()
    try:
        def sums(ckpt: Checkpoint) -> torch.Tensor:
            with bank.use(ckpt) as model:
                scores = scorer.score(model, items)
            return torch.tensor([[s.sum_chosen, s.sum_rejected] for s in scores], dtype=torch.float64)

        ref = sums(reference)
        out = []
        for policy in policies:
            pol = sums(policy)
            margin = dpo_params.beta * ((pol[:, 0] - pol[:, 1]) - (ref[:, 0] - ref[:, 1]))
            out.append(float(-torch.nn.functional.logsigmoid(margin).mean()))
        return out
    finally:
        bank.close()


def pair_loss(policy: Checkpoint, reference: Checkpoint, pairs: Sequence[PreferencePair], dpo_params: DPOParams) -> float:
    """Mean sigmoid DPO loss of `pairs` for one policy checkpoint against its reference."""
    return pair_losses([policy], reference, pairs, dpo_params)[0]
