"""The findings page: which claims of the two papers this run reproduces, with intervals and a stated rule.

Reads only what the stages wrote into the run directory (00's accuracies, 04's per-example probe
scores, 05's results, 06's per-problem outcomes, 07's star.json) and writes
`outputs/<experiment>/findings.json` and `findings.html`. A claim whose stage did not run is listed
as not covered; a claim whose models did not learn is inconclusive, whatever its numbers say.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from revlib.core import io, stats
from revlib.stages.dynamics import last_checkpoint
from revlib.params import Experiment

RULE = ("Each claim is an effect E signed so that E > 0 is the paper's direction, with a 95% interval [lo, hi], and "
        "the size δ the claim needs (stated per row). reproduced: lo > 0 and E ≥ δ. not reproduced: hi < δ, i.e. the "
        "interval rules out an effect of size δ; when it lies wholly above 0 the page says 'too small to matter'. "
        "inconclusive: otherwise; or when the models it rests on did not learn (in-distribution accuracy below 50%, "
        "or a base below its primitive-skill target); or when the claim's precondition failed (the row names it). "
        "Tables 1 and 2 are read out on the task-world benchmarks outside both training sets that are alive (some "
        "model at least 20 points above chance), pooled and paired per problem.")
TOO_SMALL = "too small to matter: the interval lies above 0 but wholly below δ"
LEARNED_MIN_ACCURACY = 0.5


@dataclass
class Claim:
    id: str
    paper: str
    claim: str
    paper_figure: str
    measured: str
    verdict: str
    effect: float | None = None
    interval: tuple[float, float] | None = None
    delta: float | None = None
    note: str = ""


def verdict(effect_lo: float, effect_hi: float, delta: float, effect: float | None = None) -> str:
    """The rule (RULE): reproduced needs lo > 0 and E >= δ; hi < δ is not reproduced; else inconclusive.
    Without `effect`, E is the interval's midpoint."""
    e = (effect_lo + effect_hi) / 2 if effect is None else effect
    if effect_lo > 0 and e >= delta:
        return "reproduced"
    if effect_hi < delta:
        return "not reproduced"
    return "inconclusive"


def decide(effect: float, lo: float, hi: float, delta: float, gate: str | None = None,
           precondition: str | None = None) -> tuple[str, str]:
    """(verdict, note): a gate (models did not learn) or a failed precondition makes it inconclusive and says why;
    an interval wholly between 0 and δ is 'too small to matter'."""
    if gate:
        return "inconclusive", gate
    if precondition:
        return "inconclusive", f"precondition failed: {precondition}"
    v = verdict(lo, hi, delta, effect)
    if v == "not reproduced" and lo > 0:
        return v, TOO_SMALL
    if v == "inconclusive" and lo > 0:
        return v, f"above 0 but E = {effect:+.3g} is below δ = {delta:g} and the interval does not rule δ out"
    return v, ""


def _vn(decided: tuple[str, str], effect: float, interval: tuple[float, float], delta: float) -> tuple:
    """Claim's (verdict, effect, interval, delta, note) fields from decide()'s (verdict, note)."""
    return decided[0], effect, interval, delta, decided[1]


def _paired_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Mean of a - b over paired outcomes with a 95% normal interval (the paired difference of proportions)."""
    d = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(d)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / max(n - 1, 1)
    half = stats.Z95 * math.sqrt(var / n)
    return mean, mean - half, mean + half


def _fmt_pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# ---------------------------------------------------------------- reading the run directory


def _stage_dir(exp: Experiment, stage: str) -> Path | None:
    root = exp.run_root / stage
    if not root.exists():
        return None
    done = [d for d in sorted(root.iterdir()) if (d / "manifest.json").exists()
            and io.read_json(d / "manifest.json").get("status") == "done"]
    return done[0] if done else None


def _results(exp: Experiment) -> dict[tuple[str, str, str], tuple[int, int]]:
    """05's (model label, train set, task) -> (correct, problems)."""
    d = _stage_dir(exp, "05_benchmarks")
    if d is None or not (d / "results.csv").exists():
        return {}
    import pandas as pd

    out = {}
    for r in pd.read_csv(d / "results.csv").to_dict("records"):
        n = int(r["problems"])
        out[(r["stage"], r["train_set"], r["task"])] = (round(float(r["accuracy"]) * n), n)
    return out


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)  # as revlib.evaluation.stage names samples/<model>/


def _world(exp: Experiment) -> list[dict[str, Any]]:
    """05's world.json: per task-world benchmark its n, chance, best model and whether it is alive."""
    d = _stage_dir(exp, "05_benchmarks")
    return io.read_json(d / "world.json") if d is not None and (d / "world.json").exists() else []


