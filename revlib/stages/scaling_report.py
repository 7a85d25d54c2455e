"""Notebook 06's report: its rules in words (stated once here, saved in scaling.json, quoted by the page), each step's
view, the tables and figures of a run (`ScalingRun`), and what it records in metrics.json."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd
import plotly.graph_objects as go

from revlib.core.io import Metrics
from revlib.data import negatives
from revlib.evaluation import learning
from revlib.evaluation.efficiency import EfficiencyRow
from revlib.evaluation.learning import Check
from revlib.params import Experiment
from revlib.params.learning import LearningRules
from revlib.params.negatives import NegativeParams
from revlib.stages import scaling_figures as figures
from revlib.stages.maybe import Missing
from revlib.stages.scaling_result import (AdvantageRow, Methods, NLLRow, Problems, Samples, ScalingResult, SFTCurves,
                                          SizeResult, TableRow)


# ---------------------------------------------------------------- the rules, in words

# every DPO setting of 06 and where it comes from (the page states them beside the budget rule)
DPO_SETTING_SOURCES = {
    "beta": "β = {beta:g}: Setlur et al.'s β is not stated in the material this project holds; {beta:g} is the DPO "
            "paper's default (Rafailov et al., App. B) and trl's, a named choice (0.6 is the r1k paper's, not Setlur's)",
    "reference": "the reference is the DPO run's own start (the SFT checkpoint): Setlur et al. (per-step DPO from SFT)",
    "loss": "sigmoid DPO loss on pairs whose chosen and rejected share the prefix before the critical step "
            "(Setlur et al. after Hwang et al.)",
    "lr": "learning rate {lr:g}, cosine schedule, warm-up {warmup:g} of the steps, batch {batch}: our choice, from the "
          "DPO training loss and the validation accuracy by pass (docs/negatives_search.md)",
    "passes": "{passes} fixed passes over each method's own pairs, every pass read out on the validation problems, the "
              "best kept, pass 0 included: our rule (the paper tunes on held-out problems; issue 25)",
    "lengths": "max_length {max_length}, max_prompt_length {max_prompt}: the task's chains fit whole",
}


def dpo_settings(exp: Experiment) -> list[str]:
    """Every DPO setting 06 uses, with its source, in words."""
    d, P = exp.dpo, exp.negatives
    values = dict(beta=d.beta, lr=d.lr, warmup=d.warmup_ratio, batch=d.batch_size, passes=P.dpo_passes,
                  max_length=d.max_length, max_prompt=d.max_prompt_length)
    return [v.format(**values) for v in DPO_SETTING_SOURCES.values()]


def pass_rule() -> str:
    return ("the pass kept is the one with the highest greedy accuracy on the validation problems; pass 0 (the start "
            "itself) is a candidate, and ties go to the earliest pass, so a method that never beats its start keeps it")


def budget_rule(P: NegativeParams, rules: LearningRules) -> str:
    return (f"SFT trains at most {P.sft_max_steps} optimizer steps from the base at every size, read out on "
            f"{P.n_validation} validation problems (disjoint from the test set and every training set) every "
            f"{P.sft_eval_every} steps, and the checkpoint with the best validation accuracy is the size's SFT (ties: "
            f"the earliest); at the method sizes {P.sizes_for_methods} every other method starts from it (negatives "
            f"from {P.samples_per_problem} samples per training problem at temperature {P.temperature:g}, "
            f"{P.under_samples_per_problem or P.samples_per_problem} from the under-trained start, at most "
            f"{P.max_negatives or 'all'} kept per problem; per-step DPO also from an earlier, under-trained "
            f"checkpoint: the earliest read-out before the chosen one whose validation accuracy reaches "
            f"{P.under_validation_share:.0%} of the chosen one's) and makes a fixed number of passes over its own "
            f"data ({P.rft_passes} for RFT-type runs, "
            f"{P.dpo_passes} for DPO, {P.log_ratio_pairs:.0%} of each DPO method's problems held out for the "
            f"log-ratios); {pass_rule()}; a DPO method with fewer than {P.min_pairs} pairs at a size is not trained "
            f"there; each kept model answers the same test problems greedily once, and up to {P.kept_skill_problems} "
            f"of its size's training problems (its training accuracy, and the kept-skill check: at most "
            f"{rules.kept_skill_drop:.0%} below SFT's, else the row says it broke the policy)")


# ---------------------------------------------------------------- each step's view


def problems_table(probs: Problems) -> pd.DataFrame:
    return pd.DataFrame([{"task": probs.task.name, **probs.counts()}])


def sft_figure(sft: SFTCurves) -> go.Figure:
    return figures.sft_validation_figure([s.curve for s in sft.sizes])


def sft_table(sft: SFTCurves) -> pd.DataFrame:
    """Each size's SFT: the step chosen on validation, its accuracy there and on its own training problems, the
    under-trained start, and its test error."""
    return pd.DataFrame([{"size": s.size, "chosen step": s.curve.chosen_step, "validation": s.curve.chosen_validation,
                          "training-problem accuracy": s.curve.train_accuracy, "under-trained step": s.curve.under_step,
                          "test error": s.run.error} for s in sft.sizes])


def samples_table(samples: Samples) -> pd.DataFrame | Missing:
    """At each method size: the samples each start drew, the positives among them and the step prefixes valued."""
    if not samples.draws:
        return Missing("SFT is the only method: nothing was sampled")
    rows = []
    for size, d in samples.draws.items():
        for start, drawn in (("sft", d.sft), ("under", d.under)):
            if drawn is not None:
                rows.append({"size": size, "start": start, "samples": len(drawn.samples), "positives": drawn.positives,
                             "negatives": len(drawn.samples) - drawn.positives,
                             "valued prefixes": sum(len(c.values) for c in drawn.credits)})
    return pd.DataFrame(rows)


def methods_table(methods: Methods) -> pd.DataFrame:
    """Every method at every size as it ran: its training examples, steps, kept pass, test error, or why it has none."""
    return pd.DataFrame([{"size": r.size, "method": m, "examples": run.examples, "steps": run.steps,
                          "pass kept": run.passes.kept if run.passes else None, "test error": run.error,
                          "not trained": run.skip.value if run.skip else "", "note": run.note}
                         for r in methods.sizes for m, run in r.runs.items()])


# ---------------------------------------------------------------- the read-outs' view


def efficiency_table(eff: dict[str, list[EfficiencyRow]]) -> pd.DataFrame:
    return pd.DataFrame([r.model_dump() for rs in eff.values() for r in rs])


def nll_table(nll: Sequence[NLLRow]) -> pd.DataFrame | None:
    """Mean, spread and count of the per-token NLL of each set; None without NLL rows."""
    if not nll:
        return None
    return pd.DataFrame([asdict(r) for r in nll]).groupby("set")["nll"].agg(["mean", "std", "count"]).reset_index()


def advantages_by_step(credits: Sequence[negatives.StepCredit]) -> list[AdvantageRow]:
    """Figure 10: the advantage of every step of positive and of negative traces."""
    return [AdvantageRow("positive" if cr.sample.correct else "negative", i + 1, a)
            for cr in credits for i, a in enumerate(cr.advantages)]


def stage_metrics(rows: Sequence[TableRow], eff: dict[str, list[EfficiencyRow]], checks: Sequence[Check]) -> Metrics:
    """What 06 records in metrics.json: each measured error, each efficiency reading, and the learning checks."""
    out: Metrics = {f"{r.method}/error@{r.size}": r.error for r in rows if r.error is not None}
    out |= {f"{m}/multiple@{r.size}": r.reading for m, rs in eff.items() for r in rs}
    return out | learning.metrics(checks)


def settings_table(exp: Experiment) -> pd.DataFrame:
    """Every DPO setting of 06 with its source, as a table."""
    return pd.DataFrame({"setting and source": dpo_settings(exp)})


@dataclass
class ScalingRun:
    """06's run: every method at every size, what it hands on (`result`, saved as scaling.json), SFT's learning
    checks, and the report's tables and figures."""

    exp: Experiment
    sizes: list[SizeResult]
    result: ScalingResult
    checks: list[Check]
    nll: list[NLLRow]

    @property
    def methods(self) -> list[str]:
        return list(self.exp.negatives.methods)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([r.model_dump() for r in self.result.rows])

    def checks_table(self) -> pd.DataFrame:
        return learning.table(self.checks)

    def efficiency_table(self) -> pd.DataFrame:
        return efficiency_table(self.result.efficiency)

    def nll_table(self) -> pd.DataFrame | None:
        return nll_table(self.nll)

    def scaling_figure(self) -> go.Figure:
        return figures.scaling_figure(self.result.rows, self.methods)

    def self_data_figure(self) -> go.Figure | None:
        return figures.self_data_figure(self.result.rows, self.methods)

    @property
    def method_size(self) -> SizeResult:
        """The largest size where every method ran (Figures 7 and 10 read there)."""
        return [r for r in self.sizes if r.size == max(self.exp.negatives.sizes_for_methods)][0]

    def advantages_figure(self) -> go.Figure | None:
        """Figure 10 at the largest method size."""
        return figures.advantages_figure(advantages_by_step(self.method_size.credits))

    def sft_validation_figure(self) -> go.Figure:
        return figures.sft_validation_figure(self.result.sft_curves)

    def passes_figure(self) -> go.Figure | None:
        return figures.passes_figure(self.result.passes)

    def passes_table(self) -> pd.DataFrame:
        """Every pass of every method after SFT: validation accuracy, held-out log-ratios, and which was kept."""
        return pd.DataFrame([{"method": ps.method, "size": ps.size, "start": f"{ps.start} (step {ps.start_step})",
                              "pass": p.index, "steps": p.step, "validation": p.validation,
                              "chosen log-ratio": p.chosen_log_ratio, "rejected log-ratio": p.rejected_log_ratio,
                              "critical-step log-ratio": p.critical_log_ratio, "kept": p.index == ps.kept,
                              "training loss first -> last": (f"{ps.train_loss_first:.3f} -> {ps.train_loss_last:.3f}"
                                                              if ps.train_loss_first is not None else "")}
                             for ps in self.result.passes for p in ps.passes])

    def starts_table(self) -> pd.DataFrame:
        """Each size's SFT start (chosen on validation) and the under-trained one: validation and training accuracy."""
        return pd.DataFrame([{"size": c.size, "chosen step": c.chosen_step, "validation": c.chosen_validation,
                              "training-problem accuracy": c.train_accuracy, "under-trained step": c.under_step,
                              "under-trained validation": (c.validation[c.steps.index(c.under_step)]
                                                           if c.under_step is not None else None),
                              "under-trained training-problem accuracy": c.under_train_accuracy}
                             for c in self.result.sft_curves])

    def multiples_table(self) -> pd.DataFrame:
        return pd.DataFrame([{"method": m, "reading": r.text()} for m, r in self.result.multiples.items()])

    def settings(self) -> list[str]:
        return [f"budget rule: {self.result.budget_rule}", *self.result.dpo_settings,
                f"step values: {self.result.rollouts} rollouts per prefix, best-of-{self.result.best_of} "
                f"({self.result.best_of_rule}: 1 - (1 - p)^K)" if self.result.best_of_rule == "plug_in" else
                f"step values: {self.result.rollouts} rollouts per prefix",
                f"step value spread: {self.result.value_spread}",
                f"D_syn: the teacher writes each chain in one of {self.result.teacher_forms}"]

    def nll_figure(self) -> go.Figure | None:
        return figures.nll_figure(self.nll)

    def values_figure(self) -> go.Figure | None:
        """Figure 7, from the values the read-out step sampled and saved."""
        return figures.values_figure(self.result.values)

    @property
    def metrics(self) -> Metrics:
        return stage_metrics(self.result.rows, self.result.efficiency, self.checks)
