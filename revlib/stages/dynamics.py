"""Notebook 04: the probe-training schedule, scoring every checkpoint, and the paper's Figure 2.

For each probe-training set D in `probes.train_sets` (probe_forward, probe_reverse, probe_mix from
notebook 01): SFT for `sft_epochs` saving every `sft_save_every`, then DPO on D's directional pairs
for `dpo_epochs` saving every `dpo_save_every`. Every checkpoint (and the base, if asked) is scored
on the test probes; a (train, test) pair reads the scores of D's checkpoints on probe_test_<test>.
For a test example x, y+ is x's own response and y- its twin's (the directional preference).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from revlib.data.sets import load_pairs, load_set, set_path
from revlib.core import io
from revlib.core.io import JSONObject, Metrics
from revlib.modeling import preference, probes
from revlib.params import Experiment
from revlib.core.records import Record
from revlib.stages.context import StageContext
from revlib.stages.maybe import Missing

if TYPE_CHECKING:
    from revlib.evaluation.learning import Check
    from revlib.modeling.train import Checkpoint
    from revlib.params.probes import ProbeParams

SHORT = {"forward": "f", "reverse": "r", "mix": "m"}
SCORES_FILE = "scores.parquet"
SUMMARY_FILE = "summary.csv"


@dataclass(frozen=True)
class ProbeCheckpoint:
    """A checkpoint placed on the figure's x axis."""

    train_set: str
    phase: str           # "base", "sft" or "dpo"
    epoch: float
    step: int
    x: int               # position on the x axis (base 0, then SFT, then DPO)
    path: Path
    base: str
    adapter: str | None

    @property
    def label(self) -> str:
        return "base" if self.phase == "base" else f"{self.phase.upper()} {self.epoch:g}"


def pair_name(train_set: str, test_set: str) -> str:
    return f"(D_{SHORT[train_set]}, T_{SHORT[test_set]})"


def in_distribution(train_set: str, test_set: str) -> bool:
    return train_set == test_set


def _trainer() -> ModuleType:
    from revlib.modeling import train

    return train


def train_probe_models(exp: Experiment, base: str, data_dir: Path, out_dir: Path, trainer: Any = None,
                       on_log: Callable[[JSONObject], None] | None = None) -> list[ProbeCheckpoint]:
    """SFT then DPO on each probe-training set; the checkpoints in x-axis order per train set.

    Training resumes from finished checkpoints, so a re-run after an interruption continues.
    """
    trainer = trainer or _trainer()
    p = exp.probes
    if exp.sft is None or exp.dpo is None:
        raise ValueError("stage 04 trains with the experiment's 'sft' and 'dpo' sections; both must be set")
    # the experiment's hyperparameters, with the probe schedule's epochs (a max_steps cap would cut it short)
    sft_params = exp.sft.model_copy(update={"epochs": p.sft_epochs, "save_every_epochs": p.sft_save_every,
                                            "max_steps": -1})
    dpo_params = exp.dpo.model_copy(update={"epochs": p.dpo_epochs, "save_every_epochs": p.dpo_save_every,
                                            "max_steps": -1})
    out: list[ProbeCheckpoint] = []
    for train_set in p.train_sets:
        records = load_set(data_dir, f"probe_{train_set}")
        pairs = load_pairs(data_dir, f"probe_{train_set}")
        if not records or not pairs:
            raise ValueError(f"probe_{train_set} in {data_dir} has {len(records)} records and {len(pairs)} pairs; "
                             "both must be non-empty")
        run = Path(out_dir) / "train" / train_set
        sft = trainer.sft(base, records, run / "sft", sft_params, seed=exp.seed, epochs=p.sft_epochs,
                          save_every_epochs=p.sft_save_every, on_log=on_log)
        dpo = preference.dpo_from(sft.final, pairs, run / "dpo", dpo_params, exp.seed, epochs=p.dpo_epochs,
                                 save_every_epochs=p.dpo_save_every, on_log=on_log, trainer=trainer)
        x = 0
        if p.include_base:
            out.append(ProbeCheckpoint(train_set, "base", 0.0, 0, 0, Path(base), base, None))
        for phase, result in (("sft", sft), ("dpo", dpo)):
            for ck in result.checkpoints:
                x += 1
                out.append(ProbeCheckpoint(train_set, phase, ck.epoch, ck.step, x, Path(ck.path), ck.base, ck.adapter))
    return out


def stage_checkpoints(exp: Experiment, base: str, upstream: Callable[[str, str], Path], model: str) -> list[ProbeCheckpoint]:
    """02's SFT checkpoints then 03's directional DPO checkpoints of each probe-training set, in x-axis order."""
    from revlib.modeling import train

    out: list[ProbeCheckpoint] = []
    for train_set in exp.probes.train_sets:
        x = 0
        if exp.probes.include_base:
            out.append(ProbeCheckpoint(train_set, "base", 0.0, 0, 0, Path(base), base, None))
        stages = [("sft", "02_sft")] + ([("dpo", "03_dpo")] if exp.dpo and train_set in exp.dpo.on else [])
        for phase, stage in stages:
            for ck in train.load_checkpoints(upstream(stage, f"{model}__{train_set}")):
                x += 1
                out.append(ProbeCheckpoint(train_set, phase, ck.epoch, ck.step, x, Path(ck.path), ck.base, ck.adapter))
    return out


def probe_models(exp: Experiment, base: str, data_dir: Path, out_dir: Path,
                 upstream: Callable[[str, str], Path], model: str) -> list[ProbeCheckpoint]:
    """The checkpoints to score: trained here on the probe sets, or those of stages 02 and 03."""
    if exp.probes.models == "stages":
        return stage_checkpoints(exp, base, upstream, model)
    return train_probe_models(exp, base, data_dir, out_dir)


def models_note(exp: Experiment) -> str:
    """Where the probe models came from, in a line for the report."""
    where = "trained here on the probe sets" if exp.probes.models == "train" else "the checkpoints of 02_sft and 03_dpo"
    return f"probe models: {where}"


def test_sets(exp: Experiment) -> list[str]:
    return sorted({t for _, t in exp.probes.pairs}, key=list(SHORT).index)


def load_probe_items(exp: Experiment, data_dir: Path, tokenizer: Any) -> tuple[list[probes.ProbeItem], dict[str, list[str]]]:
    """Every test probe tokenized once (a record in several test sets is scored once), and each set's ids."""
    sets = {t: load_set(data_dir, f"probe_test_{t}") for t in ("forward", "reverse", "mix")
            if set_path(data_dir, f"probe_test_{t}").exists()}
    missing = [t for t in test_sets(exp) if t not in sets]
    if missing:
        raise FileNotFoundError(f"test probe sets {[f'probe_test_{t}' for t in missing]} not found in {data_dir}/sets")
    unique: dict[str, Record] = {}
    for recs in sets.values():
        for r in recs:
            unique.setdefault(r.id, r)
    records = list(unique.values())
    items = probes.build_items(tokenizer, records, records, exp.probes.max_response_tokens,
                               extras=exp.probes.extra_probes)
    return items, {t: [r.id for r in sets[t]] for t in test_sets(exp)}


