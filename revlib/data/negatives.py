"""Negative data with per-step credit assignment: Setlur et al.'s method, piece by piece.

Sampling from the SFT policy with verification, RFT data, Monte-Carlo step values and
advantages, the critical step, per-step / naive DPO pairs and advantage-filtered RFT. Training on them (DPO
from an SFT checkpoint, the held-out DPO loss) is `revlib.modeling.preference`.
The experiment that runs them (notebook 06) is `revlib.stages.scaling`; its figures `revlib.stages.scaling_figures`.
Every function takes a `Sampler` (revlib.modeling.rollouts): the Hugging Face engine with prefix-cache
reuse, vLLM, or, in tests, a scripted policy whose success probabilities are known.

Step prefixes are cut from the sampled text itself (by character offsets), so a prefix is
always exactly the text the policy produced, whichever splitter found the steps.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from revlib.core import io, render
from revlib.core.records import PreferencePair, Record
from revlib.modeling.rollouts import Sampler
from revlib.tasks.base import TaskFamily
from revlib.tasks.grading import verified

if TYPE_CHECKING:
    from revlib.params.negatives import Sampling
    from revlib.modeling.train import Checkpoint

StepSplit = Literal["task", "line", "sentence"]


@dataclass
class Sample:
    """One sampled response to a training problem, its steps and its verdict."""

    problem_id: str
    index: int
    text: str  # the assistant content as sampled, starting with render.THINK
    reasoning: str
    answer: str
    steps: list[str]
    step_ends: list[int]  # offsets in `text` where the prefix after each step ends
    correct: bool

    @property
    def id(self) -> str:
        return f"{self.problem_id}-s{self.index}"

    def prefix(self, steps_done: int) -> str:
        """The assistant text up to and including step `steps_done` (0: just the think header)."""
        return self.text[: len(render.THINK)] if steps_done == 0 else self.text[: self.step_ends[steps_done - 1]]


@dataclass
class StepCredit:
    """Monte-Carlo values of a sample's step prefixes: values[i] is the success rate after i steps."""

    sample: Sample
    values: list[float]
    successes: list[list[str]] = field(default_factory=list)  # successful continuations from each prefix

    @property
    def advantages(self) -> list[float]:
        """advantage of step i (1-based i = list index + 1): value after it minus value before it."""
        return [self.values[i + 1] - self.values[i] for i in range(len(self.values) - 1)]


# ---------------------------------------------------------------- steps


def split_steps(task: TaskFamily, reasoning: str, mode: StepSplit = "task") -> list[str]:
    """Steps of a chain of thought: the task's own splitter, or one per line / per sentence for free text."""
    if mode == "task":
        return task.split_steps(reasoning)
    if mode == "line":
        return [line for line in reasoning.split("\n") if line.strip()]
    if mode == "sentence":
        return [s for s in re.split(r"(?<=[.!?])\s+|\n+", reasoning) if s.strip()]
    raise ValueError(f"unknown step split {mode!r}; choose task, line or sentence")


def parse_sample(task: TaskFamily, problem: Record, text: str, index: int, mode: StepSplit = "task") -> Sample:
    """Verify a sampled assistant text and locate its steps in it."""
    if not text.startswith(render.THINK):
        text = render.THINK + text
    body_end = text.find(render.ANSWER_MARK, len(render.THINK))
    body_end = len(text) if body_end < 0 else body_end
    raw_reasoning = text[len(render.THINK):body_end]
    reasoning, answer = render.split_answer(text)
    steps = split_steps(task, raw_reasoning, mode)
    starts, pos = [], len(render.THINK)
    for step in steps:
        at = text.find(step, pos, body_end)
        if at < 0:  # a splitter that rewrites text cannot be cut into prefixes
            raise ValueError(f"step {step!r} not found verbatim in the sampled text of {problem.id}")
        starts.append(at)
        pos = at + len(step)
    # a prefix runs up to where the next step starts: the separator belongs to the step before it
    ends = starts[1:] + ([pos] if steps else [])
    correct = verified(task, problem, text)
    return Sample(problem.id, index, text, reasoning, answer, steps, ends, correct)


# ---------------------------------------------------------------- sampling


