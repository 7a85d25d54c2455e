"""Log-likelihoods of given responses under one model, read by the probe scorer (`revlib.modeling.probes.Scorer`): the
same batched, target-only log-probabilities as the probes and the pair scoring, for 06's Figure 3 and 07's critical
token."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from revlib.core import render
from revlib.core.records import Record
from revlib.modeling import models, probes


def _items(prompts_and_targets: Sequence[tuple[str, Sequence[int], Sequence[int]]]) -> list[probes.ProbeItem]:
    return [probes.ProbeItem(key, key, "", "", tuple(prompt), tuple(target), ()) for key, prompt, target in
            prompts_and_targets]


def response_nll(model_path: str, records: Sequence[Record]) -> list[float]:
    """Each record's mean per-token negative log-likelihood of its response (rendered as training renders it) under
    the model at `model_path`."""
    model, tok = models.load_model(model_path), models.load_tokenizer(model_path)
    items = _items([(r.id, *render.tokenize_example(tok, r.question, r.reasoning, r.answer)) for r in records])
    return [-s.alp_chosen for s in probes.Scorer().score(model, items)] if items else []


def continuation_probs(model: Any, tokenizer: Any, requests: Sequence[tuple[str, str, str]]) -> list[float]:
    """P(continuation | question, assistant text so far) for each (question, assistant prefix, continuation): the
    product over the continuation's tokens. The continuation must tokenize apart from its prefix (ValueError else)."""
    rows = []
    for i, (question, prefix, continuation) in enumerate(requests):
        context = render.prompt_text(tokenizer, question) + prefix
        ctx_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        if full_ids[: len(ctx_ids)] != ctx_ids:
            raise ValueError(f"{continuation!r} merges with the text before it in tokenization; cannot isolate it")
        rows.append((str(i), ctx_ids, full_ids[len(ctx_ids):]))
    return [math.exp(s.sum_chosen) for s in probes.Scorer().score(model, _items(rows))] if rows else []
