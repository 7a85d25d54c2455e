"""The one answer module: extraction as s1 does it (split at the answer separator, take the last \\boxed{}, else the
text after "Answer:"), used by data validation, teachers and evaluation alike.

Boxes are \\boxed, \\fbox and \\framebox (with nested braces); an integer answer is freed from \\textbf/\\text
wrappers, choice labels, parentheses and leading zeros (`\\boxed{\\textbf{(073)}}` is 73).

Generations reach us in two spellings: with the special tokens kept (``<|im_start|>answer``) and with them
dropped by the decoder (lm-eval's HF backend decodes with ``skip_special_tokens=True``, leaving
``think ... answer\\nAnswer: 42``). Both are handled; "Answer:" is the anchor that survives either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from revlib.core import render

Method = Literal["boxed", "answer_line", "answer_part", "none"]
_SEPARATORS = (render.ANSWER_SEP, "<|im_start|>answer\n", "<|im_start|>answer")
_ANSWER_ANCHOR = re.compile(r"(?:\*\*)?\bAnswer(?:\*\*)?\s*:\s*(?:\*\*)?", re.IGNORECASE)
_BOX = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")


@dataclass(frozen=True)
class Extraction:
    answer: str | None  # None when the response holds no answer at all; cleaned (see clean_answer)
    method: Method
    raw: str | None = None  # as written, before cleaning (choice letters are read from it)


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, \\fbox{...} or \\framebox[..]{...}, braces balanced; also `\\boxed 5`."""
    found = list(_BOX.finditer(text))
    if not found:
        return None
    rest = text[found[-1].end():]
    if rest.startswith(" ") and not rest.lstrip().startswith("{"):  # "\boxed 5": up to the next space or $
        token = re.match(r"\s+([^\s$]+)", rest)
        return token.group(1) if token else None
    rest = re.sub(r"^\s*(?:\[[^\]]*\])*", "", rest)  # \framebox[width][pos]{...}
    brace = rest.find("{")
    if brace < 0 or rest[:brace].strip():
        return None
    depth = 0
    for i in range(brace, len(rest)):
        if rest[i] == "{":
            depth += 1
        elif rest[i] == "}":
            depth -= 1
            if depth == 0:
                return rest[brace + 1:i].strip()
    return None  # unbalanced: the generation was cut off inside the box


def answer_part(text: str) -> str | None:
    """Text after the last answer separator, or None when there is no separator."""
    for sep in _SEPARATORS:
        if sep in text:
            return text.rsplit(sep, 1)[1].split("<|im_end|>")[0]
    return None


def after_answer_anchor(text: str) -> str | None:
    """The rest of the line after the last "Answer:" (bold markdown tolerated)."""
    matches = list(_ANSWER_ANCHOR.finditer(text))
    if not matches:
        return None
    tail = text[matches[-1].end():].split("<|im_end|>")[0].strip()
    line = tail.split("\n", 1)[0].strip() if tail else ""
    return _strip_wrapping(line) or None


def extract_answer(text: str) -> Extraction:
    """The final answer of a generated response (s1's order of rules)."""
    part = answer_part(text)
    scope = part if part is not None else text
    boxed = last_boxed(scope)
    if boxed is not None:
        return Extraction(clean_answer(boxed), "boxed", boxed)
    line = after_answer_anchor(scope)
    if line is not None:
        inner = last_boxed(line)
        raw = inner if inner is not None else line
        return Extraction(clean_answer(raw), "answer_line", raw)
    if part is not None and part.strip():
        raw = _strip_wrapping(part.strip())
        return Extraction(clean_answer(raw), "answer_part", raw)
    return Extraction(None, "none")


_WRAPPERS = re.compile(r"\\(?:textbf|text|mathbf|mathrm|textrm|mbox|boldsymbol|bf)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[ ,;:!]|\\q?quad\b|~|\\displaystyle|\\left|\\right")
_INTEGER = re.compile(r"^(?:\(?[A-E]\)\s*)?\(?\s*(-?\d+)\s*\)?$")  # "073", "(073)", "(D) 318"


def clean_answer(answer: str) -> str:
    """An extracted answer without decoration: an integer in \\textbf/\\text wrappers, behind a choice label,
    in parentheses or with leading zeros becomes the plain integer; anything else loses only outer $...$,
    outer braces and a whole-answer \\text{...}-style wrapper."""
    s = _strip_wrapping(answer)
    bare = s
    while True:
        unwrapped = _WRAPPERS.sub(r"\1", bare)
        if unwrapped == bare:
            break
        bare = unwrapped
    bare = _SPACING.sub(" ", bare).replace("$", "").strip().strip("{}").strip()
    m = _INTEGER.match(bare)
    if m:
        return str(int(m.group(1)))
    while len(s) > 2 and s[0] == "{" and s[-1] == "}" and _balanced(s[1:-1]):
        s = s[1:-1].strip()
    whole = re.fullmatch(r"\\(?:textbf|text|mathbf|mathrm|textrm|mbox)\s*\{(.*)\}", s, re.S)
    if whole and _balanced(whole.group(1)):
        s = whole.group(1).strip()
    return s


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


_FINAL_LINE = re.compile(r"^\**\s*(?:\\textbf\{)?(?:final\s+)?answer\s*\}?\s*\**\s*:\s*\**\s*(.*?)\**$", re.I)


def final_answer(text: str) -> str:
    """A teacher's final answer: the last 'Answer:' line, else the last box, else the last line (cleaned)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        m = _FINAL_LINE.match(ln)
        if m and m.group(1).strip():
            ans = m.group(1).strip()
            boxed = last_boxed(ans)
            return clean_answer(boxed if boxed is not None else ans.strip("$ ").rstrip("."))
    boxed = last_boxed(text)
    if boxed is not None:
        return clean_answer(boxed)
    return lines[-1].rstrip(".") if lines else ""


_LETTER_PATTERNS = (
    re.compile(r"^\(?([A-D])\)?(?=$|[\s.:,)])"),  # "B", "(B)", "B) text", "B. text"
    re.compile(r"\\text\{\s*\(?([A-D])\)?\s*\}"),  # \text{B}
    re.compile(r"(?:answer|option|choice)\s+is\s*:?\s*\(?([A-D])\)?\b", re.IGNORECASE),
)


def extract_letter(text: str) -> str | None:
    """The multiple-choice letter (A-D) a GPQA response settles on, or None.

    The extracted answer may be a bare letter; the free text is only searched for "the answer is X",
    so a sentence that starts with "A" is not read as a choice.
    """
    found = extract_answer(text)
    if found.raw:
        cand = _strip_wrapping(found.raw)
        for pat in _LETTER_PATTERNS:
            hits = pat.findall(cand)
            if hits:
                return hits[-1].upper()
    hits = _LETTER_PATTERNS[-1].findall(text)
    return hits[-1].upper() if hits else None


def _strip_wrapping(s: str) -> str:
    """Drop sentence punctuation and math delimiters around an answer."""
    s = s.strip().rstrip(".").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**")):
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left):len(s) - len(right)].strip()
    return s.rstrip(".").strip()
