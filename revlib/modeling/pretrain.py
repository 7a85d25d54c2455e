"""Pretraining the embedded base on direction-neutral primitive skills.

A document packs several primitive skills of one task family (single operations and their
inverses, edge look-ups both ways). Only the skills' answers are labels: the rest of a document
(operands drawn at random, edge lists) is noise whose prediction would drown the skill's gradient.
Packing matters: skills seen one per sequence did not carry over into the longer chat context of SFT.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import torch

from revlib.tasks.base import Segment, TaskFamily


def documents(families: dict[str, TaskFamily], n_per_family: int, seed: int, max_pack: int) -> list[list[Segment]]:
    """`n_per_family` documents per family, each packing 1..max_pack skills, deterministic in `seed`."""
    out: list[list[Segment]] = []
    for name in sorted(families):
        rng = random.Random(f"pretrain:{seed}:{name}")
        out += families[name].primitive_documents(rng, n_per_family, max_pack)
    return out


def tokenize_document(tokenizer: Any, doc: list[Segment], eos: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 where not a skill answer); segments are tokenized one by one."""
    ids: list[int] = []
    labels: list[int] = []
    for text, labelled in doc:
        seg = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += seg
        labels += seg if labelled else [-100] * len(seg)
    return ids + [eos], labels + [eos]


def pretrain(
    model: Any,
    tokenizer: Any,
    docs: list[list[Segment]],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> list[dict[str, float]]:
    """AdamW with warm-up and cosine decay over `steps`; returns the loss curve."""
    from transformers import DataCollatorForSeq2Seq

    rng = random.Random(seed)
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    # not transformers' get_cosine_schedule_with_warmup: its warm-up starts at 0 and its cosine starts after the
    # warm-up, while this one ramps from 1/warmup and multiplies a cosine over all steps (every lr would change)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(1, steps)))
    )
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    # pads on the tokenizer's side (build_tokenizer's is the right): ids with the pad token, mask with 0, labels -100
    collate = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100, return_tensors="pt")
    encoded: dict[int, tuple[list[int], list[int]]] = {}
    curve = []
    for step in range(steps):
        picks = [rng.randrange(len(docs)) for _ in range(batch_size)]
        rows = [encoded.setdefault(i, tokenize_document(tokenizer, docs[i], eos)) for i in picks]
        batch = collate([{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": lab} for ids, lab in rows])
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        curve.append({"step": step + 1, "loss": loss.item(), "lr": sched.get_last_lr()[0]})
        if on_step:
            on_step(step + 1, curve[-1]["loss"])
    model.eval()
    return curve


def primitive_accuracy(model: Any, tokenizer: Any, held_out: dict[str, list[tuple[str, str]]]) -> list[dict[str, Any]]:
    """Greedy exact-match accuracy on held-out single skills; chance is always answering the commonest target."""
    from revlib.core.stats import chance_accuracy
    from revlib.modeling.models import greedy_complete

    rows = []
    for name, pairs in held_out.items():
        outs = greedy_complete(model, tokenizer, [p for p, _ in pairs], max_new_tokens=12)
        # a skill's answer may be several words (an operation and its result): all of them must match
        got = [" ".join(o.split()[: len(t.split())]) for o, (_, t) in zip(outs, pairs)]
        hits = sum(g == " ".join(t.split()) for g, (_, t) in zip(got, pairs))
        rows.append({"task": name, "problems": len(pairs), "correct": hits, "accuracy": hits / len(pairs),
                     "chance": chance_accuracy([t.strip() for _, t in pairs]), "example": f"{pairs[0][0][-40:]}{outs[0][:12]!r}"})
    return rows


def tokenizer_corpus(families: dict[str, TaskFamily], docs: list[list[Segment]], seed: int) -> list[str]:
    """Every format the tokenizer must encode compactly: skills, questions, chains, chat markup."""
    from revlib.core import render

    corpus = ["".join(text for text, _ in doc) for doc in docs]
    for fam in families.values():
        for fwd in fam.sample(seed + 10_000, 200):
            for r in (fwd, fam.invert(fwd)):
                corpus.append(r.question + "\n" + render.assistant_content(r.reasoning, r.answer))
    corpus.append(render.DEFAULT_SYSTEM)
    return corpus


def build_base(families: dict[str, TaskFamily], preset: str, *, seed: int, steps: int, batch_size: int, lr: float,
               corpus_size: int, max_pack: int, numbers: str = "whole", overrides: dict[str, Any] | None = None,
               on_step: Callable[[int, float], None] | None = None, grow_layers: int | None = None
               ) -> tuple[Any, Any, list[dict[str, float]]]:
    """Tokenizer and Qwen2 model of `preset`, pretrained on packed primitive skills of `families`; with
    `grow_layers`, deepened afterwards by block expansion (`models.expand_layers`)."""
    from revlib.modeling import models

    docs = documents(families, corpus_size, seed, max_pack)
    tokenizer = models.build_tokenizer(tokenizer_corpus(families, docs, seed), numbers=numbers)
    model = models.build_model(preset, tokenizer, seed=seed, **(overrides or {}))
    curve = pretrain(model, tokenizer, docs, steps=steps, batch_size=batch_size, lr=lr, seed=seed, on_step=on_step)
    if grow_layers:
        models.expand_layers(model, grow_layers)
    return model, tokenizer, curve
