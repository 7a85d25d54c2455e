"""Report parts a stage may not have: a figure or table shown when it exists, else a sentence saying why not.

A notebook cell calls one of these instead of branching on whether its part exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from revlib.core import report
from revlib.evaluation import learning


@dataclass(frozen=True)
class Missing:
    """A report part a run does not have, and why: what a stage's run object gives instead of the part."""

    why: str


def _missing(why: str) -> None:
    if why:
        print(why)


def show(fig: go.Figure | None, missing: str = "") -> None:
    """Show the figure; None: print `missing` (nothing when it is empty)."""
    if fig is None:
        _missing(missing)
    else:
        report.show(fig)


def table(frame: pd.DataFrame | Missing | None, caption: str, missing: str = "") -> None:
    """Show the captioned table (an empty frame too); Missing: print its reason; None: print `missing` (nothing when
    it is empty)."""
    if isinstance(frame, Missing):
        _missing(frame.why)
    elif frame is None:
        _missing(missing)
    else:
        report.table(frame, caption)


def checks(found: Sequence[learning.Check], caption: str) -> None:
    """The table of a stage's learning checks, when it has any."""
    table(learning.table(found) if found else None, caption)
