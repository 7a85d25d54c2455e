"""Notebook 07's report: the learning checks, what it records in metrics.json, and the tables and figures of a run
(`StarRun`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from revlib.core import stats
from revlib.core.io import Metrics
from revlib.evaluation import learning, trained
from revlib.evaluation.learning import Check
from revlib.stages.star_result import VALID_TARGET, StarResult, state_rule


def metrics(result: StarResult) -> Metrics:
    out: Metrics = {"pairs/" + k: v.pairs for k, v in result.per_step_dpo.items()}
    last = result.final_sft
    out["base/lookup_accuracy"] = result.base_lookup.accuracy
    out["sft/valid_path_rate"] = last.valid_path_rate
    out["sft/first_node_accuracy"] = last.first_node_accuracy
    if last.train is not None:
        out["sft/first_node_accuracy_train"] = last.train.first_node_accuracy
    out["sft/test_error"] = last.test_error
    out["sft/test_n"] = last.n
    out["sft/critical_token_prob"] = last.critical_token_prob
    out["sft/critical_q_value"] = last.critical_q_value
    out["state_reached"] = result.state.reached
    for name, run in result.per_step_dpo.items():
        end = result.end(name)
        out[f"dpo_from_{name}/start_step"] = run.start_step
        out[f"dpo_from_{name}/start_error"] = result.start(name).test_error
        out[f"dpo_from_{name}/final_error"] = end.test_error
        out[f"dpo_from_{name}/final_loss"] = result.final_loss(name)
        out[f"dpo_from_{name}/final_critical_q_value"] = end.critical_q_value
        out[f"dpo_from_{name}/final_critical_token_prob"] = end.critical_token_prob
    return out


def checks(result: StarResult) -> list[Check]:
    """Did SFT learn to follow edges, and did it reach the states the paper studies? Base look-ups above chance
    (reported, no target); SFT's valid paths at its most trained checkpoint at least VALID_TARGET; an under-trained
    start found on the training graphs. Whether per-step DPO trained is each claim's precondition, not a check here:
    the phase transition is the result, whichever way it comes out."""
    look, last = result.base_lookup, result.final_sft
    st = result.state
    return [
        learning.accuracy("base edge look-ups (held out; reported, no target)", look.k, look.n, look.chance),
        learning.accuracy("SFT valid centre-to-leaf paths (greedy, test, most trained checkpoint)", last.valid, last.n,
                          0.0, VALID_TARGET),
        learning.Check("an under-trained start in the Clever-Hans state (training graphs)", st.under,
                       result.asked_under, st.under >= 1,
                       f"{st.under} checkpoint(s) chosen of {result.asked_under} asked; the rule: {state_rule()}, "
                       f"at most 1/{result.over_factor:g} of SFT's steps"),
    ]


def _start_label(result: StarResult, name: str) -> str:
    run = result.per_step_dpo[name]
    return f"from {name} (SFT step {run.start_step})"


def _sft_line(result: StarResult, key: str, train: bool = False) -> tuple[list[int], list[float]]:
    cs = result.sft_checkpoints
    if train:
        return [c.step for c in cs if c.train], [getattr(c.train, key) for c in cs if c.train]
    return [c.step for c in cs], [getattr(c, key) for c in cs]


@dataclass
class StarRun:
    """07's run: what it measured (saved as star.json), its learning checks, and the report's figures and tables."""

    result: StarResult
    checks: list[Check]

    @property
    def state_text(self) -> str:
        return self.result.state.text

    def checks_table(self) -> pd.DataFrame:
        return learning.table(self.checks)

    def starts_table(self) -> pd.DataFrame:
        """The starts chosen from the SFT curve, with the state each was chosen in and what per-step DPO did."""
        r = self.result
        rows = []
        for s in r.starts:
            run = r.per_step_dpo.get(s.name)
            rows.append({"start": s.name, "SFT step": s.step, "SFT epoch": s.epoch,
                         "valid paths (train)": s.valid_path_rate, "first node (train)": s.first_node_train,
                         "valid paths (test)": s.valid_path_rate_test, "first node (test)": s.first_node_test,
                         "pairs": run.pairs if run else 0, "gold chosen": run.samples.gold_chosen if run else 0,
                         "DPO steps": run.checkpoints[-1].step if run and run.checkpoints else 0,
                         "final DPO loss": r.final_loss(s.name) if run else None,
                         "DPO trained": "yes" if run and r.trained(s.name) else "NO"})
        return pd.DataFrame(rows)

    def summary_table(self) -> pd.DataFrame:
        """One row per checkpoint read out: SFT, then per-step DPO from each start, with counts."""
        r = self.result
        rows = [("SFT", c.step, c) for c in r.sft_checkpoints]
        for name in r.per_step_dpo:
            rows += [(f"DPO {_start_label(r, name)}", c.step, c) for c in r.per_step_dpo[name].checkpoints]
        return pd.DataFrame([{
            "model": name, "step": step, "test n": c.n, "valid paths": c.valid, "first node right": c.first_node,
            "correct": c.correct, "test error": c.test_error,
            "train n": c.train.n if c.train else None, "first node right (train)": c.train.first_node if c.train else None,
            "P(critical)": c.critical_token_prob, "Q(critical)": c.critical_q_value,
            "Q(critical, train)": c.critical_q_value_train, "V(start)": c.start_value,
        } for name, step, c in rows])

    def sft_figure(self) -> go.Figure:
        """Figure 8 (a), SFT half: the SFT loss and the critical token's Q-value over SFT, on test and training graphs;
        the first node right on both, and the starts chosen."""
        r = self.result
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=[p.step for p in r.sft_loss], y=[p.loss for p in r.sft_loss], name="SFT loss",
                                 mode="lines", yaxis="y2", line=dict(color="grey")))
        for key, name, on_train in (("critical_q_value", "Q(critical), test", False),
                                 ("critical_q_value_train", "Q(critical), train", False),
                                 ("first_node_accuracy", "first node right, test", False),
                                 ("first_node_accuracy", "first node right, train", True),
                                 ("valid_path_rate", "valid paths, test", False)):
            x, y = _sft_line(r, key, on_train)
            fig.add_trace(go.Scatter(x=x, y=y, name=name, mode="lines+markers"))
        for s in r.starts:
            fig.add_vline(x=s.step, line_dash="dot", annotation_text=s.name)
        fig.add_hline(y=1 / r.degree, line_dash="dot", annotation_text="1/degree")
        fig.update_layout(title="(a) SFT: loss and the critical token's Q-value (Monte-Carlo), first node and valid "
                                "paths", template="plotly_white", height=400, xaxis_title="SFT step",
                          yaxis=dict(title="rate", range=[0, 1.02]), yaxis2=dict(title="loss", overlaying="y",
                                                                                  side="right"))
        return fig

    def dpo_loss_figure(self) -> go.Figure:
        """Figure 8 (a), DPO half: the per-step DPO training loss from each start, against log 2 and the 'trained' bar."""
        fig = go.Figure()
        for name, run in self.result.per_step_dpo.items():
            if run.loss:
                fig.add_trace(go.Scatter(x=[p.step for p in run.loss], y=[p.loss for p in run.loss], mode="lines",
                                         name=_start_label(self.result, name)))
        fig.add_hline(y=math.log(2), line_dash="dot", annotation_text="log 2")
        rules = self.result.rules
        fig.add_hline(y=trained.dpo_trained_bar(rules), line_dash="dash",
                      annotation_text=f"trained: {1 - rules.dpo_loss_fall:g} x log 2")
        fig.update_layout(title="(a) per-step DPO loss", template="plotly_white", height=360,
                          xaxis_title="DPO step", yaxis_title="DPO loss (training batch)")
        return fig

    def error_figure(self, kind: str) -> go.Figure:
        """Figure 8 (b) for kind "under", (c) for "over": test error over per-step DPO steps, with 95% intervals."""
        r = self.result
        fig = go.Figure()
        for name in r.names(kind):
            curve = r.curve(name)
            errs = [c.test_error for _, c in curve]
            bounds = [stats.wilson(c.n - c.correct, c.n) for _, c in curve]
            fig.add_trace(go.Scatter(
                x=[x for x, _ in curve], y=errs, mode="lines+markers", name=_start_label(r, name),
                error_y=dict(type="data", symmetric=False, array=[hi - e for e, (_, hi) in zip(errs, bounds)],
                             arrayminus=[e - lo for e, (lo, _) in zip(errs, bounds)])))
        panel = "(b) from under-trained SFT" if kind == "under" else "(c) from over-trained SFT"
        fig.update_layout(title=f"{panel}: test error over per-step DPO (greedy, n={r.test_n}, 95% intervals)",
                          template="plotly_white", height=360, xaxis_title="per-step DPO step",
                          yaxis_title="test error", yaxis_range=[0, 1.02])
        return fig

    @property
    def metrics(self) -> Metrics:
        """What 07 records in metrics.json: `metrics` and the learning checks."""
        return metrics(self.result) | learning.metrics(self.checks)
