"""The r1k paper's claims (Tables 1 and 2, Figure 2 and §4.3, the abstract) and our direction-aware variant, declared.

Each entry reads the run's typed results (`RunResults`): 05's benchmark scores for the tables (analogues of the
paper's, on this run's benchmarks and base models), 04's per-example probe scores for Figure 2, read in sample (the
authors' protocol) and held out, each on the authors' ALP measure where 04 read it (their released numbers are on it)
with revlib's response-only measure beside. δ and every threshold the page mentions are the constants below, so the
prose and the code cannot drift apart; a probe row's δ comes from the authors' released effect for it (`RELEASED`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pandas as pd

from revlib.core import stats
from revlib.core.io import Metrics
from revlib.data.world import ALIVE_MARGIN
from revlib.evaluation import paper_reference
from revlib.lab.claims import Beside, Check, ClaimSpec, HeldOut, Reading
from revlib.lab.results import RunResults
from revlib.modeling.probes import AUTHORS_MAX_TOKENS
from revlib.params import Experiment
from revlib.stages.dynamics import ProbeResult

LEARNED_MIN_ACCURACY = 0.5  # an SFT model answering under half of its own direction's test problems did not learn
DEFAULT_MIN_ALP_RISE = 0.5  # the probe gate without a probes section (params/probes.py's default)

TABLE_DELTA = 0.02
TABLE_DELTA_SOURCE = ("2 accuracy points: below the smallest Table 1 gap the paper reports (+1.6 points), so a rule "
                      "that read the paper's own tables would call them reproduced")
# What the paper's tables are: the analogue rows say so and name this run's benchmarks and base models instead.
PAPER_TABLES = "the paper: AIME24, MATH500 and GPQA accuracy of its 7B and 14B models"

IN_DISTRIBUTION_TF = "synthetic_forward"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# ---------------------------------------------------------------- gates: did the models the claims rest on learn?


def _sft_accuracy(results: RunResults, direction: str) -> float | None:
    b = results.benchmarks
    hit = b.score("sft", direction, f"synthetic_{direction}") if b else None
    return hit.correct / hit.problems if hit else None


def sft_gate(results: RunResults) -> str | None:
    """SFT must answer its own direction's in-distribution test problems."""
    accs = {d: _sft_accuracy(results, d) for d in ("forward", "reverse")}
    if any(v is not None and v < LEARNED_MIN_ACCURACY for v in accs.values()):
        shown = ", ".join(f"{d} {v:.1%}" for d, v in accs.items() if v is not None)
        return (f"SFT did not learn its own direction well enough (in-distribution accuracy {shown}; the rule needs "
                f"{LEARNED_MIN_ACCURACY:.0%})")
    return None


def _reads_world(results: RunResults) -> bool:
    return bool(results.benchmarks and results.benchmarks.world)


def table_gate(results: RunResults) -> str | None:
    """The SFT gate, and with task-world benchmarks, at least one of them alive."""
    gate = sft_gate(results)
    if gate or not _reads_world(results) or results.benchmarks.alive():
        return gate
    return f"no task-world benchmark is alive (no model {100 * ALIVE_MARGIN:.0f} points above chance on any)"


# ---------------------------------------------------------------- Tables 1 and 2: accuracy, model a against model b


def base_models(exp: Experiment) -> str:
    """The run's base models in words, as its params name them."""
    def one(m) -> str:
        where = m.id or m.file or (m.path.name if m.path else None) or f"embedded preset {m.preset}"
        return f"{m.name} ({where})"

    return ", ".join(one(m) for m in exp.base_models)