def sample_policy(sampler: Sampler, task: TaskFamily, problems: Sequence[Record], n: int, seed: int,
                  mode: StepSplit = "task") -> list[Sample]:
    """n samples per problem from the policy, each verified and split into steps."""
    outs = sampler.sample([(p.question, render.THINK) for p in problems], n, seed)
    return [parse_sample(task, p, render.THINK + c, i, mode) for p, conts in zip(problems, outs)
            for i, c in enumerate(conts)]


def cap_negatives(samples: Sequence[Sample], k: int | None) -> list[Sample]:
    """Every positive, and at most the first k incorrect samples of each problem (None: all)."""
    if k is None:
        return list(samples)
    seen: dict[str, int] = defaultdict(int)
    out = []
    for s in samples:
        if not s.correct:
            seen[s.problem_id] += 1
            if seen[s.problem_id] > k:
                continue
        out.append(s)
    return out


def write_samples(path: str | Path, samples: Sequence[Sample]) -> Path:
    return io.write_jsonl(path, (asdict(s) | {"id": s.id} for s in samples))


# ---------------------------------------------------------------- RFT


def _key(s: Sample) -> tuple[str, str]:
    return (" ".join(s.reasoning.split()), " ".join(s.answer.split()))


def rft_records(samples: Sequence[Sample], problems: Sequence[Record], k: int) -> list[Record]:
    """The learner's own verified positives: deduplicated, at most k per problem."""
    if k < 1:
        raise ValueError(f"rft k must be at least 1, got {k}")
    by_id = {p.id: p for p in problems}
    kept: dict[str, list[Sample]] = defaultdict(list)
    seen: set[tuple[str, tuple[str, str]]] = set()
    for s in samples:
        if not s.correct or len(kept[s.problem_id]) >= k or (s.problem_id, _key(s)) in seen:
            continue
        seen.add((s.problem_id, _key(s)))
        kept[s.problem_id].append(s)
    out = []
    for pid, chosen in kept.items():
        prob = by_id[pid]
        for j, s in enumerate(chosen):
            out.append(Record(id=f"{prob.id}-rft{j}", pair_id=prob.pair_id, direction=prob.direction, task=prob.task,
                              question=prob.question, reasoning=s.reasoning, answer=s.answer, gold=prob.gold,
                              meta={"source": "rft", "sample": s.id}))
    return out


# ---------------------------------------------------------------- the synthetic teacher (D_syn)

def teacher_chain(task: TaskFamily, record: Record, forms: Sequence[str], seed: int = 0) -> Record:
    """The record as a more capable teacher with another style writes it (Setlur et al.'s D_syn): every step in one
    form, drawn per problem from `forms` (seeded by the record's id) and written by the task family
    (`TaskFamily.restyle`); the answer is unchanged, so it still verifies. The form is recorded in
    `meta.teacher_form`."""
    form = random.Random(f"teacher:{seed}:{record.id}").choice(list(forms))
    return record.model_copy(update={"reasoning": task.restyle(record.reasoning, form),
                                     "meta": {**record.meta, "teacher_form": form}})


# ---------------------------------------------------------------- Monte-Carlo values