def _outcomes(exp: Experiment, tasks: Sequence[str]) -> dict[tuple[str, str], dict[tuple[str, int], float]]:
    """05's per-problem scores: (model label, train set) -> (task, problem) -> share of its samples right."""
    d = _stage_dir(exp, "05_benchmarks")
    out: dict[tuple[str, str], dict[tuple[str, int], float]] = {}
    if d is None or not (d / "results.csv").exists():
        return out
    import pandas as pd

    for r in pd.read_csv(d / "results.csv").to_dict("records"):
        if r["task"] not in tasks:
            continue
        path = d / "samples" / _slug(f"{r['stage']}__{r['train_set']}") / f"{r['task']}.jsonl"
        if not path.exists():
            continue
        per: dict[int, list[bool]] = {}
        for row in io.read_jsonl(path):
            per.setdefault(int(row["doc_id"]), []).append(bool(row["correct"]))
        out.setdefault((r["stage"], r["train_set"]), {}).update({(r["task"], k): sum(v) / len(v) for k, v in per.items()})
    return out


def learned_state(exp: Experiment) -> dict[str, Any]:
    """The `learned` object: whether each stage's models learned, as numbers."""
    out: dict[str, Any] = {}
    d = _stage_dir(exp, "00_base_model")
    if d is not None and (d / "base.json").exists() and io.read_json(d / "base.json").get("sha256"):
        out["base_model_sha256"] = io.read_json(d / "base.json")["sha256"]  # a GGUF base: the file's own
    if d is not None:
        m = io.read_json(d / "metrics.json")
        for key, name in (("primitive_accuracy/arith", "base_primitive_accuracy_arith"),
                          ("primitive_accuracy/star_graph", "base_lookup_accuracy_star")):
            if key in m:
                out[name] = m[key]
    res = _results(exp)
    for direction in ("forward", "reverse"):
        hit = res.get(("sft", direction, f"synthetic_{direction}"))
        if hit:
            out[f"sft_id_accuracy_{direction}"] = hit[0] / hit[1]
            out["sft_test_n"] = min(out.get("sft_test_n", hit[1]), hit[1])
    probes = _probe_scores(exp)
    if probes is not None:
        idf = probes[probes["distribution"] == "ID"]
        sft_last = last_checkpoint(idf, "sft")
        dpo_last = last_checkpoint(idf, "dpo")
        base_rows = idf[idf["phase"] == "base"]
        if not base_rows.empty:
            out["probe_alp_pos_id_base"] = float(base_rows["alp_chosen"].mean())
        out["probe_test_n"] = int(probes["example"].nunique())
        if sft_last is not None:
            out["probe_alp_pos_id_after_sft"] = float(sft_last["alp_chosen"].mean())
            out["probe_margin_id_after_sft"] = float(sft_last["margin"].mean())
        if sft_last is not None and dpo_last is not None:  # paired: the same (pair, probe) before and after DPO
            key = ["pair", "example"]
            before = sft_last.set_index(key)["alp_rejected"]
            after = dpo_last.set_index(key)["alp_rejected"]
            both = after.index.intersection(before.index)
            out["probe_alp_neg_change_dpo"] = float((after[both] - before[both]).mean())
    scaling = _scaling(exp)
    if scaling:
        out["negatives_sft_error_by_size"] = {str(r["size"]): round(r["error"], 4) for r in scaling["rows"] if r["method"] == "sft"}
        out["negatives_per_step_pairs_by_size"] = {str(r["size"]): r["examples"] for r in scaling["rows"]
                                                   if r["method"] == "per_step_dpo"}
    star = _star(exp)
    if star:
        for key, name in (("sft_valid_path", "star_sft_valid_path_rate"), ("sft_first_node", "star_sft_first_node_accuracy")):
            if star.get(key, {}).get("n"):
                out[name] = star[key]["k"] / star[key]["n"]
        if "base_lookup_accuracy_star" not in out and star.get("base_lookup", {}).get("n"):
            out["base_lookup_accuracy_star"] = star["base_lookup"]["k"] / star["base_lookup"]["n"]
        if star.get("base_lookup", {}).get("n"):
            out["star_base_lookup_accuracy"] = star["base_lookup"]["k"] / star["base_lookup"]["n"]
        if star.get("degree"):
            out["star_degree"] = star["degree"]
    return out


def _probe_scores(exp: Experiment):
    d = _stage_dir(exp, "04_probe_dynamics")
    if d is None or not (d / "scores.parquet").exists():
        return None
    import pandas as pd

    return pd.read_parquet(d / "scores.parquet")


def _scaling(exp: Experiment) -> dict[str, Any] | None:
    d = _stage_dir(exp, "06_negative_data")
    return io.read_json(d / "scaling.json") if d is not None and (d / "scaling.json").exists() else None


