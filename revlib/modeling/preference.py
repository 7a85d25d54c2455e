"""DPO from an SFT checkpoint, and the DPO loss of held-out pairs: preference training for every stage that runs it.

`dpo_from` is the one way a stage starts DPO from SFT (03, 04's probe models, 06 and 07). `score_pairs` is the one
pair-scoring core: pairs tokenized as DPO trains on them, scored under several checkpoints by the probe scorer
(`revlib.modeling.probes`) with one model bank, so held-out pairs are read the way the probes read log-probabilities.
Their DPO loss (`pair_losses`) and log-ratios against the reference (`log_ratios`) are both read from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
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


def score_pairs(checkpoints: Sequence[Checkpoint], pairs: Sequence[PreferencePair], dpo_params: DPOParams,
                keep_token_logps: bool = False) -> tuple[list[probes.ProbeItem], list[list[probes.ItemScore]]]:
    """(the pairs as scorer items, each checkpoint's scores of them, in the checkpoints' order): tokenized with the
    first checkpoint's tokenizer, every model served by one ModelBank (a LoRA checkpoint as its adapter on the loaded
    base) and scored in token-budget batches; an item's sums of log p over chosen and rejected are what DPO compares."""
    if not pairs:
        raise ValueError("no pairs to score")
    items = pair_items(models.load_tokenizer(checkpoints[0].path), pairs, dpo_params)
    scorer, bank = probes.Scorer(), probes.ModelBank()
    try:
        out = []
        for ckpt in checkpoints:
            with bank.use(ckpt) as model:
                out.append(scorer.score(model, items, keep_token_logps=keep_token_logps))
        return items, out
    finally:
        bank.close()


def _sums(scores: Sequence[probes.ItemScore]) -> torch.Tensor:
    return torch.tensor([[s.sum_chosen, s.sum_rejected] for s in scores], dtype=torch.float64)


def pair_losses(policies: Sequence[Checkpoint], reference: Checkpoint, pairs: Sequence[PreferencePair],
                dpo_params: DPOParams) -> list[float]:
    """Mean sigmoid DPO loss of `pairs` under each policy checkpoint against `reference`, in the policies' order
    (`score_pairs`, the reference scored once)."""
    _, (ref_scores, *policy_scores) = score_pairs([reference, *policies], pairs, dpo_params)
    ref = _sums(ref_scores)
    out = []
    for scores in policy_scores:
        pol = _sums(scores)
        margin = dpo_params.beta * ((pol[:, 0] - pol[:, 1]) - (ref[:, 0] - ref[:, 1]))
        out.append(float(-torch.nn.functional.logsigmoid(margin).mean()))
    return out


def pair_loss(policy: Checkpoint, reference: Checkpoint, pairs: Sequence[PreferencePair], dpo_params: DPOParams) -> float:
    """Mean sigmoid DPO loss of `pairs` for one policy checkpoint against its reference."""
    return pair_losses([policy], reference, pairs, dpo_params)[0]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def log_ratios(policies: Sequence[Checkpoint], reference: Checkpoint, pairs: Sequence[PreferencePair],
               dpo_params: DPOParams) -> list[tuple[float, float, float]]:
    """(chosen, rejected, critical-step) mean log-ratios log pi - log pi_ref of `pairs` under each policy
    (`score_pairs`, the reference scored once).

    The critical-step tokens are the rejected response's tokens after its longest common token prefix with the chosen
    one (for a per-step pair: the critical step itself; for a naive pair: where the two responses part)."""
    items, (ref, *policy_scores) = score_pairs([reference, *policies], pairs, dpo_params, keep_token_logps=True)
    split = [_common_prefix(it.chosen_ids, it.rejected_ids) for it in items]
    out = []
    for pol in policy_scores:
        ch = [p.sum_chosen - r.sum_chosen for p, r in zip(pol, ref)]
        rj = [p.sum_rejected - r.sum_rejected for p, r in zip(pol, ref)]
        cr = [float(np.sum(p.token_logps_rejected[k:]) - np.sum(r.token_logps_rejected[k:]))
              for p, r, k in zip(pol, ref, split)]
        out.append((float(np.mean(ch)), float(np.mean(rj)), float(np.mean(cr))))
    return out
