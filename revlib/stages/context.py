"""What a stage function reads from the notebook's context (`revlib.lab.context.StageRun`, one layer up).

Stages sit below the lab, so they cannot import StageRun; they name the part of it they use instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from revlib.params import Experiment


class StageContext(Protocol):
    """A stage's validated params, its matrix cell's values, its run directory and its finished upstream cells."""

    @property
    def exp(self) -> Experiment: ...

    @property
    def values(self) -> dict[str, str]: ...

    @property
    def dir(self) -> Path: ...

    @property
    def code_hashes(self) -> dict[str, str]: ...

    def upstream(self, stage: str, cell: str | None = None) -> Path:
        """The run directory of a finished upstream cell (raises when it has not finished)."""
        ...

    def base_path(self) -> str:
        """The path or Hub id of this cell's base model, as 00_base_model recorded it."""
        ...