def estimate_values(sampler: Sampler, task: TaskFamily, problems: Sequence[Record], samples: Sequence[Sample],
                    rollouts: int, seed: int, best_of: int | None = None, best_of_rule: str = "groups"
                    ) -> list[StepCredit]:
    """Value of every step prefix of every sample, from `rollouts` continuations of it.

    best_of None: the success rate of the continuations (the policy's own value). best_of K: the value
    under the best-of-K policy, as Setlur et al. credit steps (their §6): the continuations are cut
    into groups of K, and the value is the share of groups in which at least one continuation is
    right (with rollouts == K, 1 when any of the K is right, else 0); with best_of_rule "plug_in", the value is
    1 - (1 - p)^K, p the success rate of all the rollouts (any number of them).
    All prefixes go to the sampler in one call (identical prefixes once), so an engine can batch
    them and reuse each prefix's key-value cache across its rollouts.
    """
    if best_of_rule not in ("groups", "plug_in"):
        raise ValueError(f"unknown best_of_rule {best_of_rule!r}; choose groups or plug_in")
    if best_of is not None and (best_of < 1 or (best_of_rule == "groups" and rollouts % best_of)):
        raise ValueError(f"rollouts ({rollouts}) must be a positive multiple of best_of ({best_of})")
    by_id = {p.id: p for p in problems}
    requests: dict[tuple[str, str], int] = {}
    for s in samples:
        q = by_id[s.problem_id].question
        for i in range(len(s.steps) + 1):
            requests.setdefault((q, s.prefix(i)), len(requests))
    keys = list(requests)
    conts = sampler.sample(keys, rollouts, seed)
    q_to_problem = {p.question: p for p in problems}
    verdicts: list[tuple[float, list[str]]] = []
    for (q, prefix), rows in zip(keys, conts):
        hits = [verified(task, q_to_problem[q], prefix + c) for c in rows]
        wins = [c for c, hit in zip(rows, hits) if hit]
        if best_of is None:
            value = len(wins) / len(rows)
        elif best_of_rule == "plug_in":
            value = 1 - (1 - len(wins) / len(rows)) ** best_of
        else:
            groups = [hits[i:i + best_of] for i in range(0, len(hits), best_of)]
            value = sum(any(g) for g in groups) / len(groups)
        verdicts.append((value, wins))
    credits = []
    for s in samples:
        q = by_id[s.problem_id].question
        idx = [requests[(q, s.prefix(i))] for i in range(len(s.steps) + 1)]
        credits.append(StepCredit(s, [verdicts[j][0] for j in idx], [verdicts[j][1] for j in idx]))
    return credits


def critical_step(advantages: Sequence[float], mode: str = "first_below", threshold: float = -0.5) -> int | None:
    """1-based index of the critical step, or None when no step qualifies.

    first_below: the first step whose advantage is below `threshold`; most_negative: the step
    with the lowest advantage, if it is negative at all; first_pit (Setlur et al.'s critical step,
    after Hwang et al.'s "first pit"): the first step at which the value Q(i) = Q(0) + the sum of the
    first i advantages reaches its lowest point over steps 1..L, if that step lowers the value.
    """
    if mode == "first_pit":
        q, qs = 0.0, []
        for a in advantages:
            q += a
            qs.append(round(q, 9))  # values are multiples of 1/M: undo float drift before comparing
        if not qs:
            return None
        c = qs.index(min(qs))
        return c + 1 if advantages[c] < 0 else None
    if mode == "first_below":
        return next((i + 1 for i, a in enumerate(advantages) if a < threshold), None)
    if mode == "most_negative":
        if not advantages or min(advantages) >= 0:
            return None
        return min(range(len(advantages)), key=lambda i: (advantages[i], i)) + 1
    raise ValueError(f"unknown critical_step mode {mode!r}; choose first_pit, first_below or most_negative")


# ---------------------------------------------------------------- pairs


def gold_continuation(problem: Record, prefix: str) -> str | None:
    """The rest of the problem's gold response after `prefix`, when the prefix is a start of it (else None)."""
    gold = render.assistant_content(problem.reasoning, problem.answer)
    return gold[len(prefix):] if gold.startswith(prefix) and len(gold) > len(prefix) else None


