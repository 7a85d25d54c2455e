"""One answer module: the forms AIME-style reference solutions end with, graded as model outputs, and the same
extraction used by data validation, teachers and evaluation."""

from __future__ import annotations

import pytest

from revlib.core import extract, grade

# (the end of a reference solution, the reference answer): every one must grade correct
AIME_STYLE = [
    (r"Thus the answer is $\boxed{204}$.", "204"),
    (r"so $m+n=\fbox{204}$", "204"),
    (r"Therefore the requested sum is $\framebox{204}$.", "204"),
    (r"The answer is $\boxed{\textbf{(073)}}$.", "73"),
    (r"The answer is $\boxed{\textbf{073}}$", "73"),
    (r"giving $\boxed{\text{073}}$", "73"),
    (r"giving $\boxed{073}$", "73"),
    (r"$\boxed{007}$", "7"),
    (r"$\boxed{000}$", "0"),
    (r"The remainder is $\boxed{\mathbf{321}}$.", "321"),
    (r"Hence $\boxed{{116}}$.", "116"),
    (r"So the answer is $\boxed{\textbf{(A) }\ 315}$? No: recomputing gives $\boxed{\textbf{(D) }\ 318}$", "318"),
    (r"The first guess $\boxed{17}$ was wrong; the answer is $\boxed{25}$.", "25"),
    (r"\boxed{ 5 }", "5"),
    (r"The answer is \boxed 9.", "9"),
    (r"$m+n = 23+9 = \boxed{032}$", "32"),
    ("We conclude.\nAnswer: 080", "80"),
    ("Answer: $\\boxed{080}$", "80"),
    ("**Answer:** 33", "33"),
    ("**Answer: 33**", "33"),
    ("Final answer: 104.", "104"),
    ("The final answer is $\\boxed{23}$. I hope it is correct.", "23"),
    ("<|im_start|>think\nlong work\n<|im_start|>answer\nAnswer: \\boxed{468}<|im_end|>", "468"),
    ("think\nwork\nanswer\nAnswer: 468", "468"),
    (r"$\boxed{\dfrac{1}{2}}$", r"\frac12"),
    (r"$\boxed{\frac{\sqrt{3}}{2}}$", r"\frac{\sqrt3}{2}"),
    (r"Thus $x = \boxed{2^{10}}$", "1024"),
    (r"The area is $\boxed{\textbf{(B)}~ 120}$", "120"),
    (r"The probability is $\frac{m}{n}$ with $m+n=\boxed{\text{(}901\text{)}}$", "901"),
    (r"$\framebox[1.1\width]{601}$", "601"),
    (r"the answer is \fbox{$236$}", "236"),
    (r"\textbf{Answer:} \boxed{62}", "62"),
]

# wrong answers must stay wrong
WRONG = [
    (r"$\boxed{\textbf{(073)}}$", "74"),
    (r"$\framebox{204}$", "240"),
    ("Answer: 007", "70"),
    (r"$\boxed{0}$", "100"),
]


@pytest.mark.parametrize("response,gold", AIME_STYLE)
def test_aime_style_references_grade_correct(response, gold):
    g = grade.grade_math(response, gold)
    assert g.correct, (g.extracted, g.reason)


@pytest.mark.parametrize("response,gold", WRONG)
def test_wrong_answers_stay_wrong(response, gold):
    assert not grade.grade_math(response, gold).correct


def test_extraction_unwraps_and_normalises():
    assert extract.extract_answer(r"\boxed{\textbf{(073)}}").answer == "73"
    assert extract.last_boxed(r"\framebox{a{b}c}") == "a{b}c"
    assert extract.clean_answer(r"\text{ 0042 }") == "42"
    assert extract.clean_answer("(B)") == "(B)"  # a choice letter keeps its parentheses for extract_letter
    assert extract.final_answer("Step 1\nStep 2\nAnswer: 12") == "12"
    assert extract.final_answer(r"so it is \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert extract.final_answer("no marker, last line 7.") == "no marker, last line 7"


def test_one_module_serves_data_teachers_and_evaluation():
    from revlib.data import teachers
    from revlib.data.teachers import base

    assert teachers.final_answer is extract.final_answer and base.last_boxed is extract.last_boxed
    assert grade.math_equal("73", r"\boxed{\textbf{(073)}}")


def test_math_verify_runs_with_timeouts(monkeypatch):
    import math_verify

    seen = []
    real_parse, real_verify = math_verify.parse, math_verify.verify
    monkeypatch.setattr(math_verify, "parse", lambda *a, **k: seen.append(("parse", k)) or real_parse(*a, **k))
    monkeypatch.setattr(math_verify, "verify", lambda *a, **k: seen.append(("verify", k)) or real_verify(*a, **k))
    assert grade.verify_math("1/2", "0.5").correct
    assert grade.math_equal("1/2", "0.5")
    assert seen and all(k.get("parsing_timeout") or k.get("timeout_seconds") for _, k in seen)


def test_one_judge_reads_one_verdict():
    from revlib.data.teachers import judge

    assert judge.parse_verdict("YES") is True and judge.parse_verdict("**No.** they differ") is False
    assert judge.parse_verdict("Maybe") is None and judge.parse_verdict("") is None
    text = judge.messages("What is 2+2?", "4", "four")[0]["content"]
    assert "What is 2+2?" in text and "Reference answer:\n4" in text and "Final answer:\nfour" in text
