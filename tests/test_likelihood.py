"""Likelihoods of given responses read by the probe scorer match a plain forward pass per example (06's Figure 3,
07's critical token), so moving them onto the one scorer changed nothing but float rounding."""

from __future__ import annotations

import math

import pytest
import torch

from revlib.core import render
from revlib.modeling import likelihood, models
from revlib.tasks import get_task


def _plain_nll(model, tok, record) -> float:
    prompt, completion = render.tokenize_example(tok, record.question, record.reasoning, record.answer)
    ids = torch.tensor([prompt + completion])
    labels = torch.tensor([[-100] * len(prompt) + completion])
    with torch.no_grad():
        return model(input_ids=ids, labels=labels).loss.item()


def _plain_prob(model, tok, question: str, prefix: str, continuation: str) -> float:
    context = render.prompt_text(tok, question) + prefix
    ctx_ids = tok(context, add_special_tokens=False)["input_ids"]
    full_ids = tok(context + continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([full_ids])).logits[0, :-1].double(), -1)
    target = torch.tensor(full_ids[len(ctx_ids):])
    return logp[torch.arange(len(ctx_ids) - 1, len(full_ids) - 1), target].sum().exp().item()


def test_response_nll_matches_a_forward_pass_per_response(tiny_model_dir):
    records = get_task("arith", {"steps": 2, "max_value": 9}).sample(0, 5)
    model, tok = models.load_model(tiny_model_dir), models.load_tokenizer(tiny_model_dir)
    got = likelihood.response_nll(str(tiny_model_dir), records)
    assert got == pytest.approx([_plain_nll(model, tok, r) for r in records], rel=1e-5)
    assert likelihood.response_nll(str(tiny_model_dir), []) == []


def test_continuation_probs_match_a_forward_pass(tiny_model_dir):
    model, tok = models.load_model(tiny_model_dir).eval(), models.load_tokenizer(tiny_model_dir)
    star = get_task("star_graph", {"degree": 2, "path_length": 3, "node_count": 20}).sample(0, 4)
    requests = [(p.question, render.THINK + f"{p.meta['path'][0]}>", f"{p.meta['path'][1]}\n") for p in star]
    got = likelihood.continuation_probs(model, tok, requests)
    want = [_plain_prob(model, tok, *r) for r in requests]
    assert got == pytest.approx(want, rel=1e-4) and all(0 < p < 1 for p in got)
    assert math.prod(got) > 0
