"""Recipe search for the star-graph base: pretrain on edge look-ups, then SFT on centre-to-leaf paths.

A plain PyTorch loop (the stages use trl; this only ranks recipes). One line of JSON per measurement:
held-out look-up accuracy during pretraining, then the SFT policy's valid-path rate, first-node
(critical token) accuracy and exact-path accuracy under greedy decoding, with their counts.
  python scripts/star_search.py --degree 3 --path-length 4 --layers 2 --hidden 64 --pretrain-steps 2000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arith_search import sft_loop, sft_rows  # noqa: E402  (same loop as the arithmetic search)

from revlib.modeling import models, pretrain
from revlib.core import render
from revlib.tasks import get_task  # noqa: E402


def path_counts(model, tok, task, records) -> dict[str, int]:
    model.eval()
    prompts = [render.prompt_text(tok, r.question) for r in records]
    outs = models.greedy_complete(model, tok, prompts, max_new_tokens=48)
    counts = {"n": len(records), "valid": 0, "first_node": 0, "correct": 0}
    for r, o in zip(records, outs):
        _, ans = render.split_answer(o)
        for key, hit in task.answer_outcome(r, ans).items():
            counts[key] += hit
    return counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--degree", type=int, default=3)
    ap.add_argument("--path-length", type=int, default=4)
    ap.add_argument("--node-count", type=int, default=50)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--numbers", default="whole")
    ap.add_argument("--max-pack", type=int, default=8)
    ap.add_argument("--corpus", type=int, default=20000)
    ap.add_argument("--pretrain-steps", type=int, default=2000)
    ap.add_argument("--pretrain-lr", type=float, default=3e-3)
    ap.add_argument("--pretrain-batch", type=int, default=32)
    ap.add_argument("--lookup-every", type=int, default=250)
    ap.add_argument("--sft-steps", type=int, default=400)
    ap.add_argument("--sft-lr", type=float, default=1e-3)
    ap.add_argument("--sft-n", type=int, default=400)
    ap.add_argument("--sft-batch", type=int, default=16)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    task = get_task("star_graph", {"degree": a.degree, "path_length": a.path_length, "node_count": a.node_count})
    families = {"star_graph": task}
    overrides = {}
    if a.layers:
        overrides["num_hidden_layers"] = a.layers
    if a.hidden:
        overrides.update(hidden_size=a.hidden, intermediate_size=3 * a.hidden)
    if a.heads:
        overrides.update(num_attention_heads=a.heads, num_key_value_heads=a.heads)
    t0 = time.time()
    docs = pretrain.documents(families, a.corpus, a.seed, a.max_pack)
    tok = models.build_tokenizer(pretrain.tokenizer_corpus(families, docs, a.seed), numbers=a.numbers)
    model = models.build_model(a.preset, tok, seed=a.seed, **overrides)
    held_out = {"star_graph": task.primitive_skills(random.Random(f"eval:{a.seed}:star_graph"), 200)}
    pairs = held_out["star_graph"]
    by_direction = {"child": [p for p in pairs if p[0].endswith(">")], "parent": [p for p in pairs if p[0].endswith("<")]}
    setting = {k: v for k, v in vars(a).items() if k not in ("threads", "eval_every", "lookup_every")}
    setting["params"] = models.count_parameters(model)

    def on_step(step, loss):
        if step % a.lookup_every == 0 or step == a.pretrain_steps:
            rows = pretrain.primitive_accuracy(model, tok, by_direction)
            model.train()
            split = {r["task"]: r["accuracy"] for r in rows}
            acc = sum(r["correct"] for r in rows) / sum(r["problems"] for r in rows)
            print(json.dumps(dict(setting, phase="pretrain", step=step, loss=round(loss, 4), lookup=acc, **split,
                                  s=round(time.time() - t0, 1))), flush=True)

    pretrain.pretrain(model, tok, docs, steps=a.pretrain_steps, batch_size=a.pretrain_batch, lr=a.pretrain_lr,
                      seed=a.seed, on_step=on_step)
    lookup = pretrain.primitive_accuracy(model, tok, held_out)[0]
    pool = task.sample(a.seed + 707, a.sft_n + a.n_test)
    test, train = pool[:a.n_test], pool[a.n_test:]
    rows = sft_rows(tok, train)
    t1 = time.time()

    def on_eval(step, loss):
        c = path_counts(model, tok, task, test)
        print(json.dumps(dict(setting, phase="sft", lookup=lookup["accuracy"], sft_step=step, loss=round(loss, 4),
                              **c, s=round(time.time() - t1, 1))), flush=True)

    on_eval(0, float("nan"))
    sft_loop(model, tok, rows, a.sft_steps, a.sft_batch, a.sft_lr, a.seed, on_eval, a.eval_every)


if __name__ == "__main__":
    main()
