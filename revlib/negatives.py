"""Negative data with per-step credit assignment (Setlur et al.): notebook 06's building blocks.

Sampling from the SFT policy with verification, RFT data, Monte-Carlo step values and
advantages, the critical step, per-step / naive DPO pairs and advantage-filtered RFT.
Every function takes a `Sampler` (revlib.rollouts): the Hugging Face engine with prefix-cache
reuse, vLLM, or, in tests, a scripted policy whose success probabilities are known.

Step prefixes are cut from the sampled text itself (by character offsets), so a prefix is
always exactly the text the policy produced, whichever splitter found the steps.
"""

from __future__ import annotations

import random
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from revlib import io, render
from revlib.records import PreferencePair, Record
from revlib.rollouts import Sampler
from revlib.tasks.base import TaskFamily

StepSplit = Literal["task", "line", "sentence"]
_ANSWER_MARK = "\n<|im_start|>answer"


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
    body_end = text.find(_ANSWER_MARK, len(render.THINK))
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
    correct = bool(answer) and task.verify(problem, answer)
    return Sample(problem.id, index, text, reasoning, answer, steps, ends, correct)


# ---------------------------------------------------------------- sampling


def sample_policy(sampler: Sampler, task: TaskFamily, problems: Sequence[Record], n: int, seed: int,
                  mode: StepSplit = "task") -> list[Sample]:
    """n samples per problem from the policy, each verified and split into steps."""
    outs = sampler.sample([(p.question, render.THINK) for p in problems], n, seed)
    return [parse_sample(task, p, render.THINK + c, i, mode) for p, conts in zip(problems, outs)
            for i, c in enumerate(conts)]


def write_samples(path: str | Path, samples: Sequence[Sample]) -> Path:
    return io.write_jsonl(path, (asdict(s) | {"id": s.id} for s in samples))


def read_samples(path: str | Path) -> list[Sample]:
    return [Sample(**{k: v for k, v in row.items() if k != "id"}) for row in io.read_jsonl(path)]


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


# ---------------------------------------------------------------- Monte-Carlo values


def estimate_values(sampler: Sampler, task: TaskFamily, problems: Sequence[Record], samples: Sequence[Sample],
                    rollouts: int, seed: int) -> list[StepCredit]:
    """Value of every step prefix of every sample = success rate of `rollouts` continuations from it.

    All prefixes go to the sampler in one call (identical prefixes once), so an engine can batch
    them and reuse each prefix's key-value cache across its rollouts.
    """
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
        wins = [c for c in rows if _verified(task, q_to_problem[q], prefix + c)]
        verdicts.append((len(wins) / len(rows), wins))
    credits = []
    for s in samples:
        q = by_id[s.problem_id].question
        idx = [requests[(q, s.prefix(i))] for i in range(len(s.steps) + 1)]
        credits.append(StepCredit(s, [verdicts[j][0] for j in idx], [verdicts[j][1] for j in idx]))
    return credits


def _verified(task: TaskFamily, problem: Record, text: str) -> bool:
    _, answer = render.split_answer(text)
    return bool(answer) and task.verify(problem, answer)


def critical_step(advantages: Sequence[float], mode: str = "first_below", threshold: float = -0.5) -> int | None:
    """1-based index of the critical step, or None when no step qualifies.

    first_below: the first step whose advantage is below `threshold`; most_negative: the step
    with the lowest advantage, if it is negative at all.
    """
    if mode == "first_below":
        return next((i + 1 for i, a in enumerate(advantages) if a < threshold), None)
    if mode == "most_negative":
        if not advantages or min(advantages) >= 0:
            return None
        return min(range(len(advantages)), key=lambda i: (advantages[i], i)) + 1
    raise ValueError(f"unknown critical_step mode {mode!r}; choose first_below or most_negative")


# ---------------------------------------------------------------- pairs


