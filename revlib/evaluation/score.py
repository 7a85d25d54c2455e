"""Re-grade lm-eval's logged samples with revlib's graders (and the optional judge), and summarise per task.

lm-eval scores each task through the same graders (revlib/lmeval_tasks/utils.py); re-grading the logged
responses here adds what an aggregate cannot hold: the extracted answer, the reason for each verdict,
the judge's overrides, and a Wilson interval over the number of problems.
"""

from __future__ import annotations

from typing import Any

from revlib.core import grade as grading
from revlib.tasks import grading as task_grading
from revlib.evaluation.judge import LLMJudge
from revlib.core.stats import wilson

MATH_TASKS = ("math500", "aime24")


def grade_response(task: str, response: str, doc: dict[str, Any]) -> grading.Grade:
    if task in MATH_TASKS:
        return grading.grade_math(response, doc["gold"])
    if task == "gpqa_diamond":
        return grading.grade_letter(response, doc["gold"])
    if task.startswith(("synthetic_", "world_")):
        return task_grading.grade_synthetic(response, doc)
    raise KeyError(f"no grader for task {task!r}")


def _responses(sample: dict[str, Any]) -> list[str]:
    resp = sample["filtered_resps"]
    if isinstance(resp, str):
        return [resp]
    if resp and isinstance(resp[0], (list, tuple)):
        resp = resp[0]
    return [str(r) for r in resp]


def score_samples(task: str, samples: list[dict[str, Any]], judge: LLMJudge | None = None) -> list[dict[str, Any]]:
    """One row per (problem, sample): response, extracted answer, verdict and its reason."""
    rows = []
    for sample in samples:
        doc = sample["doc"]
        for k, response in enumerate(_responses(sample)):
            g = grade_response(task, response, doc)
            correct, reason, judged, unreadable = g.correct, g.reason, False, False
            if judge is not None and not g.decided and task in MATH_TASKS and g.extracted:
                verdict, reply = judge.equivalent(doc["question"], g.extracted, doc["gold"])
                judged, unreadable = True, verdict is None
                if unreadable:  # counted, and graded as math-verify left it (not right)
                    reason = f"{g.reason}; judge {judge.model} reply unreadable (neither YES nor NO): {reply.strip()[:200]}"
                else:
                    correct, reason = verdict, f"{g.reason}; judge {judge.model}: {reply.strip()}"
            rows.append({"task": task, "doc_id": sample["doc_id"], "sample": k, "question": doc["question"],
                         "gold": doc["gold"], "response": response, "extracted": g.extracted, "correct": bool(correct),
                         "decided": g.decided, "judged": judged, "judge_unreadable": unreadable, "reason": reason,
                         "lm_eval_acc": sample.get("acc")})
    return rows


def summarise(task: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy over problems (each problem's score averaged over its samples) with a Wilson 95% interval."""
    per_problem: dict[Any, list[bool]] = {}
    for r in rows:
        per_problem.setdefault(r["doc_id"], []).append(r["correct"])
    n = len(per_problem)
    solved = sum(sum(v) / len(v) for v in per_problem.values())
    lo, hi = wilson(solved, n)
    return {"task": task, "problems": n, "samples_per_problem": max((len(v) for v in per_problem.values()), default=0),
            "accuracy": solved / n if n else 0.0, "ci_low": lo, "ci_high": hi,
            "undecided": sum(not r["decided"] for r in rows), "judged": sum(r["judged"] for r in rows),
            "judge_unreadable": sum(r.get("judge_unreadable", False) for r in rows), "no_answer": sum(r["extracted"] is None for r in rows)}
