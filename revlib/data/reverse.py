"""Notebook 01: build the forward, reverse, mixed, test and probe sets and the directional pairs.

Every set is written with the record contract (revlib.core.records) under `<run_dir>/sets/`, pairs under
`<run_dir>/pairs/`, and every rejected reverse example with its reason in `rejects.jsonl`.
Forward examples come from a synthetic task, s1K/s1K-1.1 or the r1k published format (revlib.data.sources);
reverse twins from a teacher (revlib.data.teachers); each twin is validated before it joins a set.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from revlib.core import io, render
from revlib.data import sources
from revlib.core.grade import math_equal
from revlib.params import Experiment
from revlib.params.data import DataParams
from revlib.core.records import PreferencePair, Record, write_records
from revlib.data.sets import PAIR_SETS, pairs_path, set_path
from revlib.tasks import TaskFamily, get_task
from revlib.data.teachers.judge import judge_equivalent
from revlib.data.teachers import (
    ChatTeacher,
    Outcome,
    final_answer,
    make_model_teacher,
    reverse_with_model,
)

@dataclass
class Built:
    sets: dict[str, list[Record]]
    pairs: dict[str, list[PreferencePair]]
    rejects: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # teacher usage, shortfalls: shown in stats.json

    def counts(self) -> dict[str, int]:
        return {**{k: len(v) for k, v in self.sets.items()}, **{f"pairs/{k}": len(v) for k, v in self.pairs.items()},
                "rejects": len(self.rejects)}


def directional_pairs(records: list[Record], twins: dict[str, dict[str, Record]], kind: str = "directional") -> list[PreferencePair]:
    """For x_f: chosen y_f, rejected y_r; for x_r: chosen y_r, rejected y_f (the r1k paper's pairs)."""
    out = []
    for rec in records:
        other_dir = "reverse" if rec.direction == "forward" else "forward"
        other = twins.get(rec.pair_id, {}).get(other_dir)
        if other is None:
            continue
        out.append(PreferencePair(
            id=f"{rec.id}-dir",
            prompt=render.prompt_messages(rec.question),
            chosen=render.assistant_message(rec.reasoning, rec.answer),
            rejected=render.assistant_message(other.reasoning, other.answer),
            kind=kind,
            meta={"direction": rec.direction, "pair_id": rec.pair_id, "task": rec.task},
        ))
    return out


# ---------------------------------------------------------------- validation

def _occurrences(needle: str, text: str) -> int:
    needle = " ".join(needle.split())
    if not needle or len(needle) > 200:  # long free-text answers are not a short premise a question could leak
        return 0
    return len(re.findall(rf"(?<![\w.]){re.escape(needle)}(?![\w]|\.\d)", " ".join(text.split()), re.I))


def states_own_answer(forward: Record, reverse: Record) -> bool:
    """x_r leaks its answer when it mentions the premise more often than it may.

    x_f states the premise once (and may reuse the value as an operand); x_r must state x_f's
    answer, which can equal the premise by chance. So x_r may mention the value as often as x_f
    does, minus the premise's own mention, plus its mentions in x_f's final answer.
    """
    in_reverse = _occurrences(reverse.gold, reverse.question)
    if not in_reverse:
        return False
    allowed = max(0, _occurrences(reverse.gold, forward.question) - 1)
    allowed += _occurrences(reverse.gold, final_answer(forward.answer))
    return in_reverse > allowed



def _norm(text: str) -> str:
    return " ".join(re.sub(r"[$\\{}*]", " ", text).lower().split()).rstrip(".")


def check_reverse(forward: Record, reverse: Record, d: DataParams, family: TaskFamily | None = None) -> str | None:
    """Why a reverse example is unusable, or None if it passes; 'needs_judge' defers to the LLM judge."""
    if len(reverse.reasoning.strip()) < d.min_reasoning_chars:
        return "empty_reasoning" if not reverse.reasoning.strip() else "reasoning_too_short"
    if len(reverse.reasoning) > d.max_reasoning_chars:
        return "reasoning_too_long"
    if not reverse.answer.strip():
        return "no_answer"
    if not reverse.question.strip():
        return "empty_question"
    if states_own_answer(forward, reverse):
        return "question_states_answer"
    if family is not None:  # synthetic: exact, after the family's normalisation
        return None if family.verify(reverse, reverse.answer) else "answer_mismatch"
    final = reverse.meta.get("final_answer") or reverse.answer
    if reverse.gold == reverse.answer or math_equal(reverse.gold, final) or math_equal(reverse.gold, reverse.answer):
        return None
    if d.free_text_check == "skip":
        return None
    if d.free_text_check == "judge":
        return "needs_judge"
    return None if _norm(reverse.gold) and _norm(reverse.gold) in _norm(reverse.answer) else "answer_mismatch"


def check_forward(forward: Record, d: DataParams) -> str | None:
    """Why a forward example is unusable (as a training target or a test question), or None."""
    if not forward.question.strip():
        return "forward_empty_question"
    if not forward.gold.strip():
        return "forward_no_gold"
    if not forward.reasoning.strip():
        return "forward_empty_reasoning"
    if len(forward.reasoning.strip()) < d.min_reasoning_chars:
        return "forward_reasoning_too_short"
    if len(forward.reasoning) > d.max_reasoning_chars:
        return "forward_reasoning_too_long"
    if not forward.answer.strip():
        return "forward_no_answer"
    return None


def _reject(outcome: Outcome, reason: str, detail: str = "") -> dict[str, Any]:
    return {"source": outcome.forward.meta.get("source"), "row": outcome.forward.meta.get("row"),
            "pair_id": outcome.forward.pair_id, "reason": reason, "detail": detail,
            "forward": outcome.forward.model_dump(mode="json"),
            "reverse": outcome.reverse.model_dump(mode="json") if outcome.reverse else None}


def screen_forwards(forwards: list[Record], d: DataParams) -> tuple[list[Record], list[dict[str, Any]]]:
    """Forward examples that pass check_forward, and rejects for the rest (before any teacher is paid)."""
    kept, rejects = [], []
    for f in forwards:
        reason = check_forward(f, d)
        if reason is None:
            kept.append(f)
        else:
            rejects.append(_reject(Outcome(f, None), reason, f"{len(f.reasoning)} reasoning characters"
                                   if "reasoning" in reason else ""))
    return kept, rejects


def validate(outcomes: list[Outcome], d: DataParams, family: TaskFamily | None,
             judge: ChatTeacher | None = None) -> tuple[list[tuple[Record, Record]], list[dict[str, Any]]]:
    """Split outcomes into kept twins and rejects (each with its reason), keeping the forward order."""
    verdicts: list[str | None] = []
    for o in outcomes:
        verdict = check_forward(o.forward, d)
        if verdict is None:
            verdict = o.reason if o.reverse is None else check_reverse(o.forward, o.reverse, d, family)
        verdicts.append(verdict)
    pending = [i for i, v in enumerate(verdicts) if v == "needs_judge"]
    if pending:
        if judge is None:
            raise ValueError("free_text_check 'judge' needs a model teacher to act as judge")
        said = judge_equivalent(judge, [(outcomes[i].reverse.question, outcomes[i].reverse.gold,
                                         outcomes[i].reverse.answer) for i in pending])
        for i, ok in zip(pending, said):
            verdicts[i] = None if ok else ("judge_failed" if ok is None else "answer_mismatch_judge")
    kept, rejects = [], []
    for o, verdict in zip(outcomes, verdicts):
        if verdict is None:
            kept.append((o.forward, o.reverse))
        else:
            rejects.append(_reject(o, verdict, o.detail))
    return kept, rejects


# ---------------------------------------------------------------- building

def forward_pool(exp: Experiment, rejects: list[dict[str, Any]] | None = None) -> tuple[list[Record], TaskFamily | None]:
    """The forward examples to invert, in a seed-determined order, and the task family when synthetic.

    Source rows and forward examples that fail validation are appended to `rejects` (when given) and
    skipped, so the pool holds only usable examples."""
    d = exp.data
    need = sum(d.group_sizes().values())
    src = d.source
    rejects = [] if rejects is None else rejects
    if src.kind == "synthetic":
        family = get_task(src.task, src.knobs)
        forwards, bad = screen_forwards(family.sample(exp.seed, need), d)
        rejects += bad
        return forwards, family
    if src.kind == "s1k":
        label = str(src.path) if src.path else src.dataset
        rows = sources.load_rows(None if src.path else src.dataset, src.path, src.split)
        forwards = sources.s1k_forward(rows, src.trace, source=label, rejects=rejects)
        forwards, bad = screen_forwards(forwards, d)
        rejects += bad
        random.Random(f"split:{exp.seed}").shuffle(forwards)
        return forwards[:need], None
    raise ValueError(f"source {src.kind!r} has no forward pool; r1k data is imported with its twins")


def build(exp: Experiment, cache_dir: Path | None = None) -> Built:
    """Every set of the experiment: forward pool -> teacher -> validation -> disjoint groups -> sets and pairs."""
    d = exp.data
    info: dict[str, Any] = {"source": d.source.kind, "teacher": d.teacher.kind}
    judge = None
    if d.source.kind == "r1k":
        label = str(d.source.path) if d.source.path else d.source.dataset
        row_rejects: list[dict[str, Any]] = []
        twins = sources.r1k_twins(sources.load_rows(None if d.source.path else d.source.dataset, d.source.path,
                                                    d.source.split), source=label, rejects=row_rejects)
        random.Random(f"split:{exp.seed}").shuffle(twins)
        kept, rejects = validate([Outcome(f, r) for f, r in twins], d, None)
        rejects = row_rejects + rejects
    else:
        pool_rejects: list[dict[str, Any]] = []
        forwards, family = forward_pool(exp, pool_rejects)
        if d.teacher.kind == "oracle":
            if family is None:
                raise ValueError("the oracle teacher inverts synthetic tasks only; choose an api or hf teacher for s1k")
            outcomes = [Outcome(f, family.invert(f)) for f in forwards]
            kept, rejects = validate(outcomes, d, family)
            rejects = pool_rejects + rejects
        else:
            cache_root = d.teacher.cache_dir or cache_dir or (exp.run_root / "teacher_cache")
            teacher = make_model_teacher(d.teacher, cache_root)
            try:
                outcomes = reverse_with_model(teacher, forwards, family)
                judge = teacher if d.free_text_check == "judge" else None
                kept, rejects = validate(outcomes, d, family, judge)
                rejects = pool_rejects + rejects
            finally:
                teacher.close()
            u = teacher.usage
            info["teacher_usage"] = {"paid_requests": u.requests, "tokens": u.tokens, "cache_hits": u.cache_hits,
                                     "attempts": u.attempts, "retries": dict(sorted(u.retries.items())),
                                     "cache_file": teacher.cache.path.name if teacher.cache else None}
            # the model each answer's reply named, beside the name asked for: an alias can move to another model
            info["teacher_models"] = {"asked": d.teacher.model, "named_by_replies": dict(sorted(u.served_models.items()))}
    probe_twins = None
    if d.probe_file is not None:
        probe_twins = sources.r1k_twins(sources.load_rows(None, d.probe_file), source=str(d.probe_file), rejects=rejects)
    return assemble(exp, kept, rejects, probe_twins, info)


def assemble(exp: Experiment, kept: list[tuple[Record, Record]], rejects: list[dict],
             probe_twins: list[tuple[Record, Record]] | None = None, info: dict[str, Any] | None = None) -> Built:
    """Split (forward, reverse) twins into groups disjoint by pair_id and derive every set and pair list."""
    d = exp.data
    info = dict(info or {})
    groups: dict[str, list[tuple[Record, Record]]] = {}
    start = 0
    for name, n in d.group_sizes().items():
        groups[name] = kept[start:start + n]
        start += n
    if probe_twins is not None:
        groups["probe"] = probe_twins[: d.probe_train]
    elif d.probe_from_train:
        groups["probe"] = groups["train"][: d.probe_train]  # in-distribution probes, as in the paper
    wanted = {"train": d.n_train, "test": d.n_test, "probe": d.probe_train, "probe_test": d.probe_test}
    info["shortfall"] = {k: wanted[k] - len(groups[k]) for k in wanted if len(groups[k]) < wanted[k]}
    rng = random.Random(f"mix:{exp.seed}")

    def fwd(group):
        return [f for f, _ in group]

    def rev(group):
        return [r for _, r in group]

    def mixed(group):
        out = fwd(group) + rev(group)
        rng.shuffle(out)
        return out

    train, test, probe, probe_test = (groups[k] for k in ("train", "test", "probe", "probe_test"))
    half = train[: len(train) // 2]
    sets = {
        "forward": fwd(train), "reverse": rev(train), "half_mix": mixed(half), "mix": mixed(train),
        "test_forward": fwd(test), "test_reverse": rev(test), "test_mix": fwd(test) + rev(test),
        "probe_forward": fwd(probe), "probe_reverse": rev(probe), "probe_mix": fwd(probe) + rev(probe),
        "probe_test_forward": fwd(probe_test), "probe_test_reverse": rev(probe_test),
        "probe_test_mix": fwd(probe_test) + rev(probe_test),
    }
    twins: dict[str, dict[str, Record]] = {}
    for f, r in [*kept, *(probe_twins or [])]:
        twins[f.pair_id] = {"forward": f, "reverse": r}
    pairs = {name: directional_pairs(sets[name], twins) for name in PAIR_SETS}
    return Built(sets, pairs, rejects, info)


# the sets each size of the params fills
GROUP_SETS = {"train": ("n_train", "forward, reverse, half_mix, mix"), "test": ("n_test", "test_*"),
              "probe": ("probe_train", "probe_*"), "probe_test": ("probe_test", "probe_test_*")}


class DataShortfall(RuntimeError):
    """Fewer examples survived validation than the params ask for."""


def shortfall_rows(built: Built, d: DataParams) -> list[dict[str, Any]]:
    """One row per group smaller than asked: the param, the sets it fills, asked, built, missing."""
    out = []
    for group, missing in built.info.get("shortfall", {}).items():
        param, sets = GROUP_SETS[group]
        asked = getattr(d, param)
        out.append({"param": param, "sets": sets, "asked": asked, "built": asked - missing, "missing": missing})
    return out


def require_sizes(built: Built, d: DataParams) -> None:
    """Stop the stage, naming every short set and the main reject reasons, when the params cannot be met."""
    rows = shortfall_rows(built, d)
    if not rows:
        return
    reasons = Counter(r["reason"] for r in built.rejects).most_common(5)
    short = "; ".join(f"{r['param']} ({r['sets']}): {r['built']} of {r['asked']}" for r in rows)
    why = ", ".join(f"{k} x{v}" for k, v in reasons) or "no rejects: the source holds too few examples"
    survivors = sum(len(v) for k, v in built.sets.items() if k in ("forward", "test_forward", "probe_test_forward"))
    head = "no example survived validation" if survivors == 0 and not built.sets["probe_forward"] else \
        "too few examples survived validation"
    raise DataShortfall(f"{head}: {short}. Rejects by reason: {why} (every one in rejects.jsonl)")


def write(built: Built, out_dir: Path) -> dict[str, Any]:
    for name, recs in built.sets.items():
        write_records(set_path(out_dir, name), recs)
    for name, prs in built.pairs.items():
        write_records(pairs_path(out_dir, name), prs)
    io.write_jsonl(Path(out_dir) / "rejects.jsonl", built.rejects)
    stats = {"counts": built.counts(), "rejects_by_reason": dict(sorted(Counter(r["reason"] for r in built.rejects).items())),
             **built.info}
    io.write_json(Path(out_dir) / "stats.json", stats)
    return stats


# ---------------------------------------------------------------- report helpers (notebook 01)

_WORDPIECE = re.compile(r"\w+|[^\w\s]")


def chain_lengths(built: Built, tokenizer: Any = None) -> list[dict[str, Any]]:
    """Length of every training chain of thought, forward and reverse: tokenizer tokens, else word pieces."""
    def count(text: str) -> int:
        if tokenizer is not None:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])
        return len(_WORDPIECE.findall(text))

    return [{"direction": r.direction, "tokens": count(r.reasoning), "pair_id": r.pair_id}
            for name in ("forward", "reverse") for r in built.sets[name]]


