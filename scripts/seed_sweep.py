"""Seed sweep of the demo's recipe: for each seed, pretrain the base (params/base-arith.yaml's settings), SFT it
on forward and on reverse data (params/demo.yaml's settings, through revlib.modeling.train and trl), and measure greedy
in-distribution and cross-direction accuracy on held-out problems with Wilson intervals.

  python scripts/seed_sweep.py --seeds 0 1 2 --out docs/seed_sweep.jsonl

One JSON line per (seed, direction). The demo's thresholds (>= 90% in distribution) must hold for every seed.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import yaml

from revlib.evaluation import stage_checks
from revlib.modeling import models, pretrain, train
from revlib.core import stats
from revlib.params import load
from revlib.params.train import SFTParams
from revlib.tasks import get_task

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(ROOT / "docs" / "seed_sweep.jsonl"))
    ap.add_argument("--work", default="/tmp/revlib_seed_sweep")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--directions", nargs="+", default=["forward", "reverse"])
    ap.add_argument("--epochs", type=int, help="SFT epochs (default: params/demo.yaml's)")
    ap.add_argument("--curve", action="store_true", help="also score every saved checkpoint in distribution")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    base_exp = load(ROOT / "params" / "base-arith.yaml")
    demo = yaml.safe_load((ROOT / "params" / "demo.yaml").read_text())  # its base is the one this sweep rebuilds
    if a.epochs:
        demo["sft"]["epochs"] = a.epochs
    sft_params, n_train, n_test = SFTParams.model_validate(demo["sft"]), demo["data"]["n_train"], demo["data"]["n_test"]
    spec = base_exp.base_models[0]
    task = get_task(demo["data"]["source"]["task"], demo["data"]["source"]["knobs"])
    for seed in a.seeds:
        work = Path(a.work) / f"seed{seed}"
        t0 = time.time()
        pt = spec.pretrain
        base_dir = work / "base"
        if (base_dir / "config.json").exists():  # a sweep that stopped resumes: the base, then SFT checkpoints
            model, tok = models.load_model(base_dir), models.load_tokenizer(base_dir)
        else:
            model, tok, _ = pretrain.build_base({"arith": task}, spec.preset, seed=seed, steps=pt.steps,
                                                batch_size=pt.batch_size, lr=pt.lr, corpus_size=pt.corpus_size,
                                                max_pack=pt.max_pack, numbers=pt.numbers)
            model.save_pretrained(base_dir)
            tok.save_pretrained(base_dir)
        held_out = {"arith": task.primitive_skills(random.Random(f"eval:{seed}:arith"), 500)}
        prim = pretrain.primitive_accuracy(model, tok, held_out)[0]
        base_s = time.time() - t0
        forward = task.sample(seed + 1, n_train + n_test)
        train_f, test_f = forward[n_test:], forward[:n_test]
        sets = {"forward": (train_f, test_f, [task.invert(r) for r in test_f]),
                "reverse": ([task.invert(r) for r in train_f], [task.invert(r) for r in test_f], test_f)}
        for direction, (records, test, cross) in ((d, sets[d]) for d in a.directions):
            t1 = time.time()
            res = train.sft(str(base_dir), records, work / direction, sft_params, seed=seed)
            won = stage_checks.greedy_outcomes(res.final, test)
            won_x = stage_checks.greedy_outcomes(res.final, cross)
            lo, hi = stats.wilson(sum(won), len(won))
            curve = {c.step: sum(stage_checks.greedy_outcomes(c, test)) / len(test) for c in res.checkpoints[:-1]} if a.curve else {}
            row = {"seed": seed, "direction": direction, "base_primitive_accuracy": prim["accuracy"],
                   "base_seconds": round(base_s, 1), "sft_steps": res.final.step, "sft_seconds": round(time.time() - t1, 1),
                   "id_accuracy": sum(won) / len(won), "id_ci": [round(lo, 4), round(hi, 4)], "n_test": len(won),
                   "cross_accuracy": sum(won_x) / len(won_x),
                   **({"id_accuracy_by_step": curve} if curve else {})}
            print(json.dumps(row), flush=True)
            with open(a.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