def table_reading(a: tuple[str, str], b: tuple[str, str]) -> Callable[[RunResults], Reading | None]:
    """E = accuracy(a) - accuracy(b): paired per problem on the alive task-world benchmarks outside both training sets
    where the run has them, else on T_f with independent samples (Newcombe). The words say it is an analogue of the
    paper's table and on which benchmarks and base models."""

    def measure(results: RunResults) -> Reading | None:
        bench = results.benchmarks
        if bench is None:
            return None
        analogue = f"analogue, with {base_models(results.exp)}: "
        if bench.world:
            alive = bench.alive()
            what = (f"{analogue}accuracy on the task-world benchmarks outside both training sets "
                    f"({', '.join(alive) or 'none alive'}; pooled)")
            xs_all, ys_all = bench.per_problem(*a, alive), bench.per_problem(*b, alive)
            if not alive:
                return Reading(None, None, what, missing=table_gate(results) or "no task-world benchmark is alive")
            keys = sorted(set(xs_all) & set(ys_all))
            if not xs_all or not ys_all or not keys:
                return None
            xs, ys = [xs_all[k] for k in keys], [ys_all[k] for k in keys]
            return Reading.paired(xs, ys, lambda e, lo, hi: (
                f"{what}: {_pct(sum(xs) / len(xs))} vs {_pct(sum(ys) / len(ys))} (n={len(keys)} paired problems); "
                f"E = {100 * e:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}]"))
        what = (f"{analogue}accuracy on T_f (forward test problems, in distribution for forward-trained models: no "
                "task-world benchmarks in this run)")
        sa, sb = bench.score(*a, IN_DISTRIBUTION_TF), bench.score(*b, IN_DISTRIBUTION_TF)
        if sa is None or sb is None:
            return None
        (k1, n1), (k2, n2) = (sa.correct, sa.problems), (sb.correct, sb.problems)
        lo, hi = stats.diff_interval(k1, n1, k2, n2)
        eff = k1 / n1 - k2 / n2
        return Reading(eff, (lo, hi), f"{what}: {_pct(k1 / n1)} vs {_pct(k2 / n2)} (n={n1}, {n2}); "
                                      f"E = {100 * eff:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}]")

    return measure


def mixing_lost_something(results: RunResults) -> str | None:
    """DPO can recover only a loss that mixing caused: r1k.table1.mixing_hurts must lie above 0."""
    hurts = results.reading(MIXING_HURTS)
    if hurts is None or hurts.interval is None:
        return "mixing's loss (r1k.table1.mixing_hurts) was not measured, so there is no loss to recover"
    if hurts.interval[0] <= 0:
        return (f"a loss to recover: the mix SFT model must trail forward-only SFT, but mixing lost nothing measurable "
                f"(r1k.table1.mixing_hurts: E = {100 * hurts.effect:+.1f} pts [{100 * hurts.interval[0]:+.1f}, "
                f"{100 * hurts.interval[1]:+.1f}])")
    return None


# ---------------------------------------------------------------- Figure 2: per-example ALP on the probes, two readings

# Each Figure 2 row is read twice. The primary reading is in sample, where the authors read Figure 2 (their
# analysis script scores the rows of the parquet the model was trained on); the held-out reading, on the twins the
# models never saw, is our stricter second one. Both compare on the authors' ALP measure where 04 read it, the measure
# their released numbers (and so δ) are on; revlib's response-only measure is read beside it, in sample and held out.
IN_SAMPLE = ("in sample: the rows the probe models were trained on (out of distribution, those rows' twins), where "
             "the r1k authors read Figure 2 (the paper's protocol)")
HELD_OUT = "held out: the test twins the probe models never saw (our stricter reading, not the paper's protocol)"
NO_IN_SAMPLE = ("no in-sample scores: probes.in_sample is off (or 04 ran before it recorded them), so the rows the "
                "models were trained on, where the authors read Figure 2, were not scored")

AUTHORS, RESPONSE, COMPARED = "authors", "response", "compared"
MEASURE_WORDS = {AUTHORS: "the authors' measure", RESPONSE: "revlib's response-only measure"}
AUTHORS_MEASURE = ("the r1k authors' ALP measure (their analysis script: the mean log p of the whole `text` chat "
                   "string after their own prompt, first token dropped)")
BORROWED_DELTA = ("no number was released on revlib's response-only measure: δ, derived on the authors' measure, is "
                  "borrowed as the scale")


