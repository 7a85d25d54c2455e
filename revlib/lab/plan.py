"""The plan: every matrix cell of an experiment, in execution order, from the stage registry.

`outputs/<experiment>/<stage>/<cell>/` holds a cell's resolved params.yaml, manifest.json, the executed
notebook and its HTML, metrics.json and the stage's artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from revlib.core.io import REPO_ROOT
from revlib.params import Experiment
from revlib.params.stages import BY_NAME, STAGE_NAMES

NOTEBOOKS = REPO_ROOT / "notebooks"


@dataclass(frozen=True)
class Cell:
    """One cell of the matrix: one executed notebook."""

    stage: str
    name: str
    values: dict[str, Any]
    run_dir: Path
    deps: tuple[tuple[str, str], ...] = field(default=())

    @property
    def notebook(self) -> Path:
        return NOTEBOOKS / f"{self.stage}.ipynb"

    @property
    def key(self) -> str:
        return f"{self.stage}/{self.name}"


def plan(exp: Experiment) -> list[Cell]:
    """Every cell of every stage the experiment lists, in the registry's order."""
    cells: list[Cell] = []
    for stage in sorted(exp.stages, key=STAGE_NAMES.index):
        models = [m.name for m in exp.base_models] if BY_NAME[stage].per_model else [exp.base_models[0].name]
        for m in models:
            for name, values, deps in BY_NAME[stage].cells(exp, m):
                deps = tuple(d for d in deps if d[0] in exp.stages)
                cells.append(Cell(stage, name, values, exp.run_root / stage / name, deps))
    return cells


def find_cell(exp: Experiment, stage: str, name: str = "") -> Cell:
    cells = [c for c in plan(exp) if c.stage == stage]
    if not cells:
        raise KeyError(f"stage {stage} is not in this experiment's stages {exp.stages}")
    if not name:
        return cells[0]
    for c in cells:
        if c.name == name:
            return c
    raise KeyError(f"{stage} has no cell {name!r}; cells: {[c.name for c in cells]}")
