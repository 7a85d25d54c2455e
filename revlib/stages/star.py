"""The star graph (notebook 07): why per-step credit helps, and when.

SFT on centre-to-leaf paths learns every step after the first by copying edges, but the first
node after the centre (the critical token) needs planning: the SFT loss falls while that
token's probability stays near 1/degree. Per-step DPO is started from an under-trained and
from an over-trained SFT checkpoint; the paper (Setlur et al., Figure 8) finds that credit
assignment at the critical step helps from the under-trained one, where the policy still
explores, and much less from the over-trained one, which has memorised.

The steps: the base's edge look-ups, SFT read out at every checkpoint (`checkpoint_readout`), the starts chosen from
that curve by state (`choose_starts`), per-step DPO from each (`per_step_dpo`); what it saves is
`revlib.stages.star_result.StarResult`, its report `revlib.stages.star_report.StarRun`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from revlib.core import io, render
from revlib.core.records import Record
from revlib.data import negatives
from revlib.modeling import likelihood, models, preference, pretrain, train
from revlib.modeling.rollouts import Sampler
from revlib.modeling.train import Checkpoint
from revlib.params.negatives import StarGraphParams
from revlib.params.train import DPOParams
from revlib.stages.context import StageContext
from revlib.stages.star_report import StarRun, checks
from revlib.stages.star_result import (FIRST_NODE_TOLERANCE, VALID_TARGET, BaseLookup, DrawnSamples, LossPoint,
                                       PathCounts, PerStepDPO, StarCheckpoint, StarResult, Start)
from revlib.tasks import get_task
from revlib.tasks.base import TaskFamily
from revlib.tasks.grading import verified


def critical_token_prob(model: Any, tokenizer: Any, problems: list[Record]) -> float:
    """Mean probability of the first node after the centre (all its tokens, and the newline that closes it, so "1"
    cannot stand for "12"), given the prompt and "centre>"."""
    probs = likelihood.continuation_probs(model, tokenizer, [
        (p.question, render.THINK + f"{p.meta['path'][0]}>", f"{p.meta['path'][1]}\n") for p in problems])
    return sum(probs) / len(problems)


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
        for key, hit in task.answer_outcome(p, answer).items():
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
                      asked_under=P.under_starts, over_factor=P.over_factor, per_step_dpo=runs, rules=exp.learning)


def run(ctx: StageContext, log: Callable[[str], None] = print) -> StarRun:
    """07 for the cell's base: measure, save star.json, and check the studied state."""
    result = measure(ctx, log)
    result.save(ctx.dir)
    return StarRun(result, checks(result))
