"""The frozen lower part of a decoder stack, run once and reused.

With LoRA on the top m of n decoder layers, the embeddings and layers 0..n-m-1 never change. Their output for a
token sequence is then the same at every epoch (and for the policy and its adapter-disabled reference), so 04's
scorer and the trainers compute it once per sequence and run only the upper layers afterwards.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch


def run_layers(backbone: Any, layers: slice, mask: torch.Tensor | None, positions: torch.Tensor | None,
               **inputs: Any) -> torch.Tensor:
    """The backbone with only `layers` of its decoder stack: from token ids (the lower part, returning the hidden
    state before the final norm) or from the hidden state after the layer below (the upper part, normed)."""
    full = backbone.layers
    captured: dict[str, torch.Tensor] = {}
    lower = layers.stop is not None
    hook = backbone.norm.register_forward_pre_hook(lambda _m, args: captured.update(h=args[0])) if lower else None
    try:
        backbone.layers = torch.nn.ModuleList(list(full)[layers])
        out = backbone(position_ids=positions, attention_mask=mask, use_cache=False, **inputs).last_hidden_state
    finally:
        backbone.layers = full
        if hook is not None:
            hook.remove()
    return captured["h"] if lower else out


def lower_fingerprint(backbone: Any, k: int) -> str:
    """A hash of the embeddings and decoder layers 0..k-1 (their exact bytes)."""
    h = hashlib.blake2b(digest_size=16)
    params = list(backbone.get_input_embeddings().parameters()) + [p for layer in list(backbone.layers)[:k]
                                                                  for p in layer.parameters()]
    for p in params:
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def frozen_layers(model: Any) -> int:
    """How many decoder layers from the bottom hold no trainable parameter (0 when the embeddings train)."""
    backbone = _backbone(model)
    if any(p.requires_grad for p in backbone.get_input_embeddings().parameters()):
        return 0
    k = 0
    for layer in backbone.layers:
        if any(p.requires_grad for p in layer.parameters()):
            break
        k += 1
    return k if k < len(backbone.layers) else 0


def _backbone(model: Any) -> Any:
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return causal_lm.get_decoder()


class LowerStates:
    """Training with the frozen lower layers' output computed once per sequence (installed on a model as hooks).

    A forward call with right-padded rows (each row's tokens from position 0, as trl's SFT and DPO collators
    give them) takes each row's hidden state after layer k-1 from the cache (computing the rows it has not seen,
    as one batch), and runs layers k.. only. Any other call (packed rows with position ids, left padding, a
    KV cache) runs the whole stack unchanged. The lower layers must hold no dropout: their output is then a
    function of the tokens alone.
    """

    def __init__(self, model: Any, k: int):
        self.backbone = _backbone(model)
        if not 0 < k < len(self.backbone.layers):
            raise ValueError(f"frozen layers {k}: needs 0 < k < {len(self.backbone.layers)}")
        if float(getattr(self.backbone.config, "attention_dropout", 0.0) or 0.0) > 0:
            raise ValueError("the lower layers have attention dropout: their output is not a function of the tokens")
        self.k = k
        self.full = self.backbone.layers
        self.upper = torch.nn.ModuleList(list(self.full)[k:])
        self.cache: dict[bytes, torch.Tensor] = {}
        self.hits = self.misses = self.passed_through = 0
        self._computing = False  # the cache's own call of the lower layers runs the backbone too
        self._handles = [
            self.backbone.register_forward_pre_hook(self._before, with_kwargs=True),
            self.backbone.register_forward_hook(self._after, always_call=True),
        ]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self.backbone.layers = self.full
        self.cache.clear()

    def _before(self, module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if self._computing:
            return None
        if (ids is None or mask is None or mask.dim() != 2 or kwargs.get("position_ids") is not None
                or kwargs.get("past_key_values") is not None or kwargs.get("inputs_embeds") is not None):
            self.passed_through += 1
            return None
        lengths = mask.sum(dim=1)
        right_padded = bool((mask == (torch.arange(mask.shape[1], device=mask.device)[None] < lengths[:, None])).all())
        if not right_padded:
            self.passed_through += 1
            return None
        states = self._states(ids, mask, lengths.tolist())
        kwargs = {**kwargs, "input_ids": None, "inputs_embeds": states}
        self.backbone.layers = self.upper
        return args[1:] if args else args, kwargs

    def _after(self, module: Any, args: tuple, output: Any) -> None:
        if not self._computing:
            self.backbone.layers = self.full

    def _states(self, ids: torch.Tensor, mask: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        keys = [ids[r, :n].cpu().numpy().tobytes() for r, n in enumerate(lengths)]
        missing = [r for r, key in enumerate(keys) if key not in self.cache]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            rows = torch.tensor(missing, device=ids.device)
            self._computing = True
            try:
                with torch.no_grad():
                    lower = run_layers(self.backbone, slice(0, self.k), mask[rows], None, input_ids=ids[rows])
            finally:
                self._computing = False
            for i, r in enumerate(missing):
                self.cache[keys[r]] = lower[i, :lengths[r]].detach()
        width = self.backbone.config.hidden_size
        first = self.cache[keys[0]]
        states = torch.zeros((len(keys), ids.shape[1], width), dtype=first.dtype, device=first.device)
        for r, key in enumerate(keys):
            states[r, :lengths[r]] = self.cache[key]
        return states
