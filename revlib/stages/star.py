"""The star graph (notebook 07): why per-step credit helps, and when.

SFT on centre-to-leaf paths learns every step after the first by copying edges, but the first
node after the centre (the critical token) needs planning: the SFT loss falls while that
token's probability stays near 1/degree. Per-step DPO is started from an under-trained and
from an over-trained SFT checkpoint; the paper (Setlur et al., Figure 8) finds that credit
assignment at the critical step helps from the under-trained one, where the policy still
explores, and much less from the over-trained one, which has memorised.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import plotly.graph_objects as go
import torch
from pydantic import BaseModel, computed_field

from revlib.core import io, render, stats
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


def success_rate(engine: Sampler, task: TaskFamily, problems: list[Record], partial: Callable[[Record], str],
                 rollouts: int, seed: int) -> float:
    """Share of `rollouts` continuations per problem, from the assistant text `partial(problem)`, that verify."""
    requests = [(p.question, partial(p)) for p in problems]
    outs = engine.sample(requests, rollouts, seed)
    wins = sum(verified(task, p, req[1] + c) for p, req, rows in zip(problems, requests, outs) for c in rows)
    return wins / (len(problems) * rollouts)


def critical_q_value(engine: Sampler, task: TaskFamily, problems: list[Record], rollouts: int, seed: int) -> float:
    """Monte-Carlo Q-value of the critical token: the success rate of rollouts after "centre>first\n", the right
    first node."""
    return success_rate(engine, task, problems, lambda p: render.THINK + f"{p.meta['path'][0]}>{p.meta['path'][1]}\n",
                        rollouts, seed)


def start_value(engine: Sampler, task: TaskFamily, problems: list[Record], rollouts: int, seed: int) -> float:
    """The value of the state before the critical token: the success rate of rollouts from the think header alone."""
    return success_rate(engine, task, problems, lambda p: render.THINK, rollouts, seed)


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
    """One checkpoint read out. Its own counts are the test graphs' (greedy); `train` is the same on training graphs.
    The critical token's probability and Monte-Carlo Q are read on the probe problems of each. `epoch` is the SFT
    epoch; `step` the SFT step, or for a DPO checkpoint the DPO step counted from its start."""

    epoch: float
    step: int
    critical_token_prob: float
    critical_q_value: float
    start_value: float  # the value of the state before the critical token (rollouts from the think header)
    train: PathCounts | None = None
    critical_token_prob_train: float | None = None
    critical_q_value_train: float | None = None


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
    gold_chosen: int = 0         # pairs whose chosen answer is the gold continuation (no rollout verified)


VALID_TARGET = 0.7
FIRST_NODE_TOLERANCE = 0.1  # the first node right within this of 1/degree: the Clever-Hans state
MEMORISED_FIRST_NODE = 0.9  # an over-trained start has memorised its training graphs at this first-node accuracy
TRAINED_LOSS = math.log(2) / 2  # Figure 8(a): the per-step DPO loss "sharply decreases"; at most half its start
FINAL_LOSS_STEPS = 25  # a DPO run's final training loss: the mean over its last this-many logged steps


def state_rule() -> str:
    """The under-trained start's rule in words, from the constants the selection uses."""
    return (f"valid paths at least {VALID_TARGET:.0%} and the first node within {FIRST_NODE_TOLERANCE:g} of "
            "1/degree, both on the training graphs")


def trained_rule() -> str:
    return (f"the final training DPO loss (mean of the last {FINAL_LOSS_STEPS} steps) at most log(2)/2 = "
            f"{TRAINED_LOSS:.3f}")


class PerStepDPO(BaseModel):
    """Per-step DPO from one SFT checkpoint: its pairs and its own checkpoints (the start is that SFT checkpoint;
    a DPO checkpoint's `step` counts DPO steps)."""

    start_epoch: float
    start_step: int
    pairs: int
    samples: DrawnSamples
    checkpoints: list[StarCheckpoint]
    loss: list[LossPoint]

    @property
    def final_loss(self) -> float | None:
        tail = [p.loss for p in self.loss][-FINAL_LOSS_STEPS:]
        return sum(tail) / len(tail) if tail else None

    @property
    def trained(self) -> bool:
        return self.final_loss is not None and self.final_loss <= TRAINED_LOSS