def per_step_pairs(credits: Sequence[StepCredit], problems: Sequence[Record], mode: str = "first_below",
                   threshold: float = -0.5, seed: int = 0, rejected: str = "full",
                   gold_chosen: bool = False) -> list[PreferencePair]:
    """Per-step DPO pairs at the critical step of each incorrect sample.

    rejected "full": the sample's whole response; "step": the sample cut right after its critical
    step, left open (no end-of-turn: `meta.open_rejected`), the paper's pair (Setlur et al. after
    Hwang et al.: the correct continuation of the prefix against the negative ending at that step), so
    the loss pushes down the critical step, not the steps and answer that follow it.

    How the shared prefix reaches trl: the prompt is the question alone, and chosen and
    rejected are whole assistant turns that both START with the identical text
    THINK + steps before the critical one (`pair.prefix`); chosen continues with a rollout
    from that prefix that verified, rejected with the sample's own continuation. Why not put
    the prefix in the prompt as a partial assistant turn: trl (and revlib.modeling.train.dpo_rows)
    render prompt + chosen as a conversation, so a trailing assistant message in the prompt
    would become a separate, closed turn. With the prefix inside both responses, the
    sigmoid DPO loss depends on log pi(chosen) - log pi(rejected) (and the same for the
    reference); the prefix tokens, conditioned on the same prompt, contribute identical
    log-probabilities to both and cancel exactly, so the gradient falls only on the tokens
    after the divergence point. (Length-normalised losses such as IPO would not cancel them.)

    gold_chosen: where no rollout from the prefix verified, the chosen continuation is the gold response's rest,
    when the prefix is a start of the gold response (`meta.chosen_source` says which it was).
    """
    rng = random.Random(f"per_step:{seed}")
    by_id = {p.id: p for p in problems}
    pairs = []
    for cr in credits:
        s = cr.sample
        if s.correct:
            continue
        c = critical_step(cr.advantages, mode, threshold)
        if c is None:
            continue
        if rejected not in ("full", "step"):
            raise ValueError(f"unknown rejected {rejected!r}; choose full or step")
        prefix = s.prefix(c - 1)
        prob = by_id[s.problem_id]
        gold = gold_continuation(prob, prefix) if gold_chosen and not cr.successes[c - 1] else None
        if not cr.successes[c - 1] and gold is None:
            continue
        chosen = prefix + (rng.choice(cr.successes[c - 1]) if gold is None else gold)
        bad = s.text if rejected == "full" else s.prefix(c)
        if chosen == bad or (rejected == "step" and chosen.startswith(bad)):
            continue  # the chosen continuation repeats the critical step: no contrast at that step
        pairs.append(PreferencePair(
            id=f"{s.id}-step{c}", prompt=render.prompt_messages(prob.question),
            chosen=[{"role": "assistant", "content": chosen}], rejected=[{"role": "assistant", "content": bad}],
            kind="per_step", prefix=prefix, step_index=c,
            meta={"advantages": cr.advantages, "values": cr.values, "problem": prob.id,
                  "open_rejected": rejected == "step", "chosen_source": "rollout" if gold is None else "gold"},
        ))
    return pairs


def naive_pairs(samples: Sequence[Sample], problems: Sequence[Record], seed: int = 0) -> list[PreferencePair]:
    """Each incorrect sample paired with a random verified positive of the same problem."""
    rng = random.Random(f"naive:{seed}")
    by_id = {p.id: p for p in problems}
    pos: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        if s.correct:
            pos[s.problem_id].append(s)
    pairs = []
    for s in samples:
        if s.correct or not pos[s.problem_id]:
            continue
        good = rng.choice(pos[s.problem_id])
        pairs.append(PreferencePair(
            id=f"{s.id}-naive", prompt=render.prompt_messages(by_id[s.problem_id].question),
            chosen=[{"role": "assistant", "content": good.text}], rejected=[{"role": "assistant", "content": s.text}],
            kind="naive", meta={"problem": s.problem_id, "chosen_sample": good.id},
        ))
    return pairs


def advantage_filtered(credits: Sequence[StepCredit], percentile: float = 50.0) -> list[Sample]:
    """Verified positives whose lowest step advantage reaches the `percentile` of all responses' (the paper's Figure 11).

    The percentile is taken over positive and negative responses together, so the bar is set by how
    steps fare across the policy's samples, and a positive is dropped only when one of its steps
    lowers the success rate more than most responses' worst step does. Ties at the bar are kept:
    Monte-Carlo values are multiples of 1/M and tie often.
    """
    if not credits:
        return []
    lows = [min(cr.advantages, default=0.0) for cr in credits]
    bar = float(np.percentile(lows, percentile))
    return [cr.sample for cr, low in zip(credits, lows) if cr.sample.correct and low >= bar]


# ---------------------------------------------------------------- read-outs


def outcomes(sampler: Sampler, task: TaskFamily, problems: Sequence[Record], seed: int = 0) -> list[bool]:
    """Whether each problem is answered correctly (one sample each; greedy when the sampler is)."""
    outs = sampler.sample([(p.question, render.THINK) for p in problems], 1, seed)
    return [verified(task, p, render.THINK + rows[0]) for p, rows in zip(problems, outs)]