def rejects_by_reason(built: Built) -> list[dict[str, Any]]:
    counts = Counter(r["reason"] for r in built.rejects)
    attempted = len(built.rejects) + len({r.pair_id for r in built.sets["reverse"]} | {
        r.pair_id for k in ("test_reverse", "probe_test_reverse") for r in built.sets[k]})
    return [{"reason": k, "count": v, "share of attempted": v / attempted if attempted else 0.0}
            for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]


def length_figure(rows: list[dict[str, Any]], unit: str):
    """Overlaid histograms of chain-of-thought lengths, forward against reverse."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for direction in ("forward", "reverse"):
        fig.add_trace(go.Histogram(x=[r["tokens"] for r in rows if r["direction"] == direction], name=direction,
                                   opacity=0.6, nbinsx=40))
    fig.update_layout(barmode="overlay", title="Chain-of-thought length, training twins", xaxis_title=unit,
                      yaxis_title="examples", template="plotly_white", height=360, margin=dict(l=50, r=20, t=50, b=40))
    return fig


def twins_table(built: Built, n: int = 5, width: int = 400) -> list[dict[str, str]]:
    """The first `n` training twins side by side, long texts cut to `width` characters."""
    def cut(text: str) -> str:
        return text if len(text) <= width else text[:width] + " …"

    return [{"pair_id": f.pair_id, "forward question": cut(f.question), "forward reasoning": cut(f.reasoning),
             "forward answer": cut(f.answer), "reverse question": cut(r.question), "reverse reasoning": cut(r.reasoning),
             "reverse answer": cut(r.answer)}
            for f, r in zip(built.sets["forward"][:n], built.sets["reverse"][:n])]


def headline_html(stats: dict[str, Any]) -> str:
    """The index page's summary: rows of the main sets and the reject rate by reason."""
    import html

    c = stats["counts"]
    keys = ["forward", "reverse", "mix", "half_mix", "test_forward", "probe_forward", "probe_test_forward", "rejects"]
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{c.get(k, 0)}</td></tr>" for k in keys)
    reasons = "".join(f"<tr><td>reject: {html.escape(k)}</td><td>{v}</td></tr>"
                      for k, v in stats.get("rejects_by_reason", {}).items())
    return f"<table><tr><th>set</th><th>rows</th></tr>{cells}{reasons}</table>"
