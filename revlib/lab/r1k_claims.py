"""The r1k paper's claims (Tables 1 and 2, Figure 2, the abstract) and our direction-aware variant, declared.

Each entry reads the run's typed results (`RunResults`): 05's benchmark scores for the tables, 04's per-example
probe scores for Figure 2. δ and every threshold the page mentions are the constants below, so the prose and the
code cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable

from revlib.core import stats
from revlib.core.io import Metrics
from revlib.data.world import ALIVE_MARGIN
from revlib.evaluation import paper_reference
from revlib.lab.claims import ClaimSpec, Reading
from revlib.lab.results import RunResults

LEARNED_MIN_ACCURACY = 0.5  # an SFT model answering under half of its own direction's test problems did not learn
DEFAULT_MIN_ALP_RISE = 0.5  # the probe gate without a probes section (params/probes.py's default)

TABLE_DELTA = 0.02
TABLE_DELTA_SOURCE = ("2 accuracy points: below the smallest Table 1 gap the paper reports (+1.6 points), so a rule "
                      "that read the paper's own tables would call them reproduced")
PROBE_DELTA = 0.05
PROBE_DELTA_SOURCE = ("0.05 nats per token: our choice for the task world, where SFT moves ALP by tenths; above the "
                      "authors' released DPO effects (the row says so where it is)")

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


def probe_gate(results: RunResults) -> str | None:
    """The probe models must have learned: in-distribution ALP(y+) rose from the base by the probe bar."""
    p = results.probes
    if p is None:
        return None
    after, before = p.mean("alp_chosen", "sft"), p.mean("alp_chosen", "base")
    bar = results.exp.probes.min_alp_rise if results.exp.probes else DEFAULT_MIN_ALP_RISE
    if after is not None and before is not None and after - before < bar:
        return f"probe models did not learn (in-distribution ALP(y+) rose {after - before:+.3f} from the base; needs {bar:g})"
    return None


# ---------------------------------------------------------------- Tables 1 and 2: accuracy, model a against model b


def table_reading(a: tuple[str, str], b: tuple[str, str]) -> Callable[[RunResults], Reading | None]:
    """E = accuracy(a) - accuracy(b): paired per problem on the alive task-world benchmarks outside both training sets
    where the run has them, else on T_f with independent samples (Newcombe)."""

    def measure(results: RunResults) -> Reading | None:
        bench = results.benchmarks
        if bench is None:
            return None
        if bench.world:
            alive = bench.alive()
            what = (f"accuracy on the task-world benchmarks outside both training sets ({', '.join(alive) or 'none alive'}; "
                    "pooled)")
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
        what = ("accuracy on T_f (forward test problems, in distribution for forward-trained models: no task-world "
                "benchmarks in this run)")
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


# ---------------------------------------------------------------- Figure 2: per-example ALP changes on the probes


def alp_reading(metric: str, first: str, second: str, what: str) -> Callable[[RunResults], Reading | None]:
    """E = mean over probe examples of `metric` at the last `first` checkpoint minus at the last `second` one, in
    distribution, with its bootstrap interval."""

    def measure(results: RunResults) -> Reading | None:
        values = results.probes.paired(metric, first, second) if results.probes else None
        if values is None:
            return None
        return Reading.mean(values, lambda e, lo, hi: (
            f"{what}: E = {e:+.3f} nats/token [{lo:+.3f}, {hi:+.3f}] over {len(values)} probe examples"))

    return measure


def mass_reading(results: RunResults) -> Reading | None:
    """Another question's y+ after DPO minus after SFT; the argmax token's move beside it."""
    p = results.probes
    sft = p.at("sft") if p else None
    if sft is None or p.at("dpo") is None or "alp_irrelevant" not in sft:
        return None
    reading = alp_reading("alp_irrelevant", "dpo", "sft",
                          "ALP(another question's y+) after DPO minus after SFT, in distribution")(results)
    top = p.paired("alp_argmax", "dpo", "sft") or []
    if reading is None or not top:
        return reading
    return Reading(reading.effect, reading.interval,
                   reading.measured + f"; the argmax token along y+ moved {sum(top) / len(top):+.3f} nats/token")


def mix_distinction_reading(results: RunResults) -> Reading | None:
    """In-distribution margin after SFT: the pure sets' mean minus the mix's."""
    p = results.probes
    sft = p.at("sft") if p else None
    if sft is None:
        return None
    train_sets = sft.index.get_level_values("train_set")
    pure, mixed = sft["margin"][train_sets != "mix"].tolist(), sft["margin"][train_sets == "mix"].tolist()
    if not pure or not mixed:
        return None
    eff, lo, hi = stats.mean_difference(pure, mixed)
    return Reading(eff, (lo, hi), f"in-distribution margin after SFT: pure sets {sum(pure) / len(pure):.3f}, mix "
                                  f"{sum(mixed) / len(mixed):.3f}; E = {eff:+.3f} [{lo:+.3f}, {hi:+.3f}]")


# ---------------------------------------------------------------- the authors' released Qwen2.5-7B effects

_END = paper_reference.endpoints()
_FF, _MM, _RR = _END["(D_f, T_f)"], _END["(D_m, T_m)"], _END["(D_r, T_r)"]

# ---------------------------------------------------------------- the registry entries

_TABLE = dict(delta=TABLE_DELTA, delta_source=TABLE_DELTA_SOURCE, gates=(table_gate,))
_PROBE = dict(delta=PROBE_DELTA, delta_source=PROBE_DELTA_SOURCE, gates=(sft_gate, probe_gate))

MIXING_HURTS = ClaimSpec(
    "r1k.table1.mixing_hurts", "r1k", "Mixing forward and reverse data in SFT hurts (mix below forward alone)",
    "Table 1: the mixed SFT model trails", measure=table_reading(("sft", "forward"), ("sft", "mix")), **_TABLE)

CLAIMS: list[ClaimSpec] = [
    ClaimSpec("r1k.table1.reverse_beats_forward", "r1k", "SFT on reverse data (r1k) beats SFT on forward data (s1k)",
              "Table 1: +1.6 to +6.8 points on AIME24/MATH500/GPQA",
              measure=table_reading(("sft", "reverse"), ("sft", "forward")), **_TABLE),
    MIXING_HURTS,
    ClaimSpec("r1k.table1.more_mix_hurts_more", "r1k", "More mixed data hurts more (1000+1000 mix below the 500+500 mix)",
              "Table 1: mix vs half mix", measure=table_reading(("sft", "half_mix"), ("sft", "mix")), **_TABLE),
    ClaimSpec("r1k.table2.dpo_recovers_mix", "r1k", "DPO on the mixed SFT model recovers part of the loss",
              "Table 2: DPO on the mix SFT model vs its SFT baseline",
              measure=table_reading(("dpo", "mix"), ("sft", "mix")), preconditions=(mixing_lost_something,), **_TABLE),
    ClaimSpec("r1k.fig2a.sft_raises_chosen", "r1k",
              "SFT raises the log-probability of the preferred response in distribution",
              "Figure 2(a): ALP(y+) rises over SFT checkpoints",
              measure=alp_reading("alp_chosen", "sft", "base", "ALP(y+) after SFT minus at the base, in distribution"),
              released_effect=_FF["sft_change_alp_chosen"], released_what="(D_f, T_f) ALP(y+) epoch 1 to 6", **_PROBE),
    ClaimSpec("r1k.fig2.mix_weakens_distinction", "r1k",
              "Mixed SFT weakens the directional distinction (smaller margin than forward- or reverse-only SFT)",
              "Figure 2(c): the D_m margin stays lowest", measure=mix_distinction_reading,
              released_effect=(_FF["margin"] + _RR["margin"]) / 2 - _MM["margin"],
              released_what="pure-set margins minus the D_m margin after 6 SFT epochs", **_PROBE),
    ClaimSpec("r1k.fig2b.dpo_lowers_rejected", "r1k", "DPO lowers the log-probability of the rejected response",
              "Figure 2(b): ALP(y−) falls over DPO checkpoints",
              measure=alp_reading("alp_rejected", "sft", "dpo", "ALP(y−) after SFT minus after DPO, in distribution"),
              released_effect=-_MM["dpo_change_alp_rejected"], released_what="(D_m, T_m) ALP(y−) fall over 7 DPO epochs",
              **_PROBE),
    ClaimSpec("r1k.fig2c.dpo_lowers_chosen_too", "r1k", "DPO also lowers the preferred response: mass moves to other outputs",
              "Figure 2(a)/(c): ALP(y+) falls under DPO while the margin grows",
              measure=alp_reading("alp_chosen", "sft", "dpo", "ALP(y+) after SFT minus after DPO, in distribution"),
              released_effect=-_MM["dpo_change_alp_chosen"], released_what="(D_m, T_m) ALP(y+) fall over 7 DPO epochs",
              **_PROBE),
    ClaimSpec("r1k.abstract.dpo_mass_to_irrelevant", "r1k",
              "DPO shifts probability mass toward irrelevant outputs (Ren & Sutherland's squeezing)",
              "abstract: no figure; here another question's y+ and the argmax token along y+",
              measure=mass_reading, **_PROBE),
    ClaimSpec("ours.direction_aware_per_step", "ours",
              "Direction-aware per-step DPO beats directional DPO on the mix SFT model (our hypothesis)",
              "beyond both papers", measure=table_reading(("dpo_per_step", "mix"), ("dpo", "mix")), **_TABLE),
]


def learned(results: RunResults) -> Metrics:
    """The r1k half of findings.json's `learned` block: the base's skills, SFT's in-distribution accuracy, and the
    probe models' ALP at the base, after SFT and under DPO."""
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
    p = results.probes
    if p is not None:
        base, sft, dpo = p.at("base"), p.at("sft"), p.at("dpo")
        if base is not None:
            out["probe_alp_pos_id_base"] = float(base["alp_chosen"].mean())
        out["probe_test_n"] = p.test_examples
        if sft is not None:
            out["probe_alp_pos_id_after_sft"] = float(sft["alp_chosen"].mean())
            out["probe_margin_id_after_sft"] = float(sft["margin"].mean())
        if sft is not None and dpo is not None:  # paired: the same (pair, probe) before and after DPO
            before, after = sft["alp_rejected"], dpo["alp_rejected"]
            both = after.index.intersection(before.index)
            out["probe_alp_neg_change_dpo"] = float((after[both] - before[both]).mean())
    return out