def _star(exp: Experiment) -> dict[str, Any] | None:
    d = _stage_dir(exp, "07_star_graph")
    return io.read_json(d / "star.json") if d is not None and (d / "star.json").exists() else None


# ---------------------------------------------------------------- claims


def _accuracy_claim(cid: str, paper: str, text: str, fig: str, res, a: tuple, b: tuple, delta: float,
                    what: str, gate: str | None, precondition: str | None = None) -> Claim | None:
    """E = accuracy(a) - accuracy(b), independent samples, Newcombe interval."""
    if a not in res or b not in res:
        return None
    (k1, n1), (k2, n2) = res[a], res[b]
    lo, hi = stats.diff_interval(k1, n1, k2, n2)
    eff = k1 / n1 - k2 / n2
    measured = f"{what}: {_fmt_pct(k1 / n1)} vs {_fmt_pct(k2 / n2)} (n={n1}, {n2}); E = {100 * eff:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    v, note = decide(eff, lo, hi, delta, gate, precondition)
    return Claim(cid, paper, text, fig, measured, v, eff, (lo, hi), delta, note)


def _alp_claim(cid: str, text: str, fig: str, values: Sequence[float], delta: float, what: str, gate: str | None) -> Claim:
    mean = sum(values) / len(values)
    lo, hi = stats.bootstrap_mean(values)
    measured = f"{what}: E = {mean:+.3f} nats/token [{lo:+.3f}, {hi:+.3f}] over {len(values)} probe examples"
    v, note = decide(mean, lo, hi, delta, gate)
    return Claim(cid, "r1k", text, fig, measured, v, mean, (lo, hi), delta, note)


def _paired_claim(cid: str, paper: str, text: str, fig: str, outcomes, a: tuple[str, str], b: tuple[str, str],
                  delta: float, what: str, gate: str | None, precondition: str | None = None) -> Claim | None:
    """E = accuracy(a) - accuracy(b) over the problems both models answered, paired per problem."""
    if a not in outcomes or b not in outcomes:
        return None
    keys = sorted(set(outcomes[a]) & set(outcomes[b]))
    if not keys:
        return None
    xs, ys = [outcomes[a][k] for k in keys], [outcomes[b][k] for k in keys]
    eff, lo, hi = _paired_interval(xs, ys)
    measured = (f"{what}: {_fmt_pct(sum(xs) / len(xs))} vs {_fmt_pct(sum(ys) / len(ys))} (n={len(keys)} paired problems); "
                f"E = {100 * eff:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}]")
    v, note = decide(eff, lo, hi, delta, gate, precondition)
    return Claim(cid, paper, text, fig, measured, v, eff, (lo, hi), delta, note)


