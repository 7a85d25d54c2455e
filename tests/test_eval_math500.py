"""Judge validity on real data: the local MATH500 copy through the same lm-eval task as the Hub copy,
and its reference solutions graded as if they were model outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from revlib.evaluation import harness
from revlib.core.grade import grade_math

MATH500 = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "math500.jsonl"
pytestmark = pytest.mark.skipif(not MATH500.exists(), reason=f"reference data not found: {MATH500}")


@pytest.fixture(scope="module")
def math500_docs():
    manager = harness.task_manager()
    cfg = harness.task_config("math500", MATH500, manager=manager)
    task = manager.load([cfg])["tasks"]["revlib_math500"]
    return list(task.test_docs())


def test_local_copy_uses_the_hub_task_definition():
    manager = harness.task_manager()
    hub = harness.task_config("math500", None, manager=manager)
    local = harness.task_config("math500", MATH500, manager=manager)
    assert hub["dataset_path"] == "HuggingFaceH4/MATH-500"
    assert local["dataset_path"] == "json"
    assert local["dataset_kwargs"] == {"data_files": {"test": str(MATH500.resolve())}}
    source_keys = {"dataset_path", "dataset_name", "dataset_kwargs"}
    assert {k: v for k, v in hub.items() if k not in source_keys} == {k: v for k, v in local.items() if k not in source_keys}


def test_all_problems_load_with_question_and_gold(math500_docs):
    assert len(math500_docs) == 500
    assert all(d["question"] and d["gold"] for d in math500_docs)
    assert len({d["unique_id"] for d in math500_docs}) == 500


def test_reference_solutions_grade_correct(math500_docs):
    misses = []
    for doc in math500_docs:
        g = grade_math(doc["solution"], doc["gold"])
        if not g.correct:
            misses.append(f"{doc['unique_id']}: gold {doc['gold']!r} extracted {g.extracted!r}: {g.reason}")
    print(f"\nMATH500 reference solutions graded correct: {500 - len(misses)}/500; misses:")
    for m in misses:
        print("  " + m)
    assert not misses, misses


def test_mismatched_solutions_grade_wrong(math500_docs):
    """Negative control: each solution against the next problem's answer must almost never pass."""
    passed = [d["unique_id"] for d, nxt in zip(math500_docs, math500_docs[1:] + math500_docs[:1])
              if d["gold"] != nxt["gold"] and grade_math(d["solution"], nxt["gold"]).correct]
    print(f"\nmismatched pairs graded correct: {len(passed)}/500 {passed}")
    assert len(passed) <= 5
