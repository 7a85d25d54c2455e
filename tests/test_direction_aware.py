"""Direction-aware alignment: per-step DPO on forward and reverse questions, beside directional DPO."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from revlib.data import negatives
from revlib.core import render
from revlib.evaluation import tables
from revlib.params import Experiment
from revlib.params.negatives import PerStepDPOParams
from revlib.core.records import Record
from revlib.lab.plan import plan
from revlib.tasks import get_task


class ScriptedChainPolicy:
    """Knows each question's oracle chain (forward or reverse). From a prefix of correct steps it finishes
    correctly with probability p, else it writes a wrong next step; from a wrong prefix it never recovers."""

    def __init__(self, records: list[Record], p: float):
        self.by_q = {r.question: r for r in records}
        self.p = p

    def sample(self, requests, n, seed):
        out = []
        for q, prefix in requests:
            rec = self.by_q[q]
            gold_lines = rec.reasoning.split("\n")
            done = [line for line in prefix[len(render.THINK):].split("\n") if line.strip()]
            on_track = done == gold_lines[: len(done)]
            rng = random.Random(f"{seed}:{q}:{prefix}")
            rows = []
            for _ in range(n):
                rest = gold_lines[len(done):]
                good = on_track and rng.random() < self.p
                if not good and rest:
                    rest = [rest[0] + "1"] + rest[1:]  # "... = 13" becomes "... = 131"
                answer = rec.gold if good else str(int(rec.gold) + 1)
                rows.append("\n".join(rest) + render.ANSWER_SEP + render.ANSWER_PREFIX + answer)
            out.append(rows)
        return out


@pytest.fixture
def mixed_records():
    fam = get_task("arith", {"steps": 3, "max_value": 9, "ops": ["add", "sub"]})
    fwd = fam.sample(0, 12)
    return fwd + [fam.invert(r) for r in fwd]


def test_per_step_pairs_come_from_both_directions_and_share_their_prefix(mixed_records):
    params = PerStepDPOParams(problems=24, samples_per_problem=4, rollouts=16, critical_step="most_negative")
    policy = ScriptedChainPolicy(mixed_records, p=0.5)
    pairs, stats = negatives.direction_aware_pairs(None, mixed_records, params, seed=0, sampler=policy)
    assert stats["pairs"] == len(pairs) > 0
    assert stats["pairs/forward"] > 0 and stats["pairs/reverse"] > 0
    assert stats["pairs/forward"] + stats["pairs/reverse"] == len(pairs)
    by_id = {r.id: r for r in mixed_records}
    fam = get_task("arith")
    for pair in pairs:
        assert pair.kind == "per_step" and pair.step_index >= 1
        chosen, rejected = pair.chosen[0]["content"], pair.rejected[0]["content"]
        assert chosen.startswith(pair.prefix) and rejected.startswith(pair.prefix)
        problem = by_id[pair.meta["problem"]]
        assert pair.prompt == render.prompt_messages(problem.question)
        assert fam.verify(problem, render.split_answer(chosen)[1])
        assert not fam.verify(problem, render.split_answer(rejected)[1])
        # the scripted policy's first wrong step is where the pair splits
        wrong = [line for line in rejected[len(render.THINK):].split("\n") if line.strip()][pair.step_index - 1]
        assert wrong not in problem.reasoning.split("\n")


def test_per_step_needs_a_verifiable_task(mixed_records):
    free = Record(id="x-f", pair_id="x", direction="forward", task="s1k", question="q?", reasoning="r", answer="a", gold="a")
    with pytest.raises(ValueError, match="'s1k' has none"):
        negatives.direction_aware_pairs(None, [free], PerStepDPOParams(problems=1), seed=0,
                                        sampler=ScriptedChainPolicy(mixed_records, 0.5))


def _exp(per_step):
    raw = {"experiment": "x", "stages": ["00_base_model", "01_reverse_data", "02_sft", "03_dpo", "04_probe_dynamics",
                                         "05_benchmarks"],
           "base_models": [{"name": "m"}], "sft": {"train_sets": ["forward", "mix"]}, "dpo": {"on": ["forward", "mix"]},
           "probes": {}, "benchmarks": {}}
    if per_step is not None:
        raw["dpo"]["per_step"] = per_step
    return Experiment.model_validate(raw, context={"base_dir": "/tmp"})


def test_plan_adds_per_step_cells_beside_directional_ones():
    cells = {c.key: c for c in plan(_exp({"on": ["mix"]}))}
    assert "03_dpo/m__mix__per_step" in cells and "03_dpo/m__forward__per_step" not in cells
    per_step = cells["03_dpo/m__mix__per_step"]
    assert per_step.values == {"model": "m", "train_set": "mix", "variant": "per_step"}
    assert ("02_sft", "m__mix") in per_step.deps
    assert ("03_dpo", "m__mix__per_step") in cells["05_benchmarks/m"].deps
    probe_deps = cells["04_probe_dynamics/m"].deps
    assert {("02_sft", "m__mix"), ("03_dpo", "m__mix"), ("03_dpo", "m__mix__per_step")} <= set(probe_deps)
    without = {c.key: c for c in plan(_exp(None))}
    assert not any(k.endswith("__per_step") for k in without)
    assert all(d[0] != "03_dpo" for d in without["04_probe_dynamics/m"].deps)


def test_per_step_must_run_on_an_sft_model_that_also_runs_directional_dpo():
    with pytest.raises(ValueError, match="per_step.on"):
        _exp({"on": ["reverse"]})


def test_table2_shows_per_step_dpo_beside_directional_dpo():
    rows = []
    for stage, ts, acc in (("sft", "forward", 0.2), ("sft", "mix", 0.3), ("dpo", "forward", 0.25), ("dpo", "mix", 0.2),
                           ("dpo_per_step", "mix", 0.4)):
        rows.append({"model": "m", "stage": stage, "train_set": ts, "task": "t", "problems": 50, "accuracy": acc,
                     "ci_low": acc - 0.1, "ci_high": acc + 0.1})
    t2 = tables.table2(pd.DataFrame(rows), ["t"])
    assert list(t2.cells["train set"]) == ["forward + DPO", "mix + DPO", "mix + per-step DPO"]
    per_step = t2.numbers[t2.numbers["variant"] == "per-step DPO"].iloc[0]
    assert per_step["t_delta"] == pytest.approx(0.1)  # against the mix SFT model it started from
