"""Setlur et al.'s claims (the scaling read-outs of notebook 06, the star graph's Figure 8 of notebook 07), declared.

Each entry reads the run's typed results (`RunResults`): 06's `ScalingResult` (per-test-problem outcomes of every
method at every size) and 07's `StarResult` (test counts of every SFT and per-step DPO checkpoint). δ and every
threshold the page mentions are the constants below or the stages' own, so the prose and the code cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable

from revlib.core import stats
from revlib.core.io import Metrics
from revlib.lab.claims import ClaimSpec, Reading
from revlib.lab.results import RunResults
from revlib.stages import scaling, star

SCALING_DELTA = 0.02
SCALING_DELTA_SOURCE = ("2 accuracy points, pooled over every size's test problems: our choice, the same as the r1k "
                        "tables' δ; the paper states these effects as data multiples (2x, 8x), which the row reads "
                        "beside E where SFT's curve allows")
STAR_DELTA = 0.05
STAR_DELTA_SOURCE = ("5 accuracy points on the star graph's test problems: our choice; the paper shows the phase "
                     "transition as learning curves (Figure 8), with no number to derive δ from")
# per-step DPO keeps the policy's skill when its valid-path rate falls at most this far from its SFT start
STAR_KEPT_VALID_DROP = 0.15
STAR_SEARCH = "see docs/star_search.md; GPU recipe: params/star-graph-full.yaml"
STAR_FIGURE = "Figure 8: star graph, per-step DPO from under- and over-trained SFT"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# ---------------------------------------------------------------- 06: the scaling read-outs


def _sft_curve(result: scaling.ScalingResult) -> dict[str, float | None]:
    """SFT's test error by size, rounded as findings.json's `learned` block shows it."""
    return {k: None if v is None else round(v, 4) for k, v in result.sft_error_by_size().items()}


def sft_curve_gate(results: RunResults) -> str | None:
    """More data must teach SFT something: its error curve falls by at least scaling.MIN_SFT_DROP across the sizes."""
    sc = results.scaling
    curve = _sft_curve(sc) if sc else {}
    errs = [v for v in curve.values() if v is not None]
    if errs and (max(errs) - min(errs)) < scaling.MIN_SFT_DROP:
        return (f"SFT's error curve is flat ({', '.join(f'{k}: {v:.2f}' for k, v in curve.items())}): more data taught "
                "it nothing here")
    return None


def pooled_reading(better: str, worse: str, multiple_of: str | None) -> Callable[[RunResults], Reading | None]:
    """E = accuracy(better) - accuracy(worse), paired per test problem and pooled over the sizes both ran at; the
    efficiency multiples of `multiple_of`, the points left out and (for DPO) the pairs by size beside it."""

    def measure(results: RunResults) -> Reading | None:
        sc = results.scaling
        if sc is None:
            return None
        a, b = sc.pooled(better, worse)
        if not a:
            return None
        eff = sc.efficiency.get(multiple_of) if multiple_of else None
        reading = "; multiples by size: " + ", ".join(f"n={r.size}: {r.reading}" for r in eff) if eff else ""
        missing = [f"n={r.size}: {r.note}" for r in sc.rows if r.method in (better, worse) and r.note]
        pairs = ("; pairs by size: " + ", ".join(f"n={r.size}: {r.examples}" for r in sc.rows_of(better))
                 if better in scaling.DPO_METHODS else "")
        return Reading.paired(a, b, lambda e, lo, hi: (
            f"accuracy gain of {better} over {worse}, paired over every size's test problems (n={len(a)}): "
            f"E = {100 * e:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}]{reading}"
            + (f"; left out or broken: {'; '.join(missing)}" if missing else "") + pairs))

    return measure


# ---------------------------------------------------------------- 07: the star graph's phase transition


def star_state_gate(results: RunResults) -> str | None:
    """The claim starts from the Clever-Hans state: SFT writes valid paths but picks the first node about 1/degree."""
    st = results.star
    if st is None or st.state.reached:
        return None
    return f"SFT did not reach the state the paper studies ({star.state_rule()}); {STAR_SEARCH}"


def _kept(result: star.StarResult, label: str) -> str:
    """The kept-skill check: per-step DPO may lower the valid-path rate by at most STAR_KEPT_VALID_DROP."""
    first, last = result.start(label), result.end(label)
    v0, v1 = first.valid / first.n, last.valid / last.n
    verdict = "kept" if v1 >= v0 - STAR_KEPT_VALID_DROP else "broke the policy"
    return f"; valid paths {v0:.0%} → {v1:.0%} ({verdict}: may fall at most {100 * STAR_KEPT_VALID_DROP:.0f} points)"


def _gain(result: star.StarResult, label: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """((correct, n) after per-step DPO from `label`, (correct, n) at its SFT start)."""
    end, start = result.end(label), result.start(label)
    return (end.correct, end.n), (start.correct, start.n)


def under_reading(results: RunResults) -> Reading | None:
    """E = test accuracy after per-step DPO from the under-trained SFT checkpoint minus at that checkpoint."""
    st = results.star
    if st is None or "under" not in st.per_step_dpo:
        return None
    (k1, n1), (k2, n2) = _gain(st, "under")
    run = st.per_step_dpo["under"]
    lo, hi = stats.diff_interval(k1, n1, k2, n2)
    eff = k1 / n1 - k2 / n2
    return Reading(eff, (lo, hi), f"test accuracy {_pct(k2 / n2)} at the SFT start (epoch {run.start_epoch:g}) → "
                                  f"{_pct(k1 / n1)} after per-step DPO on {run.pairs} pairs (n={n2}, {n1}); "
                                  f"E = {100 * eff:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}]" + _kept(st, "under"))


def under_vs_over_reading(results: RunResults) -> Reading | None:
    """E = the gain from the under-trained start minus the gain from the over-trained one (four independent rates)."""
    st = results.star
    if st is None or not {"under", "over"} <= set(st.per_step_dpo):
        return None
    (a1, a0), (b1, b0) = _gain(st, "under"), _gain(st, "over")
    ru, ro = st.per_step_dpo["under"], st.per_step_dpo["over"]
    gu, go = a1[0] / a1[1] - a0[0] / a0[1], b1[0] / b1[1] - b0[0] / b0[1]
    eff, lo, hi = stats.difference_of_differences([a1, a0, b1, b0])
    return Reading(eff, (lo, hi), (
        f"gain in test accuracy from the under-trained start (epoch {ru.start_epoch:g}, {ru.pairs} pairs) "
        f"{100 * gu:+.1f} pts, from the over-trained start (epoch {ro.start_epoch:g}, {ro.pairs} pairs) "
        f"{100 * go:+.1f} pts; E = {100 * eff:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}] (normal interval, "
        "the four rates taken as independent); from under:" + _kept(st, "under")[1:] + "; from over:"
        + _kept(st, "over")[1:]))


def unscored_reading(results: RunResults) -> Reading | None:
    """07 ran but per-step DPO from the under-trained start has nothing to score: the row still says why."""
    st = results.star
    if st is None or "under" in st.per_step_dpo:
        return None
    pairs = {k: v.pairs for k, v in st.per_step_dpo.items()}
    return Reading(None, None, f"no per-step DPO run from the under-trained start was scored (pairs per start: {pairs})",
                   missing="per-step DPO found no pairs")


# ---------------------------------------------------------------- the registry entries

_SCALING = dict(delta=SCALING_DELTA, delta_source=SCALING_DELTA_SOURCE, gates=(sft_curve_gate,))
_STAR = dict(delta=STAR_DELTA, delta_source=STAR_DELTA_SOURCE, gates=(star_state_gate,))

CLAIMS: list[ClaimSpec] = [
    ClaimSpec("setlur.rft_self_2x", "setlur",
              "RFT on self-generated positives D+ is about 2x as sample-efficient as SFT on synthetic data",
              "Figures 2 and 9: D+ at n matches D_syn at about 2n", measure=pooled_reading("rft_self", "sft", "rft_self"),
              **_SCALING),
    ClaimSpec("setlur.per_step_8x", "setlur", "Per-step DPO on negatives is about 8x as sample-efficient as SFT",
              "Figure 1/5: the eight-fold read-out", measure=pooled_reading("per_step_dpo", "sft", "per_step_dpo"),
              **_SCALING),
    ClaimSpec("setlur.per_step_beats_naive", "setlur", "Per-step credit beats naive positive/negative pairing",
              "Figure 5: per-step DPO vs naive DPO", measure=pooled_reading("per_step_dpo", "naive_dpo", None),
              **_SCALING),
    ClaimSpec("setlur.adv_rft", "setlur", "Filtering positives by step advantage improves RFT",
              "Figure 11: advantage-filtered RFT", measure=pooled_reading("adv_rft", "rft", "adv_rft"), **_SCALING),
    ClaimSpec("setlur.star_phase_transition.under", "setlur",
              "Per-step DPO from the under-trained SFT checkpoint escapes the Clever-Hans plateau (test accuracy jumps)",
              STAR_FIGURE, measure=under_reading, **_STAR),
    ClaimSpec("setlur.star_phase_transition.under_vs_over", "setlur",
              "The gain from per-step DPO is larger from the under-trained SFT checkpoint than from the over-trained one "
              "(the phase transition: a memorised policy no longer explores the critical token)",
              STAR_FIGURE, measure=under_vs_over_reading, **_STAR),
    ClaimSpec("setlur.star_phase_transition", "setlur",
              "Per-step DPO escapes the Clever-Hans plateau where SFT stalls (test accuracy jumps)", STAR_FIGURE,
              measure=unscored_reading, **_STAR),
]


def learned(results: RunResults) -> Metrics:
    """The Setlur half of findings.json's `learned` block: SFT's error curve and the per-step pairs of 06, and 07's
    SFT state (valid paths, first node), its base's look-ups and the graph's degree. `base_lookup_accuracy_star` is
    07's reading of the base; findings keeps 00's where 00 gave one."""
    out: Metrics = {}
    sc = results.scaling
    if sc is not None:
        out["negatives_sft_error_by_size"] = _sft_curve(sc)
        out["negatives_per_step_pairs_by_size"] = sc.per_step_pairs_by_size
    st = results.star
    if st is not None:
        last = st.final_sft
        if last.n:
            out["star_sft_valid_path_rate"] = last.valid / last.n
            out["star_sft_first_node_accuracy"] = last.first_node / last.n
        look = st.base_lookup
        if look.n:
            out["base_lookup_accuracy_star"] = look.k / look.n
            out["star_base_lookup_accuracy"] = look.k / look.n
        out["star_degree"] = st.degree
    return out