@dataclass(frozen=True)
class ScoringStats:
    """How scoring went: seconds, response tokens, lower layers shared, loads of bases and adapters."""

    scoring_seconds: float
    response_tokens_scored: int
    shared_lower_layers: int
    tokens_per_second: float
    base_loads: int
    adapter_loads: int
    cpu_matmul: str = "float32"  # the precision of the products on a CPU (the scorer's resolved cpu_matmul)

    def __getitem__(self, key: str) -> float | int:  # read like the metrics.json entries it becomes
        return getattr(self, key)

    def metrics(self) -> Metrics:
        return {f"scoring/{k}": v for k, v in self.__dict__.items()}


def score_checkpoints(exp: Experiment, checkpoints: list[ProbeCheckpoint], items: list[probes.ProbeItem],
                      members: dict[str, list[str]], on_checkpoint: Callable[[ProbeCheckpoint, float], None] | None = None
                      ) -> tuple[pd.DataFrame, ScoringStats]:
    """Per-example scores of every (train, test) pair at every checkpoint, and scoring throughput.

    Checkpoints are visited grouped by the base their adapters apply to, so each base loads once.
    """
    p = exp.probes
    wanted = {train: [t for tr, t in p.pairs if tr == train] for train in p.train_sets}
    bank, scorer = scoring_tools(p)
    meta = {it.id: it for it in items}
    rows: list[JSONObject] = []
    seconds = 0.0
    base_done: dict[str, list[probes.ItemScore]] = {}
    # the model a checkpoint needs loaded: its base for an adapter, itself for a full model
    order = sorted(checkpoints, key=lambda c: (str(c.base if c.adapter else c.path), c.adapter is not None,
                                               c.train_set, c.x))
    frozen = shared_lower_layers(checkpoints)
    try:
        for ck in order:
            if not wanted[ck.train_set]:
                continue
            if ck.phase == "base" and str(ck.path) in base_done:  # one base serves every train set
                scores = base_done[str(ck.path)]
            else:
                start = time.perf_counter()
                with bank.use(ck) as model:
                    scores = scorer.score(model, items, frozen_below=frozen)
                elapsed = time.perf_counter() - start
                seconds += elapsed
                if ck.phase == "base":
                    base_done[str(ck.path)] = scores
                if on_checkpoint:
                    on_checkpoint(ck, elapsed)
            by_id = {s.id: s for s in scores}
            for test_set in wanted[ck.train_set]:
                rows += [score_row(ck, test_set, meta[ex_id], by_id[ex_id]) for ex_id in members[test_set]]
    finally:
        bank.close()
    stats = ScoringStats(seconds, scorer.tokens_scored, frozen, probes.tokens_per_second(scorer.tokens_scored, seconds),
                         bank.base_loads, bank.adapter_loads, scorer.cpu_matmul)
    pair_rank = {pair_name(t, s): i for i, (t, s) in enumerate(p.pairs)}
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = (frame.assign(_rank=frame["pair"].map(pair_rank)).sort_values(["_rank", "x", "example"], kind="stable")
                 .drop(columns="_rank").reset_index(drop=True))
    return frame, stats


def score_row(ck: ProbeCheckpoint, test_set: str, it: probes.ProbeItem, score: probes.ItemScore) -> JSONObject:
    """One row of the per-example scores: the checkpoint, its (train, test) pair, the probe example and its scores."""
    return {"train_set": ck.train_set, "test_set": test_set, "pair": pair_name(ck.train_set, test_set),
            "distribution": "ID" if in_distribution(ck.train_set, test_set) else "OOD",
            "phase": ck.phase, "epoch": ck.epoch, "step": ck.step, "x": ck.x, "checkpoint": ck.label,
            "example": it.id, "pair_id": it.pair_id, "direction": it.direction, "task": it.task,
            **{k: v for k, v in score.row().items() if k != "id"}}


def scoring_tools(p: ProbeParams) -> tuple[probes.ModelBank, probes.Scorer]:
    """The model bank and scorer the probe params configure (one per scoring pass)."""
    return (probes.ModelBank(dtype=p.score_dtype),
            probes.Scorer(token_budget=p.token_budget, logit_chunk=p.logit_chunk, share_prompt=p.share_prompt,
                          cpu_matmul=p.cpu_matmul))


def shared_lower_layers(checkpoints: list[ProbeCheckpoint]) -> int:
    """How many lower decoder layers every checkpoint shares with the base: LoRA adapters on upper layers only
    (the DPO base is a merge of such an adapter, checked by the scorer's fingerprint); 0 when any is a full model."""
    from revlib.modeling import train

    trained = [c for c in checkpoints if c.phase != "base"]
    if not trained or any(c.adapter is None for c in trained):
        return 0
    return min(train.adapter_lowest_layer(c.adapter) for c in trained)


EXTRA_METRICS = ["alp_irrelevant", "alp_shuffled", "alp_argmax"]


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean ALP(y+), ALP(y-) and margin per (train, test) pair and checkpoint."""
    keys = ["pair", "train_set", "test_set", "distribution", "x", "checkpoint", "phase", "epoch"]
    extra = {m: (m, "mean") for m in EXTRA_METRICS if m in scores}
    out = (scores.groupby(keys, sort=False)
           .agg(alp_chosen=("alp_chosen", "mean"), alp_rejected=("alp_rejected", "mean"),
                margin=("margin", "mean"), margin_std=("margin", "std"), examples=("example", "count"), **extra)
           .reset_index())
    pair_order = {name: i for i, name in enumerate(dict.fromkeys(scores["pair"]))}  # as the scores list them
    return (out.assign(_rank=out["pair"].map(pair_order)).sort_values(["_rank", "x"], kind="stable")
            .drop(columns="_rank").reset_index(drop=True))


PANELS = [("alp_chosen", "(a) ALP(y+)"), ("alp_rejected", "(b) ALP(y−)"), ("margin", "(c) margin ALP(y+) − ALP(y−)")]


def figure(summary: pd.DataFrame, title: str = "Probe dynamics across SFT and DPO checkpoints") -> go.Figure:
    """Three panels; x runs through the SFT checkpoints then the DPO ones, the boundary marked."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in PANELS], horizontal_spacing=0.07)
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    for i, (pair, g) in enumerate(summary.groupby("pair", sort=False)):
        g = g.sort_values("x")
        dash = "solid" if g["distribution"].iloc[0] == "ID" else "dash"
        custom = g[["checkpoint", "alp_chosen", "alp_rejected", "margin", "examples"]].to_numpy()
        for col, (metric, _) in enumerate(PANELS, start=1):
            fig.add_trace(go.Scatter(
                x=g["x"], y=g[metric], mode="lines+markers", name=f"{pair} {g['distribution'].iloc[0]}",
                legendgroup=pair, showlegend=col == 1,
                line=dict(color=palette[i % len(palette)], dash=dash), customdata=custom,
                hovertemplate=(f"<b>{pair}</b> %{{customdata[0]}}<br>ALP(y+) %{{customdata[1]:.6f}}"
                               "<br>ALP(y−) %{customdata[2]:.6f}<br>margin %{customdata[3]:.6f}"
                               "<br>examples %{customdata[4]}<extra></extra>"),
            ), row=1, col=col)
    ticks = summary.drop_duplicates("x").sort_values("x")
    last_sft = summary.loc[summary["phase"] != "dpo", "x"].max()
    for col in (1, 2, 3):
        fig.update_xaxes(tickvals=ticks["x"], ticktext=ticks["checkpoint"], tickangle=-45, row=1, col=col)
        if summary["phase"].eq("dpo").any() and pd.notna(last_sft):
            fig.add_vline(x=last_sft + 0.5, line=dict(color="grey", dash="dot"), row=1, col=col)
            fig.add_annotation(x=last_sft + 0.5, y=1, yref="y domain" if col == 1 else f"y{col} domain",
                               xref="x" if col == 1 else f"x{col}", text="SFT | DPO", showarrow=False,
                               yanchor="top", xanchor="center", bgcolor="rgba(255,255,255,0.8)",
                               font=dict(size=10, color="grey"))
    fig.update_yaxes(title_text="mean log p per token", row=1, col=1)
    fig.update_layout(title=title, template="plotly_white", height=460, hovermode="closest",
                      legend=dict(orientation="h", y=-0.3), margin=dict(l=60, r=20, t=80, b=40))
    return fig


