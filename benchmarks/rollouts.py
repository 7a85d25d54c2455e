"""Rollouts per second: revlib's engine (prefix encoded once, KV cache repeated) vs plain `generate`.

Same model, same step prefixes (question + chain-of-thought steps of arithmetic chains), same
seeds and rollout counts. The baseline is `model.generate` on M copies of each prefix (so the
prefix is re-encoded for every rollout), one prefix per call as `num_return_sequences` would do.
The engine is shown twice: one prefix per batch (the cache reuse alone) and prefix_batch
prefixes per batch (what negatives.estimate_values uses).

    python benchmarks/rollouts.py                      # CPU, tiny random model
    python benchmarks/rollouts.py --preset qwen2.5-1.5b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from revlib.core import render
from revlib.modeling import rollouts
from revlib.modeling.models import build_model, build_tokenizer
from revlib.tasks import get_task


def make_prefixes(tokenizer, n_problems: int, steps: int) -> list[list[int]]:
    task = get_task("arith", {"steps": steps, "max_value": 30})
    out = []
    for p in task.sample(0, n_problems):
        lines = p.reasoning.split("\n")
        for i in range(0, len(lines), 2):  # prefixes after 0, 2, 4, ... steps
            out.append(rollouts.request_ids(tokenizer, p.question, render.THINK + "".join(l + "\n" for l in lines[:i])))
    return out


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--problems", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8, help="steps per chain: longer chains, longer prefixes")
    ap.add_argument("--rollouts", type=int, default=8, help="M rollouts per prefix")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--prefix-batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    task = get_task("arith", {"steps": args.steps, "max_value": 30})
    corpus = [render.DEFAULT_SYSTEM] + [p.question + "\n" + render.assistant_content(p.reasoning, p.answer)
                                        for p in task.sample(1, 300)]
    tok = build_tokenizer(corpus, vocab_size=512)
    model = build_model(args.preset, tok, seed=0).to(device=args.device, dtype=getattr(torch, args.dtype)).eval()
    # a random model rarely stops early: every rollout runs max_new_tokens, in both engines
    model.generation_config.eos_token_id = tok.eos_token_id
    prefixes = make_prefixes(tok, args.problems, args.steps)
    total = len(prefixes) * args.rollouts
    mean_len = sum(map(len, prefixes)) / len(prefixes)
    kw = dict(temperature=1.0, max_new_tokens=args.max_new_tokens)
    base = rollouts.GenerateBaseline(model, tok, **kw)
    single = rollouts.HFRolloutEngine(model, tok, prefix_batch=1, **kw)
    batched = rollouts.HFRolloutEngine(model, tok, prefix_batch=args.prefix_batch, **kw)
    # warm-up (kernels, allocator), then measure each on the same prefixes and seed
    for eng in (base, single, batched):
        eng.sample_ids(prefixes[:2], 2, seed=123)
    t_base = timed(lambda: base.sample_ids(prefixes, args.rollouts, seed=0))
    t_single = timed(lambda: single.sample_ids(prefixes, args.rollouts, seed=0))
    t_batched = timed(lambda: batched.sample_ids(prefixes, args.rollouts, seed=0))
    print(f"model {args.preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params) on {args.device} {args.dtype}, "
          f"threads {torch.get_num_threads()}")
    print(f"{len(prefixes)} prefixes (mean {mean_len:.0f} tokens) x {args.rollouts} rollouts x {args.max_new_tokens} new tokens")
    print(f"{'engine':44s} {'seconds':>8s} {'rollouts/s':>11s} {'vs generate':>12s}")
    for name, t in [("generate, prefix re-encoded per rollout", t_base),
                    ("revlib HF engine, prefix_batch=1", t_single),
                    (f"revlib HF engine, prefix_batch={args.prefix_batch}", t_batched)]:
        print(f"{name:44s} {t:8.2f} {total / t:11.1f} {t_base / t:11.2f}x")


if __name__ == "__main__":
    random.seed(0)
    main()