def authors_measure_read(results: RunResults) -> bool:
    """04 read the authors' measure on this run's probe rows."""
    m = results.authors_measure
    return m is not None and m.applicable


@dataclass(frozen=True)
class ProbeScores:
    """Which of 04's per-example scores a reading reads: in sample or held out, on the authors' measure, on revlib's
    response-only one, or COMPARED: the authors' where 04 read it, else revlib's."""

    where: str      # "in sample" | "held out"
    measure: str    # AUTHORS | RESPONSE | COMPARED

    def resolved(self, results: RunResults) -> str:
        if self.measure != COMPARED:
            return self.measure
        return AUTHORS if authors_measure_read(results) else RESPONSE

    def load(self, results: RunResults) -> ProbeResult | None:
        inside = self.where == "in sample"
        if self.resolved(results) == AUTHORS:
            if not authors_measure_read(results):
                return None
            return results.probes_authors_in_sample if inside else results.probes_authors
        return results.probes_in_sample if inside else results.probes

    def words(self, results: RunResults) -> str:
        return f"{self.where}, {MEASURE_WORDS[self.resolved(results)]}"

    def held_out(self) -> ProbeScores:
        return replace(self, where="held out")


def probe_reading(source: ProbeScores, read: Callable[[ProbeResult, str], Reading | None]
                  ) -> Callable[[RunResults], Reading | None]:
    """A Figure 2 measure on one reading's scores. In sample without in-sample scores, where the held-out scores
    cover the claim: a reading with nothing measured, which the rule makes inconclusive (never a pass)."""

    def measure(results: RunResults) -> Reading | None:
        p = source.load(results)
        if p is None:
            held = source.held_out().load(results)
            if source.where == "in sample" and held is not None and read(held, "held out"):
                return Reading(None, None, "in sample: not scored", missing=NO_IN_SAMPLE)
            return None
        return read(p, source.words(results))

    return measure


def probe_gate_on(where: str) -> Check:
    """The probe models must have learned, on this reading's rows: in-distribution ALP(y+) rose from the base by the
    probe bar, read on the measure the bar was derived on (`probes.gates_measure`)."""

    def gate(results: RunResults) -> str | None:
        probes_params = results.exp.probes
        measure = probes_params.gates_measure if probes_params else RESPONSE
        p = ProbeScores(where, measure).load(results)
        if p is None:
            if measure == AUTHORS and results.probes is not None and not authors_measure_read(results):
                m = results.authors_measure
                return ("the probe gate reads the authors' measure (probes.gates_measure: authors), which 04 did not "
                        f"read here{': ' + m.reason if m is not None and m.reason else ''}")
            return None
        after, before = p.mean("alp_chosen", "sft"), p.mean("alp_chosen", "base")
        bar = probes_params.min_alp_rise if probes_params else DEFAULT_MIN_ALP_RISE
        if after is not None and before is not None and after - before < bar:
            return (f"probe models did not learn ({where}, {MEASURE_WORDS[measure]}, in-distribution ALP(y+) rose "
                    f"{after - before:+.3f} from the base; needs {bar:g})")
        return None

    return gate


probe_gate = probe_gate_on("held out")


def change_reading(metric: str, first: str, second: str, what: str) -> Callable[[ProbeResult, str], Reading | None]:
    """E = mean over in-distribution probe examples of `metric` at the last `first` checkpoint minus at the last
    `second` one, with its bootstrap interval."""

    def read(p: ProbeResult, where: str) -> Reading | None:
        values = p.paired(metric, first, second)
        if not values:
            return None
        return Reading.mean(values, lambda e, lo, hi: (
            f"{what}, in distribution, {where}: E = {e:+.3f} nats/token [{lo:+.3f}, {hi:+.3f}] over {len(values)} "
            "probe examples"))

    return read


def _after_sft(metric: str) -> Callable[[ProbeResult], pd.Series | None]:
    def values(p: ProbeResult) -> pd.Series | None:
        sft = p.at("sft")
        return None if sft is None or metric not in sft else sft[metric]

    return values


