"""Grading an extracted answer: math-verify for math, letters for GPQA, the task family's verifier for synthetic tasks.

Every grade says whether it was *decided*: math-verify cannot decide when it parses nothing out of
the prediction or the reference; those are the cases an optional LLM judge may settle.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from revlib.core.extract import clean_answer, extract_answer, extract_letter, last_boxed


@dataclass(frozen=True)
class Grade:
    correct: bool
    decided: bool  # False: the automatic grader could not tell; a judge may overrule `correct`
    extracted: str | None
    reason: str



def _as_math(text: str) -> str:
    """Wrap a bare answer in $...$ so math-verify's LaTeX extractor reads it."""
    text = text.strip()
    if "\\boxed" in text or "$" in text or "\\(" in text or "\\[" in text:
        return text
    return f"${text}$"


def _normalize_text(s: str) -> str:
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\!", "").replace("\\,", "").replace("\\left", "").replace("\\right", "")
    return re.sub(r"\s+", "", s).strip("$.").lower()


def _is_textual(s: str) -> bool:
    """A worded answer ("Evelyn", "north"): math-verify reads words as products of symbols, so it cannot decide."""
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r" \1 ", s)
    s = re.sub(r"\\[A-Za-z]+", " ", s)  # LaTeX commands (\frac, \pi, \infty) are not words
    return re.search(r"[A-Za-z]{3,}", s) is not None


PARSE_TIMEOUT_S = 5
VERIFY_TIMEOUT_S = 5


def _timeouts() -> tuple[int | None, int | None]:
    """math-verify's timeouts work by signal, so only in the main thread; elsewhere they must be off."""
    main = threading.current_thread() is threading.main_thread()
    return (PARSE_TIMEOUT_S, VERIFY_TIMEOUT_S) if main else (None, None)


def _parse(text: str):
    import math_verify

    try:
        return math_verify.parse(text, parsing_timeout=_timeouts()[0])
    except Exception:  # a parser crash or timeout on odd LaTeX: nothing parsed
        return []


def _verify(gold_parsed, pred_parsed) -> bool:
    import math_verify

    try:
        return bool(math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=_timeouts()[1]))
    except Exception:
        return False


def math_equal(gold: str, answer: str) -> bool:
    """Does `answer` (a final answer or a whole response) match `gold` by math-verify? False where a side does not parse."""
    g = _parse(gold)
    if not g:
        return False
    a = _parse(answer)
    if a and _verify(g, a):
        return True
    boxed = last_boxed(answer)  # decorations math-verify does not read: \framebox, \textbf{(073)}
    cleaned = clean_answer(boxed if boxed is not None else answer)
    if cleaned == answer:
        return False
    a = _parse(_as_math(cleaned))
    return bool(a) and _verify(g, a)


def verify_math(pred: str, gold: str) -> Grade:
    """Is `pred` (an extracted answer) mathematically equal to `gold`? Decided unless a side does not parse."""
    gold_parsed = _parse(_as_math(gold))
    pred_parsed = _parse(_as_math(pred))
    if not gold_parsed:
        same = _normalize_text(pred) == _normalize_text(gold)
        return Grade(same, same, pred, "reference not parseable by math-verify" + ("; same text" if same else ""))
    if not pred_parsed:
        same = _normalize_text(pred) == _normalize_text(gold)
        return Grade(same, same, pred, "answer not parseable by math-verify" + ("; same text" if same else ""))
    if _verify(gold_parsed, pred_parsed):
        return Grade(True, True, pred, "math-verify: equal")
    if _normalize_text(pred) == _normalize_text(gold):
        return Grade(True, True, pred, "same text after normalisation")
    if _is_textual(pred) or _is_textual(gold):
        return Grade(False, False, pred, "worded answer that differs in text: math-verify cannot decide")
    return Grade(False, True, pred, f"math-verify: {pred_parsed[-1]!s} != {gold_parsed[-1]!s}")


def grade_math(response: str, gold: str) -> Grade:
    """Grade a generated response against a reference answer (MATH500, AIME)."""
    found = extract_answer(response)
    if found.answer is None:
        return Grade(False, True, None, "no answer found (no separator, \\boxed{} or 'Answer:')")
    return verify_math(found.answer, gold)


def grade_letter(response: str, gold_letter: str) -> Grade:
    """Grade a multiple-choice response (GPQA) against the correct letter, e.g. "C" or "(C)"."""
    gold = gold_letter.strip().strip("()").upper()
    letter = extract_letter(response)
    if letter is None:
        return Grade(False, False, None, "no choice letter found")
    return Grade(letter == gold, True, letter, "same letter" if letter == gold else f"chose {letter}, correct is {gold}")
