"""The one LLM judge of answer equivalence: one prompt (templates/judge.txt), one way to read its verdict.

Notebook 01 asks it about reverse answers math-verify cannot match (through the data teacher); stage 05 asks it
about benchmark answers math-verify cannot decide (through revlib.evaluation.judge's API client, with its own
cache and budget). Both send the same messages and read the reply the same way.
"""

from __future__ import annotations

import re

from revlib.data.teachers import templates
from revlib.data.teachers.base import ChatTeacher, Failure, Messages


def messages(question: str, gold: str, answer: str) -> Messages:
    return [{"role": "user", "content": templates.render("judge", question=question, gold=gold, answer=answer)}]


def parse_verdict(reply: str) -> bool | None:
    """YES -> True, NO -> False (its first word, markdown and punctuation aside); None when it is neither."""
    words = re.findall(r"[A-Za-z]+", reply)
    if not words or words[0].upper() not in ("YES", "NO"):
        return None
    return words[0].upper() == "YES"


def judge_equivalent(teacher: ChatTeacher, items: list[tuple[str, str, str]]) -> list[bool | None]:
    """(question, gold, answer) -> equivalent? None where the request failed or the reply was neither YES nor NO."""
    replies = teacher.chat_many([messages(q, g, a) for q, g, a in items])
    return [None if isinstance(r, Failure) else parse_verdict(r.content) for r in replies]