def _sft_change(metric: str) -> Callable[[ProbeResult], pd.Series | None]:
    return lambda p: p.change(metric, "sft", "base")


def _two_groups(head: str, first: tuple[str, list[float]], second: tuple[str, list[float]], above: int) -> Reading:
    """E = mean of the group at index `above` (0: first, 1: second) minus the other's (independent samples), worded
    as `head: first mean (n), second mean (n); E = ... [lo, hi]`."""
    groups = (first, second)
    eff, lo, hi = stats.mean_difference(groups[above][1], groups[1 - above][1])
    shown = ", ".join(f"{name} {sum(v) / len(v):+.3f} (n={len(v)})" for name, v in groups)
    return Reading(eff, (lo, hi), f"{head}: {shown}; E = {eff:+.3f} [{lo:+.3f}, {hi:+.3f}]")


def mix_vs_pure(values: Callable[[ProbeResult], pd.Series | None], mix_above: bool, what: str
                ) -> Callable[[ProbeResult, str], Reading | None]:
    """In distribution, per-example `values` of the mix set against the pure sets' (independent samples): E = mix -
    pure when `mix_above`, else pure - mix."""

    def read(p: ProbeResult, where: str) -> Reading | None:
        v = values(p)
        if v is None:
            return None
        is_mix = v.index.get_level_values("train_set") == "mix"
        pure, mixed = v[~is_mix].tolist(), v[is_mix].tolist()
        if not pure or not mixed:
            return None
        return _two_groups(f"{what}, in distribution, {where}", ("pure sets", pure), ("mix", mixed), 1 if mix_above else 0)

    return read


def ood_reverse_vs_forward(metric: str, reverse_above: bool, what: str) -> Callable[[ProbeResult, str], Reading | None]:
    """Out of distribution after SFT, per-example `metric` of (D_r, T_f) against (D_f, T_r) (independent samples):
    E = D_r - D_f when `reverse_above`, else D_f - D_r."""

    def read(p: ProbeResult, where: str) -> Reading | None:
        sft = p.at("sft", "OOD")
        if sft is None or metric not in sft:
            return None
        train = sft.index.get_level_values("train_set")
        d_r, d_f = sft[metric][train == "reverse"].tolist(), sft[metric][train == "forward"].tolist()
        if not d_r or not d_f:
            return None
        return _two_groups(f"{what} after SFT, out of distribution, {where}", ("(D_r, T_f)", d_r), ("(D_f, T_r)", d_f),
                           0 if reverse_above else 1)

    return read


def mass_read(p: ProbeResult, where: str) -> Reading | None:
    """Another question's y+ after DPO minus after SFT; the argmax token's move beside it."""
    sft = p.at("sft")
    if sft is None or p.at("dpo") is None or "alp_irrelevant" not in sft:
        return None
    reading = change_reading("alp_irrelevant", "dpo", "sft", "ALP(another question's y+) after DPO minus after SFT")(
        p, where)
    top = p.paired("alp_argmax", "dpo", "sft") or []
    if reading is None or not top:
        return reading
    return Reading(reading.effect, reading.interval,
                   reading.measured + f"; the argmax token along y+ moved {sum(top) / len(top):+.3f} nats/token")


def sft_raised_rejected_on(source: ProbeScores) -> Check:
    """A limit on DPO's suppression needs something to suppress: on the examples of the training sets DPO ran on, SFT
    raised ALP(y−) (its interval above 0)."""

    def check(results: RunResults) -> str | None:
        p = source.load(results)
        rise = p.change("alp_rejected", "sft", "base") if p is not None else None
        dpo = p.at("dpo") if p is not None else None
        if rise is None or dpo is None:
            return None  # the reading itself is missing and says why
        rise = rise[rise.index.isin(dpo.index)]
        if rise.empty:
            return None
        lo, hi = stats.bootstrap_mean(rise.tolist())
        if lo > 0:
            return None
        return (f"a rise in y− to suppress: SFT must raise ALP(y−) on the DPO models' examples ({source.words(results)}), "
                f"but it moved {rise.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]")

    return check


