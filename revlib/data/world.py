"""Task-world benchmarks: problems outside both training sets, in the role AIME, MATH500 and GPQA play for r1k.

Each benchmark (`benchmarks.world` in params) draws chains from the data source's task family with some knobs
changed (longer chains, other start values), or asks a question neither training direction asks (the unknown in
the middle of a chain). Every model answers them in the same format (`Answer: <value>`, graded by the family's
verifier), and a `both` benchmark asks each chain forward and as its reverse twin in equal shares, so neither
direction's model is favoured by construction. Chains seen in any of notebook 01's sets are never drawn.

A benchmark counts only when it is not inert: some evaluated model scores at least `ALIVE_MARGIN` above chance
(chance: always answering the commonest gold answer).
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from revlib.params.benchmarks import WORLD_PREFIX, WorldBenchmark

if TYPE_CHECKING:  # annotations only: the schema and pandas are not needed to build a benchmark
    import pandas as pd

    from revlib.params import Experiment

__all__ = ["ALIVE_MARGIN", "WORLD_PREFIX", "build", "summary", "write_all"]
from revlib.core.records import Record
from revlib.tasks import TaskFamily, get_task

ALIVE_MARGIN = 0.20


def seen_chains(data_dir: Path | None) -> set[str]:
    """The forward questions of every set notebook 01 wrote (a reverse twin shares its forward's chain)."""
    from revlib.core.records import read_records

    out: set[str] = set()
    if data_dir is None:
        return out
    for path in sorted((Path(data_dir) / "sets").glob("*.jsonl")):
        for rec in read_records(path):
            if rec.direction == "forward":
                out.add(rec.question)
    return out


FIRST_INDEX = 10_000_000  # ids arith-10000000-... : never a training id


def stream_seed(name: str, seed: int) -> int:
    """The benchmark's own seed stream, apart from the training split's draws."""
    return int(hashlib.sha256(f"world:{name}:{seed}".encode()).hexdigest()[:12], 16)


def family_for(source_task: str, source_knobs: dict[str, Any], bench: WorldBenchmark) -> TaskFamily:
    return get_task(source_task, {**source_knobs, **bench.knobs})


def build(bench: WorldBenchmark, source_task: str, source_knobs: dict[str, Any], seed: int,
          exclude: set[str] = frozenset()) -> list[Record]:
    """The benchmark's `n` problems, deterministic in (name, seed), none on a chain in `exclude`."""
    family = family_for(source_task, source_knobs, bench)
    chains = bench.n // 2 if bench.query == "both" else bench.n
    pool = family.sample(stream_seed(bench.name, seed), chains + len(exclude) + 10, start=FIRST_INDEX)
    fresh = [r for r in pool if r.question not in exclude][:chains]
    if len(fresh) < chains:
        raise ValueError(f"world benchmark {bench.name!r}: only {len(fresh)} chains outside the training sets, need {chains}")
    rng = random.Random(f"world:{bench.name}:{seed}")
    out: list[Record] = []
    for rec in fresh:
        if bench.query in ("both", "forward"):
            out.append(rec)
        if bench.query in ("both", "reverse"):
            out.append(family.invert(rec))
        if bench.query == "middle":
            steps = len(rec.meta["ops"])
            out.append(family.middle(rec, rng.randint(1, steps - 1)))
    return [r.model_copy(update={"meta": {**r.meta, "benchmark": bench.name, "query": r.meta.get("query", r.direction)}})
            for r in out]


def write_all(exp: Experiment, data_dir: Path | None, out_dir: Path) -> dict[str, Path]:
    """Every world benchmark of the experiment as `<out_dir>/world_<name>.jsonl`; task name -> path."""
    from revlib.core.records import write_records

    bp = exp.benchmarks
    if not bp.world:
        return {}
    src = exp.data.source
    if src.kind != "synthetic":
        raise ValueError(f"benchmarks.world needs a synthetic data source, not {src.kind!r}")
    exclude = seen_chains(data_dir)
    out = {}
    for bench in bp.world:
        path = Path(out_dir) / f"{WORLD_PREFIX}{bench.name}.jsonl"
        write_records(path, build(bench, src.task, src.knobs, exp.seed, exclude))
        out[WORLD_PREFIX + bench.name] = path
    return out


def summary(results: pd.DataFrame, records: dict[str, list[Record]], what: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per benchmark: n, chance, best model's accuracy, whether it is alive (best >= chance + margin)."""
    from revlib.core.stats import chance_accuracy

    rows = []
    for task, recs in records.items():
        sub = results[results["task"] == task]
        chance = chance_accuracy([r.gold for r in recs])
        best = sub.loc[sub["accuracy"].idxmax()] if len(sub) else None
        rows.append({"benchmark": task, "n": len(recs), "chance": chance,
                     "best_accuracy": None if best is None else float(best["accuracy"]),
                     "best_model": None if best is None else f"{best['stage']}/{best['train_set']}",
                     "alive": best is not None and float(best["accuracy"]) >= chance + ALIVE_MARGIN,
                     "what": (what or {}).get(task, "")})
    return rows
