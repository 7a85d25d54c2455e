"""The layouts of local benchmark files (MATH500, AIME24, GPQA-Diamond as JSON lines): which fields a row needs.

The params schema checks a local file against them before anything runs; lm-eval's task utils read rows by them.
"""

from __future__ import annotations

import re
from typing import Any

GPQA_HUB_FIELDS = ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
OPTION_LINE = re.compile(r"^\s*\(?([A-D])[).:]\s+(.*\S)\s*$", re.M)
ANSWER_LETTER = re.compile(r"^\s*\(?([A-D])\)?\s*$")


def gpqa_layout(doc: dict[str, Any]) -> str:
    """'hub' (four answer columns) or 'lettered' (options A-D inside the question, a letter answer); ValueError else."""
    if all(isinstance(doc.get(f), str) and doc[f].strip() for f in GPQA_HUB_FIELDS):
        return "hub"
    question = next((doc[k] for k in ("question", "Question", "problem") if isinstance(doc.get(k), str)), None)
    answer = next((doc[k] for k in ("answer", "Answer") if isinstance(doc.get(k), str)), None)
    if question and answer and ANSWER_LETTER.match(answer) and {m[0] for m in OPTION_LINE.findall(question)} >= {"A", "B", "C", "D"}:
        return "lettered"
    raise ValueError(
        f"neither GPQA layout: the Hub's ({', '.join(GPQA_HUB_FIELDS)}) nor pre-lettered (question with options "
        f"A) to D) on their own lines, answer a letter A-D); fields present: {sorted(doc)}")


def check_local_file(task: str, path) -> list[str]:
    """Why a local benchmark JSONL cannot serve `task`: each problem names the line and the fields expected."""
    import json

    expected = {"math500": (("problem", "Problem", "question"), ("answer", "Answer")),
                "aime24": (("problem", "Problem", "question"), ("answer", "Answer"))}
    problems: list[str] = []
    rows = 0
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                rows += 1
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError as err:
                    problems.append(f"{path} line {lineno}: not JSON ({err.msg})")
                    continue
                if not isinstance(doc, dict):
                    problems.append(f"{path} line {lineno}: not a JSON object")
                    continue
                if task == "gpqa_diamond":
                    try:
                        gpqa_layout(doc)
                    except ValueError as err:
                        problems.append(f"{path} line {lineno}: {err}")
                else:
                    for names in expected[task]:
                        if all(doc.get(n) in (None, "") for n in names):
                            problems.append(f"{path} line {lineno}: no {' / '.join(names)} field; expected fields "
                                            f"{' + '.join(n[0] for n in expected[task])}; present: {sorted(doc)}")
                if len(problems) >= 3:  # enough to see the pattern
                    break
    except UnicodeDecodeError:
        return [f"{path}: not UTF-8 text"]
    if not problems and rows == 0:
        problems.append(f"{path}: no rows")
    return problems
