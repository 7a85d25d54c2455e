"""The one grader of a task-world answer, used by training checks, per-step values, STaR rollouts and lm-eval alike:
the answer extracted as every benchmark extracts it (`\\boxed{}`, an "Answer:" line or the answer turn, see
revlib.core.extract), then checked by the task family's own verifier."""

from __future__ import annotations

from typing import Any

from revlib.core.extract import extract_answer
from revlib.core.grade import Grade
from revlib.core.records import Record
from revlib.tasks import get_task
from revlib.tasks.base import TaskFamily


def grade(task: TaskFamily, record: Record, response: str) -> Grade:
    found = extract_answer(response)
    if found.answer is None:
        return Grade(False, True, None, "no answer found")
    ok = task.verify(record, found.answer)
    return Grade(ok, True, found.answer, "verifier: correct" if ok else f"verifier: {found.answer!r} != {record.gold!r}")


def verified(task: TaskFamily, record: Record, response: str) -> bool:
    return grade(task, record, response).correct


def grade_synthetic(response: str, record: dict[str, Any]) -> Grade:
    """Grade a response to a record of the data contract (as lm-eval hands it over: a dict) by its task family."""
    rec = Record.model_validate(record)
    return grade(get_task(rec.task), rec, response)
