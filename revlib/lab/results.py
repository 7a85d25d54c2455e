"""A run's typed stage results, read once from its run directory: what the claim registry measures from.

Each stage owns its result type (with `exists` and `load`); this module only finds the finished cell of a stage and
loads it. A stage that did not run, or has not finished, gives None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, TypeVar

from revlib.core import io
from revlib.params import Experiment
from revlib.stages.base_model import BaseSkills
from revlib.stages.benchmarks import BenchmarkResults
from revlib.stages.dynamics import AuthorsInSampleScores, AuthorsMeasure, AuthorsScores, InSampleScores, ProbeResult
from revlib.stages.scaling_result import ScalingResult
from revlib.stages.star_result import StarResult

T = TypeVar("T", covariant=True)


class Measures(Protocol[T]):
    """Anything with a measure of a run (a claim's held-out reading has one)."""

    @property
    def measure(self) -> Callable[[RunResults], T]: ...


class Claimed(Measures[T], Protocol[T]):
    """What `RunResults.reading` reads of a claim (`revlib.lab.claims.ClaimSpec`, which imports this module, never
    the reverse): its id, its measure and its second, held-out measure."""

    @property
    def id(self) -> str: ...

    @property
    def held_out(self) -> Measures[T] | None: ...


def stage_dirs(exp: Experiment, stage: str) -> list[Path]:
    """The finished cells of `stage` in the experiment's run root."""
    root = exp.run_root / stage
    if not root.exists():
        return []
    return [d for d in sorted(root.iterdir()) if (d / "manifest.json").exists()
            and io.read_json(d / "manifest.json").get("status") == "done"]


def stage_dir(exp: Experiment, stage: str) -> Path | None:
    """The first finished cell of `stage` in the experiment's run root; None when none has finished."""
    done = stage_dirs(exp, stage)
    return done[0] if done else None


@dataclass(frozen=True)
class TrainingRuns:
    """What the trainer cells of one stage (02 or 03) ran: the epochs of their final checkpoints, their tokens and
    seconds (from each cell's train_metrics.json and trainer_state.json)."""

    epochs: list[float]
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float | None:
        return self.tokens / self.seconds if self.seconds else None

    @classmethod
    def load(cls, dirs: list[Path]) -> TrainingRuns | None:
        cells = [d for d in dirs if (d / "train_metrics.json").exists() and (d / "trainer_state.json").exists()]
        if not cells:
            return None
        metrics = [io.read_json(d / "train_metrics.json") for d in cells]
        return cls(epochs=[float(io.read_json(d / "trainer_state.json").get("epoch") or 0) for d in cells],
                   tokens=sum(int(m.get("train_tokens") or 0) for m in metrics),
                   seconds=sum(float(m.get("train_runtime") or 0) for m in metrics))


class RunResults:
    """The typed results of one experiment's finished stages, loaded on first use, and each claim's reading."""

    def __init__(self, exp: Experiment):
        self.exp = exp
        self._readings: dict[str, Any] = {}  # claim id -> its Reading (or None)

    def _load(self, stage: str, kind: type):
        d = stage_dir(self.exp, stage)
        return kind.load(d) if d is not None and kind.exists(d) else None

    @cached_property
    def base(self) -> BaseSkills | None:
        return self._load("00_base_model", BaseSkills)

    @cached_property
    def benchmarks(self) -> BenchmarkResults | None:
        return self._load("05_benchmarks", BenchmarkResults)

    @cached_property
    def probes(self) -> ProbeResult | None:
        return self._load("04_probe_dynamics", ProbeResult)

    @cached_property
    def probes_in_sample(self) -> InSampleScores | None:
        """04's scores on the probe-training rows (with probes.in_sample); None when 04 did not record them."""
        return self._load("04_probe_dynamics", InSampleScores)

    @cached_property
    def authors_measure(self) -> AuthorsMeasure | None:
        """How 04 read the r1k authors' ALP measure (or why it did not apply); None when 04 did not record it."""
        return self._load("04_probe_dynamics", AuthorsMeasure)

    @cached_property
    def probes_authors(self) -> AuthorsScores | None:
        """04's held-out scores on the authors' measure; None where it was not read."""
        return self._load("04_probe_dynamics", AuthorsScores)

    @cached_property
    def probes_authors_in_sample(self) -> AuthorsInSampleScores | None:
        """04's in-sample scores on the authors' measure (with probes.in_sample); None where it was not read."""
        return self._load("04_probe_dynamics", AuthorsInSampleScores)

    @cached_property
    def probe_scoring(self) -> dict[str, Any] | None:
        """04's scoring throughput (its metrics.json `scoring/*` entries); None when 04 has not finished."""
        d = stage_dir(self.exp, "04_probe_dynamics")
        if d is None or not (d / "metrics.json").exists():
            return None
        return {k.removeprefix("scoring/"): v for k, v in io.read_json(d / "metrics.json").items()
                if k.startswith("scoring/")}

    @cached_property
    def sft_runs(self) -> TrainingRuns | None:
        return TrainingRuns.load(stage_dirs(self.exp, "02_sft"))

    @cached_property
    def dpo_runs(self) -> TrainingRuns | None:
        return TrainingRuns.load(stage_dirs(self.exp, "03_dpo"))

    @cached_property
    def scaling(self) -> ScalingResult | None:
        return self._load("06_negative_data", ScalingResult)

    @cached_property
    def star(self) -> StarResult | None:
        return self._load("07_star_graph", StarResult)

    @cached_property
    def failed_gates(self) -> list[str]:
        """One line, "<stage>/<cell>: <check>, ...", per finished cell whose learning checks failed: a stage that ran
        on under require_learning: false (with it true the cell itself fails), in the plan's stage order."""
        out = []
        for stage in self.exp.stages:
            for d in stage_dirs(self.exp, stage):
                metrics = io.read_json(d / "metrics.json") if (d / "metrics.json").exists() else {}
                if metrics.get("learned") is False:
                    failed = [k.removeprefix("learned/") for k, v in metrics.items()
                              if k.startswith("learned/") and v is False]
                    out.append(f"{stage}/{d.name}: {', '.join(failed) or 'a learning check'}")
        return out

    def reading(self, spec: Claimed[T]) -> T:
        """The claim's reading of this run, measured once (a precondition may read another claim's)."""
        if spec.id not in self._readings:
            self._readings[spec.id] = spec.measure(self)
        return self._readings[spec.id]

    def reading_held_out(self, spec: Claimed[T]) -> T | None:
        """The claim's second reading (held out), measured once; None when the claim has none or the run lacks it."""
        key = spec.id + " (held out)"
        if key not in self._readings:
            self._readings[key] = spec.held_out.measure(self) if spec.held_out else None
        return self._readings[key]
