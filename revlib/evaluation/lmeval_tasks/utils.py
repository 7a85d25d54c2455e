"""Document preparation and scoring for revlib's lm-eval tasks.

Every task turns its rows into the same doc shape: `question` (what the model sees, inside the chat
template) and `gold` (what the grader compares against), keeping the original fields beside them.
Scoring calls revlib.core.grade, the same code the notebook uses to re-grade logged samples.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from revlib.core import grade
from revlib.tasks import grading
from revlib.core.benchmark_files import ANSWER_LETTER, OPTION_LINE, gpqa_layout


def _field(doc: dict[str, Any], *names: str) -> Any:
    for name in names:
        if doc.get(name) not in (None, ""):
            return doc[name]
    raise KeyError(f"a row has none of the fields {names}; present: {sorted(doc)}")


# ---- documents -------------------------------------------------------------------------------

def process_math(dataset):
    """MATH500 rows (HuggingFaceH4/MATH-500 or a local copy): problem, answer (solution kept for checks)."""
    return dataset.map(lambda d: {"question": _field(d, "problem", "Problem", "question"),
                                  "gold": str(_field(d, "answer", "Answer"))})


def process_aime(dataset):
    """AIME rows (simplescaling/aime24_nofigures, Maxwell-Jia/AIME_2024 or a local copy): problem, answer."""
    return dataset.map(lambda d: {"question": _field(d, "problem", "Problem", "question"),
                                  "gold": str(_field(d, "answer", "Answer")).strip()})


GPQA_INSTRUCTION = "Answer with the letter of the correct choice."


def gpqa_choices(doc: dict[str, Any]) -> tuple[list[str], int]:
    """The four choices and the correct index.

    Hub layout: the correct and three incorrect answers shuffled by random.Random(seed) with seed = the first
    8 hex digits of sha256(Question), so every run and backend agrees. Pre-lettered layout: the options as
    the question lists them, the answer letter as given."""
    if gpqa_layout(doc) == "lettered":
        question = next(doc[k] for k in ("question", "Question", "problem") if isinstance(doc.get(k), str))
        options = {letter: text for letter, text in OPTION_LINE.findall(question)}
        answer = next(doc[k] for k in ("answer", "Answer") if isinstance(doc.get(k), str))
        return [options[c] for c in "ABCD"], "ABCD".index(ANSWER_LETTER.match(answer).group(1))
    correct = doc["Correct Answer"].strip()
    choices = [correct] + [doc[f"Incorrect Answer {i}"].strip() for i in (1, 2, 3)]
    seed = int(hashlib.sha256(doc["Question"].encode()).hexdigest()[:8], 16)
    random.Random(seed).shuffle(choices)
    return choices, choices.index(correct)


def process_gpqa(dataset):
    """GPQA rows in either layout (see gpqa_choices): Idavidrein/gpqa's gpqa_diamond, or a local copy."""
    def prepare(doc):
        choices, right = gpqa_choices(doc)
        if gpqa_layout(doc) == "lettered":  # the options are already in the question, lettered as the user wrote them
            question = next(doc[k] for k in ("question", "Question", "problem") if isinstance(doc.get(k), str)).strip()
            text = f"{question}\n\n{GPQA_INSTRUCTION}"
        else:
            lettered = "\n".join(f"{chr(65 + i)}) {c}" for i, c in enumerate(choices))
            text = f"{doc['Question'].strip()}\n\n{lettered}\n\n{GPQA_INSTRUCTION}"
        return {"question": text, "gold": chr(65 + right), "choices": choices}
    return dataset.map(prepare)


def doc_to_text(doc: dict[str, Any]) -> str:
    return doc["question"]


# ---- scoring: one accuracy per problem, averaged over its samples ----------------------------

def _mean(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def _responses(results: Any) -> list[str]:
    # one response (take_first) or a list of samples (take_first_k with repeats)
    if results and isinstance(results[0], (list, tuple)):
        results = results[0]
    return [str(r) for r in results]


def process_math_results(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    return {"acc": _mean([grade.grade_math(r, doc["gold"]).correct for r in _responses(results)])}


def process_gpqa_results(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    return {"acc": _mean([grade.grade_letter(r, doc["gold"]).correct for r in _responses(results)])}


def process_synthetic_results(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    return {"acc": _mean([grading.grade_synthetic(r, doc).correct for r in _responses(results)])}