# ---------------------------------------------------------------- the authors' released Qwen2.5-7B effects, per row

_END = paper_reference.endpoints()
_FF, _RR, _MM = _END["(D_f, T_f)"], _END["(D_r, T_r)"], _END["(D_m, T_m)"]
_FR, _RF = _END["(D_f, T_r)"], _END["(D_r, T_f)"]


def _pooled_in_distribution(key: str) -> float:
    """The three in-distribution pairs pooled over examples, as our readings pool them: T_m holds both directions,
    twice T_f's or T_r's rows (the authors' 50 + 50 + 100)."""
    return (_FF[key] + _RR[key] + 2 * _MM[key]) / 4


def _pure(key: str) -> float:
    return (_FF[key] + _RR[key]) / 2


# Each row's effect in the release, signed as the row's E (> 0: the paper's direction), with what it is. The release
# starts at SFT epoch 1 (no base point), so "SFT raises" reads epoch 1 to 6.
RELEASED: dict[str, tuple[float, str]] = {
    "sft_raises_chosen": (_pooled_in_distribution("sft_change_alp_chosen"),
                          "in-distribution ALP(y+) rise, SFT epoch 1 to 6, pooled"),
    "sft_raises_rejected": (_pooled_in_distribution("sft_change_alp_rejected"),
                            "in-distribution ALP(y−) rise, SFT epoch 1 to 6, pooled (the pure sets' falls, D_m's rises)"),
    "mix_raises_rejected_most": (_MM["sft_change_alp_rejected"] - _pure("sft_change_alp_rejected"),
                                 "D_m's ALP(y−) rise minus the pure sets', SFT epoch 1 to 6"),
    "mix_chosen_below_pure": (_pure("alp_chosen") - _MM["alp_chosen"],
                              "pure-set ALP(y+) minus D_m's after 6 SFT epochs"),
    "mix_weakens_distinction": (_pure("margin") - _MM["margin"], "pure-set margins minus the D_m margin after 6 SFT epochs"),
    "ood_reverse_lower_rejected": (_FR["alp_rejected"] - _RF["alp_rejected"],
                                   "ALP(y−) of (D_f, T_r) minus (D_r, T_f) after 6 SFT epochs"),
    "ood_reverse_generalises": (_RF["alp_chosen"] - _FR["alp_chosen"],
                                "ALP(y+) of (D_r, T_f) minus (D_f, T_r) after 6 SFT epochs"),
    "dpo_lowers_rejected": (-_MM["dpo_change_alp_rejected"], "(D_m, T_m) ALP(y−) fall over 7 DPO epochs"),
    "dpo_suppression_limited": (_MM["dpo_change_alp_rejected"] + _MM["sft_change_alp_rejected"],
                                "(D_m, T_m) ALP(y−) after 7 DPO epochs minus at SFT epoch 1"),
}

# δ on the paper's scale: half the authors' own effect for the row, so their run reads reproduced and an effect
# under half theirs does not count. A row without a released effect in the paper's direction takes half the smallest
# effect the release shows on any Figure 2 row: the finest probe effect the paper treats as one.
DELTA_SHARE = 0.5
_SMALLEST = min((v for v in RELEASED.values() if v[0] > 0), key=lambda v: v[0])
PROBE_DELTA_FALLBACK = DELTA_SHARE * _SMALLEST[0]


def probe_delta(row: str | None) -> tuple[float, str]:
    """(δ, where δ comes from) for a Figure 2 row, from the authors' released effect `RELEASED[row]` (None: none)."""
    fallback = (f"half the smallest effect the authors' release shows on any Figure 2 row ({_SMALLEST[0]:+.4f}, "
                f"{_SMALLEST[1]}): the finest probe effect the paper treats as one")
    if row is None:
        return PROBE_DELTA_FALLBACK, "the authors released no number for this row; δ is " + fallback
    value, what = RELEASED[row]
    if value <= 0:
        return PROBE_DELTA_FALLBACK, (f"the authors' release does not show this effect ({value:+.3f}, {what}); δ is "
                                      + fallback)
    return DELTA_SHARE * value, (f"half the authors' released effect ({value:+.4f}, {what}): their own run reads "
                                 "reproduced, an effect under half theirs does not count")