def r1k_claims(exp: Experiment, learned: dict[str, Any]) -> list[Claim]:
    res = _results(exp)
    out: list[Claim | None] = []
    sft_ok = [learned.get(f"sft_id_accuracy_{d}") for d in ("forward", "reverse")]
    gate = None
    if any(v is not None and v < LEARNED_MIN_ACCURACY for v in sft_ok):
        shown = ", ".join(f"{d} {v:.1%}" for d, v in zip(("forward", "reverse"), sft_ok) if v is not None)
        gate = f"SFT did not learn its own direction well enough (in-distribution accuracy {shown}; the rule needs {LEARNED_MIN_ACCURACY:.0%})"
    world_rows = _world(exp)
    if world_rows:  # Tables 1 and 2 read out where the paper reads them: outside both training sets
        alive = [w["benchmark"] for w in world_rows if w["alive"]]
        outcomes = _outcomes(exp, alive)
        what = (f"accuracy on the task-world benchmarks outside both training sets ({', '.join(alive) or 'none alive'}; "
                "pooled)")
        tgate = gate or (None if alive else "no task-world benchmark is alive (no model 20 points above chance on any)")

        def table_claim(cid, text, fig, a, b, precondition=None):
            if tgate and not outcomes:
                return Claim(cid, "r1k", text, fig, what, "inconclusive", None, None, 0.02, tgate)
            return _paired_claim(cid, "r1k", text, fig, outcomes, a, b, 0.02, what, tgate, precondition)
    else:  # no task-world benchmarks: the in-distribution forward test set (the forward model's own distribution)
        T = "synthetic_forward"
        what = "accuracy on T_f (forward test problems, in distribution for forward-trained models: no task-world benchmarks in this run)"

        def table_claim(cid, text, fig, a, b, precondition=None):
            return _accuracy_claim(cid, "r1k", text, fig, res, (*a, T), (*b, T), 0.02, what, gate, precondition)

    out.append(table_claim(
        "r1k.table1.reverse_beats_forward", "SFT on reverse data (r1k) beats SFT on forward data (s1k)",
        "Table 1: +1.6 to +6.8 points on AIME24/MATH500/GPQA", ("sft", "reverse"), ("sft", "forward")))
    hurts = table_claim(
        "r1k.table1.mixing_hurts", "Mixing forward and reverse data in SFT hurts (mix below forward alone)",
        "Table 1: the mixed SFT model trails", ("sft", "forward"), ("sft", "mix"))
    out.append(hurts)
    out.append(table_claim(
        "r1k.table1.more_mix_hurts_more", "More mixed data hurts more (1000+1000 mix below the 500+500 mix)",
        "Table 1: mix vs half mix", ("sft", "half_mix"), ("sft", "mix")))
    if hurts is None or hurts.interval is None:
        pre = "mixing's loss (r1k.table1.mixing_hurts) was not measured, so there is no loss to recover"
    elif hurts.interval[0] <= 0:
        pre = (f"a loss to recover: the mix SFT model must trail forward-only SFT, but mixing lost nothing measurable "
               f"(r1k.table1.mixing_hurts: E = {100 * hurts.effect:+.1f} pts [{100 * hurts.interval[0]:+.1f}, "
               f"{100 * hurts.interval[1]:+.1f}])")
    else:
        pre = None
    out.append(table_claim(
        "r1k.table2.dpo_recovers_mix", "DPO on the mixed SFT model recovers part of the loss",
        "Table 2: DPO on the mix SFT model vs its SFT baseline", ("dpo", "mix"), ("sft", "mix"), pre))
    probes = _probe_scores(exp)
    if probes is not None:
        pgate = gate
        after, before = learned.get("probe_alp_pos_id_after_sft"), learned.get("probe_alp_pos_id_base")
        bar = exp.probes.min_alp_rise if exp.probes else 0.5
        if after is not None and before is not None and after - before < bar:
            pgate = (pgate + "; " if pgate else "") + (f"probe models did not learn (in-distribution ALP(y+) rose "
                                                       f"{after - before:+.3f} from the base; needs {bar:g})")
        idf = probes[probes["distribution"] == "ID"]
        key = ["pair", "example"]
        base = idf[idf["phase"] == "base"].set_index(key)
        sft = last_checkpoint(idf, "sft")
        dpo = last_checkpoint(idf, "dpo")
        if sft is not None and not base.empty:
            s = sft.set_index(key)
            diff = (s["alp_chosen"] - base["alp_chosen"].reindex(s.index)).dropna().tolist()
            out.append(_alp_claim("r1k.fig2a.sft_raises_chosen", "SFT raises the log-probability of the preferred response in distribution",
                                  "Figure 2(a): ALP(y+) rises over SFT checkpoints", diff, 0.05,
                                  "ALP(y+) after SFT minus at the base, in distribution", pgate))
        if sft is not None:
            s = sft.set_index(key)
            pure = [m for p, m in s["margin"].items() if not p[0].startswith("(D_m")]
            mixed = [m for p, m in s["margin"].items() if p[0].startswith("(D_m")]
            if pure and mixed:
                eff = sum(pure) / len(pure) - sum(mixed) / len(mixed)
                lo_p, hi_p = stats.bootstrap_mean(pure)
                lo_m, hi_m = stats.bootstrap_mean(mixed)
                lo, hi = eff - math.hypot(sum(pure) / len(pure) - lo_p, hi_m - sum(mixed) / len(mixed)), \
                    eff + math.hypot(hi_p - sum(pure) / len(pure), sum(mixed) / len(mixed) - lo_m)
                out.append(Claim("r1k.fig2.mix_weakens_distinction", "r1k",
                                 "Mixed SFT weakens the directional distinction (smaller margin than forward- or reverse-only SFT)",
                                 "Figure 2(c): the D_m margin stays lowest", f"in-distribution margin after SFT: pure sets "
                                 f"{sum(pure) / len(pure):.3f}, mix {sum(mixed) / len(mixed):.3f}; E = {eff:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                                 *_vn(decide(eff, lo, hi, 0.05, pgate), eff, (lo, hi), 0.05)))
        if sft is not None and dpo is not None:
            s, d = sft.set_index(key), dpo.set_index(key)
            neg = (s["alp_rejected"] - d["alp_rejected"].reindex(s.index)).dropna().tolist()
            pos = (s["alp_chosen"] - d["alp_chosen"].reindex(s.index)).dropna().tolist()
            out.append(_alp_claim("r1k.fig2b.dpo_lowers_rejected", "DPO lowers the log-probability of the rejected response",
                                  "Figure 2(b): ALP(y−) falls over DPO checkpoints", neg, 0.05,
                                  "ALP(y−) after SFT minus after DPO, in distribution", pgate))
            out.append(_alp_claim("r1k.fig2c.dpo_lowers_chosen_too", "DPO also lowers the preferred response: mass moves to other outputs",
                                  "Figure 2(a)/(c): ALP(y+) falls under DPO while the margin grows", pos, 0.05,
                                  "ALP(y+) after SFT minus after DPO, in distribution", pgate))
            if "alp_irrelevant" in s:
                irr = (d["alp_irrelevant"].reindex(s.index) - s["alp_irrelevant"]).dropna().tolist()
                top = (d["alp_argmax"].reindex(s.index) - s["alp_argmax"]).dropna().tolist()
                claim = _alp_claim("r1k.abstract.dpo_mass_to_irrelevant",
                                   "DPO shifts probability mass toward irrelevant outputs (Ren & Sutherland's squeezing)",
                                   "abstract: no figure; here another question's y+ and the argmax token along y+",
                                   irr, 0.05, "ALP(another question's y+) after DPO minus after SFT, in distribution", pgate)
                if top:
                    claim.measured += f"; the argmax token along y+ moved {sum(top) / len(top):+.3f} nats/token"
                out.append(claim)
    _beside_release(out)
    variant = table_claim(
        "ours.direction_aware_per_step", "Direction-aware per-step DPO beats directional DPO on the mix SFT model (our hypothesis)",
        "beyond both papers", ("dpo_per_step", "mix"), ("dpo", "mix"))
    if variant is not None:
        variant.paper = "ours"
    out.append(variant)
    return [c for c in out if c is not None]


def _beside_release(claims: list[Claim | None]) -> None:
    """Each Figure 2 row gets the r1k authors' released Qwen2.5-7B effect beside it (their T: probe set or held out,
    the release does not say), and a note when that effect is itself below the row's δ."""
    from revlib.evaluation import paper_reference

    end = paper_reference.endpoints()
    ff, mm = end["(D_f, T_f)"], end["(D_m, T_m)"]
    released = {
        "r1k.fig2a.sft_raises_chosen": (ff["sft_change_alp_chosen"], "(D_f, T_f) ALP(y+) epoch 1 to 6"),
        "r1k.fig2b.dpo_lowers_rejected": (-mm["dpo_change_alp_rejected"], "(D_m, T_m) ALP(y−) fall over 7 DPO epochs"),
        "r1k.fig2c.dpo_lowers_chosen_too": (-mm["dpo_change_alp_chosen"], "(D_m, T_m) ALP(y+) fall over 7 DPO epochs"),
        "r1k.fig2.mix_weakens_distinction": ((ff["margin"] + end["(D_r, T_r)"]["margin"]) / 2 - mm["margin"],
                                             "pure-set margins minus the D_m margin after 6 SFT epochs"),
    }
    for c in claims:
        if c is None or c.id not in released:
            continue
        value, what = released[c.id]
        c.paper_figure += f" · authors' release (Qwen2.5-7B): {what} E = {value:+.3f}"
        if c.delta is not None and value < c.delta:
            c.note = (c.note + "; " if c.note else "") + f"the authors' own released effect ({value:+.3f}) is below δ"


def setlur_claims(exp: Experiment, learned: dict[str, Any]) -> list[Claim]:
    sc = _scaling(exp)
    if not sc:
        return []
    curve = learned.get("negatives_sft_error_by_size", {})
    errs = [v for v in curve.values() if v is not None]
    gate = None
    if errs and (max(errs) - min(errs)) < 0.1:
        gate = f"SFT's error curve is flat ({', '.join(f'{k}: {v:.2f}' for k, v in curve.items())}): more data taught it nothing here"
    outcomes = sc["outcomes"]
    eff = sc.get("efficiency", {})

    def pooled(a: str, b: str) -> tuple[list[bool], list[bool]]:
        xs, ys = [], []
        for size in outcomes.values():
            if size.get(a) and size.get(b):
                xs += size[a]
                ys += size[b]
        return xs, ys

    def claim(cid: str, text: str, fig: str, better: str, worse: str, delta: float, multiple_of: str | None) -> Claim | None:
        a, b = pooled(better, worse)
        if not a:
            return None
        mean, lo, hi = _paired_interval(a, b)
        reading = ""
        if multiple_of and eff.get(multiple_of):
            reading = "; multiples by size: " + ", ".join(f"n={r['size']}: {r['reading']}" for r in eff[multiple_of])
        missing = [f"n={r['size']}: {r['note']}" for r in sc["rows"] if r["method"] in (better, worse) and r.get("note")]
        measured = (f"accuracy gain of {better} over {worse}, paired over every size's test problems (n={len(a)}): "
                    f"E = {100 * mean:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}]{reading}"
                    + (f"; left out or broken: {'; '.join(missing)}" if missing else ""))
        if better in ("naive_dpo", "per_step_dpo"):
            measured += "; pairs by size: " + ", ".join(f"n={r['size']}: {r['examples']}" for r in sc["rows"]
                                                        if r["method"] == better)
        return Claim(cid, "setlur", text, fig, measured, *_vn(decide(mean, lo, hi, delta, gate), mean, (lo, hi), delta))

    rows = [
        claim("setlur.rft_self_2x", "RFT on self-generated positives D+ is about 2x as sample-efficient as SFT on synthetic data",
              "Figures 2 and 9: D+ at n matches D_syn at about 2n", "rft_self", "sft", 0.02, "rft_self"),
        claim("setlur.per_step_8x", "Per-step DPO on negatives is about 8x as sample-efficient as SFT",
              "Figure 1/5: the eight-fold read-out", "per_step_dpo", "sft", 0.02, "per_step_dpo"),
        claim("setlur.per_step_beats_naive", "Per-step credit beats naive positive/negative pairing",
              "Figure 5: per-step DPO vs naive DPO", "per_step_dpo", "naive_dpo", 0.02, None),
        claim("setlur.adv_rft", "Filtering positives by step advantage improves RFT",
              "Figure 11: advantage-filtered RFT", "adv_rft", "rft", 0.02, "adv_rft"),
    ]
    return [c for c in rows if c is not None]


def star_claims(exp: Experiment, learned: dict[str, Any]) -> list[Claim]:
    """Figure 8's phase transition: per-step DPO from the under-trained SFT checkpoint escapes the Clever-Hans
    plateau (test accuracy jumps), and gains more than from the over-trained one, which has memorised."""
    star = _star(exp)
    if not star:
        return []
    gate = None
    search = "see docs/star_search.md; GPU recipe: params/star-graph-full.yaml"
    if not star.get("reached", False):
        gate = (f"SFT did not reach the state the paper studies (valid paths at least 70%, first node within 15 points "
                f"of 1/degree); {search}")
    by_epoch = {c["epoch"]: c for c in star.get("sft_checkpoints", [])}
    gains: dict[str, tuple[int, int, int, int, Any]] = {}
    for start, run in (star.get("per_step_dpo") or {}).items():
        sft = by_epoch.get(run.get("start_epoch"))
        if run.get("checkpoints") and sft is not None:
            end = run["checkpoints"][-1]
            gains[start] = (end["correct"], end["n"], sft["correct"], sft["n"], run)
    fig = "Figure 8: star graph, per-step DPO from under- and over-trained SFT"

    def kept(start: str) -> str:
        """The kept-skill check: per-step DPO may lower the valid-path rate by at most 15 points."""
        run = gains[start][4]
        first, last = run["checkpoints"][0], run["checkpoints"][-1]
        v0, v1 = first["valid"] / first["n"], last["valid"] / last["n"]
        verdict = "kept" if v1 >= v0 - 0.15 else "broke the policy"
        return f"; valid paths {v0:.0%} → {v1:.0%} ({verdict}: may fall at most 15 points)"

    out = []
    if "under" in gains:
        k1, n1, k2, n2, run = gains["under"]
        lo, hi = stats.diff_interval(k1, n1, k2, n2)
        eff = k1 / n1 - k2 / n2
        out.append(Claim(
            "setlur.star_phase_transition.under", "setlur",
            "Per-step DPO from the under-trained SFT checkpoint escapes the Clever-Hans plateau (test accuracy jumps)",
            fig, f"test accuracy {_fmt_pct(k2 / n2)} at the SFT start (epoch {run['start_epoch']:g}) → {_fmt_pct(k1 / n1)} "
                 f"after per-step DPO on {run.get('pairs')} pairs (n={n2}, {n1}); E = {100 * eff:+.1f} pts "
                 f"[{100 * lo:+.1f}, {100 * hi:+.1f}]" + kept("under"),
            *_vn(decide(eff, lo, hi, 0.05, gate), eff, (lo, hi), 0.05)))
    if "under" in gains and "over" in gains:
        (a1, m1, a0, m0, ru), (b1, l1, b0, l0, ro) = gains["under"], gains["over"]
        gu, go = a1 / m1 - a0 / m0, b1 / l1 - b0 / l0
        var = sum(p * (1 - p) / n for p, n in ((a1 / m1, m1), (a0 / m0, m0), (b1 / l1, l1), (b0 / l0, l0)))
        eff = gu - go
        lo, hi = eff - stats.Z95 * math.sqrt(var), eff + stats.Z95 * math.sqrt(var)
        out.append(Claim(
            "setlur.star_phase_transition.under_vs_over", "setlur",
            "The gain from per-step DPO is larger from the under-trained SFT checkpoint than from the over-trained one "
            "(the phase transition: a memorised policy no longer explores the critical token)",
            fig, f"gain in test accuracy from the under-trained start (epoch {ru['start_epoch']:g}, {ru.get('pairs')} pairs) "
                 f"{100 * gu:+.1f} pts, from the over-trained start (epoch {ro['start_epoch']:g}, {ro.get('pairs')} pairs) "
                 f"{100 * go:+.1f} pts; E = {100 * eff:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}] (normal interval, "
                 "the four rates taken as independent); from under:" + kept("under")[1:] + "; from over:" + kept("over")[1:],
            *_vn(decide(eff, lo, hi, 0.05, gate), eff, (lo, hi), 0.05)))
    if not out:  # 07 ran but per-step DPO has nothing to score: the row still says why
        pairs = {k: v.get("pairs") for k, v in (star.get("per_step_dpo") or {}).items()}
        out.append(Claim(
            "setlur.star_phase_transition", "setlur",
            "Per-step DPO escapes the Clever-Hans plateau where SFT stalls (test accuracy jumps)", fig,
            f"no per-step DPO run from the under-trained start was scored (pairs per start: {pairs})",
            "inconclusive", None, None, 0.05, gate or "per-step DPO found no pairs"))
    return out


IN_DISTRIBUTION = {"synthetic_forward": "T_f", "synthetic_reverse": "T_r"}


def benchmarks(exp: Experiment) -> list[dict[str, Any]]:
    """One object per benchmark of 05: name, n, chance, in_distribution (T_f, T_r), accuracy per model
    ("<stage>/<train set>"); task-world benchmarks add whether they are alive and what they measure."""
    d = _stage_dir(exp, "05_benchmarks")
    if d is None or not (d / "results.csv").exists():
        return []
    import pandas as pd

    from revlib.core.stats import chance_accuracy

    world = {w["benchmark"]: w for w in _world(exp)}
    out = []
    results = pd.read_csv(d / "results.csv")
    for task, grp in results.groupby("task", sort=False):
        golds: list[str] = []
        for path in sorted((d / "samples").glob(f"*/{task}.jsonl"))[:1]:
            golds = [str(r["gold"]) for r in io.read_jsonl(path) if int(r.get("sample", 0)) == 0]
        row = {"name": task, "n": int(grp["problems"].max()),
               "chance": world[task]["chance"] if task in world else (chance_accuracy(golds) if golds else None),
               "in_distribution": task in IN_DISTRIBUTION,
               "accuracy": {f"{r['stage']}/{r['train_set']}": float(r["accuracy"]) for r in grp.to_dict("records")}}
        if task in world:
            row |= {"alive": bool(world[task]["alive"]), "what": world[task].get("what", "")}
        out.append(row)
    return out


def transfer(exp: Experiment) -> list[dict[str, Any]]:
    """Cross-direction transfer: each one-direction SFT (and DPO) model's accuracy on its own direction's questions
    and on the other direction's, in distribution (T_f, T_r) and on the task-world benchmarks asked both ways."""
    d = _stage_dir(exp, "05_benchmarks")
    if d is None:
        return []
    from revlib.core.records import read_records

    world_dirs = {}
    for path in sorted((d / "world").glob("world_*.jsonl")) if (d / "world").exists() else []:
        recs = read_records(path)
        if {r.direction for r in recs} == {"forward", "reverse"} and not any(r.meta.get("query") == "middle" for r in recs):
            world_dirs[path.stem] = [r.direction for r in recs]
    tasks = list(IN_DISTRIBUTION) + list(world_dirs)
    outcomes = _outcomes(exp, tasks)
    rows = []
    for (stage, train_set), scores in outcomes.items():
        if train_set not in ("forward", "reverse"):
            continue
        other = "reverse" if train_set == "forward" else "forward"
        for where, own_t, other_t in [("in distribution (T_f, T_r)", f"synthetic_{train_set}", f"synthetic_{other}")] + \
                [(w, w, w) for w in world_dirs]:
            def acc(task, direction):
                vals = [v for (t, k), v in scores.items() if t == task
                        and (task in IN_DISTRIBUTION or world_dirs[task][k] == direction)]
                return (sum(vals) / len(vals), len(vals)) if vals else (None, 0)
            (own, n_own), (cross, n_cross) = acc(own_t, train_set), acc(other_t, other)
            if own is None and cross is None:
                continue
            rows.append({"model": f"{stage}/{train_set}", "benchmark": where, "own_direction": own, "n_own": n_own,
                         "other_direction": cross, "n_other": n_cross})
    return rows


def collect(exp: Experiment) -> dict[str, Any]:
    learned = learned_state(exp)
    claims = r1k_claims(exp, learned) + setlur_claims(exp, learned) + star_claims(exp, learned)
    covered = {c.paper for c in claims}
    return {"experiment": exp.experiment, "rule": RULE, "learned": learned,
            "claims": [asdict(c) for c in claims], "covered": sorted(covered),
            "benchmarks": benchmarks(exp), "transfer": transfer(exp)}


def write(exp: Experiment) -> Path | None:
    """findings.json and findings.html in the experiment's run root; None when no stage has finished."""
    data = collect(exp)
    if not data["learned"] and not data["claims"]:
        return None
    root = exp.run_root
    io.write_json(root / "findings.json", data)
    io.write_text(root / "findings.html", render(data))
    return root / "findings.html"


_COLOURS = {"reproduced": "#d9f2d9", "not reproduced": "#f8d7d7", "inconclusive": "#f4f0d0"}
_NOT_RUN = {"r1k": "the r1k claims need 02, 03, 04 and 05 (params/demo.yaml)",
            "setlur": "Setlur's scaling claims need 06 (params/negative-data.yaml); the star graph needs 07 (params/star-graph.yaml)"}


def render(data: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr style='background:{_COLOURS.get(c['verdict'], '#fff')}'><td>{html.escape(c['paper'])}</td>"
        f"<td><b>{html.escape(c['claim'])}</b><br><small>{html.escape(c['id'])}</small></td>"
        f"<td>{html.escape(c['paper_figure'])}</td><td>{html.escape(c['measured'])}</td>"
        f"<td>{'' if c['delta'] is None else c['delta']}</td><td><b>{html.escape(c['verdict'])}</b>"
        f"{'<br><small>' + html.escape(c['note']) + '</small>' if c['note'] else ''}</td></tr>"
        for c in data["claims"])
    learned = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(json.dumps(v) if isinstance(v, dict) else f'{v:.4g}' if isinstance(v, float) else str(v))}</td></tr>"
                      for k, v in data["learned"].items())
    missing = "".join(f"<li>{html.escape(t)}</li>" for p, t in _NOT_RUN.items() if p not in data["covered"])
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    bench = data.get("benchmarks") or []
    models = list(dict.fromkeys(m for b in bench for m in b["accuracy"]))
    bench_rows = "".join(
        f"<tr><td>{html.escape(b['name'])}<br><small>{html.escape(b.get('what', ''))}</small></td><td>{b['n']}</td>"
        f"<td>{'in distribution' if b['in_distribution'] else 'outside both training sets'}</td><td>{pct(b['chance'])}</td>"
        f"<td>{'-' if b['in_distribution'] else ('alive' if b.get('alive') else 'inert (not counted)')}</td>"
        + "".join(f"<td>{pct(b['accuracy'].get(m))}</td>" for m in models) + "</tr>" for b in bench)
    bench_html = ("<h2>Benchmarks</h2><p>Tables 1 and 2 are read out on the benchmarks outside both training sets "
                  "(the role of AIME24, MATH500 and GPQA); one counts only when some model scores at least 20 points "
                  "above chance (always answering the commonest gold answer). T_f and T_r are the in-distribution "
                  "tables.</p><table><tr><th>benchmark</th><th>n</th><th>kind</th><th>chance</th><th>alive</th>"
                  + "".join(f"<th>{html.escape(m)}</th>" for m in models) + f"</tr>{bench_rows}</table>") if bench else ""
    tr = data.get("transfer") or []
    tr_html = ("<h2>Cross-direction transfer</h2><p>Each one-direction model on its own direction's questions and on "
               "the other direction's.</p><table><tr><th>model</th><th>where</th><th>own direction</th><th>other direction</th></tr>"
               + "".join(f"<tr><td>{html.escape(t['model'])}</td><td>{html.escape(t['benchmark'])}</td>"
                         f"<td>{pct(t['own_direction'])} (n={t['n_own']})</td><td>{pct(t['other_direction'])} (n={t['n_other']})</td></tr>"
                         for t in tr) + "</table>") if tr else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Findings: {html.escape(data['experiment'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}</style></head><body>
<h1>Findings: {html.escape(data['experiment'])}</h1>
<p><b>Verdict rule.</b> {html.escape(data['rule'])}</p>
<h2>Claims</h2>
<table><tr><th>paper</th><th>claim</th><th>paper's figure and number</th><th>this run, with 95% interval</th><th>δ</th><th>verdict</th></tr>{rows}</table>
{('<p>Not covered by this run:</p><ul>' + missing + '</ul>') if missing else ''}
{bench_html}
{tr_html}
<h2>Did the models learn?</h2>
<table><tr><th>measure</th><th>value</th></tr>{learned}</table>
<p><a href="index.html">all reports</a></p></body></html>"""