def per_step_pairs(credits: Sequence[StepCredit], problems: Sequence[Record], mode: str = "first_below",
                   threshold: float = -0.5, seed: int = 0) -> list[PreferencePair]:
    """Per-step DPO pairs at the critical step of each incorrect sample.

    How the shared prefix reaches trl: the prompt is the question alone, and chosen and
    rejected are whole assistant turns that both START with the identical text
    THINK + steps before the critical one (`pair.prefix`); chosen continues with a rollout
    from that prefix that verified, rejected with the sample's own continuation. Why not put
    the prefix in the prompt as a partial assistant turn: trl (and revlib.train.dpo_rows)
    render prompt + chosen as a conversation, so a trailing assistant message in the prompt
    would become a separate, closed turn. With the prefix inside both responses, the
    sigmoid DPO loss depends on log pi(chosen) - log pi(rejected) (and the same for the
    reference); the prefix tokens, conditioned on the same prompt, contribute identical
    log-probabilities to both and cancel exactly, so the gradient falls only on the tokens
    after the divergence point. (Length-normalised losses such as IPO would not cancel them.)
    """
    rng = random.Random(f"per_step:{seed}")
    by_id = {p.id: p for p in problems}
    pairs = []
    for cr in credits:
        s = cr.sample
        if s.correct:
            continue
        c = critical_step(cr.advantages, mode, threshold)
        if c is None or not cr.successes[c - 1]:
            continue
        prefix = s.prefix(c - 1)
        chosen = prefix + rng.choice(cr.successes[c - 1])
        rejected = s.text
        if chosen == rejected:
            continue
        prob = by_id[s.problem_id]
        pairs.append(PreferencePair(
            id=f"{s.id}-step{c}", prompt=render.prompt_messages(prob.question),
            chosen=[{"role": "assistant", "content": chosen}], rejected=[{"role": "assistant", "content": rejected}],
            kind="per_step", prefix=prefix, step_index=c,
            meta={"advantages": cr.advantages, "values": cr.values, "problem": prob.id},
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


def advantage_filtered(credits: Sequence[StepCredit]) -> list[Sample]:
    """Verified positives whose lowest step advantage is not in the bottom half of all positives'."""
    positives = [cr for cr in credits if cr.sample.correct]
    if not positives:
        return []
    lows = [min(cr.advantages, default=0.0) for cr in positives]
    median = statistics.median(lows)
    # ties at the median stay when every low is equal (nothing to rank)
    return [cr.sample for cr, low in zip(positives, lows) if low > median or (low == median and min(lows) == max(lows))]


# ---------------------------------------------------------------- read-outs


def error_rate(sampler: Sampler, task: TaskFamily, problems: Sequence[Record], seed: int = 0) -> float:
    """Fraction of test problems the policy gets wrong (one sample each; greedy when the sampler is)."""
    outs = sampler.sample([(p.question, render.THINK) for p in problems], 1, seed)
    wrong = sum(not _verified(task, p, render.THINK + rows[0]) for p, rows in zip(problems, outs))
    return wrong / len(problems)


def value_per_step(credits: Sequence[StepCredit]) -> list[dict[str, float]]:
    """Average value after each number of steps (its Figure 7): rows of step, value, count."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for cr in credits:
        for i, v in enumerate(cr.values):
            by_step[i].append(v)
    return [{"step": i, "value": sum(v) / len(v), "count": len(v)} for i, v in sorted(by_step.items())]


def sft_size_to_match(sizes: Sequence[float], sft_errors: Sequence[float], target_error: float) -> float | None:
    """Data SFT needs to reach `target_error`, by linear interpolation of its curve in log size.

    None when SFT's curve never gets that low within the measured sizes (no extrapolation).
    """
    import math

    pts = sorted(zip(sizes, sft_errors))
    for (n0, e0), (n1, e1) in zip(pts, pts[1:]):
        if e0 >= target_error >= e1 and e0 != e1:
            t = (e0 - target_error) / (e0 - e1)
            return math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0)))
    if pts and pts[0][1] <= target_error:
        return pts[0][0]
    return None


# ---------------------------------------------------------------- the scaling experiment (notebook 06)

DPO_METHODS = ("naive_dpo", "per_step_dpo")


def policy_engine(ckpt: Any, params: Any, temperature: float | None = None, cache_dir: Path | None = None) -> Sampler:
    """A rollout engine on a trained checkpoint (LoRA merged), at the params' or a given temperature."""
    from revlib import rollouts, train

    model, tokenizer = train.load_model_for(ckpt)
    temp = params.temperature if temperature is None else temperature
    kwargs = dict(temperature=temp, max_new_tokens=params.max_new_tokens)
    if params.engine != "vllm":
        kwargs.update(prefix_batch=params.prefix_batch, cache_dir=cache_dir, model_id=str(ckpt.path))
    model_path = ckpt.path if ckpt.adapter is None else None  # vLLM needs a full model folder
    return rollouts.make_engine(params.engine, model, tokenizer, model_path=model_path, checkpoint=ckpt, vllm=params.vllm, **kwargs)


def dpo_from(ckpt: Any, pairs: list[PreferencePair], out_dir: Path, dpo_params: Any, seed: int,
             epochs: int | None = None, save_every_epochs: int | None = None, on_log=None):
    """DPO with the SFT checkpoint as start and reference (LoRA: its adapter is merged first by train.dpo)."""
    from revlib import train

    if ckpt.adapter:
        return train.dpo(ckpt.base, pairs, out_dir, dpo_params, seed=seed, sft_adapter=ckpt.adapter,
                         epochs=epochs, save_every_epochs=save_every_epochs, on_log=on_log)
    return train.dpo(str(ckpt.path), pairs, out_dir, dpo_params, seed=seed, epochs=epochs,
                     save_every_epochs=save_every_epochs, on_log=on_log)


def split_problems(task: TaskFamily, seed: int, sizes: Sequence[int], n_test: int) -> tuple[list[Record], list[Record]]:
    """(nested training pool, test set): one draw, so every data size's set extends the smaller ones."""
    pool = task.sample(seed, max(sizes) + n_test)
    return pool[n_test:], pool[:n_test]


def run_size(exp: Any, base: str, task: TaskFamily, train_pool: list[Record], test: list[Record], size: int,
             out_dir: Path, log=print) -> dict[str, Any]:
    """Every method at one synthetic data size; returns test errors, counts and the trained checkpoints."""
    from revlib import train

    P, seed = exp.negatives, exp.seed
    problems = train_pool[:size]
    out_dir = Path(out_dir)
    row: dict[str, Any] = {"size": size}
    ckpts: dict[str, Any] = {}
    sft = train.sft(base, problems, out_dir / "sft", exp.sft, seed=seed, epochs=P.sft_epochs)
    ckpts["sft"] = sft.final
    policy = policy_engine(sft.final, P, cache_dir=out_dir / "rollout_cache")
    samples = sample_policy(policy, task, problems, P.samples_per_problem, seed, P.step_split)
    write_samples(out_dir / "samples.jsonl", samples)
    row["positives"] = sum(s.correct for s in samples)
    row["negatives"] = len(samples) - row["positives"]
    log(f"n={size}: SFT policy samples {row['positives']} positives, {row['negatives']} negatives")
    credits = []
    if {"per_step_dpo", "adv_rft"} & set(P.methods):
        credits = estimate_values(policy, task, problems, samples, P.rollouts, seed)
        io.write_jsonl(out_dir / "step_values.jsonl",
                       ({"sample": c.sample.id, "correct": c.sample.correct, "values": c.values,
                         "advantages": c.advantages} for c in credits))
    data: dict[str, list] = {}
    if "rft" in P.methods:
        data["rft"] = rft_records(samples, problems, P.rft_k)
    if "adv_rft" in P.methods:
        data["adv_rft"] = rft_records(advantage_filtered(credits), problems, P.rft_k)
    if "naive_dpo" in P.methods:
        data["naive_dpo"] = naive_pairs(samples, problems, seed)
    if "per_step_dpo" in P.methods:
        data["per_step_dpo"] = per_step_pairs(credits, problems, P.critical_step, P.advantage_threshold, seed)
    for method, items in data.items():
        row[f"{method}/examples"] = len(items)
        io.write_jsonl(out_dir / f"{method}.jsonl", (x.model_dump(mode="json") for x in items))
        if not items:
            log(f"n={size}: {method} has no training data; its point is left out")
            continue
        if method in DPO_METHODS:
            res = dpo_from(sft.final, items, out_dir / method, exp.dpo, seed, epochs=P.dpo_epochs)
        else:  # RFT: SFT from the base on the synthetic positives plus the learner's own
            res = train.sft(base, problems + items, out_dir / method, exp.sft, seed=seed, epochs=P.sft_epochs)
        ckpts[method] = res.final
    greedy_seed = seed + 1
    for method, ckpt in ckpts.items():
        row[method] = error_rate(policy_engine(ckpt, P, temperature=0.0), task, test, greedy_seed)
        log(f"n={size}: {method} test error {row[method]:.3f}")
    row["_checkpoints"] = ckpts
    return row


def values_by_method(exp: Any, task: TaskFamily, ckpts: dict[str, Any], problems: list[Record]) -> list[dict[str, Any]]:
    """Figure 7: each method's own samples on held-out problems, valued by its own rollouts, averaged per step."""
    P = exp.negatives
    rows = []
    for method, ckpt in ckpts.items():
        engine = policy_engine(ckpt, P)
        samples = sample_policy(engine, task, problems, 1, exp.seed + 2, P.step_split)
        for r in value_per_step(estimate_values(engine, task, problems, samples, P.rollouts, exp.seed + 2)):
            rows.append({"method": method, **r})
    return rows


def efficiency_table(rows: list[dict[str, Any]], method: str = "per_step_dpo") -> list[dict[str, Any]]:
    """At each size: the synthetic data SFT needs to match `method`'s error, and the multiple (or 'not reached')."""
    sizes = [r["size"] for r in rows if r.get("sft") is not None]
    errs = [r["sft"] for r in rows if r.get("sft") is not None]
    out = []
    for r in rows:
        if r.get(method) is None:
            continue
        need = sft_size_to_match(sizes, errs, r[method])
        out.append({"size": r["size"], f"{method} error": r[method], "sft error": r.get("sft"),
                    "SFT data to match": None if need is None else round(need, 1),
                    "multiple": "not reached" if need is None else f"{need / r['size']:.2f}x"})
    return out


def scaling_figure(rows: list[dict[str, Any]], methods: Sequence[str]):
    """Test error against synthetic data size (log x), one line per method."""
    import plotly.graph_objects as go

    names = {"sft": "SFT (oracle positives)", "rft": "RFT", "naive_dpo": "naive DPO",
             "per_step_dpo": "per-step DPO", "adv_rft": "advantage-filtered RFT"}
    fig = go.Figure()
    for m in methods:
        pts = [(r["size"], r[m]) for r in rows if r.get(m) is not None]
        if pts:
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=names[m]))
    fig.update_layout(title="Test error against synthetic data size", template="plotly_white", height=380,
                      xaxis_title="synthetic problems (log)", yaxis_title="test error", yaxis_range=[0, 1])
    fig.update_xaxes(type="log")
    return fig