# ---------------------------------------------------------------- the registry entries

_TABLE = dict(delta=TABLE_DELTA, delta_source=TABLE_DELTA_SOURCE, gates=(table_gate,))
_IN_SAMPLE_GATES = (sft_gate, probe_gate_on("in sample"))
_HELD_OUT_GATES = (sft_gate, probe_gate)


def compares_on(authors: bool) -> Callable[[RunResults], str]:
    """The measure a Figure 2 row's verdicts compare on, in words: the authors' where 04 read it and the row can read
    it (`authors`), else revlib's response-only one and why."""

    def words(results: RunResults) -> str:
        m = results.authors_measure
        if authors and authors_measure_read(results):
            return (f"{AUTHORS_MEASURE}, capped at {m.max_tokens:,} tokens (theirs: "
                    f"{AUTHORS_MAX_TOKENS:,}): the measure the released numbers are on")
        if not authors:
            why = "the authors' script scores no irrelevant response"
        elif m is None:
            why = "04 did not record the authors' measure"
        else:
            why = m.reason
        return f"revlib's response-only ALP ({why.rstrip('.')}); {BORROWED_DELTA}"

    return words


def _revlib_beside(measure: Callable[[RunResults], Reading | None]) -> Callable[[RunResults], Reading | None]:
    """revlib's response-only reading, shown beside where the row's verdicts read the authors' measure (where they
    do not, it is the verdict itself)."""
    return lambda results: measure(results) if authors_measure_read(results) else None


def figure2(claim_id: str, wording: str, figure: str, read: Callable[[ProbeResult, str], Reading | None],
            released: str | None, preconditions: Callable[[ProbeScores], tuple[Check, ...]] = lambda source: (),
            authors: bool = True) -> ClaimSpec:
    """A Figure 2 row read two ways: in sample (primary, the authors' protocol) and held out, each on the authors'
    measure where 04 read it (with δ from the authors' released effect `RELEASED[released]`, on that measure) and on
    revlib's response-only measure beside it; `authors` False: the row reads revlib's measure only."""
    delta, source = probe_delta(released)
    value, what = RELEASED[released] if released else (None, "")
    measure = COMPARED if authors else RESPONSE
    inside, held = ProbeScores("in sample", measure), ProbeScores("held out", measure)
    beside = tuple(
        Beside(f"revlib's response-only ALP, {where}", _revlib_beside(probe_reading(ProbeScores(where, RESPONSE), read)),
               (sft_gate, probe_gate_on(where)), preconditions(ProbeScores(where, RESPONSE)), BORROWED_DELTA)
        for where in ("in sample", "held out")) if authors else ()
    return ClaimSpec(claim_id, "r1k", wording, figure, delta, source, probe_reading(inside, read),
                     gates=_IN_SAMPLE_GATES, preconditions=preconditions(inside),
                     released_effect=value, released_what=what, reads=IN_SAMPLE,
                     held_out=HeldOut(probe_reading(held, read), HELD_OUT, _HELD_OUT_GATES, preconditions(held)),
                     compares_on=compares_on(authors), beside=beside)


MIXING_HURTS = ClaimSpec(
    "r1k.table1.mixing_hurts", "r1k", "Mixing forward and reverse data in SFT hurts (mix below forward alone)",
    f"Table 1 analogue: the mixed SFT model trails ({PAPER_TABLES})",
    measure=table_reading(("sft", "forward"), ("sft", "mix")), **_TABLE)

