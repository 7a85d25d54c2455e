"""Probe notebook 06's regime at one data size: SFT, sampling, Monte-Carlo values, pair counts, timings.

    python scripts/neg_probe.py --size 256 --samples 8 --rollouts 5 --out /tmp/neg_probe

Prints, per piece, its wall time, and the number of per-step / naive pairs each critical-step rule gives,
so that the settings of params/negative-data.yaml can be chosen from measurements (docs/negatives_search.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from revlib.data import negatives
from revlib.stages import scaling
from revlib.params import load
from revlib.tasks import get_task

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default=str(REPO / "params" / "negative-data.yaml"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--rollouts", type=int, default=5)
    ap.add_argument("--sft-steps", type=int, default=None)
    ap.add_argument("--max-negatives", type=int, default=8)
    ap.add_argument("--out", default="/tmp/neg_probe")
    a = ap.parse_args()
    exp = load(a.params)
    P = exp.negatives.model_copy(update={"samples_per_problem": a.samples, "rollouts": a.rollouts,
                                         "max_negatives": a.max_negatives,
                                         **({"sft_steps": a.sft_steps} if a.sft_steps else {})})
    exp = exp.model_copy(update={"negatives": P})
    task = get_task(P.task, P.knobs)
    pool, test = scaling.split_problems(task, exp.seed + 606, P.data_sizes, P.n_test)
    problems = pool[: a.size]
    out = Path(a.out) / f"n{a.size}"
    t = time.time()
    sft = scaling._sft(exp, str(REPO / "bases" / "arith"), problems, out / "sft")
    print(f"SFT {P.sft_steps} steps: {time.time() - t:.0f} s", flush=True)
    t = time.time()
    greedy = negatives.outcomes(negatives.policy_engine(sft.final, P, temperature=0.0), task, test, 1)
    print(f"test error {1 - sum(greedy) / len(greedy):.3f} ({time.time() - t:.0f} s)", flush=True)
    t = time.time()
    policy = negatives.policy_engine(sft.final, P, cache_dir=out / "rollout_cache")
    samples = negatives.cap_negatives(negatives.sample_policy(policy, task, problems, P.samples_per_problem, exp.seed),
                                      P.max_negatives)
    pos = sum(s.correct for s in samples)
    print(f"sampling {len(samples)}: {pos} positives ({time.time() - t:.0f} s)", flush=True)
    t = time.time()
    credits = negatives.estimate_values(policy, task, problems, samples, P.rollouts, exp.seed)
    print(f"values ({P.rollouts} rollouts per prefix): {time.time() - t:.0f} s", flush=True)
    neg = [c for c in credits if not c.sample.correct]
    per_problem_neg = {}
    for c in neg:
        per_problem_neg[c.sample.problem_id] = per_problem_neg.get(c.sample.problem_id, 0) + 1
    report = {"size": a.size, "samples": len(samples), "positives": pos, "negatives": len(neg),
              "problems_with_negatives": len(per_problem_neg), "test_error": 1 - sum(greedy) / len(greedy),
              "naive_pairs": len(negatives.naive_pairs(samples, problems, exp.seed))}
    for mode in ("first_below", "most_negative", "first_pit"):
        for rej in ("full", "step"):
            report[f"per_step/{mode}/{rej}"] = len(negatives.per_step_pairs(credits, problems, mode, -0.5, exp.seed, rej))
    bok = negatives.estimate_values(policy, task, problems, samples, P.rollouts, exp.seed, best_of=P.rollouts)
    for rej in ("full", "step"):
        report[f"per_step/first_pit/bok{P.rollouts}/{rej}"] = len(negatives.per_step_pairs(bok, problems, "first_pit", -0.5,
                                                                                            exp.seed, rej))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
