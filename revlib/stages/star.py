"""The star graph (notebook 07): why per-step credit helps, and when.

SFT on centre-to-leaf paths learns every step after the first by copying edges, but the first
node after the centre (the critical token) needs planning: the SFT loss falls while that
token's probability stays near 1/degree. Per-step DPO is started from an under-trained and
from an over-trained SFT checkpoint; the paper (Setlur et al., Figure 8) finds that credit
assignment at the critical step helps from the under-trained one, where the policy still
explores, and much less from the over-trained one, which has memorised.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import plotly.graph_objects as go
import torch
from pydantic import BaseModel, computed_field

from revlib.core import io, render
from revlib.core.io import Metrics
from revlib.core.records import Record
from revlib.data import negatives
from revlib.evaluation import learning
from revlib.evaluation.learning import Check
from revlib.modeling import models, preference, pretrain, train
from revlib.modeling.rollouts import Sampler
from revlib.modeling.train import Checkpoint
from revlib.params.negatives import StarGraphParams
from revlib.params.train import DPOParams
from revlib.stages.context import StageContext
from revlib.tasks import get_task
from revlib.tasks.base import TaskFamily
from revlib.tasks.grading import verified
from revlib.tasks.star_graph import StarKnobs


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


def critical_q_value(engine: Sampler, task: TaskFamily, problems: list[Record], rollouts: int, seed: int
                     ) -> tuple[float, float]:
    """Monte-Carlo Q-value of the critical token: (success rate of rollouts after "centre>first\n", the right first
    node; the value of the state before it, from rollouts from the think header alone)."""
    right = [(p.question, render.THINK + f"{p.meta['path'][0]}>{p.meta['path'][1]}\n") for p in problems]
    start = [(p.question, render.THINK) for p in problems]
    outs = engine.sample(right + start, rollouts, seed)
    wins = [sum(verified(task, problems[i % len(problems)], req[1] + c) for c in rows)
            for i, (req, rows) in enumerate(zip(right + start, outs))]
    total = len(problems) * rollouts
    return sum(wins[:len(problems)]) / total, sum(wins[len(problems):]) / total


# ---------------------------------------------------------------- what 07 measures, typed


class PathCounts(BaseModel):
    """Greedy answers to the test problems: how many are valid paths, start on the goal's arm, are the goal's path."""

    n: int
    valid: int = 0
    first_node: int = 0
    correct: int = 0

    @computed_field
    @property
    def test_error(self) -> float:
        return 1 - self.correct / self.n

    @property
    def valid_path_rate(self) -> float:
        return self.valid / self.n

    @property
    def first_node_accuracy(self) -> float:
        return self.first_node / self.n


class StarCheckpoint(PathCounts):
    """One checkpoint read out: its test counts, and the critical token's probability and Q-value on the probe
    problems. `epoch` is the SFT epoch, or for a DPO checkpoint the DPO epoch counted from its start."""

    epoch: float
    step: int
    critical_token_prob: float
    critical_q_value: float
    start_value: float  # the value of the state before the critical token (rollouts from the think header)


class BaseLookup(BaseModel):
    """Held-out edge look-ups of the base (the same held-out set as stage 00's), and the knobs it was pretrained on."""

    k: int
    n: int
    accuracy: float
    chance: float
    pretrained_on: dict[str, int] | None = None  # the card's star-graph knobs; None without a card
    same_knobs: bool | None = None


class LossPoint(BaseModel):
    step: int | None = None
    epoch: float
    loss: float


class DrawnSamples(BaseModel):
    """The start policy's samples of the training problems, and what per-step credit made of them."""

    n: int
    correct: int
    critical_at_first_step: int  # per-step pairs whose critical step is the first node


class PerStepDPO(BaseModel):
    """Per-step DPO from one SFT checkpoint: its pairs and its own checkpoints (the start is that SFT checkpoint)."""

    start_epoch: float
    pairs: int
    samples: DrawnSamples
    checkpoints: list[StarCheckpoint]
    loss: list[LossPoint]


@dataclass(frozen=True)
class StudiedState:
    """Whether the run reached the state the paper studies, and the sentence that says so."""

    reached: bool
    valid_ok: bool
    first_node_ok: bool
    one_over_degree: float
    text: str


VALID_TARGET = 0.7
FIRST_NODE_TOLERANCE = 0.15  # the first node right within this of 1/degree: the Clever-Hans state


def state_rule() -> str:
    """The studied state's targets in words, from the constants the checks use."""
    return (f"valid paths at least {VALID_TARGET:.0%}, first node within {100 * FIRST_NODE_TOLERANCE:.0f} points "
            "of 1/degree")


class StarResult(BaseModel):
    """What 07 measured (star.json): the knobs, the base's look-ups, every SFT checkpoint read out, its loss, and
    per-step DPO from each start. Rates, errors and the studied state are derived from the counts, never stored
    beside them (the file shows `test_error` and `reached` for a reader)."""

    FILE: ClassVar[str] = "star.json"

    knobs: StarKnobs
    base_lookup: BaseLookup
    sft_checkpoints: list[StarCheckpoint]
    sft_loss: list[LossPoint]
    per_step_dpo: dict[str, PerStepDPO]  # by start: "under", "over"

    @classmethod
    def exists(cls, run_dir: Path) -> bool:
        return (Path(run_dir) / cls.FILE).exists()

    @classmethod
    def load(cls, run_dir: Path) -> StarResult:
        return cls.model_validate(io.read_json(Path(run_dir) / cls.FILE))

    def save(self, run_dir: Path) -> Path:
        return io.write_json(Path(run_dir) / self.FILE, self.model_dump(mode="json"))

    @property
    def degree(self) -> int:
        return self.knobs.degree

    @property
    def final_sft(self) -> StarCheckpoint:
        return self.sft_checkpoints[-1]

    def start(self, label: str) -> StarCheckpoint:
        """The SFT checkpoint per-step DPO from `label` started from."""
        run = self.per_step_dpo[label]
        return next(c for c in self.sft_checkpoints if c.epoch == run.start_epoch)

    def end(self, label: str) -> StarCheckpoint:
        """Per-step DPO's last checkpoint from `label`; its start when it trained none (no pairs)."""
        return (self.per_step_dpo[label].checkpoints or [self.start(label)])[-1]

    def curve(self, label: str) -> list[tuple[float, StarCheckpoint]]:
        """(SFT epoch + DPO epoch, checkpoint) of per-step DPO from `label`, its start first."""
        s = self.per_step_dpo[label].start_epoch
        return [(s, self.start(label))] + [(s + c.epoch, c) for c in self.per_step_dpo[label].checkpoints]

    @property
    def state(self) -> StudiedState:
        """Whether this run reached the state the paper studies: SFT writes valid paths (at least VALID_TARGET of the
        time) but picks the goal's arm only about 1/degree of the time (within FIRST_NODE_TOLERANCE). The base's
        look-up accuracy is reported, not required: a base that answers fewer look-ups in its own format can still
        carry them into SFT."""
        last, degree = self.final_sft, self.degree
        valid_ok = last.valid_path_rate >= VALID_TARGET
        first_ok = abs(last.first_node_accuracy - 1 / degree) <= FIRST_NODE_TOLERANCE
        reached = valid_ok and first_ok
        said = (f"base look-ups {self.base_lookup.accuracy:.0%}, SFT writes valid paths {last.valid_path_rate:.0%} "
                f"of the time (target {VALID_TARGET:.0%}) and picks the goal's arm {last.first_node_accuracy:.0%} of "
                f"the time (1/degree = {1 / degree:.0%}, within {FIRST_NODE_TOLERANCE:.0%} needed)")
        text = (f"Reached: {said}." if reached else
                f"Not reached: {said}. The per-step DPO numbers below do not test the paper's claim.")
        return StudiedState(reached, valid_ok, first_ok, 1 / degree, text)

    @computed_field
    @property
    def reached(self) -> bool:
        return self.state.reached


# ---------------------------------------------------------------- the read-outs


def test_counts(engine: Sampler, task: TaskFamily, test: list[Record], seed: int) -> PathCounts:
    """Greedy answers to the test problems: how many are valid paths, start on the right arm, are right."""
    outs = engine.sample([(p.question, render.THINK) for p in test], 1, seed)
    counts = {"valid": 0, "first_node": 0, "correct": 0}
    for p, rows in zip(test, outs):
        _, answer = render.split_answer(render.THINK + rows[0])
        for key, hit in path_outcome(p, answer).items():
            counts[key] += hit
    return PathCounts(n=len(test), **counts)


@dataclass(frozen=True)
class Problems:
    """07's draw: the task family, its test problems (the first `probe_problems` of them also probe the critical
    token) and its training problems."""

    task: TaskFamily
    test: list[Record]
    train: list[Record]
    probe: list[Record]


def checkpoint_readout(ckpt: Checkpoint, P: StarGraphParams, problems: Problems, seed: int) -> StarCheckpoint:
    """Test counts (greedy), and the critical token's probability and Q-value on the probe problems."""
    model, tokenizer = train.load_model_for(ckpt)
    counts = test_counts(negatives.policy_engine(ckpt, P, temperature=0.0), problems.task, problems.test, seed)
    q, v = critical_q_value(negatives.policy_engine(ckpt, P), problems.task, problems.probe, P.rollouts, seed)
    return StarCheckpoint(**counts.model_dump(exclude={"test_error"}), epoch=ckpt.epoch, step=ckpt.step,
                          critical_token_prob=critical_token_prob(model, tokenizer, problems.probe),
                          critical_q_value=q, start_value=v)


def base_lookup(base: str, task: TaskFamily, seed: int, n: int = 200) -> BaseLookup:
    """Held-out edge look-up accuracy of the base (the same held-out set as stage 00's), with its counts."""
    model = models.load_model(base).eval()
    held_out = {"star_graph": task.primitive_skills(random.Random(f"eval:{seed}:star_graph"), n)}
    row = pretrain.primitive_accuracy(model, models.load_tokenizer(base), held_out)[0]
    card = Path(base) / "card.json"
    pretrained_on = io.read_json(card).get("families", {}).get("star_graph") if card.exists() else None
    same_knobs = None if pretrained_on is None else get_task("star_graph", pretrained_on).knobs == task.knobs
    return BaseLookup(k=row["correct"], n=row["problems"], accuracy=row["accuracy"], chance=row["chance"],
                      pretrained_on=pretrained_on, same_knobs=same_knobs)


# the problems are drawn at the experiment's seed plus this, apart from the draws other stages make at the seed
PROBLEM_SEED_OFFSET = 707


def draw_problems(P: StarGraphParams, seed: int) -> Problems:
    task = get_task("star_graph", P.knobs)
    pool = task.sample(seed + PROBLEM_SEED_OFFSET, P.n_train + P.n_test)
    test = pool[:P.n_test]
    return Problems(task, test, pool[P.n_test:], test[: P.probe_problems])


def _at_epoch(checkpoints: list[Checkpoint], epoch: int) -> Checkpoint:
    return min(checkpoints, key=lambda c: (abs(c.epoch - epoch), c.epoch))


def _log_row(prefix: str, r: StarCheckpoint) -> str:
    return (f"{prefix}: test error {r.test_error:.3f} (valid {r.valid}/{r.n}), critical token "
            f"p={r.critical_token_prob:.3f}, Q={r.critical_q_value:.3f}")


def per_step_dpo(dpo_params: DPOParams, start: Checkpoint, label: str, P: StarGraphParams, problems: Problems, seed: int,
                 out_dir: Path, log: Callable[[str], None] = print) -> PerStepDPO:
    """Per-step DPO from one SFT checkpoint: its samples, Monte-Carlo credit, the pairs at the critical step, DPO, and
    each DPO checkpoint read out."""
    d = Path(out_dir) / f"dpo_from_{label}"
    task, train_problems = problems.task, problems.train
    policy = negatives.policy_engine(start, P, cache_dir=d / "rollout_cache")
    samples = negatives.sample_policy(policy, task, train_problems, P.samples_per_problem, seed, P.step_split)
    credits = negatives.estimate_values(policy, task, train_problems, samples, P.rollouts, seed, P.best_of)
    pairs = negatives.per_step_pairs(credits, train_problems, P.critical_step, P.advantage_threshold, seed, P.rejected)
    io.write_jsonl(d / "pairs.jsonl", (p.model_dump(mode="json") for p in pairs))
    drawn = DrawnSamples(n=len(samples), correct=sum(s.correct for s in samples),
                         critical_at_first_step=sum(p.step_index == 1 for p in pairs))
    log(f"from the {label}-trained SFT (epoch {start.epoch:g}): {drawn.correct}/{len(samples)} "
        f"samples right, {len(pairs)} per-step pairs ({drawn.critical_at_first_step} at the first step)")
    loss: list[LossPoint] = []
    read: list[StarCheckpoint] = []
    if pairs:
        res = preference.dpo_from(start, pairs, d, dpo_params, seed, epochs=P.dpo_epochs, save_every_epochs=1)
        loss = [LossPoint(step=h["step"], epoch=h["epoch"], loss=h["loss"])
                for h in res.log_history if "loss" in h and "step" in h]
        for c in res.checkpoints:
            read.append(checkpoint_readout(c, P, problems, seed))
            log(_log_row(f"  DPO epoch {c.epoch:g}", read[-1]))
    return PerStepDPO(start_epoch=start.epoch, pairs=len(pairs), samples=drawn, checkpoints=read, loss=loss)


def measure(ctx: StageContext, log: Callable[[str], None] = print) -> StarResult:
    """SFT with per-epoch checkpoints, then per-step DPO from the under- and over-trained checkpoints."""
    exp, out_dir = ctx.exp, Path(ctx.dir)
    P, seed, base = exp.star_graph, exp.seed, ctx.base_path()
    lookup = base_lookup(base, get_task("star_graph", P.knobs), seed)
    log(f"base edge look-ups: {lookup.k}/{lookup.n} right ({lookup.accuracy:.1%}; chance {lookup.chance:.1%})")
    if lookup.same_knobs is False:
        log(f"the base was pretrained on star graphs with other knobs ({lookup.pretrained_on}) than this experiment's")
    problems = draw_problems(P, seed)
    sft = train.sft(base, problems.train, out_dir / "sft", exp.sft, seed=seed, epochs=P.over_epochs,
                    save_every_epochs=1)
    sft_curve = [checkpoint_readout(c, P, problems, seed) for c in sft.checkpoints]
    for r in sft_curve:
        log(f"SFT epoch {r.epoch:g}: valid paths {r.valid}/{r.n}, first node right {r.first_node}/{r.n}, test error "
            f"{r.test_error:.3f}; critical token p={r.critical_token_prob:.3f}, Q={r.critical_q_value:.3f}")
    loss = [LossPoint(epoch=h["epoch"], loss=h["loss"]) for h in sft.log_history if "loss" in h and "epoch" in h]
    starts = {"under": _at_epoch(sft.checkpoints, P.under_epochs), "over": sft.final}
    runs = {label: per_step_dpo(exp.dpo, start, label, P, problems, seed, out_dir, log) for label, start in starts.items()}
    return StarResult(knobs=problems.task.knobs, base_lookup=lookup, sft_checkpoints=sft_curve, sft_loss=loss,
                      per_step_dpo=runs)


# ---------------------------------------------------------------- the report


def metrics(result: StarResult) -> Metrics:
    out: Metrics = {"pairs/" + k: v.pairs for k, v in result.per_step_dpo.items()}
    last = result.final_sft
    out["base/lookup_accuracy"] = result.base_lookup.accuracy
    out["sft/valid_path_rate"] = last.valid_path_rate
    out["sft/first_node_accuracy"] = last.first_node_accuracy
    out["sft/test_error"] = last.test_error
    out["sft/test_n"] = last.n
    out["sft/critical_token_prob"] = last.critical_token_prob
    out["sft/critical_q_value"] = last.critical_q_value
    out["state_reached"] = result.state.reached
    for label in result.per_step_dpo:
        end = result.end(label)
        out[f"dpo_from_{label}/start_error"] = result.start(label).test_error
        out[f"dpo_from_{label}/final_error"] = end.test_error
        out[f"dpo_from_{label}/final_critical_q_value"] = end.critical_q_value
        out[f"dpo_from_{label}/final_critical_token_prob"] = end.critical_token_prob
    return out


def checks(result: StarResult) -> list[Check]:
    """Did the run reach the studied state? Base look-ups above chance (reported, no target), SFT valid paths
    >= VALID_TARGET, and SFT's first node within FIRST_NODE_TOLERANCE of 1/degree."""
    look, last, degree = result.base_lookup, result.final_sft, result.degree
    first = last.first_node_accuracy
    return [
        learning.accuracy("base edge look-ups (held out; reported, no target)", look.k, look.n, look.chance),
        learning.accuracy("SFT valid centre-to-leaf paths (greedy, test)", last.valid, last.n, 0.0, VALID_TARGET),
        learning.Check("SFT first node after the centre right about 1/degree (the Clever-Hans state)", first, 1 / degree,
                       abs(first - 1 / degree) <= FIRST_NODE_TOLERANCE,
                       f"{last.first_node}/{last.n} = {first:.1%} against 1/degree = {1 / degree:.1%}; needs it within "
                       f"{FIRST_NODE_TOLERANCE:.0%}"),
    ]


def _series(result: StarResult, key: str) -> list[tuple[str, list[float], list[float]]]:
    """(name, x, y) for SFT over its epochs and for DPO from each start, placed after its start epoch."""
    out = [("SFT", [r.epoch for r in result.sft_checkpoints], [getattr(r, key) for r in result.sft_checkpoints])]
    for label, run in result.per_step_dpo.items():
        curve = result.curve(label)
        out.append((f"per-step DPO from {label}-trained SFT (epoch {run.start_epoch:g})",
                    [x for x, _ in curve], [getattr(r, key) for _, r in curve]))
    return out


def over_training(result: StarResult, key: str, title: str, ytitle: str) -> go.Figure:
    fig = go.Figure()
    for name, x, y in _series(result, key):
        fig.add_trace(go.Scatter(x=x, y=y, name=name, mode="lines+markers"))
    fig.update_layout(title=title, template="plotly_white", height=360, xaxis_title="epoch (SFT, then DPO)",
                      yaxis_title=ytitle, yaxis_range=[0, 1.02])
    return fig


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

    def summary_table(self) -> pd.DataFrame:
        """One row per checkpoint read out: SFT epochs, then per-step DPO from each start, with counts."""
        r = self.result
        rows = [("SFT", c) for c in r.sft_checkpoints]
        for label, run in r.per_step_dpo.items():
            rows += [(f"DPO from {label} (SFT epoch {run.start_epoch:g})", c) for c in run.checkpoints]
        return pd.DataFrame([{
            "model": name, "epoch": c.epoch, "n": c.n, "valid paths": c.valid, "first node right": c.first_node,
            "correct": c.correct, "test error": c.test_error, "P(critical)": c.critical_token_prob,
            "Q(critical)": c.critical_q_value, "V(start)": c.start_value,
        } for name, c in rows])

    def q_figure(self) -> go.Figure:
        """Figure 8 (a): the critical token's Q-value over training."""
        fig = over_training(self.result, "critical_q_value",
                            "(a) Q-value of the critical token (Monte-Carlo, right first node)", "success rate of rollouts")
        fig.add_hline(y=1 / self.result.degree, line_dash="dot", annotation_text="1/degree")
        return fig

    def p_figure(self) -> go.Figure:
        """Figure 8 (b): the critical token's probability over training."""
        fig = over_training(self.result, "critical_token_prob",
                            "(b) probability of the critical token (right first node)", "probability")
        fig.add_hline(y=1 / self.result.degree, line_dash="dot", annotation_text="1/degree")
        return fig

    def dpo_loss_figure(self) -> go.Figure:
        """Figure 8 (c): the per-step DPO loss from each start."""
        fig = go.Figure()
        for label, run in self.result.per_step_dpo.items():
            if run.loss:
                fig.add_trace(go.Scatter(x=[p.step for p in run.loss], y=[p.loss for p in run.loss], mode="lines",
                                         name=f"per-step DPO from {label}-trained SFT (epoch {run.start_epoch:g})"))
        fig.update_layout(title="(c) per-step DPO loss", template="plotly_white", height=360,
                          xaxis_title="DPO step", yaxis_title="DPO loss")
        return fig

    def sft_figure(self) -> go.Figure:
        """SFT's loss, valid paths, first node and test error over its epochs."""
        r = self.result
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=[p.epoch for p in r.sft_loss], y=[p.loss for p in r.sft_loss], name="SFT loss",
                                 mode="lines", yaxis="y2"))
        for key, name in (("valid_path_rate", "valid path"), ("first_node_accuracy", "first node right"),
                          ("test_error", "test error")):
            fig.add_trace(go.Scatter(x=[c.epoch for c in r.sft_checkpoints],
                                     y=[getattr(c, key) for c in r.sft_checkpoints], name=name, mode="lines+markers"))
        fig.update_layout(title="SFT: loss, valid paths, first node and test error (greedy)", template="plotly_white",
                          height=360, xaxis_title="SFT epoch", yaxis=dict(title="rate", range=[0, 1.02]),
                          yaxis2=dict(title="loss", overlaying="y", side="right"))
        return fig

    def error_figure(self) -> go.Figure:
        return over_training(self.result, "test_error", "Star graph test error: SFT and per-step DPO (greedy)",
                             "test error")

    @property
    def metrics(self) -> Metrics:
        """What 07 records in metrics.json: `metrics` and the learning checks."""
        return metrics(self.result) | learning.metrics(self.checks)


def run(ctx: StageContext, log: Callable[[str], None] = print) -> StarRun:
    """07 for the cell's base: measure, save star.json, and check the studied state."""
    result = measure(ctx, log)
    result.save(ctx.dir)
    return StarRun(result, checks(result))