FIGURE_2: list[ClaimSpec] = [
    figure2("r1k.fig2a.sft_raises_chosen", "SFT raises the log-probability of the preferred response in distribution",
            "Figure 2(a): ALP(y+) rises over SFT checkpoints (§4.3)",
            change_reading("alp_chosen", "sft", "base", "ALP(y+) after SFT minus at the base"), "sft_raises_chosen"),
    figure2("r1k.fig2b.sft_raises_rejected_too", "SFT also raises the rejected response in distribution "
            "(\"accompanied by a corresponding rise in hallucinations\")",
            "Figure 2(b): ALP(y−) over SFT checkpoints (§4.3)",
            change_reading("alp_rejected", "sft", "base", "ALP(y−) after SFT minus at the base"), "sft_raises_rejected"),
    figure2("r1k.fig2b.mix_raises_rejected_most", "Mixed SFT (D_m) raises y− more than forward- or reverse-only SFT",
            "Figure 2(b): the D_m curve of ALP(y−) rises above the pure sets' (§4.3)",
            mix_vs_pure(_sft_change("alp_rejected"), True, "ALP(y−) rise from the base to the last SFT checkpoint"),
            "mix_raises_rejected_most"),
    figure2("r1k.fig2a.mix_chosen_below_pure", "Mixed SFT's y+ stays below the pure sets'",
            "Figure 2(a): the D_m curve of ALP(y+) stays below (§4.3)",
            mix_vs_pure(_after_sft("alp_chosen"), False, "ALP(y+) after SFT"), "mix_chosen_below_pure"),
    figure2("r1k.fig2.mix_weakens_distinction",
            "Mixed SFT weakens the directional distinction (smaller margin than forward- or reverse-only SFT)",
            "Figure 2(c): the D_m margin stays lowest (§4.3, abstract)",
            mix_vs_pure(_after_sft("margin"), False, "margin after SFT"), "mix_weakens_distinction"),
    figure2("r1k.fig2b.ood_reverse_lower_rejected",
            "Out of distribution, SFT on reverse data gives lower y− than SFT on forward data",
            "Figure 2(b): (D_r, T_f) below (D_f, T_r) (§4.3)",
            ood_reverse_vs_forward("alp_rejected", False, "ALP(y−)"), "ood_reverse_lower_rejected"),
    figure2("r1k.fig2a.ood_reverse_generalises",
            "Out of distribution, SFT on reverse data generalises better: higher y+ on the other direction's questions",
            "Figure 2(a): (D_r, T_f) above (D_f, T_r) (§4.3)",
            ood_reverse_vs_forward("alp_chosen", True, "ALP(y+)"), "ood_reverse_generalises"),
    figure2("r1k.fig2b.dpo_lowers_rejected", "DPO lowers the log-probability of the rejected response",
            "Figure 2(b): ALP(y−) falls over DPO checkpoints (§4.3)",
            change_reading("alp_rejected", "sft", "dpo", "ALP(y−) after SFT minus after DPO"), "dpo_lowers_rejected"),
    figure2("r1k.fig2b.dpo_suppression_limited", "DPO's suppression of y− is limited: after DPO, ALP(y−) stays above "
            "where it stood before SFT", "Figure 2(b): the D_m curve under DPO (§4.3: \"this suppression is limited\")",
            change_reading("alp_rejected", "dpo", "base", "ALP(y−) after DPO minus at the base"),
            "dpo_suppression_limited", preconditions=lambda source: (sft_raised_rejected_on(source),)),
    figure2("r1k.abstract.dpo_mass_to_irrelevant",
            "DPO shifts probability mass toward irrelevant outputs (Ren & Sutherland's squeezing)",
            "abstract: no figure; here another question's y+ and the argmax token along y+", mass_read, None,
            authors=False),
]

