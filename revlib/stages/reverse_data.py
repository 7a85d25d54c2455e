"""Notebook 01: build the r1k paper's sets with `revlib.data.reverse`, write them, and the report's tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from revlib.core import io
from revlib.core.io import Metrics
from revlib.data import reverse
from revlib.params.data import DataParams
from revlib.stages.context import StageContext

HEADLINE_FILE = "headline_data.html"  # the index page's summary of this stage


def settings_table(d: DataParams) -> pd.DataFrame:
    """The data params in one row: source, teacher and the sizes asked for."""
    return pd.DataFrame([{"source": d.source.kind, "teacher": d.teacher.kind, "n_train": d.n_train, "n_test": d.n_test,
                          "probe_train": d.probe_train, "probe_test": d.probe_test,
                          "probe_from_train": d.probe_from_train, "probe_file": str(d.probe_file or "")}])


@dataclass
class DataRun:
    """What 01 built and wrote: every set and its pairs, the rejects, and the stats written beside them."""

    built: reverse.Built
    stats: dict[str, Any]
    params: DataParams

    def counts_table(self) -> pd.DataFrame:
        return pd.DataFrame([{"set": k, "rows": v} for k, v in self.stats["counts"].items()])

    def teacher_usage_table(self) -> pd.DataFrame | None:
        """Requests the teacher paid for, read from its cache and retried; None for a teacher that asks no one."""
        return pd.DataFrame([self.stats["teacher_usage"]]) if "teacher_usage" in self.stats else None

    def teacher_models_table(self) -> pd.DataFrame | None:
        """The model asked for and, for each model string the teacher's replies named, how many answers it gave
        (cached ones included); None for a teacher that asks no one. An alias can name another model than the
        one the paper used (deepseek-reasoner no longer serves R1)."""
        models = self.stats.get("teacher_models")
        if models is None:
            return None
        named = models["named_by_replies"] or {"(no reply named a model)": 0}
        return pd.DataFrame([{"asked for": models["asked"], "named by the reply": name, "answers": n}
                             for name, n in named.items()])

    def rejects_table(self) -> pd.DataFrame:
        return pd.DataFrame(reverse.rejects_by_reason(self.built)
                            or [{"reason": "(none)", "count": 0, "share of attempted": 0.0}])

    def first_rejects(self, n: int = 5, width: int = 200) -> pd.DataFrame | None:
        """The first `n` rejects with their reason and texts cut to `width` characters; None without rejects."""
        if not self.built.rejects:
            return None
        return pd.DataFrame([{"reason": r["reason"], "row": r.get("row"), "detail": (r["detail"] or "")[:width],
                              "forward question": (r["forward"] or {}).get("question", "")[:width],
                              "reverse question": (r["reverse"] or {}).get("question", "")[:width]}
                             for r in self.built.rejects[:n]])

    def shortfall_table(self) -> pd.DataFrame:
        return pd.DataFrame(reverse.shortfall_rows(self.built, self.params)
                            or [{"param": "(all met)", "sets": "", "asked": "", "built": "", "missing": 0}])

    def twins_table(self, n: int = 5) -> pd.DataFrame:
        return pd.DataFrame(reverse.twins_table(self.built, n=n))

    @property
    def metrics(self) -> Metrics:
        """What 01 records in metrics.json: the rows of every set and pair file, the rejects by reason, and for a
        model teacher the answers per model string its replies named."""
        models = self.stats.get("teacher_models")
        return self.stats["counts"] | {"rejects": len(self.built.rejects),
                                       "rejects_by_reason": self.stats["rejects_by_reason"]} | (
            {"teacher_models": models["named_by_replies"]} if models else {})


def run(ctx: StageContext) -> DataRun:
    """Build every set from the experiment's source and teacher, write them (sets/, pairs/, rejects, stats) and the
    index page's summary into the run directory."""
    built = reverse.build(ctx.exp)
    stats = reverse.write(built, ctx.dir)
    io.write_text(ctx.dir / HEADLINE_FILE, reverse.headline_html(stats))
    return DataRun(built, stats, ctx.exp.data)


@dataclass
class Lengths:
    """The length of every training chain of thought, forward and reverse, in `unit`."""

    frame: pd.DataFrame  # direction, tokens, pair_id
    unit: str

    def figure(self) -> go.Figure:
        return reverse.length_figure(self.frame.to_dict("records"), self.unit)

    def table(self) -> pd.DataFrame:
        return self.frame.groupby("direction")["tokens"].describe().reset_index()


def chain_lengths(built: reverse.Built, tokenizer: Any = None) -> Lengths:
    """In the base model's tokens when its tokenizer is recorded, else in word pieces."""
    unit = "tokens (base model tokenizer)" if tokenizer is not None else "word pieces (no base tokenizer recorded yet)"
    return Lengths(pd.DataFrame(reverse.chain_lengths(built, tokenizer)), unit)
