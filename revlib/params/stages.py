"""The stage registry: every notebook stage, what it needs in the params, what its results depend on, and the
matrix cells it expands into. The params schema, the plan and the runner all read this one list.

A stage's cells are named by base model (and training set); each names the upstream cells it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the schema imports this registry; at run time it never imports the schema
    from revlib.params import Experiment

DATA_CELL = "data"  # the one cell of 01_reverse_data

CellSpec = tuple[str, dict[str, Any], list[tuple[str, str]]]  # (name, values, upstream (stage, cell) pairs)


@dataclass(frozen=True)
class Stage:
    name: str  # also the notebook's file name, notebooks/<name>.ipynb
    needs: tuple[str, ...]  # params sections that must be present when the stage is listed
    reads: tuple[str, ...]  # params sections its results depend on (beside seed and its cell), for fingerprints
    cells: Callable[[Experiment, str], list[CellSpec]]
    per_model: bool = True  # False: one cell for the whole experiment


def dpo_cells(exp: Experiment, model: str) -> list[tuple[str, dict[str, Any]]]:
    """03_dpo cells of one base model: directional DPO per SFT model, per-step DPO where asked, and each named
    variant of `dpo.variants` on its SFT models (<model>__<set>__<variant>)."""
    if exp.dpo is None:
        return []
    cells = [(f"{model}__{s}", {"model": model, "train_set": s, "variant": "directional"}) for s in exp.dpo.on]
    if exp.dpo.per_step:
        cells += [(f"{model}__{s}__per_step", {"model": model, "train_set": s, "variant": "per_step"})
                  for s in exp.dpo.per_step.on]
    for name in exp.dpo.variants:
        cells += [(f"{model}__{s}__{name}", {"model": model, "train_set": s, "variant": name})
                  for s in exp.dpo.variant_on(name)]
    return cells


def named_variant_cells(exp: Experiment, model: str, train_sets: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The 03 cells of `dpo.variants` that start from the SFT models of `train_sets`."""
    return [(name, v) for name, v in dpo_cells(exp, model)
            if v["variant"] not in ("directional", "per_step") and v["train_set"] in train_sets]


def _base_model(exp: Experiment, m: str) -> list[CellSpec]:
    return [(m, {"model": m}, [])]


def _reverse_data(exp: Experiment, m: str) -> list[CellSpec]:
    return [(DATA_CELL, {}, [])]


def _sft(exp: Experiment, m: str) -> list[CellSpec]:
    return [(f"{m}__{s}", {"model": m, "train_set": s}, [("00_base_model", m), ("01_reverse_data", DATA_CELL)])
            for s in exp.sft.train_sets]


def _dpo(exp: Experiment, m: str) -> list[CellSpec]:
    return [(name, values, [("02_sft", f"{m}__{values['train_set']}"), ("01_reverse_data", DATA_CELL)])
            for name, values in dpo_cells(exp, m)]


def _probe_dynamics(exp: Experiment, m: str) -> list[CellSpec]:
    deps = [("00_base_model", m), ("01_reverse_data", DATA_CELL)]
    if exp.probes.models == "stages":  # the probe models are 02's and 03's own checkpoints
        deps += [("02_sft", f"{m}__{s}") for s in exp.probes.train_sets]
        deps += [("03_dpo", f"{m}__{s}") for s in exp.probes.train_sets if exp.dpo and s in exp.dpo.on]
    if exp.dpo and exp.dpo.per_step:  # the probes compare the two DPO variants side by side
        deps += [("02_sft", f"{m}__{s}") for s in exp.dpo.per_step.on]
        deps += [("03_dpo", name) for name, v in dpo_cells(exp, m) if v["train_set"] in exp.dpo.per_step.on
                 and v["variant"] in ("directional", "per_step")]
    for name, v in named_variant_cells(exp, m, exp.probes.train_sets) if exp.dpo else []:
        # a named variant's final model is scored beside directional DPO from the same SFT model
        deps += [("02_sft", f"{m}__{v['train_set']}"), ("03_dpo", f"{m}__{v['train_set']}"), ("03_dpo", name)]
    return [(m, {"model": m}, list(dict.fromkeys(deps)))]


def _benchmarks(exp: Experiment, m: str) -> list[CellSpec]:
    deps = [("01_reverse_data", DATA_CELL)]
    deps += [("02_sft", f"{m}__{s}") for s in (exp.sft.train_sets if exp.sft else [])]
    deps += [("03_dpo", name) for name, _ in dpo_cells(exp, m)]
    return [(m, {"model": m}, deps)]


def _from_base(exp: Experiment, m: str) -> list[CellSpec]:
    return [(m, {"model": m}, [("00_base_model", m)])]


STAGES: tuple[Stage, ...] = (
    Stage("00_base_model", needs=(), reads=(), cells=_base_model),
    Stage("01_reverse_data", needs=(), reads=("data",), cells=_reverse_data, per_model=False),
    Stage("02_sft", needs=("sft",), reads=("sft", "learning"), cells=_sft),
    Stage("03_dpo", needs=("sft", "dpo"), reads=("dpo", "learning"), cells=_dpo),
    Stage("04_probe_dynamics", needs=("probes", "sft", "dpo"), reads=("probes", "sft", "dpo"), cells=_probe_dynamics),
    Stage("05_benchmarks", needs=("benchmarks",), reads=("benchmarks",), cells=_benchmarks),
    Stage("06_negative_data", needs=("negatives", "sft", "dpo"), reads=("negatives", "sft", "dpo", "learning"),
          cells=_from_base),
    Stage("07_star_graph", needs=("star_graph", "sft", "dpo"), reads=("star_graph", "sft", "dpo", "learning"),
          cells=_from_base),
)
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
STAGE_NAMES: tuple[str, ...] = tuple(BY_NAME)
