"""Answer extraction and grading on hand-written tricky cases (s1's rules, math-verify, GPQA letters, task verifiers)."""

from __future__ import annotations

import pytest

from revlib.core import render
from revlib.core.extract import extract_answer, extract_letter, last_boxed
from revlib.core.grade import grade_letter, grade_math, verify_math
from revlib.tasks.grading import grade_synthetic
from revlib.core.stats import wilson


@pytest.mark.parametrize("text, expected", [
    ("so \\boxed{3} and finally \\boxed{5}", "5"),  # several boxes: the last
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
    ("\\boxed{\\left\\{ x : x^{2} > 1 \\right\\}}", "\\left\\{ x : x^{2} > 1 \\right\\}"),  # deep nesting, escaped braces
    ("\\fbox{7}", "7"),
    ("the value is \\boxed 9 here", "9"),  # brace-less box
    ("cut off \\boxed{\\frac{1}{", None),  # unbalanced: no answer
    ("no box", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("text, answer, method", [
    # s1 format with the special tokens kept: split at the separator first
    (render.assistant_content("maybe \\boxed{1}", "\\boxed{2}"), "2", "boxed"),
    # the box in the reasoning is ignored once a separator exists, "Answer:" wins in the answer part
    (render.assistant_content("try \\boxed{1}", "12"), "12", "answer_line"),
    # special tokens dropped by the decoder ("think ... answer\nAnswer: 12")
    ("think\n3 + 9 = 12\nanswer\nAnswer: 12", "12", "answer_line"),
    # an "Answer:" line without a box, then trailing chatter on the next line
    ("Some reasoning.\nAnswer: $\\frac{3}{4}$.\nI hope this helps.", "\\frac{3}{4}", "answer_line"),
    ("**Answer:** 42", "42", "answer_line"),
    # answer part without any anchor: its text
    ("<|im_start|>think\nx\n<|im_start|>answer\n  17  <|im_end|>", "17", "answer_part"),
    ("I don't know", None, "none"),
])
def test_extract_answer(text, answer, method):
    got = extract_answer(text)
    assert (got.answer, got.method) == (answer, method)


@pytest.mark.parametrize("pred, gold", [
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac{2}{4}", "\\frac12"),
    ("1/2", "\\frac{1}{2}"),
    ("(-\\infty, 3]", "(-\\infty,3]"),  # interval
    ("[2, 5)", "[2,5)"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("x = 4", "4"),  # an equation as the answer
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),  # tuple with \left \right
    ("10\\%", "10"),
    ("\\text{(C)}", "\\text{(C)}"),  # text answer, same text
])
def test_equivalent_forms_are_correct(pred, gold):
    g = verify_math(pred, gold)
    assert g.correct, g


@pytest.mark.parametrize("pred, gold", [
    ("\\frac{1}{3}", "0.5"),
    ("(-\\infty, 3)", "(-\\infty,3]"),  # open vs closed end
    ("[2, 5]", "[2,5)"),
    ("3", "-3"),
])
def test_different_answers_are_wrong(pred, gold):
    assert not verify_math(pred, gold).correct


def test_grade_math_full_responses():
    assert grade_math("work... so \\boxed{2} hmm no, \\boxed{\\frac{6}{3}}", "2").correct
    assert not grade_math("\\boxed{3}", "2").correct
    missing = grade_math("no idea", "2")
    assert not missing.correct and missing.extracted is None and "no answer" in missing.reason


@pytest.mark.parametrize("text, letter", [
    ("Answer: B", "B"),
    ("Answer: (C)", "C"),
    ("\\boxed{D}", "D"),
    ("\\boxed{\\text{A}}", "A"),
    ("think\nA sentence that starts with A.\nanswer\nAnswer: C) the third option", "C"),
    ("After all that, the answer is (B).", "B"),
    ("A long explanation with no final choice.", None),  # a leading "A" is not a choice
])
def test_gpqa_letters(text, letter):
    assert extract_letter(text) == letter


def test_grade_letter():
    assert grade_letter("Answer: (b)".upper(), "(B)").correct
    assert not grade_letter("Answer: A", "B").correct
    undecided = grade_letter("no choice", "B")
    assert not undecided.correct and not undecided.decided


def test_synthetic_grading_uses_the_task_verifier():
    from revlib.tasks import get_task

    fam = get_task("arith")
    fwd = fam.sample(0, 1)[0]
    rec = fwd.model_dump(mode="json")
    right = render.assistant_content(fwd.reasoning, fwd.answer)
    assert grade_synthetic(right, rec).correct
    assert grade_synthetic(right + "<|im_end|>", rec).correct
    wrong = render.assistant_content(fwd.reasoning, str(int(fwd.answer) + 1))
    assert not grade_synthetic(wrong, rec).correct


def test_wilson_interval():
    lo, hi = wilson(15, 30)
    assert lo < 0.5 < hi and hi - lo > 0.3  # AIME-sized: wide
    lo2, hi2 = wilson(250, 500)
    assert hi2 - lo2 < 0.1
    assert wilson(0, 30)[0] == 0.0 and wilson(30, 30)[1] == 1.0
    assert wilson(0, 0) == (0.0, 1.0)


def test_worded_answers_are_left_undecided_for_the_judge():
    g = grade_math("Answer: Evelyn's", "\\text{Evelyn}")
    assert not g.correct and not g.decided
    assert grade_math("Answer: \\text{Evelyn}", "\\text{Evelyn}").decided
    assert verify_math("\\sqrt{2}\\pi", "\\pi\\sqrt{2}").decided  # LaTeX commands are not words


def test_scipy_intervals_and_mcnemar_equal_their_closed_forms():
    """wilson and mcnemar come from scipy's binomtest; they must keep the numbers of the formulas they replaced."""
    import math

    from revlib.core.stats import Z95, diff_interval, mcnemar

    def score(k, n, z=Z95):
        p = k / n
        den = 1 + z * z / n
        centre, half = (p + z * z / (2 * n)) / den, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
        return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)

    for n in range(1, 80):
        for k in [*range(n + 1), 0.25, n - 0.5]:  # fractional k: an accuracy averaged over samples
            assert all(abs(a - b) < 1e-12 for a, b in zip(wilson(k, n), score(k, n))), (k, n)
        z99 = 2.5758293035489  # another z: the confidence level handed to scipy is the one z stands for
        assert all(abs(a - b) < 1e-12 for a, b in zip(wilson(n // 3, n, z=z99), score(n // 3, n, z99)))
        for k in range(n + 1):  # k wins only for a, n - k only for b
            exact = min(1.0, 2 * sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n)
            got = mcnemar([True] * k + [False] * (n - k), [False] * k + [True] * (n - k))
            assert abs(got - exact) <= 1e-12 * exact, (k, n, got, exact)
    lo, hi = diff_interval(45, 50, 25, 50)
    (l1, u1), (l2, u2) = score(45, 50), score(25, 50)
    assert abs(lo - (0.4 - math.hypot(0.9 - l1, u2 - 0.5))) < 1e-12
    assert abs(hi - (0.4 + math.hypot(u1 - 0.9, 0.5 - l2))) < 1e-12