class Start(BaseModel):
    """A per-step DPO start chosen from the SFT curve by its state (`choose_starts`), with that state."""

    name: str  # "under_1", "under_2", ... (Figure 8(b)) or "over" (Figure 8(c))
    step: int
    epoch: float
    valid_path_rate: float       # on the training graphs (the rule's)
    valid_path_rate_test: float
    first_node_train: float
    first_node_test: float

    @property
    def kind(self) -> str:
        return self.name.split("_")[0]


@dataclass(frozen=True)
class StudiedState:
    """Whether the run reached the states the paper studies, and the sentence that says so."""

    reached: bool
    under: int
    over: bool
    memorised: bool
    text: str


class StarResult(BaseModel):
    """What 07 measured (star.json): the knobs and model, the base's look-ups, every SFT checkpoint read out on test
    and training graphs, its loss, the starts chosen from that curve, and per-step DPO from each. Rates, errors and
    states are derived from the counts, never stored beside them (the file shows `test_error` and `reached`)."""

    FILE: ClassVar[str] = "star.json"

    knobs: StarKnobs
    model_layers: int
    train_graphs: int
    base_lookup: BaseLookup
    sft_checkpoints: list[StarCheckpoint]
    sft_loss: list[LossPoint]
    starts: list[Start]
    asked_under: int
    over_factor: float
    per_step_dpo: dict[str, PerStepDPO]  # by start name

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

    @property
    def test_n(self) -> int:
        return self.final_sft.n

    def names(self, kind: str) -> list[str]:
        """The starts of one kind ("under" or "over") that per-step DPO ran from."""
        return [s.name for s in self.starts if s.kind == kind and s.name in self.per_step_dpo]

    def start(self, name: str) -> StarCheckpoint:
        """The SFT checkpoint per-step DPO from `name` started from."""
        run = self.per_step_dpo[name]
        return next(c for c in self.sft_checkpoints if c.step == run.start_step)

    def end(self, name: str) -> StarCheckpoint:
        """Per-step DPO's last checkpoint from `name`; its start when it trained none (no pairs)."""
        return (self.per_step_dpo[name].checkpoints or [self.start(name)])[-1]

    def curve(self, name: str) -> list[tuple[int, StarCheckpoint]]:
        """(DPO step, checkpoint) of per-step DPO from `name`, its start (step 0) first."""
        return [(0, self.start(name))] + [(c.step, c) for c in self.per_step_dpo[name].checkpoints]

    @property
    def state(self) -> StudiedState:
        """Whether SFT reached the Clever-Hans state on its training graphs (an under-trained start exists), whether
        an over-trained start at least `over_factor` times as long exists, and whether it memorised."""
        under = [s for s in self.starts if s.kind == "under"]
        over = next((s for s in self.starts if s.kind == "over"), None)
        memorised = over is not None and over.first_node_train >= MEMORISED_FIRST_NODE and \
            abs(over.first_node_test - 1 / self.degree) <= FIRST_NODE_TOLERANCE
        parts = [f"{len(under)} of {self.asked_under} under-trained starts found ({state_rule()})"]
        for s in under:
            parts.append(f"{s.name} at step {s.step}: valid {s.valid_path_rate:.0%}, first node {s.first_node_train:.0%}"
                         f" on training graphs, {s.first_node_test:.0%} on test")
        if over is None:
            parts.append(f"no over-trained start: SFT ran under {self.over_factor:g}x the latest under-trained step")
        else:
            how = ("memorised: first node on the training graphs at least "
                   f"{MEMORISED_FIRST_NODE:.0%} while the test graphs' stays near 1/degree" if memorised else
                   f"not memorised (that needs {MEMORISED_FIRST_NODE:.0%} on the training graphs with the test "
                   "graphs near 1/degree): the most trained checkpoint, as far as the budget got")
            parts.append(f"over-trained start at step {over.step}: first node {over.first_node_train:.0%} on training "
                         f"graphs, {over.first_node_test:.0%} on test; {how}")
        reached = bool(under)
        text = ("Reached: " if reached else "Not reached: ") + "; ".join(parts) + "." + (
            "" if reached else " The per-step DPO numbers below do not test the paper's claim.")
        return StudiedState(reached, len(under), over is not None, memorised, text)

    @computed_field
    @property
    def reached(self) -> bool:
        return self.state.reached


def in_clever_hans_state(c: StarCheckpoint, degree: int) -> bool:
    """The under-trained rule, on the training graphs: edges followed, the first node a guess."""
    return (c.train is not None and c.train.valid_path_rate >= VALID_TARGET
            and abs(c.train.first_node_accuracy - 1 / degree) <= FIRST_NODE_TOLERANCE)