def value_per_step(credits: Sequence[StepCredit]) -> list[dict[str, float]]:
    """Average value after each number of steps (its Figure 7): rows of step, value, count."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for cr in credits:
        for i, v in enumerate(cr.values):
            by_step[i].append(v)
    return [{"step": i, "value": sum(v) / len(v), "count": len(v)} for i, v in sorted(by_step.items())]


# ---------------------------------------------------------------- the policy


def policy_engine(ckpt: Checkpoint, params: Sampling, temperature: float | None = None, cache_dir: Path | None = None) -> Sampler:
    """A rollout engine on a trained checkpoint (LoRA merged), at the params' or a given temperature."""
    from revlib.modeling import rollouts, train

    model, tokenizer = train.load_model_for(ckpt)
    temp = params.temperature if temperature is None else temperature
    kwargs = dict(temperature=temp, max_new_tokens=params.max_new_tokens)
    if params.engine != "vllm":
        kwargs.update(prefix_batch=params.prefix_batch, cache_dir=cache_dir, model_id=str(ckpt.path))
    model_path = ckpt.path if ckpt.adapter is None else None  # vLLM needs a full model folder
    return rollouts.make_engine(params.engine, model, tokenizer, model_path=model_path, checkpoint=ckpt, vllm=params.vllm, **kwargs)


def split_pairs(pairs: Sequence[PreferencePair], share: float, seed: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(training pairs, held-out pairs): about `share` of the problems, with all their pairs, are held out, so a
    held-out pair never shares its question with a training pair."""
    if not 0 <= share < 1:
        raise ValueError(f"held-out share must be in [0, 1), got {share}")
    problems = sorted({p.meta.get("problem", p.id) for p in pairs})
    rng = random.Random(f"held_out:{seed}")
    held = set(rng.sample(problems, round(share * len(problems)))) if share else set()
    return ([p for p in pairs if p.meta.get("problem", p.id) not in held],
            [p for p in pairs if p.meta.get("problem", p.id) in held])


# ---------------------------------------------------------------- direction-aware per-step DPO (03, beyond both papers)


def direction_aware_pairs(sft_ckpt: Checkpoint, records: Sequence[Record], params: Sampling, seed: int,
                          cache_dir: Path | None = None, sampler: Sampler | None = None
                          ) -> tuple[list[PreferencePair], dict[str, Any]]:
    """Per-step DPO pairs from the SFT model's own samples of its forward and reverse training questions.

    The r1k paper ends by calling for direction-aware alignment: instead of preferring one direction's
    whole response over the other's, each pair is cut at the critical step of an incorrect sample of
    either direction, so the loss falls on the step that went wrong. `params` is a PerStepDPOParams;
    `sampler` replaces the policy engine on `sft_ckpt` (tests use a scripted policy).
    """
    from revlib.tasks import get_task

    rng = random.Random(f"direction_aware:{seed}")
    problems = rng.sample(list(records), min(params.problems, len(records)))
    families = {}
    for name in sorted({r.task for r in problems}):
        try:
            families[name] = get_task(name)
        except KeyError:
            raise ValueError(f"per-step DPO needs a verifiable task family to credit steps; {name!r} has none "
                             "(drop dpo.per_step for this data)") from None
    policy = sampler or policy_engine(sft_ckpt, params, cache_dir=cache_dir)
    samples: list[Sample] = []
    credits: list[StepCredit] = []
    for name, fam in families.items():
        group = [p for p in problems if p.task == name]
        group_samples = sample_policy(policy, fam, group, params.samples_per_problem, seed, params.step_split)
        samples += group_samples
        credits += estimate_values(policy, fam, group, group_samples, params.rollouts, seed, params.best_of)
    pairs = per_step_pairs(credits, problems, params.critical_step, params.advantage_threshold, seed, params.rejected)
    direction = {p.id: p.direction for p in problems}
    stats: dict[str, Any] = {"problems": len(problems), "samples": len(samples),
                             "positives": sum(s.correct for s in samples), "pairs": len(pairs)}
    for d in ("forward", "reverse"):
        stats[f"pairs/{d}"] = sum(direction[p.meta["problem"]] == d for p in pairs)
        stats[f"positives/{d}"] = sum(s.correct for s in samples if direction[s.problem_id] == d)
    return pairs, stats
