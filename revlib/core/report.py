"""Figures and tables for notebooks and the exported HTML.

Plotly figures are emitted as a MIME bundle: JupyterLab renders the plotly JSON, and the HTML
export gets a `text/html` rendering with plotly.js embedded once per notebook, so reports render
offline without a CDN.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
import plotly.graph_objects as go

_plotlyjs_sent = False


def figure_html(fig: go.Figure, include_plotlyjs: bool) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs, config={"displaylogo": False})


def show(fig: go.Figure) -> None:
    """Display a plotly figure so it renders in JupyterLab and in the offline HTML export."""
    global _plotlyjs_sent
    from IPython.display import display

    bundle = {
        "application/vnd.plotly.v1+json": fig.to_plotly_json(),
        "text/html": figure_html(fig, include_plotlyjs=not _plotlyjs_sent),
        "text/plain": f"<plotly figure: {fig.layout.title.text or 'untitled'}>",
    }
    _plotlyjs_sent = True
    display(bundle, raw=True)


def table(df: pd.DataFrame, caption: str = "", escape: bool = True, float_format: str = "{:.4g}") -> None:
    """Display a DataFrame as a captioned HTML table."""
    from IPython.display import HTML, display

    styled = df.to_html(index=False, escape=escape, float_format=lambda v: float_format.format(v), border=0,
                        classes="revlib-table")
    cap = f"<p><b>{html.escape(caption)}</b></p>" if caption else ""
    display(HTML(cap + styled))


def curves(rows: list[dict[str, Any]], x: str, ys: list[str], title: str, log_y: bool = False,
           xaxis_title: str | None = None) -> go.Figure:
    """Line figure of several series logged against one x (a loss and lr curve, say)."""
    fig = go.Figure()
    for y in ys:
        pts = [(r[x], r[y]) for r in rows if r.get(y) is not None and r.get(x) is not None]
        if pts:
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", name=y))
    fig.update_layout(title=title, xaxis_title=xaxis_title or x, template="plotly_white", height=360,
                      margin=dict(l=50, r=20, t=50, b=40))
    if log_y:
        fig.update_yaxes(type="log")
    return fig