def _start(name: str, c: StarCheckpoint) -> Start:
    assert c.train is not None
    return Start(name=name, step=c.step, epoch=c.epoch, valid_path_rate=c.train.valid_path_rate,
                 valid_path_rate_test=c.valid_path_rate, first_node_train=c.train.first_node_accuracy,
                 first_node_test=c.first_node_accuracy)


def choose_starts(curve: list[StarCheckpoint], degree: int, under: int, over_factor: float) -> list[Start]:
    """The starts, by state. Under-trained: checkpoints in the Clever-Hans state (`in_clever_hans_state`) early
    enough that the most trained checkpoint has at least `over_factor` times their steps; `under` of them, spread
    from the first to the last such. Over-trained: the most trained checkpoint, when an under-trained start exists."""
    last = max(curve, key=lambda c: c.step)
    ok = [c for c in sorted(curve, key=lambda c: c.step)
          if c is not last and in_clever_hans_state(c, degree) and c.step * over_factor <= last.step]
    if not ok:
        return []
    picks = sorted({round(i * (len(ok) - 1) / max(under - 1, 1)) for i in range(under)}) if under > 1 else [0]
    starts = [_start(f"under_{k + 1}", ok[i]) for k, i in enumerate(picks)]
    return starts + [_start("over", last)]


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
    """07's draw: the task family, its test problems and its training problems; the first `probe_problems` of each
    also probe the critical token, and the first `train_readout` training problems are answered at every checkpoint."""

    task: TaskFamily
    test: list[Record]
    train: list[Record]
    probe: list[Record]
    train_readout: list[Record]
    probe_train: list[Record]


def checkpoint_readout(ckpt: Checkpoint, P: StarGraphParams, problems: Problems, seed: int) -> StarCheckpoint:
    """Greedy counts on the test and the training read-out graphs, and the critical token's probability and Q-value
    on the probe problems of each (a DPO checkpoint's step counts from its start)."""
    model, tokenizer = train.load_model_for(ckpt)
    greedy = negatives.policy_engine(ckpt, P, temperature=0.0)
    counts = test_counts(greedy, problems.task, problems.test, seed)
    on_train = test_counts(greedy, problems.task, problems.train_readout, seed)
    sampler = negatives.policy_engine(ckpt, P)
    q = critical_q_value(sampler, problems.task, problems.probe, P.rollouts, seed)
    v = start_value(sampler, problems.task, problems.probe, P.rollouts, seed)
    q_train = critical_q_value(sampler, problems.task, problems.probe_train, P.rollouts, seed)
    return StarCheckpoint(**counts.model_dump(exclude={"test_error"}), epoch=ckpt.epoch,
                          step=ckpt.step,
                          critical_token_prob=critical_token_prob(model, tokenizer, problems.probe),
                          critical_q_value=q, start_value=v, train=on_train,
                          critical_token_prob_train=critical_token_prob(model, tokenizer, problems.probe_train),
                          critical_q_value_train=q_train)


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
    test, train_problems = pool[:P.n_test], pool[P.n_test:]
    return Problems(task, test, train_problems, test[: P.probe_problems], train_problems[: P.train_readout],
                    train_problems[: P.probe_problems])


def _log_row(prefix: str, r: StarCheckpoint) -> str:
    on_train = f", train first node {r.train.first_node}/{r.train.n}" if r.train else ""
    return (f"{prefix}: test error {r.test_error:.3f} (valid {r.valid}/{r.n}, first node {r.first_node}/{r.n}"
            f"{on_train}), critical token p={r.critical_token_prob:.3f}, Q={r.critical_q_value:.3f}")


