"""Recipe search for the embedded arithmetic base: pretrain, then SFT forward and reverse, greedy accuracy.

A plain PyTorch loop (the stages use trl; this only ranks recipes). One line of JSON per measurement.
  python scripts/arith_search.py --preset small --pretrain-steps 1500 --sft-steps 600 --direction forward
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

from revlib.modeling import models, pretrain
from revlib.core import render
from revlib.tasks import get_task


def sft_rows(tok, records):
    rows = []
    for r in records:
        p, c = render.tokenize_example(tok, r.question, r.reasoning, r.answer)
        rows.append((p, c))
    return rows


def sft_loop(model, tok, rows, steps, batch_size, lr, seed, on_eval=None, eval_every=0):
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    pad = tok.pad_token_id
    for step in range(steps):
        model.train()
        batch = [rows[rng.randrange(len(rows))] for _ in range(batch_size)]
        width = max(len(p) + len(c) for p, c in batch)
        ids = torch.full((batch_size, width), pad)
        labels = torch.full((batch_size, width), -100)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for i, (p, c) in enumerate(batch):
            row = p + c
            ids[i, :len(row)] = torch.tensor(row)
            labels[i, len(p):len(row)] = torch.tensor(c)
            mask[i, :len(row)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        if on_eval and eval_every and (step + 1) % eval_every == 0:
            on_eval(step + 1, loss.item())


def accuracy(model, tok, task, records):
    model.eval()
    prompts = [render.prompt_text(tok, r.question) for r in records]
    outs = models.greedy_complete(model, tok, prompts, max_new_tokens=48)
    hits = 0
    for r, o in zip(records, outs):
        _, ans = render.split_answer(o)
        hits += task.normalize(ans) == task.normalize(r.gold)
    return hits / len(records)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--numbers", default="whole")
    ap.add_argument("--max-pack", type=int, default=8)
    ap.add_argument("--pretrain-steps", type=int, default=1500)
    ap.add_argument("--pretrain-lr", type=float, default=3e-3)
    ap.add_argument("--sft-steps", type=int, default=600)
    ap.add_argument("--sft-lr", type=float, default=2e-3)
    ap.add_argument("--sft-n", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--direction", default="forward")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--base-dir", help="save the pretrained base here, or load it if it is there")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    knobs = {"steps": a.steps, "min_value": 1, "max_value": 9, "ops": ["add", "sub"]}
    task = get_task("arith", knobs)
    t0 = time.time()
    if a.base_dir and (Path(a.base_dir) / "config.json").exists():
        model, tok = models.load_model(a.base_dir), models.load_tokenizer(a.base_dir)
    else:
        model, tok, _ = pretrain.build_base(
        {"arith": task}, a.preset, seed=a.seed, numbers=a.numbers, steps=a.pretrain_steps, lr=a.pretrain_lr,
        batch_size=32, corpus_size=20000, max_pack=a.max_pack,
        overrides={k: v for k, v in (("num_hidden_layers", a.layers), ("hidden_size", a.hidden)) if v},
        )
        if a.base_dir:
            model.save_pretrained(a.base_dir)
            tok.save_pretrained(a.base_dir)
    t_pre = time.time() - t0
    prim = pretrain.primitive_accuracy(model, tok, {"arith": task.primitive_skills(random.Random("eval"), 200)})
    fwd = task.sample(a.seed + 1, a.sft_n + 100)
    recs = fwd if a.direction == "forward" else [task.invert(r) for r in fwd]
    train, test = recs[:a.sft_n], recs[a.sft_n:]
    other = [task.invert(r) for r in fwd[a.sft_n:]] if a.direction == "forward" else fwd[a.sft_n:]
    rows = sft_rows(tok, train)
    base = dict(vars(a), params=models.count_parameters(model), pretrain_s=round(t_pre, 1),
                primitive=prim[0]["accuracy"], seq=sum(len(p) + len(c) for p, c in rows) / len(rows))
    t1 = time.time()

    def on_eval(step, loss):
        acc = accuracy(model, tok, task, test)
        print(json.dumps(dict(base, sft_step=step, loss=round(loss, 4), acc=acc,
                              sft_s=round(time.time() - t1, 1))), flush=True)

    sft_loop(model, tok, rows, a.sft_steps, a.batch, a.sft_lr, a.seed, on_eval, a.eval_every)
    print(json.dumps(dict(base, final=True, acc=accuracy(model, tok, task, test),
                          cross=accuracy(model, tok, task, other), sft_s=round(time.time() - t1, 1))), flush=True)


if __name__ == "__main__":
    main()
