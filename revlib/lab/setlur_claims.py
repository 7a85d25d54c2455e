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
    """The claim starts from the Clever-Hans state: an SFT checkpoint that follows edges but guesses the first node,
    on its own training graphs."""
    st = results.star
    if st is None or st.state.reached:
        return None
    return f"SFT did not reach the state the paper studies ({star.state_rule()}); {STAR_SEARCH}"


def _untrained(st: star.StarResult, names: list[str]) -> str | None:
    """The precondition of every phase-transition row: each DPO it reads trained (Figure 8(a)'s sharp fall)."""
    bad = [f"{n} (final loss {st.per_step_dpo[n].final_loss:.3f})" if st.per_step_dpo[n].final_loss is not None
           else f"{n} (no pairs)" for n in names if not st.per_step_dpo[n].trained]
    return f"DPO did not train: {', '.join(bad)}; needs {star.trained_rule()}" if bad else None


def under_dpo_trained(results: RunResults) -> str | None:
    st = results.star
    return None if st is None else _untrained(st, st.names("under"))


def all_dpo_trained(results: RunResults) -> str | None:
    st = results.star
    return None if st is None else _untrained(st, st.names("under") + st.names("over"))


def _valid_rates(result: star.StarResult, name: str) -> tuple[float, float]:
    """Valid-path rate (test) at per-step DPO's start from `name` and at its end."""
    return result.start(name).valid_path_rate, result.end(name).valid_path_rate


def _kept_skill(result: star.StarResult, name: str) -> bool:
    """Per-step DPO from `name` lowered the valid-path rate by at most STAR_KEPT_VALID_DROP."""
    v0, v1 = _valid_rates(result, name)
    return v1 >= v0 - STAR_KEPT_VALID_DROP


def _broke(st: star.StarResult, names: list[str]) -> str | None:
    """The per-step DPO runs that broke the policy (`_kept_skill` failed), in words; None when none did."""
    bad = [n for n in names if not _kept_skill(st, n)]
    return (f"per-step DPO broke the policy from {', '.join(bad)} (valid paths fell more than "
            f"{100 * STAR_KEPT_VALID_DROP:.0f} points): a difference of gains would measure the damage, not the phase "
            "transition") if bad else None


def all_dpo_kept_skill(results: RunResults) -> str | None:
    """The comparison of (b) with (c) needs both to be the method at work: no run broke edge-following."""
    st = results.star
    return None if st is None else _broke(st, st.names("under") + st.names("over"))


def _kept(result: star.StarResult, name: str) -> str:
    """The kept-skill check: per-step DPO may lower the valid-path rate by at most STAR_KEPT_VALID_DROP."""
    v0, v1 = _valid_rates(result, name)
    verdict = "kept" if _kept_skill(result, name) else "broke the policy"
    return f"valid paths {v0:.0%} → {v1:.0%} ({verdict}: may fall at most {100 * STAR_KEPT_VALID_DROP:.0f} points)"


def _gains(result: star.StarResult, names: list[str]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """((correct, n) after per-step DPO, (correct, n) at its SFT start) for each start."""
    return [((result.end(n).correct, result.end(n).n), (result.start(n).correct, result.start(n).n)) for n in names]


def _mean_gain(gains: list[tuple[tuple[int, int], tuple[int, int]]]) -> tuple[float, float]:
    """The mean gain in accuracy over starts and its variance (independent binomial rates)."""
    eff = sum(a / n1 - b / n2 for (a, n1), (b, n2) in gains) / len(gains)
    var = sum(a / n1 * (1 - a / n1) / n1 + b / n2 * (1 - b / n2) / n2 for (a, n1), (b, n2) in gains) / len(gains) ** 2
    return eff, var


def _each(result: star.StarResult, names: list[str]) -> str:
    parts = []
    for n in names:
        s, e, run = result.start(n), result.end(n), result.per_step_dpo[n]
        parts.append(f"{n} (SFT step {run.start_step}, {run.pairs} pairs, {e.step} DPO steps): test accuracy "
                     f"{_pct(s.correct / s.n)} → {_pct(e.correct / e.n)}; {_kept(result, n)}")
    return "; ".join(parts)


def under_reading(results: RunResults) -> Reading | None:
    """Figure 8(b): E = test accuracy after per-step DPO from the under-trained starts minus at those starts (the mean
    over starts)."""
    st = results.star
    if st is None:
        return None
    names = st.names("under")
    if not names:
        return Reading(None, None, "no per-step DPO run from an under-trained start",
                       missing=f"no SFT checkpoint met the under-trained rule ({star.state_rule()})")
    eff, var = _mean_gain(_gains(st, names))
    lo, hi = eff - stats.Z95 * var ** 0.5, eff + stats.Z95 * var ** 0.5
    return Reading(eff, (lo, hi), f"{_each(st, names)}; mean gain E = {100 * eff:+.1f} pts [{100 * lo:+.1f}, "
                                  f"{100 * hi:+.1f}] (n={st.test_n} test graphs)")


def under_vs_over_reading(results: RunResults) -> Reading | None:
    """Figure 8(b) against (c): E = the mean gain from the under-trained starts minus the gain from the over-trained
    one (independent rates)."""
    st = results.star
    if st is None:
        return None
    under, over = st.names("under"), st.names("over")
    if not under or not over:
        return Reading(None, None, "needs per-step DPO from an under- and an over-trained start",
                       missing=f"starts run: {sorted(st.per_step_dpo) or 'none'}")
    gu, vu = _mean_gain(_gains(st, under))
    go_, vo = _mean_gain(_gains(st, over))
    eff, sd = gu - go_, (vu + vo) ** 0.5
    lo, hi = eff - stats.Z95 * sd, eff + stats.Z95 * sd
    return Reading(eff, (lo, hi), (
        f"mean gain from the under-trained starts {100 * gu:+.1f} pts, from the over-trained start {100 * go_:+.1f} "
        f"pts; E = {100 * eff:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}] (normal interval, the rates taken as "
        f"independent); {_each(st, under + over)}"))


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
              "Per-step DPO from an under-trained SFT checkpoint escapes the Clever-Hans plateau (test error falls)",
              STAR_FIGURE + " (b)", measure=under_reading, preconditions=(under_dpo_trained,), **_STAR),
    ClaimSpec("setlur.star_phase_transition.under_vs_over", "setlur",
              "The gain from per-step DPO is larger from the under-trained SFT checkpoints than from the over-trained one "
              "(the phase transition: a memorised policy no longer explores the critical token)",
              STAR_FIGURE + " (b) against (c)", measure=under_vs_over_reading,
              preconditions=(all_dpo_trained, all_dpo_kept_skill),
              **_STAR),
]


def learned(results: RunResults) -> Metrics:
    """The Setlur half of findings.json's `learned` block: SFT's error curve and the per-step pairs of 06, and 07's
    SFT state (valid paths, first node), its base's look-ups, the graph's degree, the model's depth, the graphs it
    trained and was tested on, the starts chosen by state and each start's final DPO loss. `base_lookup_accuracy_star` is
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
        out["star_train_graphs"] = st.train_graphs
        out["star_model_layers"] = st.model_layers
        out["star_test_n"] = st.test_n
        out["star_starts"] = [s.model_dump(include={"name", "step", "valid_path_rate", "valid_path_rate_test",
                                                    "first_node_train", "first_node_test"}) for s in st.starts]
        out["star_dpo_final_loss_by_start"] = {n: r.final_loss for n, r in st.per_step_dpo.items()}
    return out