def per_step_dpo(dpo_params: DPOParams, start: Checkpoint, name: str, P: StarGraphParams, problems: Problems, seed: int,
                 out_dir: Path, log: Callable[[str], None] = print) -> PerStepDPO:
    """Per-step DPO from one SFT checkpoint: its samples, Monte-Carlo credit, the pairs at the critical step, DPO for
    the step budget, and each DPO checkpoint read out."""
    d = Path(out_dir) / f"dpo_from_{name}"
    task = problems.task
    train_problems = problems.train[: P.pair_problems] if P.pair_problems else problems.train
    policy = negatives.policy_engine(start, P, cache_dir=d / "rollout_cache")
    samples = negatives.sample_policy(policy, task, train_problems, P.samples_per_problem, seed, P.step_split)
    credits = negatives.estimate_values(policy, task, train_problems, samples, P.rollouts, seed, P.best_of)
    pairs = negatives.per_step_pairs(credits, train_problems, P.critical_step, P.advantage_threshold, seed, P.rejected,
                                     gold_chosen=P.gold_chosen)
    io.write_jsonl(d / "pairs.jsonl", (p.model_dump(mode="json") for p in pairs))
    drawn = DrawnSamples(n=len(samples), correct=sum(s.correct for s in samples),
                         critical_at_first_step=sum(p.step_index == 1 for p in pairs),
                         gold_chosen=sum(p.meta.get("chosen_source") == "gold" for p in pairs))
    log(f"from {name} (SFT step {start.step}): {drawn.correct}/{len(samples)} samples right, {len(pairs)} per-step "
        f"pairs ({drawn.critical_at_first_step} at the first step, {drawn.gold_chosen} with the gold answer chosen)")
    loss: list[LossPoint] = []
    read: list[StarCheckpoint] = []
    if pairs:
        res = preference.dpo_from(start, pairs, d, dpo_params, seed)
        loss = [LossPoint(step=h["step"], epoch=h["epoch"], loss=h["loss"])
                for h in res.log_history if "loss" in h and "step" in h]
        for c in res.checkpoints:
            read.append(checkpoint_readout(c, P, problems, seed))
            log(_log_row(f"  DPO step {c.step}", read[-1]))
    return PerStepDPO(start_epoch=start.epoch, start_step=start.step, pairs=len(pairs), samples=drawn,
                      checkpoints=read, loss=loss)


def _model_layers(base: str) -> int:
    return int(io.read_json(Path(base) / "config.json")["num_hidden_layers"])


def measure(ctx: StageContext, log: Callable[[str], None] = print) -> StarResult:
    """SFT with a checkpoint every `readout_every_steps` (or epoch), each read out on test and training graphs; the
    starts chosen from that curve by state; per-step DPO from each."""
    exp, out_dir = ctx.exp, Path(ctx.dir)
    P, seed, base = exp.star_graph, exp.seed, ctx.base_path()
    lookup = base_lookup(base, get_task("star_graph", P.knobs), seed)
    log(f"base edge look-ups: {lookup.k}/{lookup.n} right ({lookup.accuracy:.1%}; chance {lookup.chance:.1%})")
    if lookup.same_knobs is False:
        log(f"the base was pretrained on star graphs with other knobs ({lookup.pretrained_on}) than this experiment's")
    problems = draw_problems(P, seed)
    sft_params = exp.sft.model_copy(update={"save_every_steps": P.readout_every_steps})
    sft = train.sft(base, problems.train, out_dir / "sft", sft_params, seed=seed, epochs=P.sft_epochs,
                    save_every_epochs=1)
    sft_curve = []
    for c in sft.checkpoints:
        sft_curve.append(checkpoint_readout(c, P, problems, seed))
        log(_log_row(f"SFT step {c.step} (epoch {c.epoch:g})", sft_curve[-1]))
    loss = [LossPoint(step=h.get("step"), epoch=h["epoch"], loss=h["loss"])
            for h in sft.log_history if "loss" in h and "epoch" in h]
    starts = choose_starts(sft_curve, problems.task.knobs.degree, P.under_starts, P.over_factor)
    by_step = {c.step: c for c in sft.checkpoints}
    runs = {s.name: per_step_dpo(exp.dpo, by_step[s.step], s.name, P, problems, seed, out_dir, log) for s in starts}
    return StarResult(knobs=problems.task.knobs, model_layers=_model_layers(base), train_graphs=len(problems.train),
                      base_lookup=lookup, sft_checkpoints=sft_curve, sft_loss=loss, starts=starts,
                      asked_under=P.under_starts, over_factor=P.over_factor, per_step_dpo=runs)


# ---------------------------------------------------------------- the report


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
        out[f"dpo_from_{name}/final_loss"] = run.final_loss
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
                         "final DPO loss": run.final_loss if run else None,
                         "DPO trained": "yes" if run and run.trained else "NO"})
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
        fig.add_hline(y=TRAINED_LOSS, line_dash="dash", annotation_text="trained: log(2)/2")
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


def run(ctx: StageContext, log: Callable[[str], None] = print) -> StarRun:
    """07 for the cell's base: measure, save star.json, and check the studied state."""
    result = measure(ctx, log)
    result.save(ctx.dir)
    return StarRun(result, checks(result))