CLAIMS: list[ClaimSpec] = [
    ClaimSpec("r1k.table1.reverse_beats_forward", "r1k", "SFT on reverse data (r1k) beats SFT on forward data (s1k)",
              f"Table 1 analogue: the paper's +1.6 to +6.8 points ({PAPER_TABLES})",
              measure=table_reading(("sft", "reverse"), ("sft", "forward")), **_TABLE),
    MIXING_HURTS,
    ClaimSpec("r1k.table1.more_mix_hurts_more", "r1k", "More mixed data hurts more (1000+1000 mix below the 500+500 mix)",
              f"Table 1 analogue: mix vs half mix ({PAPER_TABLES})",
              measure=table_reading(("sft", "half_mix"), ("sft", "mix")), **_TABLE),
    ClaimSpec("r1k.table2.dpo_recovers_mix", "r1k", "DPO on the mixed SFT model recovers part of the loss",
              f"Table 2 analogue: DPO on the mix SFT model vs its SFT baseline ({PAPER_TABLES})",
              measure=table_reading(("dpo", "mix"), ("sft", "mix")), preconditions=(mixing_lost_something,), **_TABLE),
    *FIGURE_2,
    ClaimSpec("ours.direction_aware_per_step", "ours",
              "Direction-aware per-step DPO beats directional DPO on the mix SFT model (our hypothesis)",
              "beyond both papers", measure=table_reading(("dpo_per_step", "mix"), ("dpo", "mix")), **_TABLE),
]


def learned(results: RunResults) -> Metrics:
    """The r1k half of findings.json's `learned` block: the base's skills, SFT's in-distribution accuracy, the
    probe models' held-out ALP at the base, after SFT and under DPO, and how many rows were scored each way."""
    out: Metrics = {}
    if results.base is not None:
        if results.base.sha256:
            out["base_model_sha256"] = results.base.sha256  # a GGUF base: the file's own
        for task, name in (("arith", "base_primitive_accuracy_arith"), ("star_graph", "base_lookup_accuracy_star")):
            if task in results.base.primitive_accuracy:
                out[name] = results.base.primitive_accuracy[task]
    bench = results.benchmarks
    for direction in ("forward", "reverse"):
        hit = bench.score("sft", direction, f"synthetic_{direction}") if bench else None
        if hit:
            out[f"sft_id_accuracy_{direction}"] = hit.correct / hit.problems
            out["sft_test_n"] = min(out.get("sft_test_n", hit.problems), hit.problems)
    for phase, runs in (("sft", results.sft_runs), ("dpo", results.dpo_runs)):
        if runs is not None:  # the schedule that ran (a resumed or cut run shows here), and its speed
            out[f"{phase}_epochs"] = round(max(runs.epochs), 2)
            out[f"train_tokens_per_s_{phase}"] = runs.tokens_per_second
    p = results.probes
    if p is not None:
        base, sft, dpo = p.at("base"), p.at("sft"), p.at("dpo")
        if base is not None:
            out["probe_alp_pos_id_base"] = float(base["alp_chosen"].mean())
        out["probe_test_n"] = p.test_examples
        out["probe_checkpoints"] = p.checkpoints_scored
    authors = results.authors_measure
    if authors is not None and authors.applicable:  # the authors' measure: its cap, the base on their first50 at 1,000
        out["authors_measure_max_tokens"] = authors.max_tokens
        if authors.base_first_rows_alp is not None:
            out["probe_authors_alp_base"] = authors.base_first_rows_alp
    if p is not None:  # held out: read whether or not 04 also scored in sample
        if sft is not None:
            out["probe_alp_pos_id_after_sft"] = float(sft["alp_chosen"].mean())
            out["probe_margin_id_after_sft"] = float(sft["margin"].mean())
        if sft is not None and dpo is not None:  # paired: the same (pair, probe) before and after DPO
            before, after = sft["alp_rejected"], dpo["alp_rejected"]
            both = after.index.intersection(before.index)
            out["probe_alp_neg_change_dpo"] = float((after[both] - before[both]).mean())
    if results.probes_in_sample is not None:  # the probe-training rows 04 scored in sample
        out["probe_in_sample_n"] = results.probes_in_sample.test_examples
    scoring = results.probe_scoring
    if scoring and scoring.get("tokens_per_second") is not None:  # 04's held-out scoring throughput
        out["probe_tokens_per_s"] = scoring["tokens_per_second"]
        if scoring.get("cpu_matmul"):
            out["probe_cpu_matmul"] = scoring["cpu_matmul"]
    return out
