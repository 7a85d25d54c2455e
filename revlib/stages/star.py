"""The star graph (notebook 07): why per-step credit helps, and when.

SFT on centre-to-leaf paths learns every step after the first by copying edges, but the first
node after the centre (the critical token) needs planning: the SFT loss falls while that
token's probability stays near 1/degree. Per-step DPO is started from an under-trained and
from an over-trained SFT checkpoint; the paper (Setlur et al., Figure 8) finds that credit
assignment at the critical step helps from the under-trained one, where the policy still
explores, and much less from the over-trained one, which has memorised.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from revlib.core import io, render
from revlib.data import negatives
from revlib.core.records import Record
from revlib.tasks import get_task
from revlib.tasks.grading import verified

if TYPE_CHECKING:
    from revlib.evaluation.learning import Check
    from revlib.modeling.rollouts import Sampler
    from revlib.modeling.train import Checkpoint
    from revlib.params import Experiment
    from revlib.params.negatives import StarGraphParams
    from revlib.tasks.base import TaskFamily


def path_outcome(problem: Record, answer: str) -> dict[str, bool]:
    """How a generated centre-to-leaf answer relates to the graph.

    valid: starts at the centre and follows edges to a leaf (some arm, not necessarily the goal's);
    first_node: the node after the centre is the goal arm's (the critical token);
    correct: the goal's path exactly.
    """
    nodes = [p.strip() for p in answer.strip().rstrip(".").split(",") if p.strip()]
    path = [str(n) for n in problem.meta["path"]]
    edges = {(str(a), str(b)) for a, b in problem.meta["edges"]}
    parents = {a for a, _ in edges}
    valid = (len(nodes) >= 2 and nodes[0] == path[0] and all((a, b) in edges for a, b in zip(nodes, nodes[1:]))
             and nodes[-1] not in parents)
    return {"valid": valid, "first_node": len(nodes) >= 2 and nodes[1] == path[1], "correct": nodes == path}


@torch.no_grad()
def critical_token_prob(model: Any, tokenizer: Any, problems: list[Record]) -> float:
    """Mean probability of the first node after the centre (all its tokens), given the prompt and "centre>"."""
    total = 0.0
    for p in problems:
        centre, first = p.meta["path"][0], p.meta["path"][1]
        context = render.prompt_text(tokenizer, p.question) + render.THINK + f"{centre}>"
        ctx_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(context + f"{first}\n", add_special_tokens=False)["input_ids"]
        if full_ids[: len(ctx_ids)] != ctx_ids:
            raise ValueError("the node label merges with the context in tokenization; cannot isolate it")
        target = full_ids[len(ctx_ids):]
        ids = torch.tensor([full_ids], device=next(model.parameters()).device)
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        picked = logp[torch.arange(len(ctx_ids) - 1, len(full_ids) - 1), torch.tensor(target)]
        # the node's digits, and the newline that closes it (so "1" cannot stand for "12")
        total += picked.sum().exp().item()
    return total / len(problems)


def critical_q_value(engine: Sampler, task: TaskFamily, problems: list[Record], rollouts: int, seed: int) -> dict[str, float]:
    """Monte-Carlo Q-value of the critical token: success rate of rollouts after "centre>first\n" (the right
    first node), beside the value of the state before it (rollouts from the think header alone)."""
    right = [(p.question, render.THINK + f"{p.meta['path'][0]}>{p.meta['path'][1]}\n") for p in problems]
    start = [(p.question, render.THINK) for p in problems]
    outs = engine.sample(right + start, rollouts, seed)
    wins = [sum(verified(task, problems[i % len(problems)], req[1] + c) for c in rows)
            for i, (req, rows) in enumerate(zip(right + start, outs))]
    total = len(problems) * rollouts
    return {"critical_q_value": sum(wins[:len(problems)]) / total, "start_value": sum(wins[len(problems):]) / total}


def test_counts(engine: Sampler, task: TaskFamily, test: list[Record], seed: int) -> dict[str, int]:
    """Greedy answers to the test problems: how many are valid paths, start on the right arm, are right."""
    outs = engine.sample([(p.question, render.THINK) for p in test], 1, seed)
    counts = {"n": len(test), "valid": 0, "first_node": 0, "correct": 0}
    for p, rows in zip(test, outs):
        _, answer = render.split_answer(render.THINK + rows[0])
        for key, hit in path_outcome(p, answer).items():
            counts[key] += hit
    return counts


def checkpoint_readout(ckpt: Checkpoint, P: StarGraphParams, task: TaskFamily, test: list[Record], probe: list[Record],
                       seed: int) -> dict[str, Any]:
    """Test error with its counts (greedy), and the critical token's probability and Q-value on the probe problems."""
    from revlib.modeling import train

    model, tokenizer = train.load_model_for(ckpt)
    counts = test_counts(negatives.policy_engine(ckpt, P, temperature=0.0), task, test, seed)
    q = critical_q_value(negatives.policy_engine(ckpt, P), task, probe, P.rollouts, seed)
    return {"epoch": ckpt.epoch, "step": ckpt.step, "critical_token_prob": critical_token_prob(model, tokenizer, probe),
            **q, "test": counts, "test_error": 1 - counts["correct"] / counts["n"],
            "valid_path_rate": counts["valid"] / counts["n"], "first_node_accuracy": counts["first_node"] / counts["n"]}


def base_lookup(base: str, task: TaskFamily, seed: int, n: int = 200) -> dict[str, Any]:
    """Held-out edge look-up accuracy of the base (the same held-out set as stage 00's), with its counts."""
    import random

    from revlib.modeling import models, pretrain

    model = models.load_model(base).eval()
    held_out = {"star_graph": task.primitive_skills(random.Random(f"eval:{seed}:star_graph"), n)}
    row = pretrain.primitive_accuracy(model, models.load_tokenizer(base), held_out)[0]
    card = Path(base) / "card.json"
    pretrained_on = io.read_json(card).get("families", {}).get("star_graph") if card.exists() else None
    same_knobs = None if pretrained_on is None else get_task("star_graph", pretrained_on).knobs == task.knobs
    return {"k": row["correct"], "n": row["problems"], "accuracy": row["accuracy"], "chance": row["chance"],
            "pretrained_on": pretrained_on, "same_knobs": same_knobs}


# the problems are drawn at the experiment's seed plus this, apart from the draws other stages make at the seed
PROBLEM_SEED_OFFSET = 707


def run(exp: Experiment, base: str, out_dir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """SFT with per-epoch checkpoints, then per-step DPO from the under- and over-trained checkpoints."""
    from revlib.modeling import train

    P, seed = exp.star_graph, exp.seed
    out_dir = Path(out_dir)
    task = get_task("star_graph", P.knobs)
    lookup = base_lookup(base, task, seed)
    log(f"base edge look-ups: {lookup['k']}/{lookup['n']} right ({lookup['accuracy']:.1%}; chance {lookup['chance']:.1%})")
    if lookup["same_knobs"] is False:
        log(f"the base was pretrained on star graphs with other knobs ({lookup['pretrained_on']}) than this experiment's")
    pool = task.sample(seed + PROBLEM_SEED_OFFSET, P.n_train + P.n_test)
    test, problems = pool[:P.n_test], pool[P.n_test:]
    probe = test[: P.probe_problems]
    sft = train.sft(base, problems, out_dir / "sft", exp.sft, seed=seed, epochs=P.over_epochs, save_every_epochs=1)
    sft_curve = [checkpoint_readout(c, P, task, test, probe, seed) for c in sft.checkpoints]
    for r in sft_curve:
        log(f"SFT epoch {r['epoch']:g}: valid paths {r['test']['valid']}/{r['test']['n']}, first node right "
            f"{r['test']['first_node']}/{r['test']['n']}, test error {r['test_error']:.3f}; critical token "
            f"p={r['critical_token_prob']:.3f}, Q={r['critical_q_value']:.3f}")
    loss = [{"epoch": h["epoch"], "loss": h["loss"]} for h in sft.log_history if "loss" in h and "epoch" in h]
    starts = {"under": _at_epoch(sft.checkpoints, P.under_epochs), "over": sft.final}
    dpo_curves: dict[str, list[dict[str, Any]]] = {}
    dpo_loss: dict[str, list[dict[str, float]]] = {}
    pair_counts: dict[str, int] = {}
    sample_counts: dict[str, dict[str, int]] = {}
    for label, start in starts.items():
        d = out_dir / f"dpo_from_{label}"
        policy = negatives.policy_engine(start, P, cache_dir=d / "rollout_cache")
        samples = negatives.sample_policy(policy, task, problems, P.samples_per_problem, seed, P.step_split)
        credits = negatives.estimate_values(policy, task, problems, samples, P.rollouts, seed, P.best_of)
        pairs = negatives.per_step_pairs(credits, problems, P.critical_step, P.advantage_threshold, seed, P.rejected)
        io.write_jsonl(d / "pairs.jsonl", (p.model_dump(mode="json") for p in pairs))
        pair_counts[label] = len(pairs)
        sample_counts[label] = {"n": len(samples), "correct": sum(s.correct for s in samples),
                                "critical_at_first_step": sum(p.step_index == 1 for p in pairs)}
        start_row = next(r for r in sft_curve if r["epoch"] == start.epoch)
        curve = [{**start_row, "dpo_epoch": 0}]
        log(f"from the {label}-trained SFT (epoch {start.epoch:g}): {sample_counts[label]['correct']}/{len(samples)} "
            f"samples right, {len(pairs)} per-step pairs ({sample_counts[label]['critical_at_first_step']} at the first step)")
        dpo_loss[label] = []
        if pairs:
            res = negatives.dpo_from(start, pairs, d, exp.dpo, seed, epochs=P.dpo_epochs, save_every_epochs=1)
            dpo_loss[label] = [{"step": h["step"], "epoch": h["epoch"], "loss": h["loss"]}
                               for h in res.log_history if "loss" in h and "step" in h]
            for c in res.checkpoints:
                row = {**checkpoint_readout(c, P, task, test, probe, seed), "dpo_epoch": c.epoch}
                curve.append(row)
                log(f"  DPO epoch {c.epoch:g}: test error {row['test_error']:.3f} (valid {row['test']['valid']}/"
                    f"{row['test']['n']}), critical token p={row['critical_token_prob']:.3f}, Q={row['critical_q_value']:.3f}")
        dpo_curves[label] = curve
    result = {"knobs": task.knobs.model_dump(), "base_lookup": lookup, "sft_curve": sft_curve, "loss": loss,
              "dpo_curves": dpo_curves, "dpo_loss": dpo_loss, "pairs": pair_counts, "samples": sample_counts,
              "start_epochs": {k: v.epoch for k, v in starts.items()}}
    result["state"] = studied_state(result)
    io.write_json(out_dir / "star_results.json", result)
    io.write_json(out_dir / "star.json", counts_summary(result))
    return result


def _at_epoch(checkpoints: list, epoch: int):
    return min(checkpoints, key=lambda c: (abs(c.epoch - epoch), c.epoch))


VALID_TARGET = 0.7
FIRST_NODE_TOLERANCE = 0.15  # the first node right within this of 1/degree: the Clever-Hans state


def studied_state(result: dict[str, Any]) -> dict[str, Any]:
    """Whether this run reached the state the paper studies: SFT writes valid paths (at least 70% of the time) but
    picks the goal's arm only about 1/degree of the time (within 15 points). The base's look-up accuracy is
    reported, not required: a base that answers fewer look-ups in its own format can still carry them into SFT."""
    last = result["sft_curve"][-1]
    degree = result["knobs"]["degree"]
    valid_ok = last["valid_path_rate"] >= VALID_TARGET
    first_ok = abs(last["first_node_accuracy"] - 1 / degree) <= FIRST_NODE_TOLERANCE
    reached = valid_ok and first_ok
    said = (f"base look-ups {result['base_lookup']['accuracy']:.0%}, SFT writes valid paths {last['valid_path_rate']:.0%} "
            f"of the time (target {VALID_TARGET:.0%}) and picks the goal's arm {last['first_node_accuracy']:.0%} of the "
            f"time (1/degree = {1 / degree:.0%}, within {FIRST_NODE_TOLERANCE:.0%} needed)")
    text = (f"Reached: {said}." if reached else
            f"Not reached: {said}. The per-step DPO numbers below do not test the paper's claim.")
    return {"reached": reached, "valid_ok": valid_ok, "first_node_ok": first_ok, "one_over_degree": 1 / degree,
            "text": text}


def counts_summary(result: dict[str, Any]) -> dict[str, Any]:
    """Counts (k, n) behind every rate, for intervals: base look-ups, each SFT and DPO checkpoint's test set."""
    last = result["sft_curve"][-1]["test"]

    def ckpt(r: dict[str, Any]) -> dict[str, Any]:
        t = r["test"]
        return {"epoch": r["epoch"], "n": t["n"], "correct": t["correct"], "valid": t["valid"],
                "first_node": t["first_node"], "test_error": r["test_error"],
                "critical_token_prob": r["critical_token_prob"], "critical_q_value": r["critical_q_value"]}

    return {
        "base_lookup": {"k": result["base_lookup"]["k"], "n": result["base_lookup"]["n"]},
        "sft_valid_path": {"k": last["valid"], "n": last["n"]},
        "sft_first_node": {"k": last["first_node"], "n": last["n"]},
        "sft_correct": {"k": last["correct"], "n": last["n"]},
        "degree": result["knobs"]["degree"],
        "reached": result["state"]["reached"],
        "sft_checkpoints": [ckpt(r) for r in result["sft_curve"]],
        "per_step_dpo": {label: {"start_epoch": result["start_epochs"][label], "pairs": result["pairs"][label],
                                 "checkpoints": [dict(ckpt(r), dpo_epoch=r["dpo_epoch"]) for r in curve]}
                         for label, curve in result["dpo_curves"].items()},
    }


def metrics(result: dict[str, Any]) -> dict[str, Any]:
    out = {"pairs/" + k: v for k, v in result["pairs"].items()}
    last = result["sft_curve"][-1]
    out["base/lookup_accuracy"] = result["base_lookup"]["accuracy"]
    out["sft/valid_path_rate"] = last["valid_path_rate"]
    out["sft/first_node_accuracy"] = last["first_node_accuracy"]
    out["sft/test_error"] = last["test_error"]
    out["sft/test_n"] = last["test"]["n"]
    out["sft/critical_token_prob"] = last["critical_token_prob"]
    out["sft/critical_q_value"] = last["critical_q_value"]
    out["state_reached"] = result["state"]["reached"]
    for label, curve in result["dpo_curves"].items():
        out[f"dpo_from_{label}/start_error"] = curve[0]["test_error"]
        out[f"dpo_from_{label}/final_error"] = curve[-1]["test_error"]
        out[f"dpo_from_{label}/final_critical_q_value"] = curve[-1]["critical_q_value"]
        out[f"dpo_from_{label}/final_critical_token_prob"] = curve[-1]["critical_token_prob"]
    return out


def stage_metrics(result: dict[str, Any], checks: list[Check]) -> dict[str, Any]:
    """What 07 records in metrics.json: `metrics` and the learning checks."""
    from revlib.evaluation import learning

    return metrics(result) | learning.metrics(checks)


def _series(result: dict[str, Any], key: str) -> list[tuple[str, list[float], list[float]]]:
    """(name, x, y) for SFT over its epochs and for DPO from each start, placed after its start epoch."""
    out = [("SFT", [r["epoch"] for r in result["sft_curve"]], [r[key] for r in result["sft_curve"]])]
    for label, curve in result["dpo_curves"].items():
        start = result["start_epochs"][label]
        out.append((f"per-step DPO from {label}-trained SFT (epoch {start:g})",
                    [start + r["dpo_epoch"] for r in curve], [r[key] for r in curve]))
    return out


def figures(result: dict[str, Any]):
    """Figure 8 (a) the critical token's Q-value, (b) its probability, (c) the DPO loss; then SFT loss and test error."""
    import plotly.graph_objects as go

    def over_training(key: str, title: str, ytitle: str) -> go.Figure:
        fig = go.Figure()
        for name, x, y in _series(result, key):
            fig.add_trace(go.Scatter(x=x, y=y, name=name, mode="lines+markers"))
        fig.update_layout(title=title, template="plotly_white", height=360, xaxis_title="epoch (SFT, then DPO)",
                          yaxis_title=ytitle, yaxis_range=[0, 1.02])
        return fig

    q_fig = over_training("critical_q_value", "(a) Q-value of the critical token (Monte-Carlo, right first node)",
                          "success rate of rollouts")
    q_fig.add_hline(y=1 / result["knobs"]["degree"], line_dash="dot", annotation_text="1/degree")
    p_fig = over_training("critical_token_prob", "(b) probability of the critical token (right first node)",
                          "probability")
    p_fig.add_hline(y=1 / result["knobs"]["degree"], line_dash="dot", annotation_text="1/degree")
    loss_fig = go.Figure()
    for label, rows in result.get("dpo_loss", {}).items():
        if rows:
            start = result["start_epochs"][label]
            loss_fig.add_trace(go.Scatter(x=[r["step"] for r in rows], y=[r["loss"] for r in rows], mode="lines",
                                          name=f"per-step DPO from {label}-trained SFT (epoch {start:g})"))
    loss_fig.update_layout(title="(c) per-step DPO loss", template="plotly_white", height=360,
                           xaxis_title="DPO step", yaxis_title="DPO loss")
    sft_fig = go.Figure()
    sft_fig.add_trace(go.Scatter(x=[r["epoch"] for r in result["loss"]], y=[r["loss"] for r in result["loss"]],
                                 name="SFT loss", mode="lines", yaxis="y2"))
    for key, name in (("valid_path_rate", "valid path"), ("first_node_accuracy", "first node right"),
                      ("test_error", "test error")):
        sft_fig.add_trace(go.Scatter(x=[r["epoch"] for r in result["sft_curve"]], y=[r[key] for r in result["sft_curve"]],
                                     name=name, mode="lines+markers"))
    sft_fig.update_layout(title="SFT: loss, valid paths, first node and test error (greedy)", template="plotly_white",
                          height=360, xaxis_title="SFT epoch", yaxis=dict(title="rate", range=[0, 1.02]),
                          yaxis2=dict(title="loss", overlaying="y", side="right"))
    error_fig = over_training("test_error", "Star graph test error: SFT and per-step DPO (greedy)", "test error")
    return q_fig, p_fig, loss_fig, sft_fig, error_fig


def summary_table(result: dict[str, Any]):
    """One row per checkpoint read out: SFT epochs, then per-step DPO from each start, with counts."""
    import pandas as pd

    rows = []
    for r in result["sft_curve"]:
        rows.append(("SFT", r["epoch"], r))
    for label, curve in result["dpo_curves"].items():
        rows += [(f"DPO from {label} (SFT epoch {result['start_epochs'][label]:g})", r["dpo_epoch"], r) for r in curve[1:]]
    return pd.DataFrame([{
        "model": name, "epoch": epoch, "n": r["test"]["n"], "valid paths": r["test"]["valid"],
        "first node right": r["test"]["first_node"], "correct": r["test"]["correct"], "test error": r["test_error"],
        "P(critical)": r["critical_token_prob"], "Q(critical)": r["critical_q_value"], "V(start)": r["start_value"],
    } for name, epoch, r in rows])


def checks(result: dict[str, Any]) -> list[Check]:
    """Did the run reach the studied state? Base look-ups above chance (reported, no target), SFT valid paths
    >= 70%, and SFT's first node within 15 points of 1/degree."""
    from revlib.evaluation import learning

    look = result["base_lookup"]
    last = result["sft_curve"][-1]
    degree = result["knobs"]["degree"]
    first, t = last["first_node_accuracy"], last["test"]
    return [
        learning.accuracy("base edge look-ups (held out; reported, no target)", look["k"], look["n"], look.get("chance", 0.0)),
        learning.accuracy("SFT valid centre-to-leaf paths (greedy, test)", t["valid"], t["n"], 0.0, VALID_TARGET),
        learning.Check("SFT first node after the centre right about 1/degree (the Clever-Hans state)", first, 1 / degree,
                       abs(first - 1 / degree) <= FIRST_NODE_TOLERANCE,
                       f"{t['first_node']}/{t['n']} = {first:.1%} against 1/degree = {1 / degree:.1%}; needs it within "
                       f"{FIRST_NODE_TOLERANCE:.0%}"),
    ]
