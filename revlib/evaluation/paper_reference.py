"""The r1k authors' released Figure 2 numbers (Qwen2.5-7B), drawn beside a run's own curves.

The numbers are data from the authors' repository (see the JSON file's `source`); two bugs of that
release are not repeated here: its DPO "averages" keep only the last example, and its seven DPO points
are seven runs of one model labelled as epochs. We show the points as released and say so.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

RELEASE_FILE = "r1k_released_qwen2.5-7b.json"
LABEL = "r1k authors' released numbers (Qwen2.5-7B)"


@lru_cache(maxsize=1)
def released() -> dict[str, Any]:
    return json.loads(resources.files("revlib.evaluation.reference").joinpath(RELEASE_FILE).read_text())


def released_frame() -> pd.DataFrame:
    """One row per (pair, phase, epoch) with ALP(y+), ALP(y-) and margin where released."""
    rel = released()
    rows = []
    for phase, epochs in (("sft", rel["sft_epochs"]), ("dpo", rel["dpo_epochs"])):
        for pair, series in rel[phase].items():
            for i, epoch in enumerate(epochs):
                row = {"pair": pair, "phase": phase, "epoch": epoch}
                for metric, values in series.items():
                    row[metric] = values[i] if i < len(values) else None
                rows.append(row)
    return pd.DataFrame(rows)


def endpoints() -> dict[str, dict[str, float]]:
    """Per pair and metric: the released value at the last SFT epoch, `sft_change_<metric>` from the first SFT epoch
    to the last (the release has no base point), and for (D_m, T_m) `dpo_change_<metric>` from the last SFT epoch to
    the last DPO one."""
    rel = released()
    out = {pair: {m: v[-1] for m, v in series.items()} for pair, series in rel["sft"].items()}
    for pair, series in rel["sft"].items():
        out[pair].update({f"sft_change_{m}": v[-1] - v[0] for m, v in series.items()})
    out["(D_m, T_m)"].update({f"dpo_change_{m}": v[-1] - rel["sft"]["(D_m, T_m)"][m][-1]
                              for m, v in rel["dpo"]["(D_m, T_m)"].items()})
    return out


PANELS = [("alp_chosen", "(a) ALP(y+)"), ("alp_rejected", "(b) ALP(y−)"), ("margin", "(c) margin")]


def side_by_side(summary: pd.DataFrame) -> go.Figure:
    """Our curves (solid) and the released ones (dashed) per pair, on a shared axis of training progress:
    SFT epochs, then DPO epochs after the last SFT epoch. Our base is epoch 0."""
    ours = summary.copy()
    rel = released_frame()
    pairs = [p for p in dict.fromkeys(ours["pair"]) if p in set(rel["pair"])]
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in PANELS], horizontal_spacing=0.07)

    def progress(frame: pd.DataFrame) -> pd.Series:
        last_sft = frame.loc[frame["phase"] == "sft", "epoch"].max()
        last_sft = 0 if pd.isna(last_sft) else last_sft
        return frame["epoch"].where(frame["phase"] != "dpo", frame["epoch"] + last_sft)

    for i, pair in enumerate(pairs):
        color = palette[i % len(palette)]
        mine = ours[ours["pair"] == pair].sort_values("x")
        theirs = rel[rel["pair"] == pair]
        for col, (metric, _) in enumerate(PANELS, start=1):
            fig.add_trace(go.Scatter(x=progress(mine), y=mine[metric], mode="lines+markers", name=f"{pair} this run",
                                     legendgroup=f"{pair}o", showlegend=col == 1, line=dict(color=color)),
                          row=1, col=col)
            th = theirs.dropna(subset=[metric])
            fig.add_trace(go.Scatter(x=progress(th), y=th[metric], mode="lines+markers", name=f"{pair} {LABEL}",
                                     legendgroup=f"{pair}t", showlegend=col == 1,
                                     line=dict(color=color, dash="dash"), marker=dict(symbol="x")), row=1, col=col)
    for col in (1, 2, 3):
        fig.update_xaxes(title_text="epoch (SFT, then DPO continuing the count)", row=1, col=col)
    fig.update_yaxes(title_text="mean log p per token", row=1, col=1)
    fig.update_layout(title=f"Figure 2 on real data: this run (solid) beside the {LABEL} (dashed)",
                      template="plotly_white", height=480, legend=dict(orientation="h", y=-0.35),
                      margin=dict(l=60, r=20, t=80, b=40))
    return fig
