"""Task-world benchmarks: drawn outside the training sets, both directions in equal shares, a middle query that
both directions can answer, params that fail clearly, and the alive rule."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from revlib.data import world
from revlib.params import load
from revlib.params.benchmarks import WorldBenchmark
from revlib.tasks import get_task

from conftest import PARAMS, write_params

KNOBS = {"steps": 3, "min_value": 1, "max_value": 9, "ops": ["add", "sub"]}


def _ops_apply(start, ops):
    v = start
    for op, k in ops:
        v = v + k if op == "add" else v - k
    return v


def test_both_asks_each_chain_forward_and_reversed():
    bench = WorldBenchmark(name="longer", knobs={"steps": 4, "max_abs_value": 35}, query="both", n=40)
    recs = world.build(bench, "arith", KNOBS, seed=0)
    assert len(recs) == 40
    assert sum(r.direction == "forward" for r in recs) == sum(r.direction == "reverse" for r in recs) == 20
    fam = get_task("arith", KNOBS)
    for f, r in zip(recs[::2], recs[1::2]):
        assert f.pair_id == r.pair_id and len(f.meta["ops"]) == 4
        assert r.gold == str(f.meta["start"]) and fam.verify(r, str(f.meta["start"]))
        values = [f.meta["start"]] + [_ops_apply(f.meta["start"], f.meta["ops"][:i]) for i in range(1, 5)]
        assert max(abs(v) for v in values) <= 35
        assert f.meta["benchmark"] == "longer"


def test_deterministic_per_name_and_seed_and_never_a_training_chain():
    bench = WorldBenchmark(name="middle", query="middle", n=30)
    a = world.build(bench, "arith", KNOBS, seed=0)
    assert [r.question for r in a] == [r.question for r in world.build(bench, "arith", KNOBS, seed=0)]
    assert [r.question for r in a] != [r.question for r in world.build(bench, "arith", KNOBS, seed=1)]
    other = WorldBenchmark(name="middle2", query="middle", n=30)
    assert [r.question for r in a] != [r.question for r in world.build(other, "arith", KNOBS, seed=0)]
    # the chains of the first draw, excluded as if they were training questions: none comes back
    fam = get_task("arith", KNOBS)
    train = {r.question for r in fam.sample(world.stream_seed("middle", 0), 30, start=world.FIRST_INDEX)}
    again = world.build(bench, "arith", KNOBS, seed=0, exclude=train)
    assert len(again) == 30
    chains = {(r.meta["start"], str(r.meta["ops"])) for r in again}
    assert not chains & {(r.meta["start"], str(r.meta["ops"])) for r in a}


def test_middle_is_answerable_forward_and_backward():
    bench = WorldBenchmark(name="m", query="middle", n=50)
    for r in world.build(bench, "arith", KNOBS, seed=3):
        step, ops = r.meta["step"], r.meta["ops"]
        assert 1 <= step < len(ops) and f"after step ({step})" in r.question
        forward = _ops_apply(r.meta["start"], ops[:step])
        backward = r.meta["result"]
        for op, k in reversed(ops[step:]):
            backward = backward - k if op == "add" else backward + k
        assert r.gold == str(forward) == str(backward)
        assert r.reasoning.count("\n") == step - 1  # the gold chain stops at the asked step


def test_start_range_knobs():
    bench = WorldBenchmark(name="big", knobs={"min_start": 10, "max_start": 19}, query="reverse", n=40)
    recs = world.build(bench, "arith", KNOBS, seed=0)
    assert all(r.direction == "reverse" and 10 <= int(r.gold) <= 19 for r in recs)
    with pytest.raises(ValueError, match="min_start must not exceed max_start"):
        get_task("arith", {**KNOBS, "min_start": 12, "max_start": 11})
    # the default start range is the operands' range: the training data's draws are unchanged
    assert [r.question for r in get_task("arith", KNOBS).sample(0, 5)][0].startswith("Start from 6.")


def test_params_reject_bad_world_benchmarks(tmp_path):
    raw = yaml.safe_load((PARAMS / "smoke" / "benchmarks.yaml").read_text())
    raw["benchmarks"]["tasks"] = ["synthetic_forward"]
    raw["benchmarks"]["local_paths"] = {}
    raw["benchmarks"]["world"] = [{"name": "a", "query": "middle", "knobs": {"steps": 1}}]
    with pytest.raises(Exception, match="middle' needs chains of 2 or more steps"):
        load(write_params(raw, tmp_path))
    raw["benchmarks"]["world"] = [{"name": "a"}, {"name": "a"}]
    with pytest.raises(Exception, match="names must be unique"):
        load(write_params(raw, tmp_path))
    raw["benchmarks"]["world"] = [{"name": "a", "knobs": {"stepz": 4}}]
    with pytest.raises(Exception, match=r"benchmarks.world\[0\] \(a\).*stepz"):
        load(write_params(raw, tmp_path))


def test_summary_alive_needs_twenty_points_above_chance():
    bench = WorldBenchmark(name="b", query="both", n=20)
    recs = world.build(bench, "arith", KNOBS, seed=0)
    from revlib.core.stats import chance_accuracy

    chance = chance_accuracy([r.gold for r in recs])
    results = pd.DataFrame([{"task": "world_b", "stage": "sft", "train_set": "forward", "accuracy": chance + 0.19},
                            {"task": "world_b", "stage": "sft", "train_set": "reverse", "accuracy": chance + 0.05}])
    row = world.summary(results, {"world_b": recs})[0]
    assert row["chance"] == chance and row["n"] == 20 and not row["alive"] and row["best_model"] == "sft/forward"
    results.loc[1, "accuracy"] = chance + 0.21
    row = world.summary(results, {"world_b": recs})[0]
    assert row["alive"] and row["best_model"] == "sft/reverse"