def table(summary: pd.DataFrame) -> pd.DataFrame:
    """The figure's numbers, one row per (pair, checkpoint)."""
    cols = ["pair", "distribution", "checkpoint", "alp_chosen", "alp_rejected", "margin", "margin_std", "examples"]
    return summary[cols].rename(columns={"alp_chosen": "ALP(y+)", "alp_rejected": "ALP(y-)"})


def headline(summary: pd.DataFrame) -> pd.DataFrame:
    """Margin at the end of SFT and at the end of DPO, per pair."""
    rows = []
    for pair, g in summary.groupby("pair", sort=False):
        sft, dpo = g[g["phase"] == "sft"], g[g["phase"] == "dpo"]
        row = {"pair": pair, "distribution": g["distribution"].iloc[0]}
        if not sft.empty:
            row["margin after SFT"] = sft.sort_values("x")["margin"].iloc[-1]
        if not dpo.empty:
            row["margin after DPO"] = dpo.sort_values("x")["margin"].iloc[-1]
        rows.append(row)
    return pd.DataFrame(rows)


def save(scores: pd.DataFrame, summary: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """Per-example scores as parquet (to slice), the summary as CSV, the headline fragment for the index."""
    out_dir = Path(out_dir)
    ProbeResult(scores).save(out_dir)
    with io.atomic_path(out_dir / SUMMARY_FILE) as tmp:
        summary.to_csv(tmp, index=False)
    io.write_text(out_dir / "headline_probes.html",
                  headline(summary).to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0,
                                            classes="revlib-table"))
    return {"scores": out_dir / SCORES_FILE, "summary": out_dir / SUMMARY_FILE}


def metrics(summary: pd.DataFrame, stats: ScoringStats) -> Metrics:
    out = stats.metrics()
    for row in headline(summary).to_dict("records"):
        for key in ("margin after SFT", "margin after DPO"):
            if key in row:
                out[f"{row['pair']}/{key.replace(' ', '_')}"] = row[key]
    return out


def stage_metrics(summary: pd.DataFrame, stats: ScoringStats, checkpoints: list[ProbeCheckpoint],
                  items: list[probes.ProbeItem], comparison: pd.DataFrame | None, checks: list[Check]) -> Metrics:
    """What 04 records in metrics.json: the headline margins and scoring throughput, how much was scored, each DPO
    variant's margin per test set (where 03 ran per-step DPO), and the learning checks."""
    from revlib.evaluation import learning

    variants = {} if comparison is None else {f"variants/{r['model']}/{r['test set']}/margin": r["margin"]
                                              for r in comparison.to_dict("records")}
    return (metrics(summary, stats) | {"checkpoints": len(checkpoints), "examples": len(items)} | variants
            | learning.metrics(checks))


def margin_by_direction(scores: pd.DataFrame, last: int = 12) -> pd.DataFrame:
    """Mean margin per (pair, checkpoint, test-example direction): the last `last` rows, to show slicing the scores."""
    return scores.groupby(["pair", "checkpoint", "direction"], sort=False)["margin"].mean().reset_index().tail(last)


def checkpoint_frame(checkpoints: list[ProbeCheckpoint]) -> pd.DataFrame:
    return pd.DataFrame([{"train set": c.train_set, "x": c.x, "checkpoint": c.label, "step": c.step,
                          "LoRA": c.adapter is not None, "path": str(c.path)} for c in checkpoints])
# ---------------------------------------------------------------- directional vs per-step DPO and named variants

# ---------------------------------------------------------------- directional vs per-step DPO (dpo.per_step)


def dpo_variant_models(exp: Experiment, upstream: Callable[[str, str], Path], model: str) -> dict[str, Checkpoint]:
    """For each SFT model that also ran per-step DPO: the SFT model, its directional DPO and its per-step DPO; for
    each named variant of dpo.variants run on a probe-training set: the same SFT model and directional DPO, and the
    variant's final model."""
    from revlib.modeling import train
    from revlib.params.stages import named_variant_cells

    wanted: list[tuple[str, str, str]] = []
    for s in exp.dpo.per_step.on if exp.dpo and exp.dpo.per_step else []:
        wanted += [(f"SFT {s}", "02_sft", f"{model}__{s}"),
                   (f"SFT {s} + directional DPO", "03_dpo", f"{model}__{s}"),
                   (f"SFT {s} + per-step DPO", "03_dpo", f"{model}__{s}__per_step")]
    for cell, v in named_variant_cells(exp, model, exp.probes.train_sets) if exp.dpo else []:
        s = v["train_set"]
        wanted += [(f"SFT {s}", "02_sft", f"{model}__{s}"),
                   (f"SFT {s} + directional DPO", "03_dpo", f"{model}__{s}"),
                   (f"SFT {s} + DPO {v['variant']}", "03_dpo", cell)]
    out: dict[str, Checkpoint] = {}
    for label, stage, cell in wanted:
        if label not in out:
            out[label] = train.load_checkpoints(upstream(stage, cell))[-1]
    return out


VARIANTS_FILE = "dpo_variants.csv"


def dpo_variants(exp: Experiment, upstream: Callable[[str, str], Path], model: str, items: list[probes.ProbeItem],
                 members: dict[str, list[str]], out_dir: Path) -> pd.DataFrame | None:
    """Where 03 also ran per-step DPO or a named variant: its SFT model, directional DPO and the other DPO scored on
    the same test probes (written to dpo_variants.csv); None when 03 ran neither."""
    variant_models = dpo_variant_models(exp, upstream, model)
    if not variant_models:
        return None
    comparison = compare_models(exp, items, members, variant_models)
    comparison.to_csv(Path(out_dir) / VARIANTS_FILE, index=False)
    return comparison


