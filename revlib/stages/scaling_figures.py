"""Notebook 06's figures: the scaling curves with intervals, and the paper's Figures 2/9, 3, 7 and 10."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from revlib.stages.scaling_result import AdvantageRow, NLLRow, Passes, SFTCurve, TableRow, ValueRow

NAMES = {"sft": "SFT (synthetic positives)", "rft": "RFT (synthetic + own positives)", "rft_self": "RFT on D+ only",
         "naive_dpo": "naive DPO", "per_step_dpo": "per-step DPO",
         "per_step_dpo_under": "per-step DPO from the under-trained SFT", "adv_rft": "advantage-filtered RFT"}
PALETTE = {"sft": "#1f77b4", "rft": "#ff7f0e", "rft_self": "#8c564b", "naive_dpo": "#9467bd",
           "per_step_dpo": "#d62728", "per_step_dpo_under": "#e377c2", "adv_rft": "#2ca02c"}


def _curve(fig: go.Figure, rows: Sequence[TableRow], method: str, name: str | None = None) -> None:
    pts = sorted((r for r in rows if r.method == method and r.error is not None), key=lambda r: r.size)
    if not pts:
        return
    fig.add_trace(go.Scatter(
        x=[r.size for r in pts], y=[r.error for r in pts], mode="lines+markers", name=name or NAMES[method],
        line=dict(color=PALETTE.get(method)),
        error_y=dict(type="data", symmetric=False, array=[r.error_hi - r.error for r in pts],
                     arrayminus=[r.error - r.error_lo for r in pts]),
        customdata=[[r.examples, r.p_vs_sft] for r in pts],
        hovertemplate="n=%{x}: error %{y:.3f}<br>training examples %{customdata[0]}<br>McNemar p vs SFT "
                      "%{customdata[1]:.3g}<extra>" + (name or NAMES[method]) + "</extra>"))


def scaling_figure(rows: Sequence[TableRow], methods: Sequence[str]) -> go.Figure:
    """Test error against synthetic data size (log x), one line per method, 95% Wilson intervals."""
    fig = go.Figure()
    for m in methods:
        _curve(fig, rows, m)
    fig.update_layout(title="Test error against synthetic data size (95% intervals)", template="plotly_white",
                      height=400, xaxis_title="synthetic problems (log)", yaxis_title="test error", yaxis_range=[0, 1])
    fig.update_xaxes(type="log")
    return fig


def self_data_figure(rows: Sequence[TableRow], methods: Sequence[str]) -> go.Figure | None:
    """Figures 2 and 9: RFT on the learner's own positives D+ alone against SFT on synthetic data D_syn; None when
    `rft_self` is not among the methods."""
    if "rft_self" not in methods:
        return None
    fig = go.Figure()
    _curve(fig, rows, "sft", "SFT on D_syn (n problems)")
    _curve(fig, rows, "rft_self", "RFT on D+ only (positives the SFT model wrote for the same n problems)")
    fig.update_layout(title="Self-generated positives D+ against synthetic data D_syn", template="plotly_white",
                      height=380, xaxis_title="problems (log)", yaxis_title="test error", yaxis_range=[0, 1])
    fig.update_xaxes(type="log")
    return fig


def values_figure(rows: Sequence[ValueRow]) -> go.Figure | None:
    """Figure 7: average Monte-Carlo value after each step, one line per method; None without rows."""
    if not rows:
        return None
    fig = go.Figure()
    for m in dict.fromkeys(r.method for r in rows):
        pts = [r for r in rows if r.method == m]
        fig.add_trace(go.Scatter(x=[r.step for r in pts], y=[r.value for r in pts], mode="lines+markers",
                                 name=NAMES.get(m, m), line=dict(color=PALETTE.get(m))))
    fig.update_layout(title="Average value per step of each method's own samples", template="plotly_white", height=360,
                      xaxis_title="steps taken", yaxis_title="value (success rate of rollouts)", yaxis_range=[0, 1])
    return fig


def advantages_figure(rows: Sequence[AdvantageRow]) -> go.Figure | None:
    """Figure 10: step advantages in positive and in negative traces, per step index; None without rows."""
    if not rows:
        return None
    fig = go.Figure()
    for trace, colour in (("positive", "#2ca02c"), ("negative", "#d62728")):
        pts = [r for r in rows if r.trace == trace]
        if pts:
            fig.add_trace(go.Box(x=[r.step for r in pts], y=[r.advantage for r in pts], name=f"{trace} traces",
                                 marker_color=colour, boxmean=True))
    fig.update_layout(title="Monte-Carlo step advantages in positive and negative traces", template="plotly_white",
                      boxmode="group", height=380, xaxis_title="step", yaxis_title="advantage (value after − before)")
    return fig


def nll_figure(rows: Sequence[NLLRow]) -> go.Figure | None:
    """Figure 3: per-token NLL of self-generated positives D+ and synthetic data D_syn under one model; None without
    rows."""
    if not rows:
        return None
    fig = go.Figure()
    for name in dict.fromkeys(r.set for r in rows):
        fig.add_trace(go.Histogram(x=[r.nll for r in rows if r.set == name], name=name, opacity=0.6,
                                   histnorm="probability"))
    fig.update_layout(title="Negative log-likelihood per token of the responses", barmode="overlay",
                      template="plotly_white", height=360, xaxis_title="mean NLL per response token",
                      yaxis_title="fraction of responses")
    return fig


def sft_validation_figure(curves: Sequence[SFTCurve]) -> go.Figure:
    """SFT's validation accuracy against its steps at every size; the chosen checkpoint marked."""
    fig = go.Figure()
    for c in curves:
        fig.add_trace(go.Scatter(x=c.steps, y=c.validation, mode="lines+markers", name=f"n={c.size}"))
        fig.add_trace(go.Scatter(x=[c.chosen_step], y=[c.chosen_validation], mode="markers", showlegend=False,
                                 marker=dict(symbol="star", size=14, color="black"),
                                 hovertext=f"n={c.size}: kept step {c.chosen_step}"))
    fig.update_layout(title="SFT validation accuracy by step (star: the checkpoint kept)", template="plotly_white",
                      height=380, xaxis_title="optimizer steps", yaxis_title="validation accuracy", yaxis_range=[0, 1])
    return fig


def passes_figure(passes: Sequence[Passes]) -> go.Figure | None:
    """Validation accuracy of every pass of every method after SFT (pass 0: its start), one line per (method, size)."""
    if not passes:
        return None
    fig = go.Figure()
    for ps in passes:
        fig.add_trace(go.Scatter(x=[p.index for p in ps.passes], y=[p.validation for p in ps.passes],
                                 mode="lines+markers", name=f"{NAMES.get(ps.method, ps.method)}, n={ps.size}",
                                 line=dict(color=PALETTE.get(ps.method)), legendgroup=ps.method))
    fig.update_layout(title="Validation accuracy by pass (pass 0: the start; the best is kept)",
                      template="plotly_white", height=420, xaxis_title="pass", yaxis_title="validation accuracy",
                      yaxis_range=[0, 1])
    return fig
