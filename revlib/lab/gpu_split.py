"""GPUs for cells that run side by side (`revlib run --jobs N` on a GPU machine).

The visible GPUs are cut into `jobs` disjoint slots of equal size; a running cell holds one slot, sees only its GPUs
(`CUDA_VISIBLE_DEVICES` in its kernel's environment) and launches its processes on a rendezvous port of its own.
A plan whose cell needs more GPUs than a slot holds is refused before anything runs, naming the cell and the
`--jobs` that would fit. With one job, or no GPU, cells run in the runner's own environment as before.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from revlib.lab.plan import Cell
from revlib.modeling import launch
from revlib.params import Experiment

PORT_ENV = launch.MAIN_PORT_ENV


class SplitRefused(ValueError):
    """The --jobs split cannot give a cell the GPUs its params ask for."""


@dataclass(frozen=True)
class Slot:
    gpus: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


def cell_gpus(exp: Experiment, cell: Cell) -> int:
    """GPUs a cell uses: its launch's processes for 02 and 03, vLLM's data x tensor parallel for 05, else one."""
    for stage, section in (("02_sft", exp.sft), ("03_dpo", exp.dpo)):
        if cell.stage == stage and section is not None:
            return max(1, launch.gpus_asked(section.accelerate_config, section.num_processes))
    b = exp.benchmarks
    if cell.stage == "05_benchmarks" and b is not None and b.backend == "vllm":
        return b.data_parallel_size * b.tensor_parallel_size
    return 1


def visible_ids(count: int) -> list[str]:
    """The ids of the visible GPUs, as CUDA_VISIBLE_DEVICES names them (the runner's own list, if set)."""
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if len(listed) >= count else [str(i) for i in range(count)]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Devices:
    """Hands out slots to cells as they start and takes them back as they end."""

    def __init__(self, slots: Sequence[tuple[str, ...]]):
        self.free = list(slots)

    @classmethod
    def for_plan(cls, exp: Experiment, cells: Sequence[Cell], jobs: int, visible: int | None = None) -> Devices:
        gpus = launch.visible_gpus() if visible is None else visible
        if jobs <= 1 or gpus == 0:
            return _Shared()
        per_slot = gpus // jobs
        too_big = [(c, cell_gpus(exp, c)) for c in cells if cell_gpus(exp, c) > per_slot]
        if too_big:
            need = max(n for _, n in too_big)
            names = ", ".join(f"{c.key} ({n})" for c, n in too_big[:6])
            fits = max(1, gpus // need)
            raise SplitRefused(f"--jobs {jobs} on {gpus} GPU(s) gives each running cell {per_slot} GPU(s), and these "
                               f"cells need more: {names}. Run with --jobs {fits}, or lower num_processes")
        ids = visible_ids(gpus)
        return cls([tuple(ids[i * per_slot:(i + 1) * per_slot]) for i in range(jobs)])

    def take(self, cell: Cell) -> Slot | None:
        if not self.free:
            return None
        gpus = self.free.pop(0)
        return Slot(gpus, {"CUDA_VISIBLE_DEVICES": ",".join(gpus), PORT_ENV: str(free_port())})

    def give_back(self, slot: Slot) -> None:
        self.free.append(slot.gpus)


class _Shared(Devices):
    """One job, or a machine without GPUs: every cell runs in the runner's environment."""

    def __init__(self) -> None:
        super().__init__([])

    def take(self, cell: Cell) -> Slot | None:
        return Slot(())

    def give_back(self, slot: Slot) -> None:
        pass