def compare_models(exp: Experiment, items: list[probes.ProbeItem], members: dict[str, list[str]],
                   checkpoints: dict[str, Checkpoint]) -> pd.DataFrame:
    """Mean ALP(y+), ALP(y-) and margin of each labelled checkpoint on each test probe set."""
    p = exp.probes
    bank, scorer = scoring_tools(p)
    rows = []
    try:
        for label, ck in checkpoints.items():
            with bank.use(ck) as model:
                scores = {s.id: s for s in scorer.score(model, items)}
            for test_set, ids in members.items():
                picked = [scores[i] for i in ids]
                rows.append({"model": label, "test set": f"T_{SHORT[test_set]}", "examples": len(picked),
                             "ALP(y+)": sum(s.alp_chosen for s in picked) / len(picked),
                             "ALP(y-)": sum(s.alp_rejected for s in picked) / len(picked),
                             "margin": sum(s.margin for s in picked) / len(picked)})
    finally:
        bank.close()
    return pd.DataFrame(rows)


def comparison_figure(frame: pd.DataFrame | None) -> go.Figure | None:
    """Margin per test set of each DPO variant and its SFT model; None without variants."""
    if frame is None:
        return None
    fig = go.Figure()
    for label, grp in frame.groupby("model", sort=False):
        fig.add_trace(go.Bar(name=label, x=grp["test set"], y=grp["margin"],
                             hovertemplate="%{x}: margin %{y:.4f}<extra>" + label + "</extra>"))
    fig.update_layout(barmode="group", template="plotly_white", height=380,
                      title="Margin ALP(y+) - ALP(y-) on the test probes: DPO variants from the same SFT model",
                      yaxis_title="mean margin (nats per token)", margin=dict(l=50, r=20, t=60, b=40))
    return fig


def last_checkpoint(frame: pd.DataFrame, phase: str) -> pd.DataFrame | None:
    """Rows of each (train, test) pair at its last checkpoint of `phase` (scores or summary rows)."""
    part = frame[frame["phase"] == phase]
    if part.empty:
        return None
    return part[part["x"] == part.groupby("pair")["x"].transform("max")]


def checks(summary: pd.DataFrame, min_rise: float = 0.5, min_after_sft: float | None = -0.5,
           min_fall_dpo: float | None = 0.05) -> list[Check]:
    """Did the probe models learn? In distribution: SFT raised ALP(y+) by at least `min_rise` (and above
    `min_after_sft`, where a bar is set) and opened a positive margin, and DPO lowered ALP(y-) by `min_fall_dpo`
    (where a bar is set), compared on the training sets that have DPO models."""
    from revlib.evaluation import learning

    idf = summary[summary["distribution"] == "ID"]

    def at(phase: str, metric: str, frame: pd.DataFrame = idf) -> float | None:
        last = last_checkpoint(frame, phase)
        return None if last is None else float(last[metric].mean())

    out = []
    base, sft = at("base", "alp_chosen"), at("sft", "alp_chosen")
    if sft is not None:
        if base is not None:
            out.append(learning.change("in-distribution ALP(y+), base to last SFT checkpoint", base, sft, +1, min_rise))
        if min_after_sft is not None:
            out.append(learning.Check("in-distribution ALP(y+) after SFT", sft, min_after_sft, sft > min_after_sft,
                                      f"{sft:.3f} nats per token; needs above {min_after_sft:g} (the response is "
                                      "likely, not just likelier)"))
        margin = at("sft", "margin")
        out.append(learning.change("in-distribution margin ALP(y+) - ALP(y-) after SFT", 0.0, margin, +1, 0.05))
    with_dpo = idf[idf["train_set"].isin(set(idf.loc[idf["phase"] == "dpo", "train_set"]))]
    neg_sft, neg_dpo = at("sft", "alp_rejected", with_dpo), at("dpo", "alp_rejected", with_dpo)
    if min_fall_dpo is not None and neg_sft is not None and neg_dpo is not None:
        out.append(learning.change("in-distribution ALP(y-), last SFT to last DPO checkpoint", neg_sft, neg_dpo, -1,
                                   min_fall_dpo))
    return out


IN_SAMPLE_FILE = "in_sample.csv"
IN_SAMPLE_SCORES_FILE = "in_sample_scores.parquet"
IN_SAMPLE_EXTRAS = ("irrelevant",)  # of the extra probes, only the one a claim reads in sample (the mass row)


def in_sample(exp: Experiment, checkpoints: list[ProbeCheckpoint], data_dir: Path, base: str, summary: pd.DataFrame,
              out_dir: Path) -> pd.DataFrame | None:
    """With `probes.in_sample`: the probe-training rows scored per example (`in_sample_scores`, saved as
    in_sample_scores.parquet for the claims) and `in_sample_table` of them, written to in_sample.csv; None when it is
    off (only the held-out test probes are scored)."""
    if not exp.probes.in_sample:
        return None
    from revlib.modeling import models

    scores = in_sample_scores(exp, checkpoints, data_dir, models.load_tokenizer(base))
    InSampleScores(scores).save(out_dir)
    table = in_sample_table(scores, summary)
    table.to_csv(Path(out_dir) / IN_SAMPLE_FILE, index=False)
    return table


def in_sample_scores(exp: Experiment, checkpoints: list[ProbeCheckpoint], data_dir: Path, tokenizer: Any) -> pd.DataFrame:
    """Per-example scores on the rows the models were trained on, as the r1k authors score them: for each (train,
    test) pair of `probes.pairs`, probe_<test> (the training rows of that direction, or their twins) scored by the
    train set's models at the base and its last SFT and DPO checkpoint. Columns as scores.parquet's."""
    p = exp.probes
    last = {(ck.train_set, ck.phase): ck for ck in end_checkpoints(checkpoints)}
    bank, scorer = scoring_tools(p)
    frozen = shared_lower_layers(checkpoints)
    every = load_set(data_dir, "probe_mix")  # both directions: each training set's rows and their twins
    all_items = probes.build_items(tokenizer, every, every, p.max_response_tokens, extras=p.extra_probes)
    all_items = [replace(it, extras=tuple(e for e in it.extras if e[0] in IN_SAMPLE_EXTRAS)) for it in all_items]
    meta = {it.id: it for it in all_items}
    members = {t: [r.id for r in load_set(data_dir, f"probe_{t}")] for t in {t for _, t in p.pairs}}
    rows: list[JSONObject] = []
    base_scores: dict[str, probes.ItemScore] = {}
    try:
        for train_set in p.train_sets:
            tests = [t for tr, t in p.pairs if tr == train_set]
            for phase in ("base", "sft", "dpo"):
                ck = last.get((train_set, phase))
                if ck is None or not tests:
                    continue
                if phase == "base" and base_scores:  # one base serves every training set
                    scored = base_scores
                else:
                    # every pass scores all items: the lower layers' states, computed once for them, are reused
                    with bank.use(ck) as model:
                        scored = {sc.id: sc for sc in scorer.score(model, all_items, frozen_below=frozen)}
                    if phase == "base":
                        base_scores = scored
                for test_set in tests:
                    rows += [score_row(ck, test_set, meta[ex_id], scored[ex_id]) for ex_id in members[test_set]]
    finally:
        bank.close()
    return pd.DataFrame(rows)


def end_checkpoints(checkpoints: list[ProbeCheckpoint]) -> list[ProbeCheckpoint]:
    """The base and the last SFT and DPO checkpoint of each training set, in the given order."""
    last: dict[tuple[str, str], ProbeCheckpoint] = {}
    for ck in checkpoints:
        key = (ck.train_set, ck.phase)
        if key not in last or ck.x > last[key].x:
            last[key] = ck
    return [ck for ck in checkpoints if last[(ck.train_set, ck.phase)] is ck]


