"""Who writes the reverse examples: a task's oracle (the task family's own `invert`), an OpenAI-compatible API,
or a local HF model.

A model teacher makes two requests per forward example, both from editable templates in
revlib/data/teachers/templates/: `reverse_question` (from x_f and its final answer, write x_r and name the
premise it asks for) and `reverse_answer` (answer x_r step by step, giving y_r).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from revlib.core import io
from revlib.params.data import ApiTeacher as ApiTeacherParams, HFTeacher as HFTeacherParams
from revlib.core.records import Record
from revlib.tasks import TaskFamily
from revlib.data.teachers import templates
from revlib.data.teachers.base import ChatTeacher, Completion, Failure, TeacherConfigError, final_answer, split_think
from revlib.data.teachers.cache import ResponseCache, cache_key


@dataclass(frozen=True)
class Outcome:
    """One forward example's reverse twin, or why there is none."""

    forward: Record
    reverse: Record | None
    reason: str | None = None
    detail: str = ""


def make_model_teacher(params: ApiTeacherParams | HFTeacherParams, cache_dir: Path) -> ChatTeacher:
    """A model teacher with its response cache in `cache_dir` (one append-only file per teacher identity)."""
    if params.kind == "api":
        from revlib.data.teachers.api import ApiTeacher

        teacher: ChatTeacher = ApiTeacher(params, None)
    elif params.kind == "hf":
        from revlib.data.teachers.hf import HFTeacher

        teacher = HFTeacher(params, None)
    else:
        raise ValueError(f"no model teacher of kind {params.kind!r}")
    slug = io.slug(str(teacher.identity.get("model", params.kind)))[-60:]
    ident = cache_key(teacher.identity, [])[:12]
    teacher.cache = ResponseCache(Path(cache_dir) / f"{params.kind}-{slug}-{ident}.jsonl")
    return teacher


_TAG = {name: re.compile(rf"<{name}>\s*(.*?)\s*</{name}>", re.S | re.I) for name in ("reverse_question", "target")}


def parse_reverse_question(text: str) -> tuple[str, str] | None:
    """(x_r, target) from the first template's reply, or None when the tags are missing."""
    found = {k: pat.search(text) for k, pat in _TAG.items()}
    if not all(found.values()):
        return None
    question, target = (found[k].group(1).strip() for k in ("reverse_question", "target"))
    return (question, target) if question and target else None


def reverse_with_model(teacher: ChatTeacher, forwards: list[Record], family: TaskFamily | None = None) -> list[Outcome]:
    """Two rounds of requests: write each x_r, then answer it. Nothing is dropped: every forward gets an Outcome."""
    asks = [[{"role": "user", "content": templates.render(
        "reverse_question", question=f.question, answer=f.answer if family is not None else f.gold)}]
        for f in forwards]
    first = teacher.chat_many(asks)
    outcomes: dict[int, Outcome] = {}
    questions: dict[int, tuple[str, str]] = {}
    for i, (fwd, res) in enumerate(zip(forwards, first)):
        if isinstance(res, Failure):
            outcomes[i] = Outcome(fwd, None, res.reason, f"writing the reverse question: {res.detail}")
            continue
        parsed = parse_reverse_question(res.content)
        if parsed is None:
            outcomes[i] = Outcome(fwd, None, "malformed_reverse_question", res.content[:300])
        else:
            questions[i] = parsed
    order = sorted(questions)
    second = teacher.chat_many([[{"role": "user", "content": templates.render(
        "reverse_answer", question=questions[i][0])}] for i in order])
    for i, res in zip(order, second):
        fwd = forwards[i]
        if isinstance(res, Failure):
            outcomes[i] = Outcome(fwd, None, res.reason, f"answering the reverse question: {res.detail}")
            continue
        question, target = questions[i]
        # synthetic tasks know the premise exactly; real data trusts the premise the teacher named
        gold = family.premise(fwd) if family is not None else target
        answer = final_answer(res.content) if family is not None else res.content.strip()
        rev = Record(
            id=f"{fwd.pair_id}-r", pair_id=fwd.pair_id, direction="reverse", task=fwd.task, question=question,
            reasoning=res.reasoning, answer=answer, gold=gold,
            meta={**{k: v for k, v in fwd.meta.items() if k in ("cot_type", "source_type", "source")},
                  "teacher": teacher.identity.get("model", teacher.name), "target": target,
                  "final_answer": final_answer(res.content)},
        )
        outcomes[i] = Outcome(fwd, rev)
    return [outcomes[i] for i in range(len(forwards))]


__all__ = ["ChatTeacher", "Completion", "Failure", "Outcome", "ResponseCache", "TeacherConfigError",
           "final_answer", "make_model_teacher", "parse_reverse_question", "reverse_with_model",
           "split_think"]