def values_figure(rows: list[dict[str, Any]]):
    """Average Monte-Carlo value after each step, one line per method (Figure 7)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for m in dict.fromkeys(r["method"] for r in rows):
        pts = [r for r in rows if r["method"] == m]
        fig.add_trace(go.Scatter(x=[r["step"] for r in pts], y=[r["value"] for r in pts], mode="lines+markers", name=m))
    fig.update_layout(title="Average value per step of each method's own samples", template="plotly_white", height=360,
                      xaxis_title="steps taken", yaxis_title="value (success rate of rollouts)", yaxis_range=[0, 1])
    return fig


# ---------------------------------------------------------------- direction-aware per-step DPO (03, beyond both papers)


def direction_aware_pairs(sft_ckpt: Any, records: Sequence[Record], params: Any, seed: int,
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
        credits += estimate_values(policy, fam, group, group_samples, params.rollouts, seed)
    pairs = per_step_pairs(credits, problems, params.critical_step, params.advantage_threshold, seed)
    direction = {p.id: p.direction for p in problems}
    stats: dict[str, Any] = {"problems": len(problems), "samples": len(samples),
                             "positives": sum(s.correct for s in samples), "pairs": len(pairs)}
    for d in ("forward", "reverse"):
        stats[f"pairs/{d}"] = sum(direction[p.meta["problem"]] == d for p in pairs)
        stats[f"positives/{d}"] = sum(s.correct for s in samples if direction[s.problem_id] == d)
    return pairs, stats