def in_sample_table(in_sample_scores: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """In distribution, mean ALP(y+), ALP(y-) and margin on the probe-training rows beside the held-out test probes,
    at the base and the last SFT and DPO checkpoint of each training set."""
    rows = []
    own = in_sample_scores[in_sample_scores["distribution"] == "ID"]
    for (pair, train_set, x), g in own.groupby(["pair", "train_set", "x"], sort=False):
        held = summary[(summary["train_set"] == train_set) & (summary["test_set"] == train_set) & (summary["x"] == x)]
        row = {"pair": pair, "checkpoint": g["checkpoint"].iloc[0],
               "in-sample ALP(y+)": float(g["alp_chosen"].mean()), "in-sample ALP(y-)": float(g["alp_rejected"].mean()),
               "in-sample margin": float(g["margin"].mean()), "in-sample n": len(g)}
        if not held.empty:
            row |= {"held-out ALP(y+)": float(held["alp_chosen"].iloc[0]),
                    "held-out ALP(y-)": float(held["alp_rejected"].iloc[0]),
                    "held-out margin": float(held["margin"].iloc[0]), "held-out n": int(held["examples"].iloc[0])}
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the r1k authors' ALP measure, beside revlib's

# revlib's own measure scores the response tokens after revlib's prompt (`probes.build_items`). The r1k authors'
# script scores their published rows differently (`probes.authors_items`: the whole `text` chat string after their
# own prompt, cut to their cap, first token dropped); their released Figure 2 numbers are on that measure, so the
# comparison with them reads it. Where a row's `text` comes from:
# - a row of an r1k-format file (the published 100 rows): that row's own `question`, `text` and `worse-text`, read
#   back through revlib's source reader from the file 01 read (its meta names file and row);
# - an s1K row with a teacher's twin (the replicas): the conversation revlib trained on, with y+ resp. its twin's
#   response, as the authors' `text` was the string their SFT trained on;
# - the task world: not applicable (its rows are no chat transcripts of that data).
AUTHORS_SCORES_FILE = "authors_scores.parquet"
AUTHORS_IN_SAMPLE_FILE = "authors_in_sample_scores.parquet"
AUTHORS_FIRST_ROWS = 50  # the authors' `first50` subset: df.iloc[:50] of their probe file
RENDERED_TASKS = ("s1k",)  # real text whose `text` the authors' way is the conversation trained on


@dataclass(frozen=True)
class AuthorsMeasure:
    """How 04 read the authors' measure (authors_measure.json): whether it applies here and why not, the token cap,
    at which checkpoints, where `text` came from, the rows their script would skip, and the base's mean ALP(text) over
    the probe file's first 50 rows at their 1,000-token cap."""

    applicable: bool
    reason: str
    max_tokens: int
    checkpoints: str
    texts: str = ""
    rows: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    probe_file: str | None = None
    base_first_rows_alp: float | None = None
    base_first_rows: int = 0
    seconds: float = 0.0
    tokens_scored: int = 0

    FILE = "authors_measure.json"

    @classmethod
    def exists(cls, run_dir: Path) -> bool:
        return (Path(run_dir) / cls.FILE).exists()

    @classmethod
    def load(cls, run_dir: Path) -> AuthorsMeasure:
        return cls(**io.read_json(Path(run_dir) / cls.FILE))

    def save(self, run_dir: Path) -> Path:
        io.write_json(Path(run_dir) / self.FILE, asdict(self))
        return Path(run_dir) / self.FILE

    @property
    def note(self) -> str:
        """The measure in a line, for the page."""
        if not self.applicable:
            return f"The r1k authors' ALP measure: not applicable here. {self.reason}"
        which = "every checkpoint scored" if self.checkpoints == "all" else "the base and the last SFT and DPO checkpoints"
        cap = ("their cap" if self.max_tokens == probes.AUTHORS_MAX_TOKENS
               else f"theirs is {probes.AUTHORS_MAX_TOKENS:,}; probes.authors_measure_max_tokens")
        return (f"The r1k authors' ALP measure, capped at {self.max_tokens:,} tokens of the `text` chat string ({cap}), "
                f"at {which}, {self.rows} rows each ({self.texts}).")

    def metrics(self) -> Metrics:
        out: Metrics = {"authors/applicable": self.applicable, "authors/max_tokens": self.max_tokens}
        if self.applicable:
            out |= {"authors/seconds": self.seconds, "authors/tokens_scored": self.tokens_scored,
                    "authors/rows": self.rows}
        if self.base_first_rows_alp is not None:
            out["authors/base_first50_alp"] = self.base_first_rows_alp
        return out


def authors_rows(records: list[Record], tokenizer: Any) -> tuple[list[probes.AuthorsRow], dict[str, str], str]:
    """Each record as the authors' script reads a row (see above), the records it cannot read with why, and where the
    texts came from in words. `records` must hold each record's twin."""
    from revlib.data import sources

    by_key = {(r.pair_id, r.direction): r for r in records}
    files: dict[str, list[dict[str, Any]]] = {}
    rows: list[probes.AuthorsRow] = []
    left: dict[str, str] = {}
    kinds: set[str] = set()
    for rec in records:
        twin = by_key.get((rec.pair_id, "reverse" if rec.direction == "forward" else "forward"))
        if rec.task == "r1k" and rec.meta.get("source") and rec.meta.get("row") is not None:
            path = str(rec.meta["source"])
            if path not in files:
                if not Path(path).exists():
                    raise FileNotFoundError(f"the authors' measure reads `text` and `worse-text` from the r1k file 01 "
                                            f"read, {path}, which is no longer there")
                files[path] = sources.load_rows(None, Path(path))
            if rec.meta.get("column") != "text":
                left[rec.id] = "the file has no row of its own for it (its response is another row's worse-text)"
                continue
            row = files[path][int(rec.meta["row"])]
            kind = "original" if rec.direction == "forward" else "flipped"
            if (sources.stable_pair_id("r1k", str(row.get("question", ""))) != rec.pair_id
                    or row.get("sample_type") != kind):
                raise ValueError(f"{path} row {rec.meta['row']} is not probe {rec.id}'s {kind} row any more: the "
                                 "file changed since 01 read it; re-run 01")
            rows.append(probes.AuthorsRow(rec.id, row["question"], row["text"], row["worse-text"], rec.pair_id,
                                          rec.direction, rec.task))
            kinds.add(f"the `text` and `worse-text` of {Path(path).name}'s rows")
        elif rec.task in RENDERED_TASKS and twin is not None:
            forward = rec if rec.direction == "forward" else twin  # `question` holds x_f in both of their rows
            rows.append(probes.AuthorsRow(
                rec.id, forward.question, probes.conversation_text(tokenizer, rec.question, rec.reasoning, rec.answer),
                probes.conversation_text(tokenizer, rec.question, twin.reasoning, twin.answer), rec.pair_id,
                rec.direction, rec.task))
            kinds.add("for rows not in their file, the conversation trained on, with y+ resp. its twin's response")
        else:
            left[rec.id] = (f"its rows ({rec.task}) have no `text` / `worse-text` chat strings: the authors' measure "
                            "reads the r1k rows' (or, for s1K rows, the conversation trained on)")
    return rows, left, "; ".join(sorted(kinds))


def authors_probe_file(exp: Experiment) -> Path | None:
    """The r1k-format file the run reads its rows from (data.probe_file, or an r1k source's local file)."""
    d = exp.data
    if d is None:
        return None
    if d.probe_file is not None:
        return Path(d.probe_file)
    return Path(d.source.path) if d.source.kind == "r1k" and d.source.path else None


def score_each(p: ProbeParams, checkpoints: list[ProbeCheckpoint], items: list[probes.ProbeItem],
               frozen: int) -> tuple[dict[ProbeCheckpoint, dict[str, probes.ItemScore]], float, int]:
    """Every item scored by every checkpoint (one base scored once, checkpoints grouped by the model they load), the
    seconds it took and the tokens scored."""
    bank, scorer = scoring_tools(p)
    order = sorted(checkpoints, key=lambda c: (str(c.base if c.adapter else c.path), c.adapter is not None,
                                               c.train_set, c.x))
    out: dict[ProbeCheckpoint, dict[str, probes.ItemScore]] = {}
    base_done: dict[str, dict[str, probes.ItemScore]] = {}
    start = time.perf_counter()
    try:
        for ck in order:
            if ck.phase == "base" and str(ck.path) in base_done:
                out[ck] = base_done[str(ck.path)]
                continue
            with bank.use(ck) as model:
                out[ck] = {s.id: s for s in scorer.score(model, items, frozen_below=frozen)}
            if ck.phase == "base":
                base_done[str(ck.path)] = out[ck]
    finally:
        bank.close()
    return out, time.perf_counter() - start, scorer.tokens_scored


def authors_measure(exp: Experiment, checkpoints: list[ProbeCheckpoint], data_dir: Path, tokenizer: Any,
                    out_dir: Path) -> AuthorsReading:
    """The authors' measure at the checkpoints `probes.authors_measure_checkpoints` asks for: held out (the test
    probes, authors_scores.parquet) and, with `probes.in_sample`, in sample (the probe-training rows,
    authors_in_sample_scores.parquet), per example as scores.parquet; the base's mean ALP(text) over the probe file's
    first 50 rows at 1,000 tokens; what it did in authors_measure.json. Where no row can be read their way, only that
    record, with the reason."""
    p = exp.probes
    held = {t: load_set(data_dir, f"probe_test_{t}") for t in test_sets(exp)}
    trained = {t: load_set(data_dir, f"probe_{t}") for t in test_sets(exp)} if p.in_sample else {}
    unique: dict[str, Record] = {}
    for name in ("probe_test_mix", "probe_mix"):  # both directions: every row and its twin
        if set_path(data_dir, name).exists():
            for r in load_set(data_dir, name):
                unique.setdefault(r.id, r)
    for recs in [*held.values(), *trained.values()]:
        for r in recs:
            unique.setdefault(r.id, r)
    wanted = {r.id for recs in [*held.values(), *trained.values()] for r in recs}
    rows, left, texts = authors_rows(list(unique.values()), tokenizer)
    rows = [r for r in rows if r.id in wanted]
    if not rows:
        reason = next(iter(left.values()), "no probe rows")
        measure = AuthorsMeasure(False, f"No probe row can be read the authors' way: {reason}.",
                                 p.authors_measure_max_tokens, p.authors_measure_checkpoints)
        measure.save(out_dir)
        return AuthorsReading(measure, None, None)
    items, skipped = probes.authors_items(tokenizer, rows, p.authors_measure_max_tokens)
    skipped |= {k: v for k, v in left.items() if k in wanted}
    at = end_checkpoints(checkpoints) if p.authors_measure_checkpoints == "ends" else checkpoints
    at = [ck for ck in at if any(train == ck.train_set for train, _ in p.pairs)]
    scored, seconds, tokens = score_each(p, at, items, shared_lower_layers(checkpoints))
    meta = {it.id: it for it in items}

    def frame(members: dict[str, list[Record]]) -> pd.DataFrame:
        out = [score_row(ck, test, meta[r.id], scored[ck][r.id])
               for train, test in p.pairs for ck in at if ck.train_set == train
               for r in members[test] if r.id in meta]
        return pd.DataFrame(out)

    held_out = frame(held)
    in_sample = frame(trained) if p.in_sample else None
    AuthorsScores(held_out).save(out_dir)
    if in_sample is not None:
        AuthorsInSampleScores(in_sample).save(out_dir)
    base = next((ck for ck in at if ck.phase == "base"), None)
    first_alp, first_n, more_s, more_t = authors_first_rows(exp, base, tokenizer, items, scored.get(base))
    measure = AuthorsMeasure(True, "", p.authors_measure_max_tokens, p.authors_measure_checkpoints, texts, len(items),
                             skipped, str(authors_probe_file(exp)) if authors_probe_file(exp) else None,
                             first_alp, first_n, seconds + more_s, tokens + more_t)
    measure.save(out_dir)
    return AuthorsReading(measure, held_out, in_sample)


def authors_first_rows(exp: Experiment, base: ProbeCheckpoint | None, tokenizer: Any, items: list[probes.ProbeItem],
                       base_scores: dict[str, probes.ItemScore] | None) -> tuple[float | None, int, float, int]:
    """The base's mean authors' ALP(text) over the probe file's first 50 rows (their `first50`) at their 1,000-token
    cap, whatever `probes.authors_measure_max_tokens` is; rows the base already scored at that cap are reused.
    (mean or None without a probe file or a base, rows averaged, seconds, tokens scored)."""
    from revlib.data import sources

    path = authors_probe_file(exp)
    if path is None or base is None:
        return None, 0, 0.0, 0
    cap = probes.AUTHORS_MAX_TOKENS
    file_rows = sources.load_rows(None, path)[:AUTHORS_FIRST_ROWS]
    # their script skips a row whose text or worse-text gives -inf; only ALP(text) is averaged here
    kept = [(i, r) for i, r in enumerate(file_rows)
            if probes.authors_completion_ids(tokenizer, r.get("text"), cap) is not None
            and probes.authors_completion_ids(tokenizer, r.get("worse-text"), cap) is not None]
    reuse: dict[tuple[tuple[int, ...], tuple[int, ...]], float] = {}
    if base_scores is not None and exp.probes.authors_measure_max_tokens == cap:
        reuse = {(it.prompt_ids, it.chosen_ids): base_scores[it.id].alp_chosen for it in items}
    rows = [probes.AuthorsRow(f"first{AUTHORS_FIRST_ROWS}-{i}", r["question"], r["text"], None) for i, r in kept]
    first, _ = probes.authors_items(tokenizer, rows, cap)
    values = {it.id: reuse[(it.prompt_ids, it.chosen_ids)] for it in first if (it.prompt_ids, it.chosen_ids) in reuse}
    todo = [it for it in first if it.id not in values]
    seconds, tokens = 0.0, 0
    if todo:
        scored, seconds, tokens = score_each(exp.probes, [base], todo, 0)
        values |= {k: s.alp_chosen for k, s in scored[base].items()}
    return (sum(values.values()) / len(values) if values else None), len(values), seconds, tokens


@dataclass
class AuthorsReading:
    """The authors' measure as 04 read it: the record, and the per-example scores held out and in sample."""

    measure: AuthorsMeasure
    held_out: pd.DataFrame | None
    in_sample: pd.DataFrame | None

    def held_out_summary(self) -> pd.DataFrame | None:
        return None if self.held_out is None or self.held_out.empty else summarize(self.held_out)

    def paper_summary(self) -> pd.DataFrame | None:
        """The scores the authors' protocol reads (in sample where scored, else held out), summarised."""
        frame = self.in_sample if self.in_sample is not None and not self.in_sample.empty else self.held_out
        return None if frame is None or frame.empty else summarize(frame)

    def table(self, summary: pd.DataFrame, in_sample_scores: pd.DataFrame | None) -> pd.DataFrame | Missing:
        """Mean ALP(y+), ALP(y−) and margin per pair and checkpoint: the authors' measure and revlib's response-only
        one, in sample and held out, at the checkpoints where the authors' measure was read."""
        if not self.measure.applicable:
            return Missing(self.measure.note)
        parts = [("the authors'", "held out", self.held_out), ("the authors'", "in sample", self.in_sample),
                 ("revlib's (response only)", "held out", summary),
                 ("revlib's (response only)", "in sample", in_sample_scores)]
        keep = set(zip(self.held_out["pair"], self.held_out["x"])) if self.held_out is not None else set()
        rows = []
        for measure, where, frame in parts:
            if frame is None or frame.empty:
                continue
            s = frame if "examples" in frame else summarize(frame)
            for r in s.to_dict("records"):
                if (r["pair"], r["x"]) not in keep:
                    continue
                rows.append({"pair": r["pair"], "checkpoint": r["checkpoint"], "x": r["x"], "measure": measure,
                             "reading": where, "ALP(y+)": r["alp_chosen"], "ALP(y-)": r["alp_rejected"],
                             "margin": r["margin"], "n": r["examples"]})
        order = {p: i for i, p in enumerate(dict.fromkeys(summary["pair"]))}
        return (pd.DataFrame(rows).assign(_rank=lambda f: f["pair"].map(order))
                .sort_values(["_rank", "x", "reading", "measure"], kind="stable").drop(columns=["_rank", "x"])
                .reset_index(drop=True))


# ---------------------------------------------------------------- where the mass goes (r1k abstract; Ren & Sutherland)

MASS_SERIES = [("alp_chosen", "y+"), ("alp_rejected", "y−"), ("alp_irrelevant", "another question's y+ (irrelevant)"),
               ("alp_shuffled", "y+ shuffled"), ("alp_argmax", "argmax token along y+")]


def mass_figure(summary: pd.DataFrame, train_set: str = "mix") -> go.Figure | None:
    """ALP of y+, y-, an irrelevant response, shuffled y+ and the argmax token, across SFT then DPO, in distribution.

    DPO "shifts the probability mass toward irrelevant outputs" (r1k) and squeezes it into the argmax
    token (Ren & Sutherland): both show as lines rising while y+ and y- fall.
    """
    part = summary[(summary["train_set"] == train_set) & (summary["distribution"] == "ID")]
    if part.empty or "alp_irrelevant" not in part:
        return None
    part = part.sort_values("x")
    fig = go.Figure()
    for metric, label in MASS_SERIES:
        if metric in part:
            fig.add_trace(go.Scatter(x=part["x"], y=part[metric], mode="lines+markers", name=label,
                                     hovertemplate=f"{label}: %{{y:.4f}}<extra>%{{text}}</extra>", text=part["checkpoint"]))
    fig.update_xaxes(tickvals=part["x"], ticktext=part["checkpoint"], tickangle=-45)
    last_sft = part.loc[part["phase"] != "dpo", "x"].max()
    if part["phase"].eq("dpo").any():
        fig.add_vline(x=last_sft + 0.5, line=dict(color="grey", dash="dot"), annotation_text="SFT | DPO")
    fig.update_layout(title=f"Where the mass goes: D_{SHORT[train_set]} on T_{SHORT[train_set]}, SFT then DPO",
                      yaxis_title="mean log p per token", template="plotly_white", height=420,
                      legend=dict(orientation="h", y=-0.3), margin=dict(l=60, r=20, t=60, b=40))
    return fig


def mass_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Change of each probe's ALP under DPO (last SFT to last DPO checkpoint), in distribution."""
    rows = []
    idf = summary[summary["distribution"] == "ID"]
    sft, dpo = last_checkpoint(idf, "sft"), last_checkpoint(idf, "dpo")
    if sft is None or dpo is None:
        return pd.DataFrame()
    for pair in dpo["pair"].unique():
        a, b = sft[sft["pair"] == pair].iloc[0], dpo[dpo["pair"] == pair].iloc[0]
        for metric, label in MASS_SERIES:
            if metric in a and pd.notna(a[metric]):
                rows.append({"pair": pair, "probe": label, "after SFT": a[metric], "after DPO": b[metric],
                             "change under DPO": b[metric] - a[metric]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- what 04 hands on: typed, read back from its run dir

PROBE_KEY = ["train_set", "test_set", "example"]  # one probe example of one (train, test) pair


@dataclass
class ProbeResult:
    """04's per-example scores (scores.parquet: one row per checkpoint x (train, test) pair x test example) as later
    readers use them: filtered on fields (distribution, phase, train set), never on display labels."""

    scores: pd.DataFrame

    FILE = SCORES_FILE

    @classmethod
    def exists(cls, run_dir: Path) -> bool:
        return (Path(run_dir) / cls.FILE).exists()

    @classmethod
    def load(cls, run_dir: Path) -> ProbeResult:
        return cls(pd.read_parquet(Path(run_dir) / cls.FILE))

    def save(self, run_dir: Path) -> Path:
        with io.atomic_path(Path(run_dir) / self.FILE) as tmp:
            self.scores.to_parquet(tmp, index=False)
        return Path(run_dir) / self.FILE

    @property
    def test_examples(self) -> int:
        return int(self.scores["example"].nunique())

    @property
    def checkpoints_scored(self) -> int:
        """Distinct checkpoints 04 scored: the base once, and each trained model's checkpoints."""
        s = self.scores
        which = [c for c in ("train_set", "phase", "step", "epoch", "x") if c in s.columns]
        trained = s[s["phase"] != "base"].drop_duplicates(which)
        return len(trained) + int((s["phase"] == "base").any())

    def at(self, phase: str, distribution: str = "ID") -> pd.DataFrame | None:
        """Rows of `distribution` at each pair's last checkpoint of `phase` (every base row for "base"), indexed by
        PROBE_KEY; None when no checkpoint of that phase was scored."""
        part = self.scores[self.scores["distribution"] == distribution]
        last = part[part["phase"] == "base"] if phase == "base" else last_checkpoint(part, phase)
        if last is None or last.empty:
            return None
        return last.set_index(PROBE_KEY)

    def change(self, metric: str, first: str, second: str, distribution: str = "ID") -> pd.Series | None:
        """Per probe example (indexed by PROBE_KEY), `metric` at the last `first` checkpoint minus at the last `second`
        one, in the order of the last SFT checkpoint's rows; None when either phase is missing."""
        order, a, b = self.at("sft", distribution), self.at(first, distribution), self.at(second, distribution)
        if order is None or a is None or b is None or metric not in a or metric not in b:
            return None
        return (a[metric].reindex(order.index) - b[metric].reindex(order.index)).dropna()

    def paired(self, metric: str, first: str, second: str, distribution: str = "ID") -> list[float] | None:
        """`change` as a list of values."""
        diff = self.change(metric, first, second, distribution)
        return None if diff is None else diff.tolist()

    def mean(self, metric: str, phase: str, distribution: str = "ID") -> float | None:
        rows = self.at(phase, distribution)
        return None if rows is None else float(rows[metric].mean())


@dataclass
class InSampleScores(ProbeResult):
    """04's per-example scores on the probe-training rows themselves (in_sample_scores.parquet, with
    `probes.in_sample`): the base and each training set's last SFT and DPO checkpoint, read like ProbeResult."""

    FILE = IN_SAMPLE_SCORES_FILE


@dataclass
class AuthorsScores(ProbeResult):
    """04's per-example scores on the authors' measure, held out (authors_scores.parquet): alp_chosen is their
    ALP(text), alp_rejected their ALP(worse-text)."""

    FILE = AUTHORS_SCORES_FILE


@dataclass
class AuthorsInSampleScores(ProbeResult):
    """As AuthorsScores, on the probe-training rows (authors_in_sample_scores.parquet, with `probes.in_sample`)."""

    FILE = AUTHORS_IN_SAMPLE_FILE


@dataclass
class ProbeRun:
    """04's run for one base model: the probe checkpoints, their scores, Figure 2's summary and the checks."""

    exp: Experiment
    dir: Path
    checkpoints: list[ProbeCheckpoint]
    items: list[probes.ProbeItem]
    scores: pd.DataFrame
    summary: pd.DataFrame
    stats: ScoringStats
    checks: list[Check]
    in_sample: pd.DataFrame | None = None   # with probes.in_sample: the training examples beside the held-out ones
    comparison: pd.DataFrame | None = None  # with dpo.per_step: directional vs per-step DPO on the same probes
    authors: AuthorsReading | None = None   # the r1k authors' ALP measure, or why it does not apply

    @property
    def models_note(self) -> str:
        return models_note(self.exp)

    def checkpoint_table(self) -> pd.DataFrame:
        return checkpoint_frame(self.checkpoints)

    def stats_table(self) -> pd.DataFrame:
        return pd.DataFrame([self.stats.__dict__])

    def figure(self) -> go.Figure:
        return figure(self.summary)

    def table(self) -> pd.DataFrame:
        return table(self.summary)

    def beside_paper(self) -> go.Figure:
        """This run beside the authors' released curves, on their measure where 04 read it (in sample where scored,
        their protocol), else on revlib's response-only measure (held out); `beside_paper_note` says which."""
        from revlib.evaluation import paper_reference

        theirs = self.authors.paper_summary() if self.authors is not None else None
        return paper_reference.side_by_side(self.summary if theirs is None else theirs)

    @property
    def beside_paper_note(self) -> str:
        theirs = self.authors.paper_summary() if self.authors is not None else None
        if theirs is None:
            why = self.authors.measure.note if self.authors is not None else ""
            return ("This run's curves: revlib's response-only ALP on the held-out test probes, not the measure the "
                    f"released numbers are on. {why}").strip()
        where = "in sample" if self.authors.in_sample is not None and not self.authors.in_sample.empty else "held out"
        return f"This run's curves: the authors' measure, {where}, as the released numbers are. {self.authors.measure.note}"

    @property
    def authors_note(self) -> str:
        return self.authors.measure.note if self.authors is not None else "The authors' measure was not read."

    def authors_table(self) -> pd.DataFrame | Missing:
        """The authors' measure beside revlib's response-only one, in sample and held out, per pair and checkpoint."""
        if self.authors is None:
            return Missing("The authors' measure was not read.")
        revlib_in_sample = InSampleScores.load(self.dir).scores if InSampleScores.exists(self.dir) else None
        return self.authors.table(self.summary, revlib_in_sample)

    def mass_figure(self) -> go.Figure | None:
        return mass_figure(self.summary)

    def mass_table(self) -> pd.DataFrame:
        return mass_table(self.summary)

    def margin_by_direction(self) -> pd.DataFrame:
        return margin_by_direction(self.scores)

    def in_sample_table(self) -> pd.DataFrame | Missing:
        """The training examples beside the held-out test probes, or why they were not scored."""
        if self.in_sample is None:
            return Missing("probes.in_sample is off: only the held-out test probes are scored.")
        return self.in_sample

    def comparison_figure(self) -> go.Figure | None:
        return comparison_figure(self.comparison)

    @property
    def metrics(self) -> Metrics:
        return (stage_metrics(self.summary, self.stats, self.checkpoints, self.items, self.comparison, self.checks)
                | (self.authors.measure.metrics() if self.authors is not None else {}))


def run(ctx: StageContext) -> ProbeRun:
    """04 for the cell's base model: the probe models (trained here or 02/03's), every checkpoint scored on the test
    probes, the in-sample and DPO-variant readings where params ask, saved, and the learning checks."""
    from revlib.modeling import models

    exp, base = ctx.exp, ctx.base_path()
    data_dir = ctx.upstream("01_reverse_data")
    checkpoints = probe_models(exp, base, data_dir, ctx.dir, ctx.upstream, ctx.values["model"])
    tokenizer = models.load_tokenizer(base)
    items, members = load_probe_items(exp, data_dir, tokenizer)
    scores, stats = score_checkpoints(exp, checkpoints, items, members)
    summary = summarize(scores)
    save(scores, summary, ctx.dir)
    authors = authors_measure(exp, checkpoints, data_dir, tokenizer, ctx.dir)
    return ProbeRun(exp, ctx.dir, checkpoints, items, scores, summary, stats, gate_checks(exp.probes, summary, authors),
                    in_sample(exp, checkpoints, data_dir, base, summary, ctx.dir),
                    dpo_variants(exp, ctx.upstream, ctx.values["model"], items, members, ctx.dir), authors)


def gate_checks(p: ProbeParams, summary: pd.DataFrame, authors: AuthorsReading | None) -> list[Check]:
    """The learning checks on the held-out test probes, on the measure `probes.gates_measure` names (a bar derived
    from the authors' released numbers reads their measure); a failed check where that measure was not read."""
    from revlib.evaluation import learning

    if p.gates_measure == "response":
        return checks(summary, p.min_alp_rise, p.min_alp_after_sft, p.min_alp_fall_dpo)
    theirs = authors.held_out_summary() if authors is not None else None
    if theirs is None:
        why = authors.measure.note if authors is not None else "the authors' measure was not read"
        return [learning.Check("learning gates on the authors' measure (probes.gates_measure: authors)", math.nan,
                               math.nan, False, f"that measure was not read here: {why}")]
    found = checks(theirs, p.min_alp_rise, p.min_alp_after_sft, p.min_alp_fall_dpo)
    for c in found:
        c.what += " (the authors' measure)"
    return found
